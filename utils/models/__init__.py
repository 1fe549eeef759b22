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

SEG_ARCHS = ("unet", "deeplabv3", "deeplabv3plus", "fcn32s")
# DeepLab encoders: torchvision dilates only bottleneck ResNets (ResNet-18/34 refuse dilation)
RESNET_BACKBONES = ("resnet50", "resnet101")

# ASPP rates per output stride. Stride 8 with (12, 24, 36) is torchvision's deeplabv3_resnet* as published
# (its COCO weights were trained so); stride 16 with (6, 12, 18) is the DeepLabV3 paper's training setting.
# Both reach the same image area: rate x stride = 96, 192, 288 px.
DEEPLAB_OS16_ATROUS_RATES = (6, 12, 18)
DEEPLAB_OS8_ATROUS_RATES = (12, 24, 36)
DEEPLAB_ATROUS_RATES = {8: DEEPLAB_OS8_ATROUS_RATES, 16: DEEPLAB_OS16_ATROUS_RATES}
# The 21-class final 1x1 convs of torchvision's DeepLabV3 (main and auxiliary head): always re-made
DEEPLAB_FINAL_CONVS = ("classifier.4.", "aux_classifier.4.")


# --------------------------------------------------------------------------------- DeepLabV3 / V3+
class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ (Chen et al. 2018): DeepLabV3's ASPP on layer4, plus a decoder that joins the upsampled
    ASPP output with layer1's features (1x1 conv to 48 channels) through two 3x3 convs (256 channels), then
    a 1x1 classifier and bilinear x4 upsampling to the input size. Optional FCN auxiliary head on layer3.

    Module names: ``backbone`` (torchvision ResNet names), ``aspp`` (torchvision's ASPP, the same tensors as
    DeepLabV3's ``classifier.0``), ``low_project``, ``decoder``, ``classifier``, ``aux_classifier``.
    """

    def __init__(self, backbone: ResNetFeatures, num_classes: int, atrous_rates: Sequence[int],
                 aux_classifier: Optional[nn.Module] = None) -> None:
        """``backbone`` must return "out" (layer4) and "low" (layer1), and "aux" when ``aux_classifier`` is set."""
        super().__init__()
        self.backbone = backbone
        self.aspp = ASPP(backbone.channels[4], list(atrous_rates))
        self.low_project = nn.Sequential(nn.Conv2d(backbone.channels[1], 48, 1, bias=False), nn.BatchNorm2d(48),
                                         nn.ReLU(inplace=True))
        self.decoder = nn.Sequential(
            nn.Conv2d(256 + 48, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256), nn.ReLU(inplace=True))
        self.classifier = nn.Conv2d(256, num_classes, 1)
        self.aux_classifier = aux_classifier

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """Return {"out": logits} (and "aux") at the input's H x W."""
        size = x.shape[-2:]
        feats = self.backbone(x)
        low = self.low_project(feats["low"])
        y = F.interpolate(self.aspp(feats["out"]), size=low.shape[-2:], mode="bilinear", align_corners=False)
        y = self.classifier(self.decoder(torch.cat([y, low], dim=1)))
        result = OrderedDict()  # type: Dict[str, Tensor]
        result["out"] = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        if self.aux_classifier is not None:
            aux = self.aux_classifier(feats["aux"])
            result["aux"] = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
        return result


def build_deeplabv3(
    encoder: str = "resnet101",
    num_classes: int = 7,
    aux_loss: bool = True,
    weights: Union[str, Path, None] = "none",
    output_stride: int = 8,
    plus: bool = False,
) -> nn.Module:
    """DeepLabV3 (or with ``plus`` DeepLabV3+) on a dilated ResNet-50/101 with an FCN auxiliary head on layer3.

    ``output_stride`` 8 (ASPP rates 12/24/36, torchvision's published architecture) or 16 (6/12/18).
    ``weights``: "none" (random, no download); "imagenet" (torchvision's ImageNet ResNet for the backbone,
    heads random); "coco" (torchvision's COCO-with-VOC-labels DeepLabV3 of the same depth, from the torch hub
    cache or downloaded there: everything but the two 21-class final convs, which are re-made for
    ``num_classes``; for V3+ only backbone, ASPP and the auxiliary head's first conv + BN, see
    ``load_deeplab_weights``); or a PATH to a local file in that same format. Returns {"out", "aux"} (just
    "out" when ``aux_loss`` is False).
    """
    if encoder not in RESNET_BACKBONES:
        raise ValueError("unknown DeepLabV3 encoder {!r}; valid: {}".format(encoder, list(RESNET_BACKBONES)))
    if output_stride not in DEEPLAB_ATROUS_RATES:
        raise ValueError("DeepLabV3 output_stride must be 8 or 16, got {!r}".format(output_stride))
    _check_num_classes(num_classes)
    spec = _normalise_weights_spec(weights)
    state = None  # type: Optional[Mapping[str, Tensor]]
    if spec == "coco":
        state, source = load_deeplab_state_dict(coco_weights_path(encoder, download=True)), "coco"
    elif spec not in ("none", "imagenet"):
        state, source = load_deeplab_state_dict(spec), spec  # read (and fail) before building
    features = build_resnet_features(encoder, "imagenet" if spec == "imagenet" else "none", output_stride,
                                     return_aux=bool(aux_loss), return_low=plus)
    rates = DEEPLAB_ATROUS_RATES[output_stride]
    aux_classifier = FCNHead(features.channels[3], num_classes) if aux_loss else None
    if plus:
        model = DeepLabV3Plus(features, num_classes, rates, aux_classifier)  # type: nn.Module
    else:
        head = DeepLabHead(features.channels[4], num_classes, atrous_rates=tuple(rates))
        model = DeepLabV3(features, head, aux_classifier)
    if state is not None:
        load_deeplab_weights(model, state, source=source, arch="deeplabv3_" + encoder)
    return model


def coco_weights_path(encoder: str, download: bool = False) -> Path:
    """Where torchvision keeps its COCO-with-VOC-labels DeepLabV3 weights: TORCH_HOME's hub/checkpoints/<file>.

    With ``download`` a missing file is fetched there through torchvision (hash checked); when that fails
    (no network), FileNotFoundError says where to put the file or to pass a PATH instead.
    """
    from torchvision.models import segmentation

    enum = getattr(segmentation, "DeepLabV3_ResNet{}_Weights".format(encoder[len("resnet"):]))
    weights = enum.COCO_WITH_VOC_LABELS_V1
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if download and not path.is_file():
        try:
            weights.get_state_dict(progress=True, check_hash=True)  # torch.hub saves it at exactly ``path``
        except Exception as exc:  # URLError, HTTPError, timeouts, hash mismatch, ...
            raise FileNotFoundError(
                "COCO DeepLabV3-{} weights not in the torch cache and the download from {} failed ({}: {}); put "
                "the file at {} or pass --weights PATH".format(encoder, weights.url, type(exc).__name__,
                                                               str(exc).splitlines()[0] if str(exc) else "",
                                                               path)) from None
        if not path.is_file():
            raise FileNotFoundError("COCO DeepLabV3-{} weights were downloaded but are not at {}; put the file "
                                    "there or pass --weights PATH".format(encoder, path))
    return path


def load_deeplab_state_dict(path: PathLike) -> Dict[str, Tensor]:
    """A torchvision DeepLabV3 state_dict from a local file (weights only; a ``module.`` prefix is stripped)."""
    path = Path(path)
    state = _unwrap_state_dict(_read_weights_file(path, "DeepLabV3 weights"), path)
    result = OrderedDict()  # type: Dict[str, Tensor]
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise ValueError("DeepLabV3 weights from {}: entry {!r} is not a named tensor".format(path, key))
        result[key[len("module."):] if key.startswith("module.") else key] = value.detach().cpu()
    return result


def _deeplab_loadable(model: nn.Module) -> Tuple[Callable[[str], bool], Dict[str, str], Tuple[str, ...]]:
    """For a model, which of its keys come from a torchvision DeepLabV3 state_dict, how file keys are renamed
    onto it, and which file key prefixes are dropped (not used by this model)."""
    dropped = DEEPLAB_FINAL_CONVS
    if getattr(model, "aux_classifier", None) is None:
        dropped = dropped + ("aux_classifier.",)
    if isinstance(model, DeepLabV3Plus):
        # the V3 head's 3x3 conv + BN (classifier.1/.2) has no counterpart in the V3+ decoder
        return ((lambda k: k.startswith(("backbone.", "aspp.", "aux_classifier.0.", "aux_classifier.1."))),
                {"classifier.0.": "aspp."}, dropped + ("classifier.1.", "classifier.2."))
    return (lambda k: not k.startswith(DEEPLAB_FINAL_CONVS)), {}, dropped


def load_deeplab_weights(model: nn.Module, state_dict: Mapping[str, Tensor], source: str, arch: str) -> None:
    """Load a torchvision DeepLabV3 state_dict (any number of classes) into a DeepLabV3 / DeepLabV3+ of ours.

    The file's final 1x1 convs (``classifier.4``, ``aux_classifier.4``) are dropped and stay as initialised;
    every other file key must match a model key exactly (names and shapes; missing/unexpected keys are named).
    DeepLabV3+: backbone, ASPP (``classifier.0`` -> ``aspp``) and the auxiliary head's conv + BN load; the V3
    head's 3x3 conv (``classifier.1/2``) is dropped; ``low_project``, ``decoder`` and ``classifier`` stay random.
    Without an auxiliary head the file's ``aux_classifier.*`` is dropped.
    """
    loadable, renames, dropped = _deeplab_loadable(model)
    state = OrderedDict()  # type: Dict[str, Tensor]
    for key, value in state_dict.items():
        if key.startswith(dropped):
            continue
        for old, new in renames.items():
            if key.startswith(old):
                key = new + key[len(old):]
        state[key] = value
    own = model.state_dict()
    expected = OrderedDict((k, v) for k, v in own.items() if loadable(k))
    _check_state_dict(expected, state, "DeepLabV3 weights from {}".format(source), arch)
    model.load_state_dict(state, strict=False)  # the check above: every loadable key is there, nothing else


# -------------------------------------------------------------------------------------------- FCN32s
class FCN32s(nn.Module):
    """VGG16-FCN32s: VGG16 conv features, fc6/fc7 as convs, 1x1 scores, bilinear x32 upsampling."""

    def __init__(self, features: nn.Module, num_classes: int = 7) -> None:
        """Wrap VGG16 ``features`` (output stride 32, 512 channels) with the FCN conv6/conv7/score head."""
        super().__init__()
        self.features = features
        # padding 3 keeps the 1/32 map's size, so no FCN "pad 100 + crop" trick is needed
        self.conv6 = nn.Conv2d(512, 4096, kernel_size=7, padding=3)
        self.conv7 = nn.Conv2d(4096, 4096, kernel_size=1)
        self.relu = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout(0.5)
        self.drop7 = nn.Dropout(0.5)
        self.score = nn.Conv2d(4096, num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """Return ``{"out": logits}`` upsampled bilinearly to the input's H x W."""
        size = x.shape[-2:]
        x = self.features(x)
        x = self.drop6(self.relu(self.conv6(x)))
        x = self.drop7(self.relu(self.conv7(x)))
        x = self.score(x)
        return {"out": F.interpolate(x, size=size, mode="bilinear", align_corners=False)}


def build_fcn32s(num_classes: int = 7, backbone_weights: Optional[str] = "none") -> nn.Module:
    """VGG16-FCN32s; "imagenet" loads VGG16 IMAGENET1K_V1 into the convs and fc6/fc7 into conv6/conv7."""
    _check_num_classes(num_classes)
    weights_spec = _normalise_weights_spec(backbone_weights)
    if weights_spec not in ("none", "imagenet"):
        raise ValueError("fcn32s supports backbone_weights 'none' or 'imagenet' only, got {!r} "
                         "('coco' and local weight files are supported for the ResNet models)".format(
                             backbone_weights))
    weights = torchvision.models.VGG16_Weights.IMAGENET1K_V1 if weights_spec == "imagenet" else None
    vgg = torchvision.models.vgg16(weights=weights)
    model = FCN32s(vgg.features, num_classes)
    if weights is not None:
        # FCN's recipe: fc6/fc7 are convolutionalised, so their ImageNet weights reshape into conv6/conv7
        fc6, fc7 = vgg.classifier[0], vgg.classifier[3]
        with torch.no_grad():
            model.conv6.weight.copy_(fc6.weight.view(4096, 512, 7, 7))
            model.conv6.bias.copy_(fc6.bias)
            model.conv7.weight.copy_(fc7.weight.view(4096, 4096, 1, 1))
            model.conv7.bias.copy_(fc7.bias)
    return model


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

