"""VGG16-FCN32s (Long et al. 2015), with VGG16's ImageNet weights convolutionalised into fc6/fc7."""
from typing import Dict, Optional

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from utils.models.weights import _check_num_classes, _normalise_weights_spec


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
