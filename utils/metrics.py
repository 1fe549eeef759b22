"""Mean IoU exactly as the course grades it, plus a command-line evaluator.

Counts are pooled over the whole set in a 7x7 confusion matrix (rows: label, columns: prediction).
IoU_c = TP_c / (#pred==c + #label==c - TP_c) for c in 0..5; mIoU is their mean. "Unknown" (6) is not
averaged but its pixels still count: a real class predicted on an unknown pixel is a false positive.

Rule for a class absent from both prediction and label (0/0): its IoU is NaN and it is left out of
the mean. (The course's script would return NaN for the whole mean; on the full validation set every
class is present, so both agree there.) Pixels decoded as red (code 4, not a class) are left out of
the counts, since the grader leaves them undefined.

Usage, mirroring the course's ``mean_iou_evaluate.py``:
    python -m utils.metrics -g data_2025/p2_data/validation -p output_masks/
"""
import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional

import torch

from utils.masks import CLASS_NAMES, NUM_CLASSES, NUM_EVAL_CLASSES


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Return the (C, C) int64 confusion matrix [label, pred]; pixels outside 0..C-1 in either are skipped."""
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    valid = (target >= 0) & (target < num_classes) & (pred >= 0) & (pred < num_classes)
    index = target[valid] * num_classes + pred[valid]
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


class ConfusionMatrix:
    """Accumulates a confusion matrix on the tensors' device; ``reduce()`` sums it across processes."""

    def __init__(self, num_classes: int = NUM_CLASSES, device: Optional[torch.device] = None) -> None:
        self.num_classes = num_classes
        self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of predictions and labels (any shape, same number of elements)."""
        if self.mat.device != pred.device:
            self.mat = self.mat.to(pred.device)
        self.mat += confusion_matrix(pred, target.to(pred.device), self.num_classes)

    def reduce(self) -> None:
        """All-reduce (sum) the matrix when running distributed; no-op otherwise."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.mat)

    def compute(self) -> Dict[str, object]:
        """Per-class IoU and mIoU of the accumulated counts (see ``iou_from_confusion``)."""
        return iou_from_confusion(self.mat)


def iou_from_confusion(mat: torch.Tensor, num_eval_classes: int = NUM_EVAL_CLASSES) -> Dict[str, object]:
    """Return {'iou': [IoU of classes 0..num_eval_classes-1, NaN if absent], 'miou': nan-mean, 'pixel_acc'}."""
    mat = mat.detach().double().cpu()
    tp = mat.diag()
    union = mat.sum(0) + mat.sum(1) - tp
    iou = [float(tp[c] / union[c]) if union[c] > 0 else float("nan") for c in range(num_eval_classes)]
    present = [v for v in iou if not math.isnan(v)]
    miou = sum(present) / len(present) if present else float("nan")
    total = float(mat.sum())
    return {"iou": iou, "miou": miou, "pixel_acc": float(tp.sum()) / total if total else float("nan")}


def format_iou(result: Dict[str, object]) -> str:
    """Human-readable lines in the course script's style."""
    lines = ["class #{} : {:.5f}   ({})".format(c, v, CLASS_NAMES[c]) for c, v in enumerate(result["iou"])]
    lines.append("mean_iou: {:.6f}".format(result["miou"]))
    return "\n".join(lines)


def _list_pngs(folder: Path) -> List[Path]:
    if not folder.is_dir():
        raise SystemExit("error: not a folder: {}".format(folder))
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise SystemExit("error: no .png files in {}".format(folder))
    return files


def evaluate_folders(gt_dir: Path, pred_dir: Path) -> Dict[str, object]:
    """mIoU between two folders of colour masks, paired by sorted *.png name as the grader pairs them."""
    from utils.masks import read_mask

    gt_files, pred_files = _list_pngs(gt_dir), _list_pngs(pred_dir)
    gt_names, pred_names = [p.name for p in gt_files], [p.name for p in pred_files]
    if gt_names != pred_names:
        missing = sorted(set(gt_names) - set(pred_names))[:5]
        extra = sorted(set(pred_names) - set(gt_names))[:5]
        raise SystemExit(
            "error: the folders hold different .png files ({} vs {}); missing from predictions: {}; "
            "not in labels: {}".format(len(gt_names), len(pred_names), missing, extra))
    cm = ConfusionMatrix()
    for gt_path, pred_path in zip(gt_files, pred_files):
        gt, pred = read_mask(gt_path), read_mask(pred_path)
        if gt.shape != pred.shape:
            raise SystemExit("error: size mismatch for {}: label {} vs prediction {}".format(
                gt_path.name, gt.shape[::-1], pred.shape[::-1]))
        cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
    result = cm.compute()
    result["num_images"] = len(gt_files)
    return result


def main(argv: Optional[List[str]] = None) -> Dict[str, object]:
    parser = argparse.ArgumentParser(description="mIoU of predicted colour masks against labels, as graded.")
    parser.add_argument("-g", "--labels", required=True, type=Path, help="folder of ground-truth *_mask.png")
    parser.add_argument("-p", "--pred", required=True, type=Path, help="folder of predicted *_mask.png")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = parser.parse_args(argv)
    result = evaluate_folders(args.labels, args.pred)
    if args.json:
        # strict JSON: NaN (a class absent from both folders) becomes null
        print(json.dumps({k: ([None if isinstance(v, float) and math.isnan(v) else v for v in val]
                              if isinstance(val, list) else (None if isinstance(val, float) and math.isnan(val) else val))
                          for k, val in result.items()}))
    else:
        print(format_iou(result))
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
