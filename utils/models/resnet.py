"""ResNet backbones: the classifier's (pooled features, ``fc`` removed) and the segmentation encoders'
(stem and stages, dilated to an output stride), with torchvision's parameter names so its weights load as they are."""
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Union

import torchvision
from torch import Tensor, nn

from utils.models.weights import _normalise_weights_spec, load_backbone_weights, load_resnet_state_dict

CLASSIFIER_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")

# layer2/layer3/layer4 strides replaced by dilation for each output stride
_RESNET_DILATION = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}


def build_resnet_backbone(arch: str) -> nn.Module:
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


class ResNetFeatures(nn.Module):
    """ResNet stem and stages; parameter names match torchvision's ResNet (minus ``fc``) and its DeepLabV3.

    ``forward`` returns {"out": layer4, "aux": layer3 (``return_aux``), "low": layer1 (``return_low``)};
    ``stages`` returns all five feature maps, shallowest first (the ResNet U-Net's skips and bottleneck).
    """

    def __init__(self, resnet: nn.Module, arch: str, return_aux: bool, return_low: bool) -> None:
        """Take over the stem and layer1..4 of a torchvision ResNet (avgpool and fc are dropped)."""
        super().__init__()
        self.arch = arch
        self.return_aux = return_aux
        self.return_low = return_low
        # same attribute names as torchvision's ResNet so its state_dict (minus fc.*) loads as is
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4
        # channels of stem, layer1..layer4: (64, 64, 128, 256, 512) for ResNet-18/34, (64, 256, ..., 2048) for 50/101
        last_bns = [layer[-1].bn3 if hasattr(layer[-1], "bn3") else layer[-1].bn2
                    for layer in (self.layer1, self.layer2, self.layer3, self.layer4)]
        self.channels = [self.bn1.num_features] + [bn.num_features for bn in last_bns]

    def stages(self, x: Tensor) -> List[Tensor]:
        """[stem (stride 2), layer1 (4), layer2 (8), layer3 (16), layer4 (32)]; dilation keeps later strides."""
        stem = self.relu(self.bn1(self.conv1(x)))
        c1 = self.layer1(self.maxpool(stem))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return [stem, c1, c2, c3, self.layer4(c3)]

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """Return layer4 features as "out" (and layer3 as "aux", layer1 as "low" when enabled)."""
        _, low, _, aux, out = self.stages(x)
        result = OrderedDict()  # type: Dict[str, Tensor]
        result["out"] = out
        if self.return_aux:
            result["aux"] = aux
        if self.return_low:
            result["low"] = low
        return result


def build_resnet_features(arch: str, weights: Union[str, Path, None] = "none", output_stride: int = 32,
                          return_aux: bool = False, return_low: bool = False) -> ResNetFeatures:
    """A torchvision ResNet's stem and stages, dilated to ``output_stride`` (8, 16 or 32), initialised from
    ``weights``: "none" (random, no download), "imagenet" (torchvision's IMAGENET1K_V1, downloaded once to the
    torch cache) or a local ResNet state_dict path (see ``load_resnet_state_dict``; keys checked exactly)."""
    if arch not in CLASSIFIER_BACKBONES:
        raise ValueError("unknown ResNet encoder {!r}; valid: {}".format(arch, list(CLASSIFIER_BACKBONES)))
    if output_stride not in _RESNET_DILATION:
        raise ValueError("output_stride must be one of {}, got {!r}".format(sorted(_RESNET_DILATION), output_stride))
    spec = _normalise_weights_spec(weights)
    if spec == "coco":
        raise ValueError("'coco' weights exist for DeepLabV3 only; a {} encoder takes 'imagenet', 'none' or a "
                         "local ResNet state_dict PATH".format(arch))
    enum = None
    if spec == "imagenet":
        enum = getattr(torchvision.models, "ResNet{}_Weights".format(arch[len("resnet"):])).IMAGENET1K_V1
    dilation = _RESNET_DILATION[output_stride]
    resnet = getattr(torchvision.models, arch)(weights=enum, replace_stride_with_dilation=dilation)
    features = ResNetFeatures(resnet, arch, return_aux=return_aux, return_low=return_low)
    if spec not in ("none", "imagenet"):
        load_backbone_weights(features, load_resnet_state_dict(spec), source=spec, arch=arch)
    return features
