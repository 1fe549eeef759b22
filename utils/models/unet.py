"""U-Nets: the classic U-Net (Ronneberger et al. 2015) and a U-Net decoder on a torchvision ResNet encoder,
each with the skip-connection ablation (``drop_skip``) of the report."""
from pathlib import Path
from typing import Dict, Iterable, List, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from utils.models.resnet import ResNetFeatures, build_resnet_features
from utils.models.weights import _check_num_classes

UNET_ENCODERS = ("resnet18", "resnet34", "resnet50")
RESNET_UNET_SKIPS = 4  # skips of the ResNet-encoder U-Net: stem, layer1, layer2, layer3


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


def _check_drop_skip(drop_skip: Union[int, Iterable[int]], num_skips: int, model: str, context: str) -> Tuple[int, ...]:
    """Validate skip indices 0..num_skips-1 (0 = shallowest); returns them sorted and unique."""
    if isinstance(drop_skip, int):  # a lone index from a config file
        drop_skip = (drop_skip,)
    drops = []
    for index in drop_skip:
        # bool is an int subclass; True would silently mean skip 1
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < num_skips:
            raise ValueError("{} drop_skip index {!r} is invalid: valid skip indices are 0..{} "
                             "(0 = shallowest, {} = deepest) {}".format(
                                 model, index, num_skips - 1, num_skips - 1, context))
        drops.append(index)
    return tuple(sorted(set(drops)))


def _check_input_multiple(x: Tensor, multiple: int, model: str, rule: str) -> None:
    """Raise ValueError unless x is (B, C, H, W) with H and W multiples of ``multiple``."""
    if x.dim() != 4:
        raise ValueError("{} expects a (B, C, H, W) tensor, got shape {}".format(model, tuple(x.shape)))
    height, width = int(x.shape[-2]), int(x.shape[-1])
    if height % multiple or width % multiple:
        raise ValueError("{} needs input height and width divisible by {}, got {}x{}; "
                         "pad the input to a multiple of {} = {}".format(model, multiple, height, width, rule,
                                                                         multiple))


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
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.depth = depth
        self.bilinear = bool(bilinear)
        self.drop_skip = _check_drop_skip(drop_skip, depth, "UNet", "for depth {}".format(depth))

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
        _check_input_multiple(x, 2 ** self.depth, "UNet with depth {}".format(self.depth), "2**depth")
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



class ResNetUNet(nn.Module):
    """U-Net decoder on a torchvision ResNet encoder (the layout of segmentation_models_pytorch's Unet).

    Skip ``i`` (0 = shallowest) carries encoder stage i to the decoder: 0 = stem (1/2), 1 = layer1 (1/4),
    2 = layer2 (1/8), 3 = layer3 (1/16); layer4 (1/32) is the bottleneck. Each decoder block upsamples x2
    (bilinear), concatenates its skip (unless listed in ``drop_skip``) and applies a DoubleConv; a last block
    without skip returns to full resolution before the 1x1 classifier. Inputs must be multiples of 32.
    """

    DECODER_CHANNELS = (256, 128, 64, 32, 16)  # blocks for skips 3, 2, 1, 0, then full resolution
    MULTIPLE = 32

    def __init__(self, encoder: ResNetFeatures, num_classes: int = 7, drop_skip: Iterable[int] = ()) -> None:
        """Build the decoder for ``encoder`` (its ``channels`` give the skip widths)."""
        super().__init__()
        _check_num_classes(num_classes)
        self.encoder = encoder
        self.num_classes = num_classes
        self.drop_skip = _check_drop_skip(drop_skip, RESNET_UNET_SKIPS, "ResNet U-Net", "for a ResNet encoder (0 = stem, "
                                          "1..3 = layer1..layer3)")
        ch = encoder.channels
        skip_widths = [0 if i in self.drop_skip else ch[i] for i in range(4)]
        dec = self.DECODER_CHANNELS
        # decoders[i] joins skip i; it runs deepest first (3, 2, 1, 0)
        ins = {3: ch[4], 2: dec[0], 1: dec[1], 0: dec[2]}
        outs = {3: dec[0], 2: dec[1], 1: dec[2], 0: dec[3]}
        self.decoders = nn.ModuleList([DoubleConv(ins[i] + skip_widths[i], outs[i]) for i in range(4)])
        self.final = DoubleConv(dec[3], dec[4])
        self.head = nn.Conv2d(dec[4], num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """Return ``{"out": logits}`` of shape (B, num_classes, H, W); H and W must divide by 32."""
        _check_input_multiple(x, self.MULTIPLE, "U-Net with a {} encoder".format(self.encoder.arch),
                              "the encoder's stride")
        feats = self.encoder.stages(x)
        y = feats[4]
        for i in reversed(range(4)):
            y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
            if i not in self.drop_skip:
                y = torch.cat([feats[i], y], dim=1)
            y = self.decoders[i](y)
        y = self.final(F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False))
        return {"out": self.head(y)}


def build_resnet_unet(encoder: str = "resnet34", num_classes: int = 7, drop_skip: Iterable[int] = (),
                      encoder_weights: Union[str, Path, None] = "none") -> ResNetUNet:
    """U-Net on a ResNet-18/34/50 encoder; ``encoder_weights`` as ``build_resnet_features``."""
    if encoder not in UNET_ENCODERS:
        raise ValueError("unknown U-Net encoder {!r}; valid: {}".format(encoder, list(UNET_ENCODERS)))
    _check_num_classes(num_classes)
    _check_drop_skip(drop_skip, 4, "ResNet U-Net", "for a ResNet encoder")  # before any download
    return ResNetUNet(build_resnet_features(encoder, encoder_weights), num_classes, drop_skip)
