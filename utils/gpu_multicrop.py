"""DINO multi-crop for a whole batch at once, on the training device (CPU or CUDA).

``BatchedMultiCrop`` is ``utils.multicrop.MultiCropAugmentation`` for a uint8 batch (B, 3, H, W): the same
recipe (``dino_view_specs``), the same per-view uniforms (``NUM_UNIFORMS`` per view, turned into parameters by
the same rules as ``params_from_uniforms``), the same pixel maps as ``apply_view``, but every pixel operation runs
on the batch as a few tensor ops: no Python loop over samples touches pixels, and nothing syncs with the device.

    aug = BatchedMultiCrop(generator=torch.Generator().manual_seed(0))
    views = aug(images_uint8.cuda(non_blocking=True))     # [global1, global2, local1..6], (B, 3, s, s) float32

How each step is batched:

* **Parameters** are drawn on the CPU, one (B, NUM_UNIFORMS) float64 block per view, from the given generator (or
  torch's global RNG), so the views do not depend on the device; crop boxes follow torchvision's
  RandomResizedCrop (10 attempts, then the centre-crop fallback), vectorised in numpy. ``sample_params`` returns
  them; the plan of what each op touches is also made on the CPU and shipped in two small copies.
* **Crop + resize** is a separable linear map: output = Wy @ crop @ Wx^T with per-sample (size x H) and
  (size x W) weight matrices, i.e. two batched matmuls (``torch.bmm``) for all views of one size. The weights
  are those of torch's antialiased bicubic resize (Keys' kernel with a = -0.5, i.e. PIL's bicubic, stretched by
  the scale factor when a crop is shrunk, taps outside the crop dropped and renormalised), which is what
  ``apply_view`` runs through ``F.resize(..., BICUBIC, antialias=True)`` and what DINO's PIL
  ``RandomResizedCrop(interpolation=BICUBIC)`` does; the horizontal flip is folded into Wx and the 1/255 into
  Wy. Chosen over ``torchvision.ops.roi_align`` (bilinear samples averaged per bin: no bicubic, and its
  antialiasing depends on sampling_ratio) and ``F.grid_sample`` (bicubic with a = -0.75 and no antialiasing
  when shrinking), which would both differ from the per-image path and from DINO by more than float rounding;
  the matmuls reproduce ``apply_view`` to ~1e-5 and run on BLAS / tensor cores. Each sample reads only a band
  of rows as tall as the group's tallest crop, so small local crops do not pay for the whole image height.
* **Colour jitter, grayscale, blur, solarization** act on a subset of the samples each (ColorJitter's op at
  position p, the grayscale draws, ...). The subsets are known on the CPU before any pixel work, so the batch is
  permuted (one ``index_select``) to make each subset a contiguous slice, and the op runs in place on that
  slice with per-sample factors (broadcast (n, 1, 1, 1) tensors); a final gather restores the order. Each
  sample gets each op once (no masked recomputation of the whole batch), with no scatter and no host sync.
  Hue uses the map of ``utils.multicrop.adjust_hue`` written in fewer passes.
* **Gaussian blur** uses, like ``apply_view``, each sample's own kernel size (``blur_kernel_size``: 2*ceil(3
  sigma)+1, capped below the view size) and reflect padding: samples are grouped by kernel size (at most 6
  groups for sigma in [0.1, 2]) and blurred by a depthwise separable conv2d with per-sample taps.
* Intermediates live in buffers the instance keeps and reuses (fresh multi-megabyte tensors per step cost page
  faults on the CPU), so one instance must not be called from two threads at once; the outputs are fresh.

Given the same parameters the output matches ``apply_view`` to ~1e-5 (float rounding; ``tests/test_gpu_multicrop.py``
checks it sample by sample, and the two paths' parameter and output statistics). Speed: docs/performance.md
(``python -m tools.benchmark --only aug_batched --reference``). Its input is a batch of ``InMemoryImages``
(utils/datasets.py): images decoded once, so a DataLoader only batches uint8 tensors.
"""
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from utils.multicrop import (CROP_ATTEMPTS, U_AREA, U_BLUR, U_FACTORS, U_FLIP, U_GRAY, U_JITTER, U_LEFT,
                             U_LOG_RATIO, U_ORDER, U_SIGMA, U_SOLARIZE, U_TOP, IMAGENET_MEAN, IMAGENET_STD,
                             JITTER_OPS, NUM_UNIFORMS, ViewSpec, dino_view_specs)

PathLike = Union[str, Path]
_BICUBIC_A = -0.5  # PIL's (and torch's antialiased) bicubic kernel; plain F.interpolate bicubic uses -0.75
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale
_NEUTRAL = (1.0, 1.0, 1.0, 0.0)  # factors that leave brightness, contrast, saturation, hue unchanged


# --------------------------------------------------------------------------------------------------------------
# Parameters (CPU; numpy, which is several times faster than torch on these few-dozen-element arrays)
# --------------------------------------------------------------------------------------------------------------

def _crops_np(spec: ViewSpec, height: int, width: int, u: np.ndarray) -> np.ndarray:
    """torchvision's RandomResizedCrop boxes for a (B, NUM_UNIFORMS) float64 block: int64 (B, 4) top, left, h, w."""
    area = float(height * width)
    log_lo, log_hi = math.log(spec.ratio[0]), math.log(spec.ratio[1])
    target = area * (spec.scale[0] + (spec.scale[1] - spec.scale[0]) * u[:, U_AREA:U_AREA + CROP_ATTEMPTS])
    ratio = np.exp(log_lo + (log_hi - log_lo) * u[:, U_LOG_RATIO:U_LOG_RATIO + CROP_ATTEMPTS])
    w = np.round(np.sqrt(target * ratio))  # round half to even, as Python's round()
    h = np.round(np.sqrt(target / ratio))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    rows = np.arange(u.shape[0])
    first = fits.argmax(1)  # the first attempt that fits
    found = fits[rows, first]
    w, h = w[rows, first], h[rows, first]
    # the fallback: the largest centred crop whose aspect ratio lies within spec.ratio
    in_ratio = float(width) / float(height)
    if in_ratio < spec.ratio[0]:
        fw, fh = width, int(round(width / spec.ratio[0]))
    elif in_ratio > spec.ratio[1]:
        fw, fh = int(round(height * spec.ratio[1])), height
    else:
        fw, fh = width, height
    h = np.where(found, h, fh)
    w = np.where(found, w, fw)
    # floor(u * n) is uniform on 0..n-1 (torch.randint(0, n)); the min guards u rounding up to 1
    top = np.minimum(np.floor(u[:, U_TOP] * (height - h + 1)), height - h)
    left = np.minimum(np.floor(u[:, U_LEFT] * (width - w + 1)), width - w)
    top = np.where(found, top, (height - fh) // 2)
    left = np.where(found, left, (width - fw) // 2)
    return np.stack([top, left, h, w], 1).astype(np.int64)


def _params_np(spec: ViewSpec, height: int, width: int, u: np.ndarray) -> Dict[str, np.ndarray]:
    """``params_from_uniforms`` for every row of a (B, NUM_UNIFORMS) float64 array (see
    ``batched_params_from_uniforms``)."""
    strengths = np.array([spec.brightness, spec.contrast, spec.saturation, spec.hue])
    return {
        "crop": _crops_np(spec, height, width, u),
        "flip": u[:, U_FLIP] < spec.p_flip,
        "jitter": u[:, U_JITTER] < spec.p_jitter,
        # argsort of i.i.d. uniforms: a uniform random permutation (stable, as Python's sorted)
        "order": np.argsort(u[:, U_ORDER:U_ORDER + 4], axis=1, kind="stable").astype(np.int64),
        "factors": np.array(_NEUTRAL) - strengths + 2.0 * strengths * u[:, U_FACTORS:U_FACTORS + 4],
        "gray": u[:, U_GRAY] < spec.p_gray,
        "blur": u[:, U_BLUR] < spec.p_blur,
        "sigma": spec.blur_sigma[0] + (spec.blur_sigma[1] - spec.blur_sigma[0]) * u[:, U_SIGMA],
        "solarize": u[:, U_SOLARIZE] < spec.p_solarize,
        "solarize_threshold": np.full(u.shape[0], float(spec.solarize_threshold)),
    }


def batched_params_from_uniforms(spec: ViewSpec, height: int, width: int,
                                 u: Union[torch.Tensor, np.ndarray]) -> Dict[str, torch.Tensor]:
    """``params_from_uniforms`` for a (B, NUM_UNIFORMS) block: a dict of CPU tensors with one row per sample.

    Row b equals ``params_from_uniforms(spec, height, width, u[b])`` (same float64 arithmetic). Keys: "crop"
    int64 (B, 4) top, left, h, w; "flip", "jitter", "gray", "blur", "solarize" bool (B,); "order" int64 (B, 4):
    indices into JITTER_OPS in application order; "factors" float64 (B, 4): brightness, contrast, saturation,
    hue (drawn for every sample, used where "jitter"); "sigma" float64 (B,) (used where "blur");
    "solarize_threshold" float64 (B,).
    """
    u_np = u.detach().cpu().numpy() if isinstance(u, torch.Tensor) else np.asarray(u)
    u_np = u_np.astype(np.float64, copy=False)
    if u_np.ndim != 2 or u_np.shape[1] < NUM_UNIFORMS:
        raise ValueError("need a (B, {}) block of uniforms, got shape {}".format(NUM_UNIFORMS, tuple(u_np.shape)))
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in _params_np(spec, height, width, u_np).items()}


def batched_blur_kernel_sizes(sigma: Union[torch.Tensor, np.ndarray], image_size: int) -> np.ndarray:
    """``blur_kernel_size`` for an array of sigmas: odd 2*ceil(3 sigma)+1, capped below the image size."""
    sigma = np.asarray(sigma, dtype=np.float64)
    k = 2 * np.ceil(3.0 * sigma).astype(np.int64) + 1
    cap = image_size if image_size % 2 == 1 else image_size - 1
    return np.clip(k, 1, max(1, cap))


def gaussian_taps(sigma: Union[torch.Tensor, np.ndarray], kernel_size: int) -> np.ndarray:
    """(n,) sigmas -> (n, kernel_size) normalised Gaussian taps (torchvision's _get_gaussian_kernel1d)."""
    half = (kernel_size - 1) / 2.0
    x = np.linspace(-half, half, kernel_size)
    taps = np.exp(-0.5 * (x[None, :] / np.asarray(sigma, dtype=np.float64)[:, None]) ** 2)
    return taps / taps.sum(1, keepdims=True)


# --------------------------------------------------------------------------------------------------------------
# Pixel work (device)
# --------------------------------------------------------------------------------------------------------------

def _bicubic(x: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (zero outside |x| < 2)."""
    a = _BICUBIC_A
    x = x.abs()
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def resample_weights(start: torch.Tensor, length: torch.Tensor, window_start: torch.Tensor, window: int,
                     out_size: int, taps: int, flip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(N, out_size, window) weights resizing pixels [start, start + length) of each row to out_size pixels.

    Column j of the window is image pixel window_start + j. The weights are torch's antialiased bicubic
    (``_upsample_bicubic2d_aa``): output pixel i is centred at scale * (i + 0.5) in the crop, scale =
    length / out_size, the kernel is stretched by max(scale, 1), and the taps inside the crop are normalised to
    sum 1. ``taps`` >= ceil(4 * max(scale, 1)) + 1 bounds the taps per output pixel (5 when enlarging): only
    those are evaluated, then scattered into the dense matrix. ``flip`` (bool (N,)) mirrors the output. Inputs
    are float32 tensors on the target device.
    """
    device = start.device
    scale = length / float(out_size)  # (N,)
    stretch = scale.clamp(min=1.0)[:, None, None]
    i = torch.arange(out_size, device=device, dtype=torch.float32).expand(start.shape[0], out_size)
    if flip is not None:
        i = torch.where(flip[:, None], (out_size - 1.0) - i, i)
    centre = (scale[:, None] * (i + 0.5))[:, :, None]  # (N, out, 1) in crop coordinates
    first = torch.floor(centre - 2.0 * stretch + 0.5)  # leftmost pixel the kernel can reach
    j = first + torch.arange(taps, device=device, dtype=torch.float32)  # (N, out, taps) crop pixels
    inside = (j >= 0) & (j < length[:, None, None])
    w = _bicubic((j + 0.5 - centre) / stretch) * inside
    w = w / w.sum(-1, keepdim=True)
    # window columns; taps outside the crop go to a spare last column (all of them weigh 0), so no two taps of
    # an output pixel land on one column and scatter_ stays deterministic
    col = torch.where(inside, j + (start - window_start)[:, None, None], torch.full_like(j, float(window)))
    dense = torch.zeros(start.shape[0], out_size, window + 1, device=device, dtype=torch.float32)
    return dense.scatter_(2, col.to(torch.int64), w)[:, :, :window]


def resample_taps(max_length: int, out_size: int) -> int:
    """Taps per output pixel that cover the antialiased bicubic kernel for crops up to ``max_length`` pixels."""
    return int(math.ceil(4.0 * max(1.0, float(max_length) / out_size))) + 1


class _Workspace:
    """Reusable device buffers, one per name, so that a call allocates little besides its outputs.

    Fresh multi-megabyte tensors for every intermediate cost page faults on the CPU (measured: ~30% of the
    time of a 16-image batch); the buffers grow to the largest size seen and are reused.
    """

    def __init__(self) -> None:
        self.buffers = {}  # type: Dict[str, torch.Tensor]

    def get(self, name: str, shape: Sequence[int], device: torch.device,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A contiguous tensor of ``shape`` (contents undefined) backed by buffer ``name``."""
        numel = 1
        for d in shape:
            numel *= int(d)
        buf = self.buffers.get(name)
        if buf is None or buf.device != device or buf.dtype != dtype or buf.numel() < numel:
            buf = torch.empty(numel, device=device, dtype=dtype)
            self.buffers[name] = buf
        return buf[:numel].view(tuple(shape))


def _grayscale(x: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) -> (n, 1, H, W) luma, as torchvision's rgb_to_grayscale."""
    r, g, b = x.unbind(1)
    return (r * _GRAY_WEIGHTS[0]).add_(g, alpha=_GRAY_WEIGHTS[1]).add_(b, alpha=_GRAY_WEIGHTS[2]).unsqueeze(1)


def _adjust_hue_(x: torch.Tensor, factor: torch.Tensor) -> None:
    """In-place hue shift of (n, 3, H, W) float pixels in [0, 1] by ``factor`` (n,) turns: the map of
    ``utils.multicrop.adjust_hue`` (hence torchvision's adjust_hue) in fewer passes over the batch."""
    # HSV keeps V = max and chroma = max - min; with the shifted hue h in sixths of a turn, [0, 6), each channel
    # is min + chroma * clamp(s_c * |h - o_c| + t_c, 0, 1): the fully saturated colour of hue h, whose red,
    # green and blue are clamp(|h - 3| - 1), clamp(2 - |h - 2|) and clamp(2 - |h - 4|).
    r, g, b = x.unbind(1)
    v = torch.maximum(r, g)
    torch.maximum(v, b, out=v)
    low = torch.minimum(r, g)
    torch.minimum(low, b, out=low)
    chroma = v - low
    # the channel holding the max picks the hue sector; ties resolve as torchvision's: R, then G, then B
    is_r = v == r
    is_g = (v == g) & ~is_r
    is_b = ~(is_r | is_g)
    hue = (g - b).mul_(is_r)
    hue.addcmul_((b - r).add_(chroma, alpha=2.0), is_g)
    hue.addcmul_((r - g).add_(chroma, alpha=4.0), is_b)
    # grey pixels (chroma 0) have numerator 0 and hue 0; their output is min = max whatever the hue
    hue.div_(chroma.clamp(min=torch.finfo(x.dtype).tiny))
    hue.add_(factor.view(-1, 1, 1) * 6.0 + 6.0)  # + 6 keeps it positive (|factor| <= 0.5)
    hue.sub_(torch.floor(hue * (1.0 / 6.0)).mul_(6.0))  # mod 6
    offset, slope, intercept = _constant("hue_rgb", x.device).unbind(0)
    w = (hue.unsqueeze(1) - offset).abs_()  # (n, 3, H, W)
    torch.addcmul(intercept, w, slope, out=w).clamp_(0.0, 1.0)
    torch.addcmul(low.unsqueeze(1), w, chroma.unsqueeze(1), out=x)  # low, chroma are copies: safe to overwrite


def _jitter_op(x: torch.Tensor, op: int, factor: torch.Tensor) -> None:
    """Apply JITTER_OPS[op] in place to x (n, 3, H, W) with per-sample factors (n,), as torchvision's v2 ops."""
    f = factor.view(-1, 1, 1, 1)
    if op == 0:  # brightness: x * f
        x.mul_(f).clamp_(0.0, 1.0)
    elif op == 1:  # contrast: blend with the mean luma of the image, x * f + mean * (1 - f)
        mean = _grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
        torch.addcmul(mean.mul_(1.0 - f), x, f, out=x).clamp_(0.0, 1.0)
    elif op == 2:  # saturation: blend with the per-pixel luma
        torch.addcmul(_grayscale(x).mul_(1.0 - f), x, f, out=x).clamp_(0.0, 1.0)
    else:  # hue
        _adjust_hue_(x, factor)


def _blur(x: torch.Tensor, taps: torch.Tensor) -> None:
    """Gaussian blur in place: x (n, 3, H, W), taps (n, K) per sample; reflect padding, as F.gaussian_blur."""
    n, c, height, width = x.shape
    k = taps.shape[1]
    p = k // 2
    padded = F.pad(x, (p, p, p, p), mode="reflect").view(1, n * c, height + 2 * p, width + 2 * p)
    if x.device.type == "cpu":  # oneDNN's depthwise conv is ~4x faster on channels-last input
        padded = padded.contiguous(memory_format=torch.channels_last)
    weight = taps.repeat_interleave(c, 0)  # (n * c, K): the same taps for the 3 channels of a sample
    cudnn_benchmark = torch.backends.cudnn.benchmark
    # the group count changes every batch: autotuning each new shape would cost more than it saves
    torch.backends.cudnn.benchmark = False
    try:
        out = F.conv2d(padded, weight.view(n * c, 1, 1, k), groups=n * c)  # along W
        out = F.conv2d(out, weight.view(n * c, 1, k, 1), groups=n * c)  # along H
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark
    x.copy_(out.view(n, c, height, width))


class _Order:
    """Which original sample sits at each position of the permuted batch (CPU bookkeeping, no pixels)."""

    def __init__(self, n: int) -> None:
        self.pos_to_orig = np.arange(n)

    def group_by(self, key: np.ndarray) -> Tuple[Optional[np.ndarray], List[Tuple[int, int, int]]]:
        """Make samples with equal ``key`` (int (N,), original order) contiguous.

        Returns the gather index to apply to the current batch (None when already grouped) and the runs
        (value, start, end) in the new order.
        """
        current = key[self.pos_to_orig]
        runs = _runs(current)
        values = [r[0] for r in runs]
        if len(set(values)) == len(values):  # every value already forms one run
            return None, runs
        gather = np.argsort(current, kind="stable")
        self.pos_to_orig = self.pos_to_orig[gather]
        return gather, _runs(current[gather])

    def restore(self) -> Optional[np.ndarray]:
        """Gather index back to the original order (None when already there)."""
        if np.array_equal(self.pos_to_orig, np.arange(self.pos_to_orig.size)):
            return None
        return np.argsort(self.pos_to_orig)

    def originals(self, start: int, end: int) -> np.ndarray:
        """Original indices of the samples at positions start..end-1."""
        return self.pos_to_orig[start:end]


def _runs(values: np.ndarray) -> List[Tuple[int, int, int]]:
    """Maximal runs of equal values: [(value, start, end)]."""
    if values.size == 0:
        return []
    cuts = (np.flatnonzero(values[1:] != values[:-1]) + 1).tolist()
    starts = [0] + cuts
    ends = cuts + [int(values.size)]
    return list(zip(values[starts].tolist(), starts, ends))


class _Pack:
    """Collects small CPU arrays and ships them to the device in one copy."""

    def __init__(self, dtype: Any) -> None:
        self.dtype, self.parts, self.size = dtype, [], 0  # type: Any, List[np.ndarray], int

    def add(self, array: np.ndarray) -> Tuple[int, Tuple[int, ...]]:
        """Queue ``array``; returns a handle for ``get``."""
        a = np.asarray(array, dtype=self.dtype)
        handle = (self.size, tuple(a.shape))
        self.parts.append(a.reshape(-1))
        self.size += a.size
        return handle

    def send(self, device: torch.device) -> torch.Tensor:
        """All queued arrays, concatenated, as one tensor on ``device``."""
        data = np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=self.dtype)
        return torch.from_numpy(data).to(device, non_blocking=True)

    @staticmethod
    def get(packed: torch.Tensor, handle: Tuple[int, Tuple[int, ...]]) -> torch.Tensor:
        """The array queued under ``handle``, as a view of the device copy."""
        start, shape = handle
        numel = int(np.prod(shape)) if shape else 1
        return packed.narrow(0, start, numel).view(shape)


_DEVICE_CONSTANTS = {}  # type: Dict[Tuple[str, str], torch.Tensor]


def _constant(name: str, device: torch.device) -> torch.Tensor:
    """Small constant tensors, copied to each device once."""
    key = (name, str(device))
    if key not in _DEVICE_CONSTANTS:
        if name == "hue_rgb":  # offset, slope, intercept per channel of the saturated colour of a hue
            value = torch.tensor([[3.0, 2.0, 4.0], [1.0, -1.0, -1.0], [-1.0, 2.0, 2.0]]).view(3, 1, 3, 1, 1)
        else:  # "normalise": x * (1 / std) + (-mean / std)
            mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)
            std = torch.tensor(IMAGENET_STD, dtype=torch.float32)
            value = torch.stack([1.0 / std, -mean / std]).view(2, 1, 3, 1, 1)
        _DEVICE_CONSTANTS[key] = value.to(device)
    return _DEVICE_CONSTANTS[key]


def _params_as_numpy(params: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """One view's parameter dict (tensors or arrays) as numpy arrays."""
    return {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)) for k, v in params.items()}


def _plan_crops(params: Dict[str, np.ndarray], batch: int, height: int, width: int, size: int, ints: "_Pack",
                floats: "_Pack") -> Dict[str, Any]:
    """The crop windows on the CPU: for every sample the rows it reads and its box, packed for the device."""
    top, left, h, w = params["crop"].T
    if (top < 0).any() or (left < 0).any() or (h < 1).any() or (w < 1).any() or (top + h > height).any() \
            or (left + w > width).any():
        raise ValueError("crop boxes outside the {}x{} images".format(height, width))
    n = params["crop"].shape[0]
    # each sample reads a window of rows as tall as the group's tallest crop (all columns: gathering whole rows
    # is a plain row copy, while a 2-d window gather costs more than the matmul it saves)
    win_h = int(h.max())
    win_top = np.minimum(top, height - win_h)
    sample = np.arange(n) % batch  # which image each view-sample is cut from
    rows = (sample * height + win_top)[:, None] + np.arange(win_h)[None, :]  # rows of the (B*H, 3*W) image
    return {"win_h": win_h, "rows": ints.add(rows), "flip": ints.add(params["flip"]),
            "box": floats.add(np.stack([top, h, win_top, left, w, np.zeros_like(left)], 1)),
            "taps_y": resample_taps(win_h, size), "taps_x": resample_taps(int(w.max()), size)}


def _plan_ops(params: Dict[str, np.ndarray], size: int, ints: "_Pack", floats: "_Pack"
              ) -> Tuple[List[Tuple[str, Any]], Optional[Tuple[int, Tuple[int, ...]]]]:
    """The colour, grayscale, blur and solarize steps on the CPU: which samples each touches, in which order
    (the batch is permuted so each subset is a contiguous slice), and the gather that restores the order."""
    n = params["crop"].shape[0]
    order = _Order(n)
    steps = []  # type: List[Tuple[str, Any]]

    def regroup(key: np.ndarray) -> List[Tuple[int, int, int]]:
        gather, runs = order.group_by(key)
        if gather is not None:
            steps.append(("gather", ints.add(gather)))
        return runs

    rows_n = np.arange(n)
    for position in range(4):
        op = params["order"][:, position]
        factor = params["factors"][rows_n, op]
        # a neutral factor is skipped, as ColorJitter (and apply_view) skip it
        active = params["jitter"] & (factor != np.array(_NEUTRAL)[op])
        if not active.any():
            continue
        for value, start, end in regroup(np.where(active, op, len(JITTER_OPS))):
            if value < len(JITTER_OPS):
                steps.append(("jitter", (value, start, end, floats.add(factor[order.originals(start, end)]))))

    if params["gray"].any():
        for value, start, end in regroup((~params["gray"]).astype(np.int64)):
            if value == 0:
                steps.append(("gray", (start, end)))

    ksize = batched_blur_kernel_sizes(params["sigma"], size)
    blur = params["blur"] & (ksize > 1)  # a 1-tap kernel is the identity
    if blur.any():
        for value, start, end in regroup(np.where(blur, ksize, 0)):
            if value > 1:
                taps = gaussian_taps(params["sigma"][order.originals(start, end)], value)
                # round the run up to a multiple of 4 samples, the extra ones with an identity kernel (they come
                # out bit-identical): fewer distinct conv shapes, each of which costs oneDNN a new primitive
                length = min(n, -(-(end - start) // 4) * 4)
                first = max(0, min(start, n - length))
                padded = np.zeros((length, value))
                padded[:, value // 2] = 1.0
                padded[start - first:end - first] = taps
                steps.append(("blur", (first, first + length, floats.add(padded))))

    if params["solarize"].any():
        for value, start, end in regroup((~params["solarize"]).astype(np.int64)):
            if value == 0:
                threshold = params["solarize_threshold"][order.originals(start, end)]
                steps.append(("solarize", (start, end, floats.add(threshold))))
    restore = order.restore()
    return steps, (ints.add(restore) if restore is not None else None)


def _crop_resize(images: torch.Tensor, plan: Dict[str, Any], size: int, n: int, get_i: Any, get_f: Any,
                 workspace: "_Workspace") -> torch.Tensor:
    """Crop + resize (+ flip, / 255) of every sample as two batched matmuls; float32 (N, 3, size, size) in [0, 1]."""
    device = images.device
    batch, _, height, width = images.shape
    win_h = plan["win_h"]
    # rows of every image as (B * H, 3 * W): a window of win_h rows is then one index_select of whole rows
    image_rows = images.permute(0, 2, 1, 3).reshape(batch * height, 3 * width)
    window = workspace.get("window", (n, win_h * 3, width), device)
    window.copy_(image_rows.index_select(0, get_i(plan["rows"]).view(-1)).view(n, win_h * 3, width))  # to float32
    box = get_f(plan["box"])
    wy = resample_weights(box[:, 0], box[:, 1], box[:, 2], win_h, size, plan["taps_y"])  # (N, size, win_h)
    wx = resample_weights(box[:, 3], box[:, 4], box[:, 5], width, size, plan["taps_x"],
                          flip=get_i(plan["flip"]).bool())
    if images.dtype == torch.uint8:
        wy = wy * (1.0 / 255.0)
    along_w = workspace.get("along_w", (n, win_h * 3, size), device)
    torch.bmm(window, wx.transpose(1, 2), out=along_w)
    along_h = workspace.get("along_h", (n, size, 3 * size), device)
    torch.bmm(wy, along_w.view(n, win_h, 3 * size), out=along_h)  # (N, size, 3 * size), i.e. (N, H, C, W)
    # back to (N, C, H, W) and clamp (bicubic overshoots) in one pass
    x = workspace.get("x0", (n, 3, size, size), device)
    torch.clamp(along_h.view(n, size, 3, size).permute(0, 2, 1, 3), 0.0, 1.0, out=x)
    return x


def _apply_group(images: torch.Tensor, size: int, views: Sequence[Dict[str, np.ndarray]],
                 workspace: "_Workspace") -> torch.Tensor:
    """All views of one output size: (V * B, 3, size, size) float32 normalised, view-major."""
    device = images.device
    params = {key: np.concatenate([v[key] for v in views]) for key in views[0]}
    n = params["crop"].shape[0]
    ints, floats = _Pack(np.int64), _Pack(np.float32)
    # plan on the CPU, then two copies of the plan to the device, then tensor ops only (no host sync)
    plan = _plan_crops(params, images.shape[0], images.shape[2], images.shape[3], size, ints, floats)
    steps, h_restore = _plan_ops(params, size, ints, floats)
    int_data, float_data = ints.send(device), floats.send(device)

    def get_i(handle: Tuple[int, Tuple[int, ...]]) -> torch.Tensor:
        return _Pack.get(int_data, handle)

    def get_f(handle: Tuple[int, Tuple[int, ...]]) -> torch.Tensor:
        return _Pack.get(float_data, handle)

    x = _crop_resize(images, plan, size, n, get_i, get_f, workspace)
    buffers = ["x0", "x1"]  # gathers alternate between two buffers
    for kind, arg in steps:
        if kind == "gather":
            buffers.reverse()
            x = torch.index_select(x, 0, get_i(arg), out=workspace.get(buffers[0], x.shape, device))
        elif kind == "jitter":
            op, start, end, h_factor = arg
            _jitter_op(x[start:end], op, get_f(h_factor))
        elif kind == "gray":
            start, end = arg
            part = x[start:end]
            part.copy_(_grayscale(part).expand_as(part))
        elif kind == "blur":
            start, end, h_taps = arg
            _blur(x[start:end], get_f(h_taps))
        else:  # solarize: invert pixels at or above the threshold
            start, end, h_threshold = arg
            part = x[start:end]
            threshold = get_f(h_threshold).view(-1, 1, 1, 1)
            part.copy_(torch.where(part >= threshold, 1.0 - part, part))
    if h_restore is not None:
        buffers.reverse()
        x = torch.index_select(x, 0, get_i(h_restore), out=workspace.get(buffers[0], x.shape, device))
    norm = _constant("normalise", device)  # (x - mean) / std as one fused x * (1 / std) + (-mean / std)
    return torch.addcmul(norm[1], x, norm[0])  # a fresh tensor: the workspace is reused by the next call


class BatchedMultiCrop:
    """DINO multi-crop of a uint8 batch on its own device: 2 global + ``num_local`` local float32 views."""

    def __init__(self, global_size: int = 128, local_size: int = 64, num_local: int = 6,
                 global_scale: Tuple[float, float] = (0.14, 1.0),
                 local_scale: Tuple[float, float] = (0.05, 0.14),
                 generator: Optional[torch.Generator] = None) -> None:
        """Views follow ``dino_view_specs``; randomness comes from ``generator`` (a CPU generator), or torch's
        global RNG when None."""
        if generator is not None and generator.device.type != "cpu":
            raise ValueError("the generator must be a CPU generator (parameters are drawn on the CPU so views do "
                             "not depend on the device), got one on {}".format(generator.device))
        self.specs = dino_view_specs(global_size, local_size, num_local, global_scale, local_scale)
        self.generator = generator
        self._workspace = _Workspace()

    def sample_params(self, batch_size: int, height: int, width: int) -> List[Dict[str, torch.Tensor]]:
        """Per-view parameter dicts (see ``batched_params_from_uniforms``), one (B, NUM_UNIFORMS) draw per view."""
        out = []
        for spec in self.specs:
            u = torch.rand(batch_size, NUM_UNIFORMS, generator=self.generator, dtype=torch.float64)
            out.append(batched_params_from_uniforms(spec, height, width, u))
        return out

    def apply(self, images: torch.Tensor, params: Sequence[Dict[str, Any]]) -> List[torch.Tensor]:
        """Views of ``images`` for given per-view parameters (e.g. from ``sample_params``)."""
        with torch.no_grad():
            images = _check_batch(images)
            if len(params) != len(self.specs):
                raise ValueError("need parameters for {} views, got {}".format(len(self.specs), len(params)))
            batch = images.shape[0]
            params_np = [_params_as_numpy(p) for p in params]
            for p in params_np:
                if p["crop"].shape != (batch, 4):
                    raise ValueError("crop parameters of shape {} for a batch of {}".format(p["crop"].shape, batch))
            out = [None] * len(self.specs)  # type: List[Optional[torch.Tensor]]
            by_size = {}  # type: Dict[int, List[int]]
            for index, spec in enumerate(self.specs):
                by_size.setdefault(spec.size, []).append(index)
            for size, indices in by_size.items():  # e.g. the 2 global views together, the 6 local views together
                # float32 whatever the caller's autocast (bf16 matmuls would cost the resize ~3 significant digits)
                with torch.autocast(device_type=images.device.type, enabled=False):
                    views = _apply_group(images, size, [params_np[i] for i in indices], self._workspace)
                for index, view in zip(indices, views.view(len(indices), batch, 3, size, size).unbind(0)):
                    out[index] = view
            return out  # type: ignore[return-value]

    def __call__(self, images: torch.Tensor) -> List[torch.Tensor]:
        """uint8 (B, 3, H, W) on any device -> [global1, global2, local1, ...] float32 (B, 3, size, size)."""
        images = _check_batch(images)
        params = self.sample_params(images.shape[0], images.shape[-2], images.shape[-1])
        return self.apply(images, params)

    def __repr__(self) -> str:
        """Sizes and view count, for logs."""
        return "{}(views={}, global_size={}, local_size={})".format(
            type(self).__name__, len(self.specs), self.specs[0].size,
            self.specs[2].size if len(self.specs) > 2 else None)


def _check_batch(images: torch.Tensor) -> torch.Tensor:
    """A (B, 3, H, W) uint8 (or float in [0, 1]) plain tensor, or a clear error."""
    if not isinstance(images, torch.Tensor):
        raise TypeError("expected a (B, 3, H, W) tensor, got {}".format(type(images).__name__))
    images = images.as_subclass(torch.Tensor)
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] < 1:
        raise ValueError("expected a (B, 3, H, W) image batch, got shape {}".format(tuple(images.shape)))
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError("expected uint8 (or float in [0, 1]) images, got {}".format(images.dtype))
    return images
