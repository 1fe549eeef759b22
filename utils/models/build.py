"""The segmentation models' entry points: ``build_seg_model(config)`` builds the network a config (a checkpoint's
saved one included) describes, ``input_multiple(config)`` says the input size it needs."""
from typing import Any, Dict, Mapping

from torch import nn

from utils.models.deeplab import build_deeplabv3
from utils.models.fcn import build_fcn32s
from utils.models.unet import ResNetUNet, UNet, build_resnet_unet

SEG_ARCHS = ("unet", "deeplabv3", "deeplabv3plus", "fcn32s")


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
    weights = config.get("backbone_weights")  # None: no weights, as "none" (each builder reads it so)
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
