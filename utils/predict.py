"""Segmentation prediction shared by training snapshots, ``p2_inference.py`` and ``p2_sam.py``."""
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from utils.checkpoint import load_model
from utils.precision import autocast
from utils.models import build_seg_model, input_multiple
from utils.transforms import normalize

SEG_KIND = "p2_segmentation"


def load_segmenter(path: Union[str, Path], device: torch.device) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """Rebuild a segmentation model from one of our checkpoints alone (no flags, no download)."""
    model, ckpt = load_model(path, SEG_KIND, lambda config: build_seg_model(dict(config, backbone_weights="none")),
                             device)
    if getattr(model, "aux_classifier", None) is not None:  # DeepLab's training-only head: ~4% of the FLOPs
        model.aux_classifier = None
        model.backbone.return_aux = False
    return model, ckpt


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (B, C, H, W) on the bottom/right so H and W are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def scaled_size(height: int, width: int, scale: float) -> Tuple[int, int]:
    """The (H, W) a test-time scale resizes to: each side times ``scale``, rounded half up, at least 1."""
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def resize_bilinear(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of float (B, C, H, W) to ``size`` (align_corners False), antialiased when shrinking."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def _forward_probs(model: torch.nn.Module, x: torch.Tensor, config: Mapping[str, Any],
                   amp_dtype: Optional[torch.dtype]) -> torch.Tensor:
    """Normalised float (B, 3, H, W) -> softmax probabilities (B, C, H, W) in float32 (padding cropped off)."""
    h, w = x.shape[-2:]
    x = _pad_to_multiple(x, input_multiple(config))
    if x.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(x.device, amp_dtype):
        logits = model(x)["out"]
    return logits.float().softmax(1)[..., :h, :w]


def predict_probs(model: torch.nn.Module, images: torch.Tensor, config: Mapping[str, Any],
                  amp_dtype: Optional[torch.dtype] = None, tta: bool = False,
                  scales: Sequence[float] = (1.0,)) -> torch.Tensor:
    """uint8 (B, 3, H, W) on the model's device -> float class probabilities (B, C, H, W).

    Test-time augmentation averages probabilities over every view: each scale in ``scales`` (the normalised
    image resized bilinearly to ``scaled_size``, its probabilities resized back to H x W) and, with ``tta``,
    each scale's horizontal flip too. The default (no flip, scale 1) is a single plain forward pass.
    """
    with torch.no_grad():
        if not scales:
            raise ValueError("scales must name at least one test-time scale")
        h, w = images.shape[-2:]
        x = normalize(images)
        flips = (False, True) if tta else (False,)
        total = None  # type: Optional[torch.Tensor]
        for scale in scales:
            xs = resize_bilinear(x, scaled_size(h, w, scale))
            for flip in flips:
                probs = _forward_probs(model, xs.flip(-1) if flip else xs, config, amp_dtype)
                probs = resize_bilinear(probs.flip(-1) if flip else probs, (h, w))
                total = probs if total is None else total + probs
        return total / (len(scales) * len(flips))


def predict_ensemble(members: Sequence[Tuple[torch.nn.Module, Mapping[str, Any]]], images: torch.Tensor,
                     amp_dtype: Optional[torch.dtype] = None, tta: bool = False,
                     scales: Sequence[float] = (1.0,)) -> torch.Tensor:
    """Mean of ``predict_probs`` over several (model, config) pairs: a checkpoint ensemble, (B, C, H, W)."""
    with torch.no_grad():
        total = None  # type: Optional[torch.Tensor]
        for model, config in members:
            probs = predict_probs(model, images, config, amp_dtype, tta, scales)
            if total is not None and probs.shape != total.shape:
                raise ValueError("ensemble members disagree on the number of classes: {} vs {}".format(
                    probs.shape[1], total.shape[1]))
            total = probs if total is None else total + probs
        return total / len(members)


def tile_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Offsets of the fewest ``tile``-long windows that cover 0..length with neighbours sharing >= ``overlap``
    pixels, spread evenly: the first at 0, the last ending at ``length``; [0] when one window covers it all."""
    if length <= tile:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError("tile overlap must lie in 0..{} for tiles of {}, got {}".format(tile - 1, tile, overlap))
    count = math.ceil((length - tile) / (tile - overlap)) + 1
    return [(i * (length - tile) + (count - 1) // 2) // (count - 1) for i in range(count)]


def predict_tiled(members: Sequence[Tuple[torch.nn.Module, Mapping[str, Any]]], image: torch.Tensor,
                  amp_dtype: Optional[torch.dtype], tta: bool, scales: Sequence[float], tile: int,
                  overlap: int) -> torch.Tensor:
    """uint8 (1, 3, H, W) -> uint8 class map (H, W), on the image's device, from overlapping windows of at most
    ``tile`` x ``tile`` (``tile_starts``): each window is one ``predict_ensemble`` call, and where windows overlap
    their class probabilities are averaged before the argmax.

    Memory does not grow with the image's area: one window's forward pass plus the probabilities of one band of
    window rows (classes x ``tile`` x W), finished into the class map as soon as no further window reaches them.
    A ``tile`` at least as large as the image is one window: exactly ``predict_ensemble(...).argmax(1)``.
    """
    with torch.no_grad():
        if image.dim() != 4 or image.shape[0] != 1:
            raise ValueError("predict_tiled takes one image (1, 3, H, W), got shape {}".format(tuple(image.shape)))
        h, w = image.shape[-2:]
        out = torch.empty((h, w), dtype=torch.uint8, device=image.device)
        top, total, count = 0, None, None  # rows [top, top + len(count)): summed probabilities, windows per pixel

        def finish(rows: int) -> None:
            nonlocal top, total, count
            if rows > 0:  # (the first window's rows are 0: nothing summed yet)
                out[top:top + rows] = (total[:, :rows] / count[:rows]).argmax(0).to(torch.uint8)
                total, count, top = total[:, rows:], count[rows:], top + rows

        for y in tile_starts(h, tile, overlap):
            finish(y - top)  # no later window reaches above y
            bottom = min(y + tile, h)
            for x in tile_starts(w, tile, overlap):
                right = min(x + tile, w)
                probs = predict_ensemble(members, image[..., y:bottom, x:right], amp_dtype, tta, scales)[0]
                if total is None:
                    total = probs.new_zeros((probs.shape[0], 0, w))
                    count = probs.new_zeros((0, w))
                grow = bottom - (top + count.shape[0])
                if grow > 0:
                    total = torch.cat([total, total.new_zeros((total.shape[0], grow, w))], dim=1)
                    count = torch.cat([count, count.new_zeros((grow, w))], dim=0)
                total[:, y - top:bottom - top, x:right] += probs
                count[y - top:bottom - top, x:right] += 1
        finish(h - top)
        return out


def predict_classes(model: torch.nn.Module, images: torch.Tensor, config: Mapping[str, Any],
                    amp_dtype: Optional[torch.dtype] = None, tta: bool = False,
                    scales: Sequence[float] = (1.0,)) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> int64 class map (B, H, W) on the same device."""
    return predict_probs(model, images, config, amp_dtype, tta, scales).argmax(1)
