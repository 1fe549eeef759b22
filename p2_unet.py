"""Problem 2, model A: a U-Net trained from scratch on 512x512 satellite tiles (7 land-cover classes).

The report's baseline, and its skip-connection ablation (``--drop-skip``). ``--encoder resnet34`` swaps the
classic encoder for a torchvision ResNet (ImageNet weights with ``--encoder-weights imagenet``) under the
same kind of decoder: one of the options of docs/problem2.md, "Beating the baselines".

    # CPU smoke run on generated data
    python -m tools.toydata --out toy && python p2_unet.py --data-dir toy/p2_data --output-dir runs/unet \
        --epochs 2 --batch-size 4 --crop-size 64 --base-width 8
    # one GPU, the report's recipe
    python p2_unet.py --data-dir data_2025/p2_data --output-dir runs/p2_unet
    # the report's ablation: one skip connection dropped (0 = the shallowest; `random` picks one with --seed)
    python p2_unet.py --data-dir data_2025/p2_data --output-dir runs/p2_unet_drop_skip --drop-skip 0
    # U-Net on an ImageNet ResNet-34 encoder (downloaded once to the torch cache), without the stem's skip
    python p2_unet.py --data-dir data_2025/p2_data --output-dir runs/p2_unet_r34 --encoder resnet34 \
        --encoder-weights imagenet --drop-skip 0
    # N GPUs (the batch size is per GPU)
    torchrun --nproc_per_node=N p2_unet.py --data-dir data_2025/p2_data --output-dir runs/p2_unet

A killed run resumes from OUTPUT_DIR/checkpoint.pth when started again with the same command.
"""
import argparse
import random
from typing import Any, Dict, List, Tuple, Union

from utils.cli import HelpFormatter, add_flag, run_cli
from utils.models import RESNET_UNET_SKIPS, UNET_ENCODERS, input_multiple
from utils.segmentation import add_seg_train_args, fit


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train a U-Net from scratch for 7-class satellite segmentation (report model A).",
        formatter_class=HelpFormatter)
    # Recipe: AdamW 1e-3, cosine, 100 epochs, batch 8 at 512x512; from-scratch U-Nets train stably with Adam
    # at this rate, where SGD needs far more epochs to leave the all-'agriculture' plateau.
    add_seg_train_args(parser, epochs=100, batch_size=8, lr=1e-3, optimizer="adamw", weight_decay=1e-4,
                       schedule_shape="cosine", output_dir="runs/p2_unet")
    g = parser.add_argument_group("U-Net")
    add_flag(g, "--encoder", "none", "'none': the classic U-Net below (--base-width, --depth, --bilinear); or a "
                                     "torchvision ResNet (stem + layer1..4, inputs multiples of 32) under a U-Net "
                                     "decoder with 256/128/64/32/16 channels; resnet34 is the usual choice (21M "
                                     "encoder parameters)", choices=("none",) + UNET_ENCODERS)
    g.add_argument("--encoder-weights", default="none",
                   help="with --encoder: 'imagenet' (torchvision's ImageNet weights, downloaded once to the torch "
                        "cache), 'none' (random) or a PATH to a local torchvision ResNet state_dict (fc dropped, any "
                        "other key mismatch is an error naming the keys)")
    g.add_argument("--base-width", type=int, default=64,
                   help="classic U-Net: channels of the first stage; stage i has base-width * 2^i (32 halves "
                        "compute)")
    g.add_argument("--depth", type=int, default=4,
                   help="classic U-Net: number of down-sampling stages; inputs must be multiples of 2^depth")
    g.add_argument("--drop-skip", type=skip_index, nargs="*", default=[],
                   help="skip connections to remove for the ablation (the 2025 report drops one), 0 = shallowest: "
                        "classic U-Net 0 (full resolution) .. depth-1; ResNet encoder 0 (stem, 1/2) .. 3 (layer3, "
                        "1/16); 'random' drops one chosen with --seed (recorded in the config and results.json) "
                        "(default: none: the standard U-Net)")
    g.add_argument("--bilinear", action="store_true",
                   help="classic U-Net: bilinear up-sampling instead of transposed convolutions (fewer parameters)")
    return parser


def skip_index(text: str) -> Union[int, str]:
    """argparse type of --drop-skip: a skip index, or 'random'."""
    if text == "random":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a skip index (0 = shallowest) or 'random', got {!r}".format(text))


def chosen_skips(args: argparse.Namespace) -> Tuple[List[int], Dict[str, Any]]:
    """The skips to drop, 'random' resolved with --seed (the same seed picks the same skip, so a resumed run
    matches), and the note that records the draw."""
    skips = [s for s in args.drop_skip if s != "random"]
    if "random" not in args.drop_skip:
        return sorted(set(skips)), {}
    count = args.depth if args.encoder == "none" else RESNET_UNET_SKIPS
    choice = random.Random(args.seed).choice([i for i in range(count) if i not in skips])
    print("--drop-skip random: dropping skip {} of 0..{} (seed {})".format(choice, count - 1, args.seed))
    return sorted(set(skips + [choice])), {"drop_skip_random": {"seed": args.seed, "chosen": choice}}


def model_config(args: argparse.Namespace) -> Dict[str, Any]:
    """The dict that rebuilds this model (stored in every checkpoint)."""
    skips, note = chosen_skips(args)
    if args.encoder == "none":
        if args.encoder_weights != "none":
            raise SystemExit("error: --encoder-weights needs a ResNet --encoder (the classic U-Net trains from "
                             "scratch)")
        # exactly the keys of checkpoints written before --encoder existed, so their runs resume
        config = {"arch": "unet", "num_classes": 7, "base_width": args.base_width, "depth": args.depth,
                  "drop_skip": skips, "bilinear": args.bilinear}
        rule = "2^--depth"
    else:
        config = {"arch": "unet", "num_classes": 7, "encoder": args.encoder, "drop_skip": skips,
                  "backbone_weights": args.encoder_weights}
        rule = "the ResNet encoder's stride"
    multiple = input_multiple(config)
    if args.crop_size % multiple:  # here, before a model of 2^depth widths is built (--depth 12: the OOM killer)
        raise SystemExit("error: --crop-size {} is not a multiple of {} = {}: the U-Net halves it that often".format(
            args.crop_size, rule, multiple))
    return dict(config, **note)


def main(args: argparse.Namespace) -> Dict[str, Any]:
    return fit(args, model_config(args))


if __name__ == "__main__":
    run_cli(main, get_args_parser())
