"""Problem 2, model B (the improved model): DeepLabV3 with a ResNet-50/101 backbone.

Dilated last stage (output stride 16), ASPP with image pooling, an auxiliary FCN head on layer3 whose
loss counts 0.5. ``--arch fcn32s`` trains the course's VGG16-FCN32s baseline with the same engine.

    # CPU smoke run on generated data (random backbone: nothing is downloaded)
    python -m tools.toydata --out toy && python p2_deeplab.py --data-dir toy/p2_data --output-dir runs/deeplab \
        --epochs 2 --batch-size 4 --crop-size 64 --backbone-weights none
    # one GPU, the report's recipe (ImageNet backbone from torchvision, downloaded once to the torch cache)
    python p2_deeplab.py --data-dir hw1_data/p2_data --output-dir runs/p2_deeplab
    # a local torchvision ResNet state_dict as the backbone (fc is dropped; any other key mismatch is an error)
    python p2_deeplab.py --backbone-weights hw1_data/p1_data/pretrain_model_SL.pt ...
    # N GPUs
    torchrun --nproc_per_node=N p2_deeplab.py --data-dir hw1_data/p2_data --output-dir runs/p2_deeplab

Snapshots for the report: ``--snapshot-epochs 1 50 100 --snapshot-images 0018_sat.jpg 0065_sat.jpg 0109_sat.jpg``
(the defaults) keep those epochs' models and draw OUTPUT_DIR/snapshots.png.
"""
import argparse
from typing import Any, Dict

from utils.cli import add_flag, run_cli
from utils.segmentation import add_seg_train_args, fit


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train DeepLabV3-ResNet for 7-class satellite segmentation (report model B).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # Recipe: torchvision's segmentation reference for DeepLabV3 (SGD 0.01 at batch 8, momentum 0.9,
    # wd 1e-4, poly decay), ImageNet backbone, 100 epochs at 512x512.
    add_seg_train_args(parser, epochs=100, batch_size=8, lr=0.01, optimizer="sgd", weight_decay=1e-4,
                       schedule_shape="poly", output_dir="runs/p2_deeplab")
    g = parser.add_argument_group("DeepLabV3")
    add_flag(g, "--arch", "deeplabv3", "deeplabv3 (model B) or fcn32s (the course's VGG16-FCN32s baseline)",
             choices=("deeplabv3", "fcn32s"))
    add_flag(g, "--encoder", "resnet50", "DeepLabV3's (resnet101: ~1.5x slower, often +1-2 mIoU)",
             choices=("resnet50", "resnet101"))
    g.add_argument("--backbone-weights", default="imagenet",
                   help="'imagenet' (torchvision's published weights, downloaded to the torch cache), 'none' "
                        "(random, nothing downloaded) or a PATH to a local torchvision ResNet state_dict")
    g.add_argument("--no-aux", dest="aux_loss", action="store_false",
                   help="drop the auxiliary FCN head on layer3 (DeepLabV3 only)")
    return parser


def model_config(args: argparse.Namespace) -> Dict[str, Any]:
    """The dict that rebuilds this model (stored in every checkpoint)."""
    if args.arch == "fcn32s":
        return {"arch": "fcn32s", "num_classes": 7, "backbone_weights": args.backbone_weights}
    return {"arch": "deeplabv3", "num_classes": 7, "backbone": args.encoder, "aux_loss": args.aux_loss,
            "backbone_weights": args.backbone_weights}


def main(args: argparse.Namespace) -> Dict[str, Any]:
    return fit(args, model_config(args))


if __name__ == "__main__":
    run_cli(main, get_args_parser())
