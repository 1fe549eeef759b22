"""Segmentation models: U-Nets (classic, or on a torchvision ResNet encoder), DeepLabV3 and DeepLabV3+
(ResNet-50/101, output stride 8 or 16) and VGG16-FCN32s; the classifier's ResNet backbone; and the loading of
pretrained weights into them.

Every segmentation model returns ``{"out": logits}`` of shape (B, num_classes, H, W) (DeepLabV3/V3+ with
``aux_loss`` also return ``"aux"``), so training, evaluation and inference share one output contract. Build
models through ``build_seg_model(config)`` so that a checkpoint's saved config rebuilds the same network.

Nothing here touches the network unless the caller explicitly asks for ``"imagenet"`` or ``"coco"`` weights
(``"coco"`` is read from the torch hub cache when the file is there); any other ``backbone_weights`` value
than ``"none"`` is a local file path, and a file that cannot be loaded or does not match the model is an
error naming the keys, never a silent fallback.

One module per subject; this package only gathers their public names:

    weights.py   reading a local weights file, unwrapping and de-prefixing its state_dict, exact key checks
    resnet.py    ResNet backbones: the classifier's (``fc`` removed) and the dilated segmentation encoder
    unet.py      the classic U-Net and the ResNet-encoder U-Net, with the skip ablation
    deeplab.py   DeepLabV3 / DeepLabV3+ and torchvision's COCO DeepLabV3 weights
    fcn.py       VGG16-FCN32s
    build.py     build_seg_model(config) and input_multiple(config): the entry points
"""
from utils.models.build import SEG_ARCHS, build_seg_model, canonical_seg_config, input_multiple
from utils.models.deeplab import (DEEPLAB_ATROUS_RATES, DEEPLAB_FINAL_CONVS, DEEPLAB_OS8_ATROUS_RATES,
                                  DEEPLAB_OS16_ATROUS_RATES, RESNET_BACKBONES, DeepLabV3Plus, build_deeplabv3,
                                  coco_weights_path, load_deeplab_state_dict, load_deeplab_weights)
from utils.models.fcn import FCN32s, build_fcn32s
from utils.models.resnet import CLASSIFIER_BACKBONES, ResNetFeatures, build_resnet_backbone, build_resnet_features
from utils.models.unet import RESNET_UNET_SKIPS, UNET_ENCODERS, DoubleConv, ResNetUNet, UNet, build_resnet_unet
from utils.models.weights import load_backbone_weights, load_resnet_state_dict

__all__ = [
    "SEG_ARCHS",
    "RESNET_BACKBONES",
    "UNET_ENCODERS",
    "RESNET_UNET_SKIPS",
    "CLASSIFIER_BACKBONES",
    "DEEPLAB_ATROUS_RATES",
    "DEEPLAB_OS8_ATROUS_RATES",
    "DEEPLAB_OS16_ATROUS_RATES",
    "DEEPLAB_FINAL_CONVS",
    "UNet",
    "DoubleConv",
    "ResNetUNet",
    "DeepLabV3Plus",
    "FCN32s",
    "ResNetFeatures",
    "build_resnet_backbone",
    "build_resnet_features",
    "build_resnet_unet",
    "build_deeplabv3",
    "coco_weights_path",
    "load_deeplab_state_dict",
    "load_deeplab_weights",
    "build_fcn32s",
    "build_seg_model",
    "canonical_seg_config",
    "input_multiple",
    "load_resnet_state_dict",
    "load_backbone_weights",
]
