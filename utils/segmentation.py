"""Segmentation training shared by ``p2_unet.py`` and ``p2_deeplab.py``: the recipe flags, the loss, one epoch,
evaluation as graded, the mask snapshots, and ``fit`` (the epoch loop on the shared run lifecycle).

A script builds its parser with ``add_seg_train_args`` plus its model flags, turns those flags into a model config
dict (what ``utils.models.build_seg_model`` rebuilds from) and calls ``fit(args, config)``.
"""
import argparse
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F

from utils import distributed as dist_utils
from utils.cli import add_common_train_args, add_flag, nonnegative_float, positive_int
from utils.datasets import SegmentationDataset, read_rgb, to_chw_uint8
from utils.distributed import unwrap
from utils.fileio import save_figure
from utils.lifecycle import Run, checkpoint_state
from utils.masks import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, PALETTE, read_mask, write_mask
from utils.metrics import ConfusionMatrix
from utils.optim import make_optimizer, scaled_lr, schedule, set_lr, weight_decay_groups
from utils.precision import autocast, fast_layout, make_grad_scaler, maybe_compile
from utils.predict import SEG_KIND, predict_classes
from utils.runlog import progress
from utils.transforms import normalize, seg_train_transform

# the 2025 report template names 0018/0065/0109 in its table and 0013/0065/0104 in its question: both are drawn
SNAPSHOT_IMAGES = ["0013_sat.jpg", "0018_sat.jpg", "0065_sat.jpg", "0104_sat.jpg", "0109_sat.jpg"]


def add_seg_train_args(parser: argparse.ArgumentParser, epochs: int, batch_size: int, lr: float,
                       optimizer: str, weight_decay: float, schedule_shape: str, output_dir: str) -> None:
    """Common trainer flags plus the segmentation recipe flags, with the calling script's defaults."""
    add_common_train_args(parser, epochs=epochs, batch_size=batch_size, lr=lr, lr_ref_batch=None, workers=4,
                          data_dir="data_2025/p2_data", output_dir=output_dir)
    g = parser.add_argument_group("segmentation recipe")
    add_flag(g, "--crop-size", 512, "crops cover --min-scale..1 of the tile's area and are resized to this size "
                                    "(512: the full tile resolution)")
    add_flag(g, "--min-scale", 0.25, "random scale-and-crop")
    add_flag(g, "--color-jitter", 0.2, "brightness/contrast/saturation (hue a quarter of it); masks untouched")
    add_flag(g, "--optimizer", optimizer)
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    add_flag(g, "--weight-decay", weight_decay)
    g.add_argument("--schedule", choices=("poly", "cosine"), default=schedule_shape,
                   help="per-step decay after warm-up: poly (1-t)^0.9 or cosine")
    add_flag(g, "--warmup-epochs", 1.0)
    g.add_argument("--loss", choices=("ce", "focal", "ce+dice"), default="ce",
                   help="cross-entropy; focal (gamma 2) for class imbalance; or CE plus soft Dice")
    g.add_argument("--aux-weight", type=nonnegative_float, default=0.5,
                   help="weight of the auxiliary head's loss, for models that have one")
    g.add_argument("--val-batch-size", type=positive_int, default=4,
                   help="validation images per process per step, at full tile size")
    g.add_argument("--snapshot-epochs", type=positive_int, nargs="*", default=[1, 50, 100],
                   help="epochs (1-based) whose model is kept as snapshot_epochNNN.pth and whose predictions "
                        "on --snapshot-images go into snapshots.png")
    g.add_argument("--snapshot-images", nargs="*", default=SNAPSHOT_IMAGES,
                   help="validation images shown in the snapshot grid; missing names are skipped with a "
                        "warning")


def seg_loss(logits: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Cross-entropy (ignoring IGNORE_INDEX pixels), focal, or CE + soft Dice over the classes."""
    logits = logits.float()
    if kind == "ce":
        return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
    if kind == "focal":
        ce = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
        valid = target != IGNORE_INDEX
        pt = torch.exp(-ce)
        return ((1.0 - pt) ** 2 * ce)[valid].mean() if valid.any() else ce.sum() * 0.0
    if kind == "ce+dice":
        ce = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)
        valid = (target != IGNORE_INDEX).unsqueeze(1)
        probs = logits.softmax(1) * valid
        onehot = F.one_hot(target.clamp(max=logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2) * valid
        inter = (probs * onehot).sum((0, 2, 3))
        denom = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
        dice = 1.0 - (2.0 * inter + 1.0) / (denom + 1.0)
        return ce + dice.mean()
    raise ValueError("unknown loss {!r}".format(kind))


def train_one_epoch(model: torch.nn.Module, loader: torch.utils.data.DataLoader, optimizer: torch.optim.Optimizer,
                    scaler: Any, args: argparse.Namespace, run: Run, epoch: int, step: int,
                    lr_at: Any) -> Dict[str, Any]:
    """One pass over the training set; returns the mean loss, the step counter after it, and whether a
    SIGINT/SIGTERM ended it early (``interrupted``, after ``batches`` steps)."""
    model.train()
    device, dtype = run.device, run.dtype
    sums = run.carried_sums(torch.zeros(2, device=device))  # loss, steps (the resumed epoch's earlier ones too)
    one = torch.ones((), device=device)
    count = 0
    bar = progress(loader, desc="epoch {}/{}".format(epoch, args.epochs), leave=False)
    t0 = time.time()
    interrupted = False
    for i, (images, masks) in enumerate(bar):
        set_lr(optimizer, lr_at(step))
        images = normalize(images.to(device, non_blocking=True))
        masks = masks.to(device, non_blocking=True)
        if fast_layout(device, dtype):
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            out = model(images)
            loss = seg_loss(out["out"], masks, args.loss)
            if "aux" in out and args.aux_weight > 0:
                loss = loss + args.aux_weight * seg_loss(out["aux"], masks, args.loss)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        sums += torch.stack([loss.detach().float(), one])
        count += 1
        step += 1
        if i % args.print_freq == 0:  # the only host sync in the loop, at an interval
            bar.set_postfix(loss="{:.4f}".format(loss.item()), lr="{:.2e}".format(lr_at(step - 1)),
                            img_s="{:.1f}".format(count * args.batch_size / max(time.time() - t0, 1e-6)))
        if run.stop.requested(i + 1, device):  # all ranks agree here
            interrupted = True
            break
    dist_utils.all_reduce_sum(sums)
    return {"train_loss": float(sums[0] / sums[1].clamp(min=1)), "step": step, "interrupted": interrupted,
            "sums": sums, "batches": count, "train_seconds": time.time() - t0, "lr": lr_at(max(step - 1, 0))}


def evaluate(model: torch.nn.Module, loader: torch.utils.data.DataLoader, device: torch.device,
             dtype: Optional[torch.dtype], config: Dict[str, Any]) -> Dict[str, Any]:
    """Pooled 7x7 confusion matrix over the whole validation set (all ranks), then IoU as graded."""
    with torch.no_grad():
        model.eval()
        cm = ConfusionMatrix(NUM_CLASSES, device=device)
        for images, masks in progress(loader, desc="validate", leave=False):
            pred = predict_classes(model, images.to(device, non_blocking=True), config, dtype)
            cm.update(pred, masks.to(device, non_blocking=True))
        cm.reduce()
        result = cm.compute()
        return {"val_miou": result["miou"], "val_iou": result["iou"], "val_pixel_acc": result["pixel_acc"]}


def snapshot(model: torch.nn.Module, run: Run, epoch: int) -> None:
    """Predicted masks of this epoch's model for the snapshot images, then the redrawn grid (main process)."""
    folder = run.out / "snapshots" / "epoch_{:03d}".format(epoch)
    folder.mkdir(parents=True, exist_ok=True)
    for path in _snapshot_images(run.args):
        image = to_chw_uint8(read_rgb(path)).unsqueeze(0).to(run.device)
        pred = predict_classes(model, image, run.config, run.dtype)[0].cpu().numpy()
        write_mask(folder / (path.name.replace("_sat.jpg", "") + "_mask.png"), pred)
    grid = draw_snapshot_grid(run.out, run.args)
    if grid is not None:
        run.log.image("snapshots", grid, epoch)


def _snapshot_images(args: argparse.Namespace) -> List[Path]:
    """The snapshot images that exist in the validation folder."""
    val_dir = Path(args.data_dir) / "validation"
    return [val_dir / name for name in args.snapshot_images if (val_dir / name).is_file()]


def draw_snapshot_grid(out: Path, args: argparse.Namespace) -> Optional[Path]:
    """snapshots.png: rows input, ground truth, then one per snapshot epoch; columns the snapshot images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = _snapshot_images(args)
    epochs = sorted(p for p in (out / "snapshots").glob("epoch_*") if p.is_dir())
    if not images or not epochs:
        return None
    rows = 2 + len(epochs)
    width = 2.6 * len(images)
    key_height = class_key_height(width)
    fig, axes = plt.subplots(rows, len(images), figsize=(width, 2.6 * rows + key_height), squeeze=False)
    for col, path in enumerate(images):
        image_id = path.name.replace("_sat.jpg", "")
        panels = [("input", read_rgb(path))]
        mask_path = path.with_name(image_id + "_mask.png")
        panels.append(("ground truth", _palette_rgb(read_mask(mask_path)) if mask_path.is_file() else None))
        for folder in epochs:
            pred_path = folder / (image_id + "_mask.png")
            panels.append(("epoch {}".format(int(folder.name.split("_")[1])),
                           _palette_rgb(read_mask(pred_path)) if pred_path.is_file() else None))
        for row, (title, array) in enumerate(panels):
            ax = axes[row][col]
            ax.axis("off")
            if array is not None:
                ax.imshow(array, interpolation="nearest")
            ax.set_title("{}: {}".format(image_id, title) if row == 0 else title, fontsize=9)
    add_class_key(fig, key_height)
    path = out / "snapshots.png"
    try:
        save_figure(fig, path, "snapshot figure", dpi=90)
    finally:
        plt.close(fig)
    return path


KEY_ENTRY_WIDTH = 1.15  # inches one legend entry takes at fontsize 8 ("agriculture" with its patch)
KEY_ROW_HEIGHT = 0.3  # inches per legend row


def _key_columns(width: float) -> int:
    return max(1, min(NUM_CLASSES, int(width / KEY_ENTRY_WIDTH)))


def class_key_height(width: float) -> float:
    """Inches to add below the panels of a figure ``width`` inches wide for ``add_class_key``."""
    rows = -(-NUM_CLASSES // _key_columns(width))
    return KEY_ROW_HEIGHT * rows + 0.1


def add_class_key(fig: Any, key_height: float) -> None:
    """The masks' colour key: the 7 graded colours with their class names (utils.masks), in the ``key_height``
    inches left free at the bottom of ``fig``; lays the panels out above it (tight_layout)."""
    from matplotlib.patches import Patch

    width, height = fig.get_size_inches()
    handles = [Patch(facecolor=PALETTE[i] / 255.0, edgecolor="0.3", label=name)  # an edge shows white and black
               for i, name in enumerate(CLASS_NAMES)]
    fig.legend(handles=handles, loc="lower center", ncol=_key_columns(width), fontsize=8, frameon=False,
               borderaxespad=0.2, handlelength=1.2, columnspacing=1.0)
    fig.tight_layout(rect=(0, key_height / height, 1, 1))


def _palette_rgb(classes):
    return PALETTE[classes.clip(0, NUM_CLASSES - 1)]


def fit(args: argparse.Namespace, config: Dict[str, Any]) -> Dict[str, Any]:
    """Train (or with --eval-only evaluate) a segmentation model; returns the final metrics."""
    from utils.models import canonical_seg_config

    run = Run(args, SEG_KIND, config, ignore=("backbone_weights",),
              curve_keys=("train_loss", "val_miou", "lr"), title=config["arch"], canonical=canonical_seg_config)
    model, val_loader = build_model(run), run.loader(SegmentationDataset(
        Path(args.data_dir) / "validation", strict=args.strict), args.val_batch_size, train=False)
    if args.eval_only:
        return run.finish(evaluate(model, val_loader, run.device, run.dtype, run.config), write=False)
    train_set = SegmentationDataset(Path(args.data_dir) / "train", seg_train_transform(
        args.crop_size, args.min_scale, args.color_jitter), strict=args.strict)
    run.use_data(train_set)
    model = dist_utils.wrap_ddp(model, run.device)
    train_model = maybe_compile(model, args.compile)  # the same parameters; evaluation and checkpoints use model
    loader = run.loader(train_set, args.batch_size, train=True)
    lr = scaled_lr(args.lr, args.batch_size * run.world, args.lr_ref_batch)
    optimizer = make_optimizer(args.optimizer, weight_decay_groups(unwrap(model), args.weight_decay), lr,
                               args.momentum)
    objects = {"optimizer": optimizer, "scaler": make_grad_scaler(run.dtype)}
    total_steps, warmup_steps = len(loader) * args.epochs, int(round(args.warmup_epochs * len(loader)))

    def lr_at(step: int) -> float:
        return schedule(step, total_steps, lr, 0.0, warmup_steps, lr / max(warmup_steps, 1), args.schedule)

    state = dict({"step": 0, "best_metric": -1.0, "best_values": None, "best_epoch": 0}, **run.restore(**objects))
    last = {k: run.ckpt.get(k) for k in ("val_miou", "val_iou")} if run.ckpt else {}
    run.begin("{}: {} train / {} val images, {} process(es) x batch {}, lr {:g}, {} epochs, device {}{}".format(
        run.config["arch"], len(train_set), len(val_loader.dataset), run.world, args.batch_size, lr, args.epochs,
        run.device,
                                   ", amp " + str(run.dtype).replace("torch.", "") if run.dtype else ""))
    for epoch in run.epochs(loader):
        stats = train_one_epoch(train_model, loader, objects["optimizer"], objects["scaler"], args, run, epoch,
                                state["step"], lr_at)
        state["step"], sums = stats.pop("step"), stats.pop("sums", None)
        if stats.pop("interrupted"):
            run.save_and_exit(seg_checkpoint(run, model, epoch - 1, last, state, objects), stats["batches"],
                              len(loader), sums)
        run.check_finite(stats["train_loss"], epoch)
        last = dict(evaluate(model, val_loader, run.device, run.dtype, run.config), epoch=epoch, **stats)
        end_of_epoch(run, model, state, last, objects)
    return run.finish({"arch": run.config["arch"], "epochs": args.epochs, "best_miou": state["best_metric"],
                       "best_iou": state["best_values"], "best_epoch": state["best_epoch"],
                       "last_miou": last.get("val_miou"), "last_iou": last.get("val_iou"), "seed": args.seed,
                       "model_config": run.config})


def build_model(run: Run) -> torch.nn.Module:
    """The model the run's config describes, with the resumed weights (moved, channels_last where it pays)."""
    from utils.models import build_seg_model

    config = dict(run.config, backbone_weights="none") if run.ckpt is not None else run.config
    model = build_seg_model(config).to(run.device)
    if run.ckpt is not None:
        model.load_state_dict(run.ckpt["model"])
    if fast_layout(run.device, run.dtype):
        model = model.to(memory_format=torch.channels_last)
    return model


def seg_checkpoint(run: Run, model: torch.nn.Module, epoch: int, metrics: Dict[str, Any],
                   state: Optional[Dict[str, Any]] = None, objects: Optional[Dict[str, Any]] = None
                   ) -> Dict[str, Any]:
    """The weights with the epoch's validation numbers; with ``state``/``objects`` also what resumes the run."""
    return checkpoint_state(SEG_KIND, run.config, unwrap(model).state_dict(), run.args, epoch=epoch,
                            val_miou=metrics.get("val_miou"), val_iou=metrics.get("val_iou"),
                            **dict(state or {}, **(objects or {})))


def end_of_epoch(run: Run, model: torch.nn.Module, state: Dict[str, Any], metrics: Dict[str, Any],
                 objects: Dict[str, Any]) -> None:
    """Best-model bookkeeping, then the epoch's files (best.pth, snapshot), log line and checkpoint, in that order."""
    epoch = metrics["epoch"]
    is_best = metrics["val_miou"] > state["best_metric"]
    if is_best:
        state.update(best_metric=metrics["val_miou"], best_values=metrics["val_iou"], best_epoch=epoch)
    metrics["best_miou"] = state["best_metric"]
    weights = seg_checkpoint(run, model, epoch, metrics)
    files = {"best.pth": weights} if is_best else {}
    if epoch in run.args.snapshot_epochs:
        files["snapshot_epoch{:03d}.pth".format(epoch)] = weights
        if run.main:
            snapshot(unwrap(model), run, epoch)
    run.end_epoch(seg_checkpoint(run, model, epoch, metrics, state, objects), epoch, metrics, files)
    if run.main:
        print("epoch {}/{}: train loss {:.4f}, val mIoU {:.4f} (best {:.4f})".format(
            epoch, run.args.epochs, metrics["train_loss"], metrics["val_miou"], state["best_metric"]))
