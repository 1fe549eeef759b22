"""Segmentation prediction shared by training snapshots, ``p2_inference.py`` and ``p2_sam.py``."""
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from utils.checkpoint import load_model
from utils.precision import autocast
from utils.models import build_seg_model, input_multiple
from utils.transforms import normalize

SEG_KIND = "p2_segmentation"


def load_segmenter(path: Union[str, Path], device: torch.device) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """Rebuild a segmentation model from one of our checkpoints alone (no flags, no download)."""
    return load_model(path, SEG_KIND, lambda config: build_seg_model(dict(config, backbone_weights="none")), device)


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad (B, C, H, W) on the bottom/right so H and W are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: torch.Tensor, config: Dict[str, Any],
                   amp_dtype: Optional[torch.dtype] = None, tta: bool = False) -> torch.Tensor:
    """uint8 (B, 3, H, W) on the model's device -> float class probabilities (B, C, H, W)."""
    device = images.device
    h, w = images.shape[-2:]
    x = _pad_to_multiple(normalize(images), input_multiple(config))
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(device, amp_dtype):
        probs = model(x)["out"].float().softmax(1)
        if tta:  # horizontal-flip test-time augmentation: average the two views' probabilities
            probs = probs + model(x.flip(-1))["out"].float().softmax(1).flip(-1)
    return probs[..., :h, :w]


def predict_classes(model: torch.nn.Module, images: torch.Tensor, config: Dict[str, Any],
                    amp_dtype: Optional[torch.dtype] = None, tta: bool = False) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> int64 class map (B, H, W) on the same device."""
    return predict_logits(model, images, config, amp_dtype, tta).argmax(1)
