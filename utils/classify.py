"""The problem-1 classifier (a ResNet + an MLP head) and its checkpoints: one model, one loader and one evaluation
path for fine-tuning, t-SNE and grading."""
import math
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from utils.checkpoint import load_model
from utils.models import build_resnet_backbone
from utils.precision import autocast
from utils.transforms import IMAGENET_MEAN, IMAGENET_STD, classify_eval_transform, normalize

CLASSIFIER_KIND = "p1_classifier"


class ImageClassifier(nn.Module):
    """ResNet backbone (fc = identity) + MLP head: Linear -> BatchNorm -> ReLU -> Dropout -> Linear.

    ``penultimate(x)`` returns the input of the final linear layer (the report's t-SNE features).
    """

    def __init__(self, arch: str = "resnet50", num_classes: int = 65, hidden_dim: int = 1024,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.backbone = build_resnet_backbone(arch)
        feature_dim = self.backbone.feature_dim
        if hidden_dim > 0:
            self.head = nn.Sequential(nn.Linear(feature_dim, hidden_dim), nn.BatchNorm1d(hidden_dim),
                                      nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden_dim, num_classes))
        else:  # a linear probe
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))

    def penultimate(self, x: Tensor) -> Tensor:
        """Features entering the final linear layer, (B, hidden_dim or feature_dim)."""
        return self.head[:-1](self.backbone(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def build_classifier(config: Mapping[str, Any]) -> ImageClassifier:
    """The problem-1 classifier from its config: arch, num_classes, hidden_dim, dropout (random weights)."""
    return ImageClassifier(config.get("arch", "resnet50"), int(config.get("num_classes", 65)),
                           int(config.get("hidden_dim", 1024)), float(config.get("dropout", 0.5)))


def load_classifier(path: Union[str, Path], device: torch.device) -> Tuple[ImageClassifier, Dict[str, Any]]:
    """Rebuild a classifier from one of our checkpoints alone; returns (model in eval mode, checkpoint). The
    evaluation size and normalisation it stores are checked first: a degenerate one would classify every image
    alike."""
    model, ckpt = load_model(path, CLASSIFIER_KIND, build_classifier, device)
    check_eval_settings(ckpt, path)
    return model, ckpt


def check_eval_settings(ckpt: Dict[str, Any], path: Union[str, Path]) -> None:
    """A ValueError naming the file unless image_size is an integer in 8..4096 and mean/std are 3 finite numbers
    with std > 0 (entries a checkpoint may lack fall back to 128 and ImageNet's)."""
    size = ckpt.get("image_size", 128)
    if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 4096:
        raise ValueError("checkpoint {} has an invalid image_size {!r} (an integer in 8..4096 is expected)".format(
            path, size))
    for name, default in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
        value = ckpt.get(name, default)
        ok = isinstance(value, (list, tuple)) and len(value) == 3 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        if not ok or (name == "std" and min(value) <= 0):
            raise ValueError("checkpoint {} has an invalid normalisation {} {!r} (3 finite numbers{} expected)"
                             .format(path, name, value, ", all > 0," if name == "std" else ""))


def eval_transform_for(ckpt: Dict[str, Any]):
    """The evaluation transform the checkpoint was validated with (short-side resize + centre crop)."""
    return classify_eval_transform(int(ckpt.get("image_size", 128)))


def _prepare(images: torch.Tensor, ckpt: Optional[Dict[str, Any]]) -> torch.Tensor:
    mean = ckpt.get("mean", IMAGENET_MEAN) if ckpt else IMAGENET_MEAN
    std = ckpt.get("std", IMAGENET_STD) if ckpt else IMAGENET_STD
    x = normalize(images, mean, std)
    if x.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def classify(model: ImageClassifier, images: torch.Tensor, ckpt: Optional[Dict[str, Any]] = None,
             amp_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Images (B, 3, S, S) in [0, 255] (uint8 or float) on the model's device -> float32 logits (B, num_classes)."""
    with torch.no_grad():
        with autocast(images.device, amp_dtype):
            return model(_prepare(images, ckpt)).float()


def penultimate_features(model: ImageClassifier, images: torch.Tensor, ckpt: Optional[Dict[str, Any]] = None,
                         amp_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Images (B, 3, S, S) in [0, 255] -> float32 inputs of the final linear layer (the t-SNE features)."""
    with torch.no_grad():
        with autocast(images.device, amp_dtype):
            return model.penultimate(_prepare(images, ckpt)).float()
