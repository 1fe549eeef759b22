"""Problem 2 grading path: segment every satellite image of a folder and write ``<id>_mask.png`` files.

    python p2_inference.py --input-dir data_2025/p2_data/validation --output-dir out_masks \
        --checkpoint checkpoints/p2_best.pth
    python -m utils.metrics -g data_2025/p2_data/validation -p out_masks     # score it as the grader does

    # test-time augmentation (flip + scales 0.75/1/1.25: 6 views) and a two-checkpoint ensemble
    python p2_inference.py --input-dir DIR --output-dir OUT --tta flip,scale --checkpoint A.pth B.pth

Input: every .jpg/.jpeg/.png of the folder that is not a ``*_mask.png`` (the grader's are ``xxxx_sat.jpg``); two
images that would write one mask (``a.jpg`` and ``a.png``) are an error before any work.
Output: ``xxxx_mask.png`` per input, RGB, the input's exact size, only the seven class colours (never red),
and nothing else in the output folder (a .png there that this run would not write, e.g. a stale mask of other
images, is an error before any work: the grader pairs every .png by sorted name). Each checkpoint alone rebuilds
its model (U-Net, DeepLabV3(+) or FCN32s); several are averaged in probability space. An image with a side over
--tile-threshold is predicted in overlapping --tile-size tiles (probabilities averaged where they overlap), so
memory stays bounded. An unreadable image is reported by name, every other mask is still written, and the exit
code is 1.
"""
import argparse
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from utils.checkpoint import atomic_temp_target
from utils.fileio import check_target, make_folder, refuse_symlink_loop
from utils.datasets import IMAGE_SUFFIXES, PathLike, collate_list, mask_name_for, read_rgb, to_chw_uint8
from utils.distributed import resolve_device
from utils.masks import write_mask
from utils.cli import (HelpFormatter, add_flag, nonnegative_int, positive_int,
                       require_grading_checkpoint, run_cli)
from utils.precision import amp_dtype
from utils.runlog import progress
from utils.signals import ignore_stop_signals
from utils.predict import load_segmenter, predict_probs


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Write a colour mask for every satellite image in a folder.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--input-dir", type=Path, required=True, help="folder of xxxx_sat.jpg images")
    add_flag(parser, "--output-dir", more="xxxx_mask.png files (created if missing; nothing else is written there)",
             required=True)
    add_flag(parser, "--checkpoint", [Path("checkpoints/p2_best.pth")], "from p2_unet.py or p2_deeplab.py (best.pth "
             "or a snapshot); several form an ensemble whose class probabilities are averaged (each costs one model's "
             "time)", nargs="+")
    add_flag(parser, "--device", "auto")
    add_flag(parser, "--batch-size", 8, "lower it on out-of-memory")
    add_flag(parser, "--workers", min(4, os.cpu_count() or 1), "image decoding; up to 4, no more than the CPU count")
    parser.add_argument("--tta", nargs="?", const=("flip",), default="", type=tta_views, metavar="flip,scale",
                        help="test-time augmentation, averaged in probability space: 'flip' (horizontal flip, 2 "
                             "views; also what a bare --tta means), 'scale' (each of --tta-scales), or "
                             "'flip,scale' (2 x scales views: 6 with the default scales, ~6x the time) "
                             "(default: none: one plain pass)")
    parser.add_argument("--tta-scales", type=float, nargs="+", default=[0.75, 1.0, 1.25],
                        help="image scales for --tta scale; each view's probabilities are resized back to the "
                             "input's size (1.25 costs ~1.6x a plain pass)")
    add_flag(parser, "--amp", True)
    parser.add_argument("--tile-threshold", type=positive_int, default=2048, metavar="PIXELS",
                        help="an image whose height or width exceeds this is predicted in overlapping tiles (memory "
                             "then stays that of one tile whatever the image's size); smaller images are predicted "
                             "whole, in batches")
    parser.add_argument("--tile-size", type=positive_int, default=1024, metavar="PIXELS",
                        help="side of the tiles of large images; lower it on out-of-memory")
    parser.add_argument("--tile-overlap", type=nonnegative_int, default=128, metavar="PIXELS",
                        help="at least this many pixels shared by neighbouring tiles, where their class "
                             "probabilities are averaged")
    return parser


def tta_views(spec: str) -> Tuple[str, ...]:
    """'flip', 'scale', 'flip,scale' (or '' for none) -> the sorted tuple of view kinds; argparse type."""
    names = tuple(sorted({name.strip() for name in spec.split(",") if name.strip()}))
    unknown = [name for name in names if name not in ("flip", "scale")]
    if unknown:
        raise argparse.ArgumentTypeError("unknown --tta view {}; use flip, scale or flip,scale".format(
            ", ".join(repr(n) for n in unknown)))
    return names


def list_input_images(folder: PathLike) -> List[Path]:
    """Images to segment, sorted: every entry whose name ends in .jpg/.jpeg/.png (any case) but not _mask.png.

    Every image gets a mask: a ``0102_sat.png`` beside the ``*_sat.jpg`` files is included, not skipped. Entries
    are not opened here; one that is not a regular file (a FIFO, a device, a folder named like an image) is listed
    and fails when read, naming it. Other files are named in one warning line on stderr.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError("input folder not found: {}".format(folder))
    images, other = [], []
    for path in sorted(folder.iterdir()):
        name = path.name.lower()
        if name.endswith("_mask.png"):
            continue  # ground truth beside its images (a validation folder)
        (images if path.suffix.lower() in IMAGE_SUFFIXES else other).append(path)
    if other and images:
        print("warning: ignoring {} file(s) in {} that are not .jpg/.jpeg/.png images: {}{}".format(
            len(other), folder, ", ".join(p.name for p in other[:5]), " ..." if len(other) > 5 else ""),
            file=sys.stderr)
    return images


def mask_names_for(images: Sequence[Path]) -> List[str]:
    """``mask_name_for`` of each image; a ValueError naming them when two images would write one mask (a.jpg and
    a.png, or 0001_sat.jpg and 0001.png), so that no mask silently overwrites another."""
    names = [mask_name_for(p) for p in images]
    sources = {}  # type: dict
    for image, name in zip(images, names):
        sources.setdefault(name, []).append(image.name)
    clashes = ["{} ({})".format(name, ", ".join(found)) for name, found in sources.items() if len(found) > 1]
    if clashes:
        raise ValueError("{} mask name(s) would be written by more than one image of {}: {}; rename or remove all "
                         "but one of each".format(len(clashes), Path(images[0]).parent, "; ".join(clashes[:5])))
    return names


class InferenceImages(torch.utils.data.Dataset):
    """Images for prediction; a file that cannot be read yields its error message instead of a tensor."""

    def __init__(self, files: List[Path]) -> None:
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tuple[int, Optional[torch.Tensor], Optional[str]]:
        try:
            return index, to_chw_uint8(read_rgb(self.files[index])), None
        except (OSError, ValueError) as exc:
            return index, None, str(exc)


def _groups_by_size(samples: List[Any]) -> List[List[Any]]:
    """Split a list of (index, image, error) into runs of equal image size (batched together)."""
    groups, by_shape = [], {}  # type: List[List[Any]], Dict[Any, List[Any]]
    for sample in samples:
        if sample[1] is None:
            continue
        by_shape.setdefault(tuple(sample[1].shape), []).append(sample)
    groups.extend(by_shape.values())
    return groups


def predict_ensemble(members: Sequence[Tuple[torch.nn.Module, Mapping[str, Any]]], images: torch.Tensor,
                     amp_dtype: Optional[torch.dtype] = None, tta: bool = False,
                     scales: Sequence[float] = (1.0,)) -> torch.Tensor:
    """Mean of ``predict_probs`` over several (model, config) pairs: a checkpoint ensemble, (B, C, H, W)."""
    with torch.no_grad():
        total = None  # type: Optional[torch.Tensor]
        for model, config in members:
            probs = predict_probs(model, images, config, amp_dtype, tta, scales)
            if total is not None and probs.shape != total.shape:
                raise ValueError("ensemble members disagree on the number of classes: {} vs {}".format(
                    probs.shape[1], total.shape[1]))
            total = probs if total is None else total + probs
        return total / len(members)


def tile_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Offsets of the fewest ``tile``-long windows that cover 0..length with neighbours sharing >= ``overlap``
    pixels, spread evenly: the first at 0, the last ending at ``length``; [0] when one window covers it all."""
    if length <= tile:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError("tile overlap must lie in 0..{} for tiles of {}, got {}".format(tile - 1, tile, overlap))
    count = math.ceil((length - tile) / (tile - overlap)) + 1
    return [(i * (length - tile) + (count - 1) // 2) // (count - 1) for i in range(count)]


def predict_tiled(members: Sequence[Tuple[torch.nn.Module, Mapping[str, Any]]], image: torch.Tensor,
                  amp_dtype: Optional[torch.dtype], tta: bool, scales: Sequence[float], tile: int,
                  overlap: int) -> torch.Tensor:
    """uint8 (1, 3, H, W) -> uint8 class map (H, W), on the image's device, from overlapping windows of at most
    ``tile`` x ``tile`` (``tile_starts``): each window is one ``predict_ensemble`` call, and where windows overlap
    their class probabilities are averaged before the argmax.

    Memory does not grow with the image's area: one window's forward pass plus the probabilities of one band of
    window rows (classes x ``tile`` x W), finished into the class map as soon as no further window reaches them.
    A ``tile`` at least as large as the image is one window: exactly ``predict_ensemble(...).argmax(1)``.
    """
    with torch.no_grad():
        if image.dim() != 4 or image.shape[0] != 1:
            raise ValueError("predict_tiled takes one image (1, 3, H, W), got shape {}".format(tuple(image.shape)))
        h, w = image.shape[-2:]
        out = torch.empty((h, w), dtype=torch.uint8, device=image.device)
        top, total, count = 0, None, None  # rows [top, top + len(count)): summed probabilities, windows per pixel

        def finish(rows: int) -> None:
            nonlocal top, total, count
            if rows > 0:  # (the first window's rows are 0: nothing summed yet)
                out[top:top + rows] = (total[:, :rows] / count[:rows]).argmax(0).to(torch.uint8)
                total, count, top = total[:, rows:], count[rows:], top + rows

        for y in tile_starts(h, tile, overlap):
            finish(y - top)  # no later window reaches above y
            bottom = min(y + tile, h)
            for x in tile_starts(w, tile, overlap):
                right = min(x + tile, w)
                probs = predict_ensemble(members, image[..., y:bottom, x:right], amp_dtype, tta, scales)[0]
                if total is None:
                    total = probs.new_zeros((probs.shape[0], 0, w))
                    count = probs.new_zeros((0, w))
                grow = bottom - (top + count.shape[0])
                if grow > 0:
                    total = torch.cat([total, total.new_zeros((total.shape[0], grow, w))], dim=1)
                    count = torch.cat([count, count.new_zeros((grow, w))], dim=0)
                total[:, y - top:bottom - top, x:right] += probs
                count[y - top:bottom - top, x:right] += 1
        finish(h - top)
        return out


def check_output_folder(folder: Path, mask_names: List[str]) -> None:
    """The grader reads every .png of the output folder, paired with the labels by sorted name: a .png this run
    will not write (a stale mask of other images) is an error naming it, before any work; other files are named in
    a warning; temp files of an earlier, killed run's mask writes are removed."""
    if not folder.is_dir():
        return
    ours = set(mask_names)
    stray, other, temps = [], [], []  # type: List[str], List[str], List[Path]
    for path in sorted(folder.iterdir()):
        if path.name in ours:
            check_target(path, "mask")  # replaced only when it is a PNG (a mask of an earlier run), before any work
            continue
        if (atomic_temp_target(path.name) or "").endswith("_mask.png") and path.is_file() and not path.is_symlink():
            temps.append(path)
        else:
            (stray if path.name.lower().endswith(".png") else other).append(path.name)
    if stray:
        raise SystemExit("error: the output folder {} holds {} .png file(s) this run does not write: {}{}; the grader "
                         "reads every .png there, so they would misalign the masks: remove them or give another "
                         "folder".format(folder, len(stray), ", ".join(stray[:5]), " ..." if len(stray) > 5 else ""))
    if other:
        print("warning: the output folder {} also holds {} file(s) that are not masks: {}{}".format(
            folder, len(other), ", ".join(other[:5]), " ..." if len(other) > 5 else ""), file=sys.stderr)
    for path in temps:
        path.unlink()


def main(args: argparse.Namespace) -> Dict[str, Any]:
    t0 = time.time()
    device = resolve_device(args.device)
    files = list_input_images(args.input_dir)
    if not files:
        raise SystemExit("error: no images (*_sat.jpg, .jpg, .png) in {}".format(args.input_dir))
    mask_names = mask_names_for(files)  # two images that would write one mask: an error before any work
    if any(scale <= 0 for scale in args.tta_scales):
        raise SystemExit("error: --tta-scales must be positive, got {}".format(args.tta_scales))
    if args.tile_overlap >= args.tile_size:
        raise SystemExit("error: --tile-overlap ({}) must be smaller than --tile-size ({})".format(
            args.tile_overlap, args.tile_size))
    refuse_symlink_loop(args.output_dir, "output path")
    members = []  # (model, model_config) per checkpoint
    for path in args.checkpoint:
        require_grading_checkpoint(path, __file__, "p2_best.pth")
        model, ckpt = load_segmenter(path, device)
        members.append((model, ckpt["model_config"]))
    flip = "flip" in args.tta
    scales = args.tta_scales if "scale" in args.tta else [1.0]
    dtype = amp_dtype(device, args.amp)
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise SystemExit("error: output path {} exists and is not a folder".format(args.output_dir))
    if args.output_dir.resolve() == args.input_dir.resolve():
        raise SystemExit("error: the output folder {} is the input folder: masks would mix with (and could "
                         "overwrite) the inputs; give another folder".format(args.output_dir))
    check_output_folder(args.output_dir, mask_names)
    make_folder(args.output_dir)

    loader = torch.utils.data.DataLoader(InferenceImages(files), batch_size=args.batch_size,
                                         num_workers=args.workers, collate_fn=collate_list,
                                         pin_memory=device.type == "cuda",
                                         worker_init_fn=ignore_stop_signals if args.workers > 0 else None)
    failed = []  # type: List[str]
    written = 0
    # PNG encoding is CPU work that releases the GIL: overlap it with the next batch's forward pass.
    with ThreadPoolExecutor(max_workers=4) as pool:
        pending = []
        try:
            for samples in progress(loader, desc="segmenting", unit="batch"):
                for index, image, error in samples:
                    if image is None:
                        failed.append(error)
                        print("error: {}".format(error), file=sys.stderr)
                for group in _groups_by_size(samples):
                    if max(group[0][1].shape[-2:]) > args.tile_threshold:  # large: one image at a time, in tiles
                        preds = [predict_tiled(members, s[1][None].to(device), dtype, tta=flip, scales=scales,
                                               tile=args.tile_size, overlap=args.tile_overlap).cpu().numpy()
                                 for s in group]
                    else:
                        images = torch.stack([s[1] for s in group]).to(device, non_blocking=True)
                        probs = predict_ensemble(members, images, dtype, tta=flip, scales=scales)
                        preds = probs.argmax(1).to(torch.uint8).cpu().numpy()
                    for (index, _, _), pred in zip(group, preds):
                        target = args.output_dir / mask_names[index]
                        pending.append(pool.submit(write_mask, target, pred))
                    while len(pending) > 4 * args.batch_size:  # bound the masks held in memory
                        pending.pop(0).result()
                        written += 1
        except KeyboardInterrupt:  # Ctrl-C: masks queued but not started are dropped; those being written finish
            for future in pending:
                future.cancel()
            raise
        for future in pending:
            future.result()
            written += 1
    result = {"written": written, "failed": failed, "seconds": round(time.time() - t0, 2),
              "checkpoints": [str(p) for p in args.checkpoint], "archs": [c.get("arch") for _, c in members],
              "tta": list(args.tta), "scales": list(scales), "tile_threshold": args.tile_threshold}
    print("wrote {} mask(s) to {} in {:.1f} s{}".format(
        written, args.output_dir, result["seconds"], "; {} image(s) failed".format(len(failed)) if failed else ""))
    return result


def cli(argv: Optional[List[str]] = None) -> int:
    """The command line: one-line errors (exit 2), out of memory (exit 3), Ctrl-C (exit 130); 1 when an image
    failed, else 0."""
    return 1 if run_cli(main, get_args_parser(), argv, inference=True)["failed"] else 0


if __name__ == "__main__":
    sys.exit(cli())
