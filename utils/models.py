"""Segmentation models: a U-Net baseline, DeepLabV3 (ResNet-50/101, output stride 16) and VGG16-FCN32s.

Every model returns ``{"out": logits}`` of shape (B, num_classes, H, W) (DeepLabV3 with ``aux_loss``
also returns ``"aux"``), so training, evaluation and inference share one output contract. Build models
through ``build_seg_model(config)`` so that a checkpoint's saved config rebuilds the same network.

Nothing here touches the network unless the caller explicitly asks for ``"imagenet"`` weights; a
``backbone_weights`` value that is neither ``"none"`` nor ``"imagenet"`` is a local file path, and a
file that cannot be loaded or does not match the backbone is an error, never a silent fallback.
"""
import inspect
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabHead, DeepLabV3
from torchvision.models.segmentation.fcn import FCNHead

SEG_ARCHS = ("unet", "deeplabv3", "fcn32s")
RESNET_BACKBONES = ("resnet50", "resnet101")

# Output stride 16 follows the DeepLabV3 paper's rates (6, 12, 18); torchvision's (12, 24, 36) are
# meant for its output stride 8 and would reach past a 32x32 feature map of a 512x512 tile.
DEEPLAB_OS16_ATROUS_RATES = (6, 12, 18)

# Keys that wrap a state_dict inside a checkpoint, in order of preference: DINO saves both "teacher"
# and "student", and the teacher (EMA) network is the one its authors evaluate and publish.
_WRAPPER_KEYS = ("teacher", "student", "state_dict", "model", "backbone")
_STRIP_PREFIXES = ("module.", "backbone.", "encoder.", "model.")
_DROP_PREFIXES = ("fc.", "head.")

PathLike = Union[str, Path]


# --------------------------------------------------------------------------------------------- U-Net
class DoubleConv(nn.Sequential):
    """(3x3 conv, BatchNorm, ReLU) x 2; the convs have no bias because BatchNorm adds one."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        """Build the two conv-BN-ReLU layers, keeping the spatial size (padding 1)."""
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """Classic U-Net (Ronneberger et al. 2015) with BatchNorm and same-padding convs.

    Stage ``i`` (0 = full resolution) has width ``base_width * 2**i``; the bottleneck sits at
    1/2**depth resolution. Skip ``i`` joins encoder stage ``i`` to decoder stage ``i``; skips listed in
    ``drop_skip`` are removed, and that decoder stage then sees only the upsampled deeper features.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 7,
        base_width: int = 64,
        depth: int = 4,
        drop_skip: Iterable[int] = (),
        bilinear: bool = False,
    ) -> None:
        """Build encoder, bottleneck and decoder; see the class docstring for the layout."""
        super().__init__()
        for name, value, low in (("in_channels", in_channels, 1), ("num_classes", num_classes, 1),
                                 ("base_width", base_width, 1), ("depth", depth, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError("UNet {} must be an integer >= {}, got {!r}".format(name, low, value))
        if isinstance(drop_skip, int):  # a lone index from a config file
            drop_skip = (drop_skip,)
        drops = []
        for index in drop_skip:
            # bool is an int subclass; True would silently mean skip 1
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < depth:
                raise ValueError("UNet drop_skip index {!r} is invalid: valid skip indices are 0..{} "
                                 "(0 = shallowest, {} = deepest) for depth {}".format(
                                     index, depth - 1, depth - 1, depth))
            drops.append(index)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.depth = depth
        self.bilinear = bool(bilinear)
        self.drop_skip = tuple(sorted(set(drops)))

        widths = [base_width * 2 ** i for i in range(depth + 1)]
        self.encoders = nn.ModuleList()
        prev = in_channels
        for i in range(depth):
            self.encoders.append(DoubleConv(prev, widths[i]))
            prev = widths[i]
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(widths[depth - 1], widths[depth])

        # ups[i] / decoders[i] bring features from scale i+1 to scale i, so index i matches skip i
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for i in range(depth):
            if self.bilinear:
                # parameter-free upsampling keeps the deeper width; the decoder conv reduces it
                self.ups.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
                up_channels = widths[i + 1]
            else:
                self.ups.append(nn.ConvTranspose2d(widths[i + 1], widths[i], kernel_size=2, stride=2))
                up_channels = widths[i]
            skip_channels = 0 if i in self.drop_skip else widths[i]
            self.decoders.append(DoubleConv(up_channels + skip_channels, widths[i]))
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """Return ``{"out": logits}`` of shape (B, num_classes, H, W); H and W must divide by 2**depth."""
        if x.dim() != 4:
            raise ValueError("UNet expects a (B, C, H, W) tensor, got shape {}".format(tuple(x.shape)))
        multiple = 2 ** self.depth
        height, width = int(x.shape[-2]), int(x.shape[-1])
        if height % multiple or width % multiple:
            raise ValueError("UNet with depth {} needs input height and width divisible by {}, got {}x{}; "
                             "pad the input to a multiple of 2**depth = {}".format(
                                 self.depth, multiple, height, width, multiple))
        skips = []  # type: List[Tensor]
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for i in reversed(range(self.depth)):
            x = self.ups[i](x)
            if i not in self.drop_skip:
                x = torch.cat([skips[i], x], dim=1)
            x = self.decoders[i](x)
        return {"out": self.head(x)}


# ---------------------------------------------------------------------------------- backbone weights
def load_resnet_state_dict(path: PathLike) -> Dict[str, Tensor]:
    """Load a ResNet state_dict from a local checkpoint, unwrapped, de-prefixed, without fc./head. keys."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError("backbone weights file not found: {}".format(path))
    if not path.is_file():
        raise ValueError("backbone weights path is not a file: {}".format(path))
    try:
        obj = _torch_load_weights_only(path)
    except Exception as exc:  # torch raises many types (UnpicklingError, RuntimeError, EOFError, ...)
        raise ValueError("cannot load backbone weights from {} (corrupt, truncated or not a torch file: "
                         "{}: {})".format(path, type(exc).__name__, exc)) from exc
    state = _unwrap_state_dict(obj, path)

    result = OrderedDict()  # type: Dict[str, Tensor]
    origin = {}  # type: Dict[str, str]
    for key, value in state.items():
        if not isinstance(key, str):
            raise ValueError("backbone weights from {} have a non-string key {!r}".format(path, key))
        new_key = _strip_prefixes(key)
        if new_key.startswith(_DROP_PREFIXES):
            continue
        if not isinstance(value, Tensor):
            raise ValueError("backbone weights from {}: entry {!r} is a {}, not a tensor".format(
                path, key, type(value).__name__))
        if new_key in result:
            raise ValueError("backbone weights from {}: keys {!r} and {!r} both map to {!r} after "
                             "stripping prefixes {}".format(path, origin[new_key], key, new_key,
                                                            list(_STRIP_PREFIXES)))
        origin[new_key] = key
        result[new_key] = value.detach().cpu()
    if not result:
        raise ValueError("backbone weights from {} contain no tensors after dropping fc./head. keys".format(path))
    return result


def _torch_load_weights_only(path: Path) -> Any:
    """torch.load with weights_only=True, also admitting argparse.Namespace (DINO saves its args)."""
    import argparse

    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is not None:  # torch >= 2.5: scoped allow-list
        with safe_globals([argparse.Namespace]):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:  # torch 2.4: only a process-wide allow-list exists
        add_safe_globals([argparse.Namespace])
    return torch.load(str(path), map_location="cpu", weights_only=True)


def _is_tensor_dict(obj: Any) -> bool:
    """True for a non-empty mapping whose values are all tensors (a plain state_dict)."""
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, Tensor) for v in obj.values())


def _unwrap_state_dict(obj: Any, path: Path) -> Mapping:
    """Descend through wrapper keys ("teacher", "state_dict", ...) until a plain state_dict is found."""
    for _ in range(4):  # a few levels covers e.g. {"state_dict": {"model": {...}}}
        if _is_tensor_dict(obj):
            return obj
        if not isinstance(obj, Mapping):
            break
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            break
    if isinstance(obj, Mapping) and any(isinstance(v, Tensor) for v in obj.values()):
        return obj  # mixed entries; load_resnet_state_dict names the non-tensor ones
    top = sorted(str(k) for k in obj.keys())[:10] if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError("backbone weights from {} hold no state_dict: expected a dict of tensors or one "
                     "wrapped under {}; found {}".format(path, list(_WRAPPER_KEYS), top))


def _strip_prefixes(key: str) -> str:
    """Remove any chain of wrapper prefixes, e.g. "module.backbone.conv1.weight" -> "conv1.weight"."""
    changed = True
    while changed:
        changed = False
        for prefix in _STRIP_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                changed = True
    return key


def _preview(keys: Sequence[str], limit: int = 10) -> str:
    """Format up to ``limit`` keys plus a count, for error messages."""
    shown = ", ".join(keys[:limit])
    more = " ... (+{} more)".format(len(keys) - limit) if len(keys) > limit else ""
    return "{} [{}{}]".format(len(keys), shown, more)


def load_backbone_weights(
    backbone: nn.Module,
    state_dict: Mapping[str, Tensor],
    source: str = "the given state_dict",
    arch: Optional[str] = None,
) -> None:
    """Load ``state_dict`` into ``backbone`` after checking key names and shapes match exactly."""
    arch = arch or getattr(backbone, "arch", type(backbone).__name__)
    expected = backbone.state_dict()
    # BatchNorm's counter is not a weight and older checkpoints lack it; torch itself refills it when a
    # state_dict carries no version metadata, so only those keys may be missing.
    missing = sorted(k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state_dict if k not in expected)
    if missing or unexpected:
        raise ValueError("backbone weights from {} do not match {}: missing {} unexpected {}".format(
            source, arch, _preview(missing), _preview(unexpected)))
    bad_shapes = ["{} {} vs expected {}".format(k, tuple(v.shape), tuple(expected[k].shape))
                  for k, v in state_dict.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if bad_shapes:
        raise ValueError("backbone weights from {} do not match {}: shape mismatch in {}".format(
            source, arch, _preview(bad_shapes)))
    # a fresh dict carries no _metadata, so BatchNorm fills in any missing num_batches_tracked
    backbone.load_state_dict(OrderedDict(state_dict), strict=True)


# ----------------------------------------------------------------------------------------- DeepLabV3
class ResNetFeatures(nn.Module):
    """ResNet stem and stages returning {"out": layer4, "aux": layer3}; parameter names match torchvision."""

    def __init__(self, resnet: nn.Module, arch: str, return_aux: bool = True) -> None:
        """Take over the stem and layer1..4 of a torchvision ResNet (avgpool and fc are dropped)."""
        super().__init__()
        self.arch = arch
        self.return_aux = return_aux
        # same attribute names as torchvision's ResNet so its state_dict (minus fc.*) loads as is
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """Return layer4 features as "out" (and layer3 as "aux" when enabled)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        aux = self.layer3(x)
        result = OrderedDict()  # type: Dict[str, Tensor]
        result["out"] = self.layer4(aux)
        if self.return_aux:
            result["aux"] = aux
        return result


def _deeplab_head(in_channels: int, num_classes: int, rates: Sequence[int]) -> nn.Module:
    """torchvision's DeepLabHead (ASPP + image pooling) with the given atrous rates."""
    if "atrous_rates" in inspect.signature(DeepLabHead.__init__).parameters:
        return DeepLabHead(in_channels, num_classes, atrous_rates=tuple(rates))
    # older torchvision hard-codes (12, 24, 36); swapping the ASPP keeps the module names identical
    head = DeepLabHead(in_channels, num_classes)
    head[0] = ASPP(in_channels, list(rates))
    return head


def build_deeplabv3(
    backbone: str = "resnet50",
    num_classes: int = 7,
    aux_loss: bool = True,
    backbone_weights: Optional[str] = "none",
    atrous_rates: Sequence[int] = DEEPLAB_OS16_ATROUS_RATES,
) -> nn.Module:
    """DeepLabV3 on a dilated ResNet (output stride 16) with an FCN auxiliary head on layer3.

    ``backbone_weights``: "none" (random init, no download), "imagenet" (torchvision's
    IMAGENET1K_V1, downloaded to the torch cache) or a local checkpoint path (see
    ``load_resnet_state_dict``). Returns {"out", "aux"} (just "out" when ``aux_loss`` is False).
    """
    if backbone not in RESNET_BACKBONES:
        raise ValueError("unknown DeepLabV3 backbone {!r}; valid: {}".format(backbone, list(RESNET_BACKBONES)))
    _check_num_classes(num_classes)
    weights_spec = _normalise_weights_spec(backbone_weights)
    builder = getattr(torchvision.models, backbone)
    weights = None
    if weights_spec == "imagenet":
        enum = torchvision.models.ResNet50_Weights if backbone == "resnet50" else torchvision.models.ResNet101_Weights
        weights = enum.IMAGENET1K_V1
    # stride kept in layer2/layer3 and dilated only in layer4 -> output stride 16, not torchvision's 8
    resnet = builder(weights=weights, replace_stride_with_dilation=[False, False, True])
    features = ResNetFeatures(resnet, backbone, return_aux=bool(aux_loss))
    if weights_spec not in ("none", "imagenet"):
        state = load_resnet_state_dict(weights_spec)
        load_backbone_weights(features, state, source=str(weights_spec), arch=backbone)
    classifier = _deeplab_head(2048, num_classes, atrous_rates)
    aux_classifier = FCNHead(1024, num_classes) if aux_loss else None
    return DeepLabV3(features, classifier, aux_classifier)


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
                         "(local checkpoint paths are supported for deeplabv3 ResNet backbones)".format(
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
def _check_num_classes(num_classes: int) -> None:
    """Raise ValueError unless num_classes is a positive integer."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError("num_classes must be a positive integer, got {!r}".format(num_classes))


def _normalise_weights_spec(backbone_weights: Union[str, Path, None]) -> str:
    """Map None to "none" and reject non-string specs; "none"/"imagenet" are reserved words."""
    if backbone_weights is None:
        return "none"
    if isinstance(backbone_weights, Path):
        return str(backbone_weights)
    if not isinstance(backbone_weights, str) or not backbone_weights:
        raise ValueError("backbone_weights must be 'none', 'imagenet' or a file path, got {!r}".format(
            backbone_weights))
    return backbone_weights


def _arch_of(config: Mapping[str, Any]) -> str:
    """Return config["arch"], raising ValueError listing SEG_ARCHS when it is missing or unknown."""
    arch = config.get("arch")
    if arch not in SEG_ARCHS:
        raise ValueError("unknown model arch {!r}; valid: {}".format(arch, list(SEG_ARCHS)))
    return arch


def build_seg_model(config: Mapping[str, Any]) -> nn.Module:
    """Build the model that ``config`` describes; training and inference both go through here.

    Keys: "arch" (one of SEG_ARCHS), "num_classes" (7); unet: "base_width" (64), "depth" (4),
    "drop_skip" (()), "bilinear" (False); deeplabv3: "backbone" ("resnet50"), "aux_loss" (True),
    "backbone_weights" ("none"); fcn32s: "backbone_weights" ("none"). Other keys are ignored, so a
    whole training config may be passed. To rebuild a trained model from a checkpoint, the caller
    passes the saved config with "backbone_weights" forced to "none" (the checkpoint's state_dict
    supplies every weight, and nothing must be downloaded or read from the original weights path).
    """
    arch = _arch_of(config)
    num_classes = config.get("num_classes", 7)
    if arch == "unet":
        return UNet(
            in_channels=config.get("in_channels", 3),
            num_classes=num_classes,
            base_width=config.get("base_width", 64),
            depth=config.get("depth", 4),
            drop_skip=config.get("drop_skip") if config.get("drop_skip") is not None else (),
            bilinear=bool(config.get("bilinear", False)),
        )
    if arch == "deeplabv3":
        return build_deeplabv3(
            backbone=config.get("backbone", "resnet50"),
            num_classes=num_classes,
            aux_loss=bool(config.get("aux_loss", True)),
            backbone_weights=config.get("backbone_weights", "none"),
        )
    return build_fcn32s(num_classes=num_classes, backbone_weights=config.get("backbone_weights", "none"))


def input_multiple(config: Mapping[str, Any]) -> int:
    """Size multiple the model's input H and W must have: 2**depth for unet, 1 for the others."""
    arch = _arch_of(config)
    if arch == "unet":
        return 2 ** int(config.get("depth", 4))
    # DeepLabV3 and FCN32s interpolate their logits back to the input size, so any size works
    return 1


__all__ = [
    "SEG_ARCHS",
    "RESNET_BACKBONES",
    "UNet",
    "FCN32s",
    "ResNetFeatures",
    "build_deeplabv3",
    "build_fcn32s",
    "build_seg_model",
    "input_multiple",
    "load_resnet_state_dict",
    "load_backbone_weights",
]


CLASSIFIER_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")


def build_resnet_backbone(arch: str = "resnet50") -> nn.Module:
    """A randomly initialised torchvision ResNet with ``fc`` replaced by identity (returns pooled features).

    Its state_dict keys are exactly torchvision's minus ``fc.*``, so an exported backbone loads into
    ``torchvision.models.resnet50()`` with only ``fc`` missing. ``model.feature_dim`` is 2048 for
    ResNet-50/101 and 512 for ResNet-18/34. Nothing is downloaded (``weights=None``).
    """
    if arch not in CLASSIFIER_BACKBONES:
        raise ValueError("unknown backbone {!r}; choose from {}".format(arch, list(CLASSIFIER_BACKBONES)))
    model = getattr(torchvision.models, arch)(weights=None)
    model.feature_dim = model.fc.in_features
    model.fc = nn.Identity()
    return model
