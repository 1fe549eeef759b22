"""Problem 2, model B (the improved model): DeepLabV3-ResNet101 from torchvision's COCO weights.

The report's model B is torchvision's ``deeplabv3_resnet101`` as published (output stride 8, ASPP rates
12/24/36 with image pooling, an auxiliary FCN head on layer3 whose loss counts 0.5), initialised from its
COCO-with-VOC-labels weights with the two 21-class final 1x1 convs (main and auxiliary head) re-made for the
7 classes. ``--arch deeplabv3plus`` adds DeepLabV3+'s decoder (layer1 skip); ``--arch fcn32s`` trains the
course's VGG16-FCN32s baseline with the same engine.

    # CPU smoke run on generated data (random weights, ResNet-50 at output stride 16: nothing is downloaded)
    python -m tools.toydata --out toy && python p2_deeplab.py --data-dir toy/p2_data --output-dir runs/deeplab \
        --epochs 2 --batch-size 4 --crop-size 64 --weights none --encoder resnet50 --output-stride 16
    # one GPU, the report's recipe (COCO weights from the torch hub cache, downloaded there once)
    python p2_deeplab.py --data-dir data_2025/p2_data --output-dir runs/p2_deeplab
    # offline: a local copy of torchvision's file (or any torchvision DeepLabV3 state_dict of the same depth)
    python p2_deeplab.py --weights /path/to/deeplabv3_resnet101_coco-586e9e4e.pth ...
    # DeepLabV3+ (ASPP + layer1 decoder), backbone and ASPP from the COCO DeepLabV3
    python p2_deeplab.py --data-dir data_2025/p2_data --output-dir runs/p2_deeplabv3plus --arch deeplabv3plus
    # N GPUs
    torchrun --nproc_per_node=N p2_deeplab.py --data-dir data_2025/p2_data --output-dir runs/p2_deeplab

Snapshots for the report: ``--snapshot-epochs 1 50 100 --snapshot-images 0018_sat.jpg 0065_sat.jpg 0109_sat.jpg``
(the defaults) keep those epochs' models and draw OUTPUT_DIR/snapshots.png.
"""
import argparse
from typing import Any, Dict

from utils.cli import HelpFormatter, add_flag, run_cli
from utils.models import RESNET_BACKBONES
from utils.segmentation import add_seg_train_args, fit


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train DeepLabV3-ResNet for 7-class satellite segmentation (report model B).",
        formatter_class=HelpFormatter)
    # Recipe: torchvision's segmentation reference for DeepLabV3 (SGD 0.01 at batch 8, momentum 0.9,
    # wd 1e-4, poly decay), COCO-initialised model, 100 epochs at 512x512.
    add_seg_train_args(parser, epochs=100, batch_size=8, lr=0.01, optimizer="sgd", weight_decay=1e-4,
                       schedule_shape="poly", output_dir="runs/p2_deeplab")
    g = parser.add_argument_group("DeepLabV3")
    add_flag(g, "--arch", "deeplabv3", "deeplabv3 (model B); deeplabv3plus (DeepLabV3+: ASPP plus a decoder fed by "
                                       "layer1 for sharper borders; ~1.3x DeepLabV3's FLOPs at the same output "
                                       "stride, ResNet-101 at 16); fcn32s (the course's VGG16-FCN32s baseline)",
             choices=("deeplabv3", "deeplabv3plus", "fcn32s"))
    add_flag(g, "--encoder", "resnet101", "the DeepLab's (resnet50: ~0.7x the FLOPs; torchvision's COCO DeepLabV3 "
                                          "weights score 66.4 (ResNet-50) vs 67.4 (ResNet-101) mIoU on "
                                          "COCO-val2017-VOC)", choices=RESNET_BACKBONES)
    g.add_argument("--weights", default="coco",
                   help="'coco': torchvision's COCO-with-VOC-labels DeepLabV3 of this --encoder (from the torch hub "
                        "cache, downloaded there once; final 21-class convs re-made; deeplabv3plus takes backbone, "
                        "ASPP and aux head from it); 'imagenet': ImageNet ResNet backbone only, heads random; 'none': "
                        "random, nothing downloaded; or a PATH to a local torchvision DeepLabV3 state_dict in the "
                        "coco file's format (every key but the final convs checked exactly). fcn32s: imagenet/none")
    g.add_argument("--output-stride", choices=("auto", "8", "16"), default="auto",
                   help="encoder output stride: 8 (ASPP rates 12/24/36, torchvision's published model) or 16 "
                        "(rates 6/12/18, ~3.6x fewer FLOPs for DeepLabV3-ResNet101); auto = 8 for deeplabv3, 16 "
                        "for deeplabv3plus (its decoder restores detail from layer1)")
    g.add_argument("--no-aux", dest="aux_loss", action="store_false",
                   help="drop the auxiliary FCN head on layer3 (DeepLab only) (default: %(default)s: the head is "
                        "trained, its loss weighted by --aux-weight)")
    return parser


def model_config(args: argparse.Namespace) -> Dict[str, Any]:
    """The dict that rebuilds this model (stored in every checkpoint)."""
    if args.arch == "fcn32s":
        if args.weights == "coco":
            raise SystemExit("error: fcn32s has no COCO weights; pass --weights imagenet (torchvision's VGG16) or none")
        return {"arch": "fcn32s", "num_classes": 7, "backbone_weights": args.weights}
    output_stride = int(args.output_stride) if args.output_stride != "auto" else 8 if args.arch == "deeplabv3" else 16
    return {"arch": args.arch, "num_classes": 7, "encoder": args.encoder, "output_stride": output_stride,
            "aux_loss": args.aux_loss, "backbone_weights": args.weights}


def main(args: argparse.Namespace) -> Dict[str, Any]:
    return fit(args, model_config(args))


if __name__ == "__main__":
    run_cli(main, get_args_parser())
