"""Problem-1 classifier checkpoints: one loader and one evaluation path for fine-tuning, t-SNE and grading."""
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch

from utils.checkpoint import load_checkpoint
from utils.misc import autocast
from utils.models import ImageClassifier, build_classifier
from utils.transforms import IMAGENET_MEAN, IMAGENET_STD, classify_eval_transform, normalize

CLASSIFIER_KIND = "p1_classifier"


def load_classifier(path: Union[str, Path], device: torch.device) -> Tuple[ImageClassifier, Dict[str, Any]]:
    """Rebuild a classifier from one of our checkpoints alone; returns (model in eval mode, checkpoint)."""
    ckpt = load_checkpoint(path, expected_kind=CLASSIFIER_KIND)
    model = build_classifier(ckpt["model_config"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ValueError("checkpoint {} does not fit the classifier it describes ({}): {}".format(
            path, ckpt["model_config"], str(exc).splitlines()[0])) from None
    model.to(device).eval()
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model, ckpt


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


@torch.no_grad()
def classify(model: ImageClassifier, images: torch.Tensor, ckpt: Optional[Dict[str, Any]] = None,
             amp_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Images (B, 3, S, S) in [0, 255] (uint8 or float) on the model's device -> float32 logits (B, num_classes)."""
    with autocast(images.device, amp_dtype):
        return model(_prepare(images, ckpt)).float()


@torch.no_grad()
def penultimate_features(model: ImageClassifier, images: torch.Tensor, ckpt: Optional[Dict[str, Any]] = None,
                         amp_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Images (B, 3, S, S) in [0, 255] -> float32 inputs of the final linear layer (the t-SNE features)."""
    with autocast(images.device, amp_dtype):
        return model.penultimate(_prepare(images, ckpt)).float()
