"""Segmentation prediction shared by training snapshots, ``p2_inference.py`` and ``p2_sam.py``."""
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

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


def predict_classes(model: torch.nn.Module, images: torch.Tensor, config: Mapping[str, Any],
                    amp_dtype: Optional[torch.dtype] = None, tta: bool = False,
                    scales: Sequence[float] = (1.0,)) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> int64 class map (B, H, W) on the same device."""
    return predict_probs(model, images, config, amp_dtype, tta, scales).argmax(1)
