"""Segmentation models: U-Nets (classic, or on a torchvision ResNet encoder), DeepLabV3 and DeepLabV3+
(ResNet-50/101, output stride 8 or 16) and VGG16-FCN32s.

Every model returns ``{"out": logits}`` of shape (B, num_classes, H, W) (DeepLabV3/V3+ with ``aux_loss``
also return ``"aux"``), so training, evaluation and inference share one output contract. Build models
through ``build_seg_model(config)`` so that a checkpoint's saved config rebuilds the same network.

Nothing here touches the network unless the caller explicitly asks for ``"imagenet"`` or ``"coco"`` weights
(``"coco"`` is read from the torch hub cache when the file is there); any other ``backbone_weights`` value
than ``"none"`` is a local file path, and a file that cannot be loaded or does not match the model is an
error naming the keys, never a silent fallback.
"""
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabHead, DeepLabV3
from torchvision.models.segmentation.fcn import FCNHead

from utils.models.weights import (_WRAPPER_KEYS, _STRIP_PREFIXES, _DROP_PREFIXES, PathLike, load_resnet_state_dict,
                                  _read_weights_file, _torch_load_weights_only, _is_tensor_dict, _unwrap_state_dict,
                                  _strip_prefixes, _preview, load_backbone_weights, _check_state_dict,
                                  _check_num_classes, _normalise_weights_spec)
from utils.models.resnet import (CLASSIFIER_BACKBONES, _RESNET_DILATION, build_resnet_backbone, ResNetFeatures,
                                 build_resnet_features)
from utils.models.unet import (UNET_ENCODERS, RESNET_UNET_SKIPS, DoubleConv, _check_drop_skip,
                               _check_input_multiple, UNet, ResNetUNet, build_resnet_unet)
from utils.models.deeplab import (RESNET_BACKBONES, DEEPLAB_OS16_ATROUS_RATES, DEEPLAB_OS8_ATROUS_RATES,
                                  DEEPLAB_ATROUS_RATES, DEEPLAB_FINAL_CONVS, DeepLabV3Plus, build_deeplabv3,
                                  coco_weights_path, load_deeplab_state_dict, _deeplab_loadable,
                                  load_deeplab_weights)
from utils.models.fcn import (FCN32s, build_fcn32s)

SEG_ARCHS = ("unet", "deeplabv3", "deeplabv3plus", "fcn32s")


# ------------------------------------------------------------------------------------- entry points
def _arch_of(config: Mapping[str, Any]) -> str:
    """Return config["arch"], raising ValueError listing SEG_ARCHS when it is missing or unknown."""
    arch = config.get("arch")
    if arch not in SEG_ARCHS:
        raise ValueError("unknown model arch {!r}; valid: {}".format(arch, list(SEG_ARCHS)))
    return arch


def canonical_seg_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """The config with the defaults of configs written before a key existed made explicit (DeepLab: "backbone" ->
    "encoder", output stride 16), so that two configs of the same network compare equal (the resume check)."""
    config = dict(config)
    if config.get("arch") in ("deeplabv3", "deeplabv3plus"):
        legacy = config.pop("backbone", "resnet50")
        config.setdefault("encoder", legacy)
        config.setdefault("output_stride", 16)
    return config


def build_seg_model(config: Mapping[str, Any]) -> nn.Module:
    """Build the model that ``config`` describes; training and inference both go through here.

    Keys: "arch" (one of SEG_ARCHS), "num_classes" (7), "backbone_weights" ("none"; the initial weights:
    "none", "imagenet", "coco" for DeepLab, or a file path). unet: "encoder" (absent or None: the classic
    U-Net with "base_width" (64), "depth" (4), "bilinear" (False); or one of UNET_ENCODERS), "drop_skip" (()).
    deeplabv3 / deeplabv3plus: "encoder" ("resnet50"; configs written before it existed say "backbone"),
    "output_stride" (16 when absent: configs written before it existed were OS16), "aux_loss" (True).
    Other keys are ignored, so a whole training config may be passed. To rebuild a trained model from a
    checkpoint, the caller passes the saved config with "backbone_weights" forced to "none" (the checkpoint's
    state_dict supplies every weight, and nothing must be downloaded or read from the original weights path).
    """
    arch = _arch_of(config)
    num_classes = config.get("num_classes", 7)
    weights = config.get("backbone_weights", "none")
    drop_skip = config.get("drop_skip") if config.get("drop_skip") is not None else ()
    if arch == "unet" and config.get("encoder") is not None:
        return build_resnet_unet(config["encoder"], num_classes, drop_skip, weights)
    if arch == "unet":
        return UNet(
            in_channels=config.get("in_channels", 3),
            num_classes=num_classes,
            base_width=config.get("base_width", 64),
            depth=config.get("depth", 4),
            drop_skip=drop_skip,
            bilinear=bool(config.get("bilinear", False)),
        )
    if arch in ("deeplabv3", "deeplabv3plus"):
        config = canonical_seg_config(config)  # configs written before "encoder" / "output_stride" existed
        return build_deeplabv3(
            encoder=config["encoder"],
            num_classes=num_classes,
            aux_loss=bool(config.get("aux_loss", True)),
            weights=weights,
            output_stride=int(config["output_stride"]),
            plus=arch == "deeplabv3plus",
        )
    return build_fcn32s(num_classes=num_classes, backbone_weights=weights)


def input_multiple(config: Mapping[str, Any]) -> int:
    """Size multiple the model's input H and W must have: 2**depth (classic) or 32 (ResNet encoder) for unet,
    1 for the others."""
    arch = _arch_of(config)
    if arch == "unet":
        if config.get("encoder") is not None:
            return ResNetUNet.MULTIPLE
        return 2 ** int(config.get("depth", 4))
    # DeepLabV3(+) and FCN32s interpolate their logits back to the input size, so any size works
    return 1


__all__ = [
    "SEG_ARCHS",
    "RESNET_BACKBONES",
    "UNET_ENCODERS",
    "UNet",
    "ResNetUNet",
    "DeepLabV3Plus",
    "FCN32s",
    "ResNetFeatures",
    "build_resnet_features",
    "build_resnet_unet",
    "build_deeplabv3",
    "coco_weights_path",
    "load_deeplab_state_dict",
    "load_deeplab_weights",
    "build_fcn32s",
    "build_seg_model",
    "input_multiple",
    "load_resnet_state_dict",
    "load_backbone_weights",
]

