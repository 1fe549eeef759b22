"""Problem 1 grading path: predict the class of every image listed in a csv and write ``id,filename,label``.

    python p1_inference.py --csv data_2025/p1_data/office/val.csv --image-dir data_2025/p1_data/office/val \
        --output out/pred.csv --checkpoint checkpoints/p1_best.pth       # prints the accuracy: val.csv has labels
    bash hw1_1.sh data_2025/p1_data/office/val.csv data_2025/p1_data/office/val out/pred.csv   # as the grader runs it

Input: a csv with a ``filename`` column (``id`` and ``label`` optional; any column order, extra columns, a BOM,
``None`` or empty labels are fine; a label that is not a class is a warning naming its line, and the row is still
predicted); a filename is looked up as written under --image-dir (``sub/x.jpg``: that file, never a top-level
x.jpg). The accuracy is printed over the valid labels.
Output: header ``id,filename,label``, one row per input row in input order, the input's id (the row index when
the csv has no id column), the bare filename (``x.jpg`` for ``sub/x.jpg``) and the predicted class. The csv is
written atomically.
An unreadable or missing image is reported with its csv line, gets label -1 (every other row is still
predicted), and the exit code is 1. The checkpoint alone rebuilds the model and its evaluation transform.
"""
import argparse
import csv
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from utils.classify import classify, eval_transform_for, load_classifier
from utils.datasets import CsvRow, collate_list, read_image_csv, read_rgb, to_chw_uint8
from utils.distributed import resolve_device
from utils.cli import HelpFormatter, add_flag, file_path, require_grading_checkpoint, run_cli
from utils.fileio import check_target, refuse_symlink_loop, write_atomic
from utils.precision import amp_dtype
from utils.runlog import progress
from utils.signals import ignore_stop_signals

FAILED_LABEL = -1  # written for rows whose image cannot be read: an integer, and never a real class


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Classify every image listed in a csv (id,filename,label).",
                                     formatter_class=HelpFormatter)
    add_flag(parser, "--csv", more="a 'filename' column is enough; the hidden test csv has label 'None'", required=True)
    add_flag(parser, "--image-dir", required=True)
    parser.add_argument("--output", type=file_path, required=True,
                        help="predictions csv (id,filename,label); its folder is created if missing. Rows whose "
                             "image cannot be read get label {}".format(FAILED_LABEL))
    add_flag(parser, "--checkpoint", Path("checkpoints/p1_best.pth"), "a p1_classifier (setting C is the graded "
                                                                     "model)")
    add_flag(parser, "--device", "auto")
    add_flag(parser, "--batch-size", 64, "lower it on out-of-memory")
    add_flag(parser, "--workers", min(4, os.cpu_count() or 1), "image decoding; up to 4, no more than the CPU count")
    add_flag(parser, "--amp", True)
    return parser


class CsvRowImages(torch.utils.data.Dataset):
    """Rows of an images csv -> (index, transformed (3, S, S) image or None, error message or None)."""

    def __init__(self, rows: List[CsvRow], image_dir: Path, transform: Callable) -> None:
        self.rows, self.image_dir, self.transform = rows, image_dir, transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> Tuple[int, Optional[torch.Tensor], Optional[str]]:
        row = self.rows[index]
        try:
            return index, self.transform(to_chw_uint8(read_rgb(self.image_dir / row.path))), None
        except (OSError, ValueError) as exc:
            return index, None, "csv line {} ({}): {}".format(row.line, row.path, exc)


OUTPUT_HEADER = ("id", "filename", "label")


def output_rules(args: argparse.Namespace) -> Dict[str, Any]:
    """What the output csv may replace: only a prediction csv (its header), never the checkpoint or the input csv."""
    return {"signature": ",".join(OUTPUT_HEADER).encode(), "inputs": (args.csv, args.checkpoint)}


def write_csv_atomic(path: Path, header: List[str], records: List[List[Any]], **check: Any) -> None:
    """Write a csv through ``utils.fileio.write_atomic`` (``check``: its rules for what may be replaced): a symlink
    at ``path`` is replaced, not written through; a failed write keeps the file already there and raises an OSError
    naming ``path``."""
    def write(f: Any) -> None:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(records)

    check.setdefault("signature", ",".join(header).encode())  # by default it replaces only a csv headed alike
    write_atomic(path, write, what="csv", text=True, **check)


def main(args: argparse.Namespace) -> Dict[str, Any]:
    t0 = time.time()
    # the grader wants an answer for every row: duplicates and unusable labels are warnings, labels are not needed
    rows = read_image_csv(args.csv, duplicates="warn", bad_labels="warn")
    if not args.image_dir.is_dir():
        raise FileNotFoundError("image folder not found: {}".format(args.image_dir))
    if not any((args.image_dir / r.path).is_file() for r in rows):
        raise FileNotFoundError("none of the {} images listed in {} is in {}, e.g. {}".format(
            len(rows), args.csv, args.image_dir, rows[0].path))
    refuse_symlink_loop(args.output, "output")
    if args.output.is_dir():
        raise ValueError("output {} is a folder; give a csv file path".format(args.output))
    if args.output.resolve() == args.csv.resolve():
        raise ValueError("output {} is the input csv; it would be overwritten: give another path".format(args.output))
    if args.output.resolve() in {(args.image_dir / r.path).resolve() for r in rows}:
        raise ValueError("output {} is an input image listed in {}; it would be overwritten: give another path".format(
            args.output, args.csv))
    check_target(args.output, "prediction csv", **output_rules(args))  # the checkpoint, a user's file: refused
    try:  # early: a bad output path fails before the work
        args.output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, no permission
        raise ValueError("cannot create the output folder {}: {}".format(args.output.parent, exc)) from None
    device = resolve_device(args.device)
    require_grading_checkpoint(args.checkpoint, __file__, "p1_best.pth")
    model, ckpt = load_classifier(args.checkpoint, device)
    dtype = amp_dtype(device, args.amp)

    loader = torch.utils.data.DataLoader(CsvRowImages(rows, args.image_dir, eval_transform_for(ckpt)),
                                         batch_size=args.batch_size, num_workers=args.workers,
                                         collate_fn=collate_list, pin_memory=device.type == "cuda",
                                         worker_init_fn=ignore_stop_signals if args.workers > 0 else None)
    preds = [FAILED_LABEL] * len(rows)
    failed = []  # type: List[str]
    bar = progress(loader, desc="classifying", unit="batch")
    for samples in bar:
        good = [s for s in samples if s[1] is not None]
        for _, _, error in samples:
            if error is not None:
                failed.append(error)
                bar.write("error: {}".format(error), file=sys.stderr)  # on its own line, not inside the bar
        if good:
            images = torch.stack([s[1] for s in good]).to(device, non_blocking=True)
            labels = classify(model, images, ckpt, dtype).argmax(dim=1).tolist()
            for (index, _, _), label in zip(good, labels):
                preds[index] = int(label)
    write_csv_atomic(args.output, list(OUTPUT_HEADER), [[r.id, r.filename, p] for r, p in zip(rows, preds)],
                     **output_rules(args))

    result = {"rows": len(rows), "failed": failed, "seconds": round(time.time() - t0, 2),
              "checkpoint": str(args.checkpoint), "output": str(args.output)}  # type: Dict[str, Any]
    # accuracy over the rows with a valid label and a readable image (none for the hidden csv's 'None' labels)
    scored = [(r.label, p) for r, p in zip(rows, preds) if p != FAILED_LABEL and r.label is not None]
    if scored:
        result["accuracy"] = sum(label == p for label, p in scored) / len(scored)
        left_out = [text.format(n) for text, n in (("{} unreadable", len(failed)),
                                                   ("{} without a valid label",
                                                    sum(r.label is None for r, p in zip(rows, preds)
                                                        if p != FAILED_LABEL)))
                    if n]
        print("accuracy {:.4f} on {} image(s){}".format(result["accuracy"], len(scored), " ({}, not counted)".format(
            ", ".join(left_out)) if left_out else ""))
    print("wrote {} prediction(s) to {} in {:.1f} s{}".format(
        len(rows), args.output, result["seconds"], "; {} image(s) failed".format(len(failed)) if failed else ""))
    return result


def cli(argv: Optional[List[str]] = None) -> int:
    """The command line: one-line errors (exit 2), out of memory (exit 3), Ctrl-C (exit 130); 1 when an image
    failed, else 0."""
    return 1 if run_cli(main, get_args_parser(), argv, inference=True)["failed"] else 0


if __name__ == "__main__":
    sys.exit(cli())
