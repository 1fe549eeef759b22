"""DINO multi-crop augmentation (facebookresearch/dino ``DataAugmentationDINO``), sizes as arguments.

Two global views (area 14-100 %) and ``num_local`` local views (area 5-14 %) of each image, each
with flip, colour jitter, grayscale, Gaussian blur and (second global view only) solarization, then ImageNet
normalisation. The work is split in two steps so the random distributions can be tested, and reused by a batched
GPU path later:

1. ``sample_view_params(spec, H, W, generator)`` draws explicit parameters (a plain dict of Python numbers);
2. ``apply_view(image, spec, params)`` applies them, on float [0, 1] pixels, with
   ``torchvision.transforms.v2.functional`` (hue excepted: ``adjust_hue`` here is the same map, 2-3x faster).

Run it with one intra-op thread (DataLoader workers already do): on these small tensors threading only adds
overhead, and on a busy machine OpenMP's spinning threads can make a call 100x slower. Speed: docs/performance.md.

Randomness: with ``seed=None`` every draw comes from torch's global RNG, so ``torch.manual_seed`` and DataLoader
worker seeding make runs reproducible. With an explicit seed the transform owns a ``torch.Generator``; inside a
DataLoader worker it is re-seeded from ``(seed, worker seed)`` so workers and epochs do not repeat each other.

Usage::

    aug = MultiCropAugmentation()            # 2 x (3, 128, 128) + 6 x (3, 64, 64) float32 views (--preset mini84's
                                             # sizes; the trainer passes its flags: 224 / 96 / 8 by default)
    views = aug(pil_image_or_uint8_chw)
"""
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.utils.data
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from utils.transforms import IMAGENET_MEAN, IMAGENET_STD

JITTER_OPS = ("brightness", "contrast", "saturation", "hue")  # torchvision ColorJitter's fn_idx 0..3

# Fixed layout of the uniforms drawn per view: every view consumes the same number of draws whatever gets
# applied, so one view's outcome never shifts the next view's randomness, and a batched sampler can draw a
# (views, NUM_UNIFORMS) block at once. The U_* offsets are public: utils/gpu_multicrop.py reads the same layout.
CROP_ATTEMPTS = 10  # torchvision RandomResizedCrop tries 10 times before its centre-crop fallback
U_AREA = 0
U_LOG_RATIO = U_AREA + CROP_ATTEMPTS
U_TOP = U_LOG_RATIO + CROP_ATTEMPTS
U_LEFT = U_TOP + 1
U_FLIP = U_LEFT + 1
U_JITTER = U_FLIP + 1
U_ORDER = U_JITTER + 1  # 4 sort keys -> a uniform random permutation of the jitter ops
U_FACTORS = U_ORDER + 4  # brightness, contrast, saturation, hue
U_GRAY = U_FACTORS + 4
U_BLUR = U_GRAY + 1
U_SIGMA = U_BLUR + 1
U_SOLARIZE = U_SIGMA + 1
NUM_UNIFORMS = U_SOLARIZE + 1

_MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
_HUE_CHANNEL_OFFSETS = torch.tensor([5.0, 3.0, 1.0]).view(3, 1, 1)  # HSV -> RGB: n for R, G, B

ImageLike = Union[Image.Image, torch.Tensor]


@dataclass(frozen=True)
class ViewSpec:
    """One view's recipe: output size, crop scale/ratio, per-op probabilities and strengths."""

    size: int
    scale: Tuple[float, float]
    ratio: Tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    p_flip: float = 0.5
    p_jitter: float = 0.8
    p_gray: float = 0.2
    p_blur: float = 0.5
    p_solarize: float = 0.0
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    blur_sigma: Tuple[float, float] = (0.1, 2.0)
    solarize_threshold: float = 0.5  # on [0, 1] images; PIL's ImageOps.solarize(threshold=128) on uint8
    name: str = "view"

    def __post_init__(self) -> None:
        """Reject recipes the sampler would silently mis-handle."""
        if self.size < 1:
            raise ValueError("{}: size must be >= 1, got {}".format(self.name, self.size))
        if not 0.0 < self.scale[0] <= self.scale[1]:
            raise ValueError("{}: scale must satisfy 0 < min <= max, got {}".format(self.name, self.scale))
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError("{}: ratio must satisfy 0 < min <= max, got {}".format(self.name, self.ratio))
        for field in ("p_flip", "p_jitter", "p_gray", "p_blur", "p_solarize"):
            p = getattr(self, field)
            if not 0.0 <= p <= 1.0:
                raise ValueError("{}: {} must be in [0, 1], got {}".format(self.name, field, p))
        if min(self.brightness, self.contrast, self.saturation) < 0.0 or self.brightness > 1.0 \
                or self.contrast > 1.0 or self.saturation > 1.0:
            # factors are drawn from [1 - x, 1 + x]; a negative factor has no meaning
            raise ValueError("{}: brightness/contrast/saturation must be in [0, 1]".format(self.name))
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError("{}: hue must be in [0, 0.5], got {}".format(self.name, self.hue))
        if not 0.0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValueError("{}: blur_sigma must satisfy 0 < min <= max".format(self.name))


def dino_view_specs(global_size: int = 128, local_size: int = 64, num_local: int = 6,
                    global_scale: Tuple[float, float] = (0.14, 1.0),
                    local_scale: Tuple[float, float] = (0.05, 0.14)) -> List[ViewSpec]:
    """DINO's views: global 1 (always blurred), global 2 (rarely blurred, sometimes solarized), then locals."""
    if num_local < 0:
        raise ValueError("num_local must be >= 0, got {}".format(num_local))
    specs = [
        ViewSpec(global_size, tuple(global_scale), p_blur=1.0, p_solarize=0.0, name="global1"),
        ViewSpec(global_size, tuple(global_scale), p_blur=0.1, p_solarize=0.2, name="global2"),
    ]
    specs += [ViewSpec(local_size, tuple(local_scale), p_blur=0.5, p_solarize=0.0, name="local")
              for _ in range(num_local)]
    return specs


def _crop_from_uniforms(spec: ViewSpec, height: int, width: int, u: Sequence[float]) -> Tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop algorithm driven by given uniforms: (top, left, h, w)."""
    area = height * width
    log_lo, log_hi = math.log(spec.ratio[0]), math.log(spec.ratio[1])
    for k in range(CROP_ATTEMPTS):
        target_area = area * (spec.scale[0] + (spec.scale[1] - spec.scale[0]) * u[U_AREA + k])
        aspect_ratio = math.exp(log_lo + (log_hi - log_lo) * u[U_LOG_RATIO + k])  # width / height
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            # floor(u * n) is uniform on 0..n-1, i.e. torch.randint(0, n); min() guards u rounding up to 1
            top = min(int(u[U_TOP] * (height - h + 1)), height - h)
            left = min(int(u[U_LEFT] * (width - w + 1)), width - w)
            return top, left, h, w
    # fallback, as torchvision: the largest centred crop whose aspect ratio lies within `ratio`
    in_ratio = float(width) / float(height)
    if in_ratio < spec.ratio[0]:
        w = width
        h = int(round(w / spec.ratio[0]))
    elif in_ratio > spec.ratio[1]:
        h = height
        w = int(round(h * spec.ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def params_from_uniforms(spec: ViewSpec, height: int, width: int, u: Sequence[float]) -> Dict[str, Any]:
    """Turn NUM_UNIFORMS numbers in [0, 1) into one view's parameters (see ``sample_view_params``)."""
    if len(u) < NUM_UNIFORMS:
        raise ValueError("need {} uniforms, got {}".format(NUM_UNIFORMS, len(u)))
    jitter = None
    if u[U_JITTER] < spec.p_jitter:
        # ColorJitter applies its four ops in a random order; argsort of i.i.d. uniforms is a uniform permutation
        order = sorted(range(4), key=lambda k: u[U_ORDER + k])
        b, c, s, h = (u[U_FACTORS + k] for k in range(4))
        jitter = {
            "order": [JITTER_OPS[k] for k in order],
            "brightness": 1.0 - spec.brightness + 2.0 * spec.brightness * b,
            "contrast": 1.0 - spec.contrast + 2.0 * spec.contrast * c,
            "saturation": 1.0 - spec.saturation + 2.0 * spec.saturation * s,
            "hue": -spec.hue + 2.0 * spec.hue * h,
        }
    blur_sigma = None
    if u[U_BLUR] < spec.p_blur:
        blur_sigma = spec.blur_sigma[0] + (spec.blur_sigma[1] - spec.blur_sigma[0]) * u[U_SIGMA]
    return {
        "crop": _crop_from_uniforms(spec, height, width, u),
        "flip": u[U_FLIP] < spec.p_flip,
        "jitter": jitter,
        "gray": u[U_GRAY] < spec.p_gray,
        "blur_sigma": blur_sigma,
        "solarize": u[U_SOLARIZE] < spec.p_solarize,
    }


def sample_view_params(spec: ViewSpec, height: int, width: int,
                       generator: Optional[torch.Generator] = None) -> Dict[str, Any]:
    """One view's random parameters for a ``height x width`` image; a None generator draws from torch's global RNG."""
    # Returns {"crop": (top, left, h, w), "flip": bool, "jitter": None or {"order": [op names], "brightness": f,
    # "contrast": f, "saturation": f, "hue": f}, "gray": bool, "blur_sigma": None or float, "solarize": bool}.
    # One RNG call per view keeps this cheap (~4 us); float64 so no probability is quantised to float32 steps.
    u = torch.rand(NUM_UNIFORMS, generator=generator, dtype=torch.float64).tolist()
    return params_from_uniforms(spec, height, width, u)


def adjust_hue(image: torch.Tensor, hue_factor: Union[float, torch.Tensor]) -> torch.Tensor:
    """``F.adjust_hue`` for float (..., 3, H, W) in [0, 1], equal to ~1e-6 and 2-3x faster on CPU."""
    # torchvision goes RGB -> HSV -> RGB through aminmax, remainder and gather, which made hue the largest CPU cost
    # of a view. A hue shift keeps V = max and chroma = max - min, and each channel is V - chroma * w with
    # w = clamp(min(k, 4 - k), 0, 1), k = (n + 6 * hue) mod 6, n = 5, 3, 1 for R, G, B: the same map in a dozen
    # elementwise ops. A tensor hue_factor of shape (..., 1, 1) gives one shift per image (for the batched path).
    r, g, b = image.unbind(-3)
    v = torch.maximum(torch.maximum(r, g), b)
    chroma = v - torch.minimum(torch.minimum(r, g), b)
    # grey pixels (chroma 0) have no hue; any value works because their output is v - 0 * w
    inv_chroma = chroma.reciprocal().nan_to_num_(0.0, 0.0, 0.0)
    # which channel holds the max decides the hue sector; ties resolve as torchvision's: R, then G, then B
    is_r = v == r
    is_g = (v == g) & ~is_r
    is_b = ~(is_r | is_g)
    # hue in sixths of a turn (masks multiply instead of torch.where, which is several times slower on CPU here)
    h = (is_r * (g - b) + is_g * (b - r) + is_b * (r - g)) * inv_chroma + is_g * 2.0 + is_b * 4.0
    h = h + hue_factor * 6.0
    h = h - torch.floor(h / 6.0) * 6.0  # wrap to [0, 6)
    k = h.unsqueeze(-3) + _HUE_CHANNEL_OFFSETS.to(image.device)  # (..., 3, H, W) in [1, 12]
    # min(k, 4 - k) with k taken mod 6: the branches for k and k - 6 are positive on disjoint ranges
    w = torch.maximum(torch.minimum(k, 4.0 - k), torch.minimum(k - 6.0, 10.0 - k)).clamp_(0.0, 1.0)
    return v.unsqueeze(-3) - chroma.unsqueeze(-3) * w


def blur_kernel_size(sigma: float, image_size: int) -> int:
    """Odd kernel covering +-3 sigma, capped at the image size (gaussian_blur's reflect padding needs < size)."""
    k = 2 * int(math.ceil(3.0 * sigma)) + 1
    cap = image_size if image_size % 2 == 1 else image_size - 1
    return max(1, min(k, cap))


def apply_view(image: torch.Tensor, spec: ViewSpec, params: Dict[str, Any]) -> torch.Tensor:
    """uint8 (or float in [0, 1]) (3, H, W) image -> normalised float32 (3, size, size) view, as ``params`` say."""
    top, left, h, w = params["crop"]
    height, width = image.shape[-2:]
    if top < 0 or left < 0 or h < 1 or w < 1 or top + h > height or left + w > width:
        raise ValueError("crop {} outside a {}x{} image".format(params["crop"], height, width))
    # slice before converting: only the crop's pixels are cast, never the whole image
    x = image[..., top:top + h, left:left + w]
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    x = F.resize(x, [spec.size, spec.size], interpolation=InterpolationMode.BICUBIC, antialias=True)
    # bicubic overshoots outside [0, 1]; clamp out of place so x is never a view of the caller's image
    x = x.clamp(0.0, 1.0)
    if params["flip"]:
        x = F.hflip(x)
    jitter = params["jitter"]
    if jitter is not None:
        for op in jitter["order"]:
            factor = jitter[op]
            # a neutral factor (strength 0 in the spec) is skipped, as torchvision's ColorJitter does
            if op == "brightness" and factor != 1.0:
                x = F.adjust_brightness(x, factor)
            elif op == "contrast" and factor != 1.0:
                x = F.adjust_contrast(x, factor)
            elif op == "saturation" and factor != 1.0:
                x = F.adjust_saturation(x, factor)
            elif op == "hue" and factor != 0.0:
                x = adjust_hue(x, factor)
    if params["gray"]:
        x = F.rgb_to_grayscale(x, num_output_channels=3)
    sigma = params["blur_sigma"]
    if sigma is not None:
        k = blur_kernel_size(sigma, min(x.shape[-2:]))
        x = F.gaussian_blur(x, [k, k], [sigma, sigma])
    if params["solarize"]:
        x = F.solarize(x, spec.solarize_threshold)
    mean, std = _MEAN, _STD
    if x.device != mean.device:
        mean, std = mean.to(x.device), std.to(x.device)
    return (x - mean).div_(std)


def to_uint8_chw(image: ImageLike) -> torch.Tensor:
    """PIL image (any mode) or uint8 (3, H, W) tensor -> plain uint8 (3, H, W) tensor."""
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            image = image.convert("RGB")
        # contiguous CHW: a permuted (channels-last) view would send every later op down slower kernels
        return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()
    if not isinstance(image, torch.Tensor):
        raise TypeError("expected a PIL image or a (3, H, W) tensor, got {}".format(type(image).__name__))
    # drop tv_tensors subclasses so every v2 op returns a plain tensor
    image = image.as_subclass(torch.Tensor)
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError("expected a (3, H, W) image tensor, got shape {}".format(tuple(image.shape)))
    if image.dtype != torch.uint8:
        raise ValueError("expected a uint8 image tensor, got {}".format(image.dtype))
    return image


class MultiCropAugmentation:
    """DINO multi-crop: 2 global + ``num_local`` local normalised float32 views of one image."""

    def __init__(self, global_size: int = 128, local_size: int = 64, num_local: int = 6,
                 global_scale: Tuple[float, float] = (0.14, 1.0),
                 local_scale: Tuple[float, float] = (0.05, 0.14), seed: Optional[int] = None) -> None:
        """Views follow ``dino_view_specs``; ``seed=None`` draws from torch's global RNG (see module docstring)."""
        if seed is not None and seed < 0:
            raise ValueError("seed must be >= 0 or None, got {}".format(seed))
        self.specs = dino_view_specs(global_size, local_size, num_local, global_scale, local_scale)
        self.seed = seed
        self._generator = None  # type: Optional[torch.Generator]
        self._worker_seed = None  # type: Optional[int]

    def _get_generator(self) -> Optional[torch.Generator]:
        """None (global RNG) without a seed; else this process's generator, re-seeded once per DataLoader worker."""
        if self.seed is None:
            return None
        info = torch.utils.data.get_worker_info()
        worker_seed = None if info is None else int(info.seed)
        # every worker (re-created each epoch unless persistent) gets a copy of this object; without re-seeding
        # from the worker's own seed they would all replay the same stream
        if self._generator is None or worker_seed != self._worker_seed:
            seed = self.seed
            if worker_seed is not None:
                # SeedSequence mixes (seed, worker seed) into unrelated streams, identically on every platform
                seed = int(np.random.SeedSequence([self.seed, worker_seed]).generate_state(1, np.uint64)[0]) >> 1
            self._generator = torch.Generator().manual_seed(seed)
            self._worker_seed = worker_seed
        return self._generator

    def sample_params(self, height: int, width: int) -> List[Dict[str, Any]]:
        """Parameters for every view of one ``height x width`` image, from this transform's RNG."""
        generator = self._get_generator()
        return [sample_view_params(spec, height, width, generator) for spec in self.specs]

    def __call__(self, image: ImageLike) -> List[torch.Tensor]:
        """PIL image or uint8 (3, H, W) tensor -> [global1, global2, local1, ...] float32 (3, size, size)."""
        image = to_uint8_chw(image)
        height, width = image.shape[-2:]
        params = self.sample_params(height, width)
        return [apply_view(image, spec, p) for spec, p in zip(self.specs, params)]

    def __getstate__(self) -> Dict[str, Any]:
        """Pickle the generator's state, not the generator (spawned DataLoader workers pickle the dataset)."""
        state = self.__dict__.copy()
        if self._generator is not None:
            state["_generator"] = self._generator.get_state()
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        """Rebuild the generator from its pickled state."""
        generator_state = state.pop("_generator")
        self.__dict__.update(state)
        self._generator = None
        if generator_state is not None:
            self._generator = torch.Generator()
            self._generator.set_state(generator_state)

    def __repr__(self) -> str:
        """Sizes and view count, for logs."""
        return "{}(views={}, global_size={}, local_size={}, seed={})".format(
            type(self).__name__, len(self.specs), self.specs[0].size,
            self.specs[2].size if len(self.specs) > 2 else None, self.seed)
