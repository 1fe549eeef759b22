"""DeepLabV3 (torchvision's) and DeepLabV3+ on a dilated ResNet-50/101, and loading torchvision's COCO-with-VOC-labels
DeepLabV3 weights into either (from the torch hub cache, downloaded there only when asked)."""
import os
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabHead, DeepLabV3
from torchvision.models.segmentation.fcn import FCNHead

from utils.models.resnet import ResNetFeatures, build_resnet_features
from utils.models.weights import (PathLike, _check_num_classes, _check_state_dict, _normalise_weights_spec,
                                  _read_weights_file, _unwrap_state_dict)

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
