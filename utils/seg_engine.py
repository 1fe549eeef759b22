"""The one training engine behind ``p2_unet.py`` and ``p2_deeplab.py``.

A script builds its parser with ``add_seg_train_args`` plus its model flags, turns those flags into a
model config dict (what ``utils.models.build_seg_model`` rebuilds from) and calls ``fit(args, config)``.
"""
import argparse
import json
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn.functional as F

from utils import distributed as dist_utils
from utils.checkpoint import load_checkpoint, make_checkpoint, plain, save_atomic
from utils.datasets import SegmentationDataset, read_rgb, to_chw_uint8
from utils.distributed import ShardSampler, unwrap
from utils.masks import IGNORE_INDEX, NUM_CLASSES, read_mask, write_mask
from utils.metrics import ConfusionMatrix
from utils.misc import (JsonlLogger, StopRequest, add_common_train_args, amp_dtype, autocast, fast_layout,
                        make_grad_scaler, maybe_compile, plot_curves, progress, read_jsonl, seed_everything,
                        setup_determinism, weight_decay_groups)
from utils.models import build_seg_model
from utils.predict import SEG_KIND, predict_classes
from utils.transforms import normalize, seg_train_transform


def add_seg_train_args(parser: argparse.ArgumentParser, epochs: int, batch_size: int, lr: float,
                       optimizer: str, weight_decay: float, schedule: str, output_dir: str) -> None:
    """Common trainer flags plus the segmentation recipe flags, with the calling script's defaults."""
    add_common_train_args(parser, epochs=epochs, batch_size=batch_size, lr=lr, workers=4,
                          data_dir="hw1_data/p2_data", output_dir=output_dir)
    g = parser.add_argument_group("segmentation recipe")
    g.add_argument("--crop-size", type=int, default=512,
                   help="training crop side in pixels; crops cover --min-scale..1 of the tile's area and are "
                        "resized to this size (default: %(default)s, the full tile resolution)")
    g.add_argument("--min-scale", type=float, default=0.25,
                   help="smallest crop area fraction for random scale-and-crop (default: %(default)s)")
    g.add_argument("--color-jitter", type=float, default=0.2,
                   help="brightness/contrast/saturation jitter strength on the image only; 0 disables "
                        "(default: %(default)s)")
    g.add_argument("--optimizer", choices=("sgd", "adamw"), default=optimizer,
                   help="SGD (momentum 0.9) or AdamW (default: %(default)s)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: %(default)s)")
    g.add_argument("--weight-decay", type=float, default=weight_decay,
                   help="weight decay, not applied to biases and norm parameters (default: %(default)s)")
    g.add_argument("--schedule", choices=("poly", "cosine"), default=schedule,
                   help="per-step decay after warm-up: poly (1-t)^0.9 or cosine (default: %(default)s)")
    g.add_argument("--warmup-epochs", type=float, default=1.0,
                   help="linear learning-rate warm-up length in epochs (default: %(default)s)")
    g.add_argument("--loss", choices=("ce", "focal", "ce+dice"), default="ce",
                   help="cross-entropy; focal (gamma 2) for class imbalance; or CE plus soft Dice "
                        "(default: %(default)s)")
    g.add_argument("--aux-weight", type=float, default=0.5,
                   help="weight of the auxiliary head's loss, for models that have one (default: %(default)s)")
    g.add_argument("--val-batch-size", type=int, default=4,
                   help="validation images per process per step, at full tile size (default: %(default)s)")
    g.add_argument("--snapshot-epochs", type=int, nargs="*", default=[1, 50, 100],
                   help="epochs (1-based) whose model is kept as snapshot_epochNNN.pth and whose predictions "
                        "on --snapshot-images go into snapshots.png (default: %(default)s)")
    g.add_argument("--snapshot-images", nargs="*", default=["0018_sat.jpg", "0065_sat.jpg", "0109_sat.jpg"],
                   help="validation images shown in the snapshot grid; missing names are skipped with a "
                        "warning (default: %(default)s)")


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, schedule: str) -> float:
    """Linear warm-up to ``base_lr`` then poly(0.9) or cosine decay to 0 at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "poly":
        return base_lr * (1.0 - t) ** 0.9
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * t))


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
                    scaler: Any, args: argparse.Namespace, device: torch.device, dtype: Optional[torch.dtype],
                    epoch: int, step: int, total_steps: int, warmup_steps: int,
                    stop: Optional[StopRequest] = None) -> Dict[str, Any]:
    """One pass over the training set; returns the mean loss, the step counter after it, and whether a
    SIGINT/SIGTERM ended it early (``interrupted``, after ``batches`` steps)."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    count = 0
    bar = progress(loader, desc="epoch {}/{}".format(epoch, args.epochs), leave=False)
    t0 = time.time()
    interrupted = False
    for i, (images, masks) in enumerate(bar):
        lr = lr_at(step, total_steps, warmup_steps, args.lr, args.schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr
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
        loss_sum += loss.detach()
        count += 1
        step += 1
        if i % args.print_freq == 0:  # the only host sync in the loop, at an interval
            bar.set_postfix(loss="{:.4f}".format(loss.item()), lr="{:.2e}".format(lr),
                            img_s="{:.1f}".format(count * args.batch_size / max(time.time() - t0, 1e-6)))
        if stop is not None and stop.requested(i + 1, device):  # all ranks agree here
            interrupted = True
            break
    stats = torch.stack([loss_sum, torch.tensor(float(count), device=device)])
    dist_utils.all_reduce_sum(stats)
    return {"train_loss": float(stats[0] / stats[1].clamp(min=1)), "step": step, "interrupted": interrupted,
            "batches": count,
            "train_seconds": time.time() - t0, "lr": lr_at(max(step - 1, 0), total_steps, warmup_steps,
                                                             args.lr, args.schedule)}


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: torch.utils.data.DataLoader, device: torch.device,
             dtype: Optional[torch.dtype], config: Dict[str, Any]) -> Dict[str, Any]:
    """Pooled 7x7 confusion matrix over the whole validation set (all ranks), then IoU as graded."""
    model.eval()
    cm = ConfusionMatrix(NUM_CLASSES, device=device)
    for images, masks in progress(loader, desc="validate", leave=False):
        pred = predict_classes(model, images.to(device, non_blocking=True), config, dtype)
        cm.update(pred, masks.to(device, non_blocking=True))
    cm.reduce()
    result = cm.compute()
    return {"val_miou": result["miou"], "val_iou": result["iou"], "val_pixel_acc": result["pixel_acc"]}


def _snapshot(model: torch.nn.Module, config: Dict[str, Any], args: argparse.Namespace, epoch: int,
              device: torch.device, dtype: Optional[torch.dtype], ckpt: Dict[str, Any]) -> None:
    """Keep this epoch's model and its predicted masks for the snapshot images, then redraw the grid."""
    out = Path(args.output_dir)
    save_atomic(ckpt, out / "snapshot_epoch{:03d}.pth".format(epoch))
    folder = out / "snapshots" / "epoch_{:03d}".format(epoch)
    folder.mkdir(parents=True, exist_ok=True)
    for path in _snapshot_images(args):
        image = to_chw_uint8(read_rgb(path)).unsqueeze(0).to(device)
        pred = predict_classes(model, image, config, dtype)[0].cpu().numpy()
        write_mask(folder / (path.name.replace("_sat.jpg", "") + "_mask.png"), pred)
    draw_snapshot_grid(out, args)


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
    fig, axes = plt.subplots(rows, len(images), figsize=(2.6 * len(images), 2.6 * rows), squeeze=False)
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
    fig.tight_layout()
    path = out / "snapshots.png"
    fig.savefig(str(path), dpi=90)
    plt.close(fig)
    return path


def _palette_rgb(classes):
    from utils.masks import PALETTE

    return PALETTE[classes.clip(0, NUM_CLASSES - 1)]


def _find_resume(args: argparse.Namespace, config: Dict[str, Any]) -> Optional[Path]:
    """--resume, else OUTPUT_DIR/checkpoint.pth of the same model; another model's run is refused."""
    if args.resume is not None:
        return Path(args.resume)
    path = Path(args.output_dir) / "checkpoint.pth"
    if not path.is_file():
        return None
    ckpt = load_checkpoint(path, expected_kind=SEG_KIND)
    mine = {k: v for k, v in plain(config).items() if k != "backbone_weights"}
    theirs = {k: v for k, v in ckpt["model_config"].items() if k != "backbone_weights"}
    if mine != theirs:
        if args.overwrite:
            return None
        raise SystemExit("error: {} holds a run of another model ({} vs requested {}); use another --output-dir "
                         "or --overwrite to start afresh".format(args.output_dir, theirs, mine))
    return None if args.overwrite else path


def _loader(dataset, batch_size: int, sampler, workers: int, device: torch.device, persistent: bool,
            drop_last: bool = False) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
        pin_memory=device.type == "cuda", persistent_workers=persistent and workers > 0)


def fit(args: argparse.Namespace, config: Dict[str, Any]) -> Dict[str, Any]:
    """Train (or with --eval-only evaluate) a segmentation model; returns the final metrics."""
    device = dist_utils.resolve_device(args.device)
    dist_utils.init_distributed(device)
    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    main_proc = rank == 0
    setup_determinism(args.deterministic)
    seed_everything(args.seed)
    out = Path(args.output_dir)
    if main_proc:
        out.mkdir(parents=True, exist_ok=True)
    dist_utils.barrier()

    resume_path = _find_resume(args, config)
    ckpt = load_checkpoint(resume_path, expected_kind=SEG_KIND) if resume_path else None
    if ckpt is None and args.eval_only:
        raise SystemExit("error: --eval-only needs a checkpoint: pass --resume PATH or an --output-dir holding one")
    if ckpt is not None:
        config = dict(ckpt["model_config"], backbone_weights="none")  # weights come from the checkpoint
    model = build_seg_model(config).to(device)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    dtype = amp_dtype(device, args.amp, cpu=args.cpu_amp)
    if fast_layout(device, dtype):
        model = model.to(memory_format=torch.channels_last)

    val_set = SegmentationDataset(Path(args.data_dir) / "validation", strict=args.strict)
    val_loader = _loader(val_set, args.val_batch_size, ShardSampler(len(val_set), rank, world), args.workers,
                         device, persistent=not args.deterministic)
    if args.eval_only:
        metrics = evaluate(model, val_loader, device, dtype, config)
        if main_proc:
            print(json.dumps(metrics))
        dist_utils.cleanup()
        return metrics

    train_set = SegmentationDataset(Path(args.data_dir) / "train",
                                    seg_train_transform(args.crop_size, args.min_scale, args.color_jitter),
                                    strict=args.strict)
    model = dist_utils.wrap_ddp(model, device)
    train_model = maybe_compile(model, args.compile)  # the same parameters; evaluation and checkpoints use model
    sampler = dist_utils.train_sampler(train_set, args.seed)
    drop_last = len(train_set) // world >= args.batch_size  # a batch of 1 breaks BatchNorm
    train_loader = _loader(train_set, args.batch_size, sampler, args.workers, device,
                           persistent=not args.deterministic, drop_last=drop_last)
    optimizer = (torch.optim.SGD(weight_decay_groups(unwrap(model), args.weight_decay), lr=args.lr,
                                 momentum=args.momentum, nesterov=False)
                 if args.optimizer == "sgd" else
                 torch.optim.AdamW(weight_decay_groups(unwrap(model), args.weight_decay), lr=args.lr))
    scaler = make_grad_scaler(dtype)
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = int(round(args.warmup_epochs * steps_per_epoch))

    start_epoch, step, best_miou, best_iou, best_epoch, partial = 0, 0, -1.0, None, 0, 0
    logger = JsonlLogger(out / "log.jsonl", enabled=main_proc)
    if ckpt is not None:
        if "optimizer" in ckpt:
            optimizer.load_state_dict(ckpt["optimizer"])
            scaler.load_state_dict(ckpt.get("scaler", {}))
            start_epoch, step = ckpt["epoch"], ckpt["step"]
            best_miou = ckpt.get("best_miou", -1.0)
            best_iou, best_epoch = ckpt.get("best_iou"), ckpt.get("best_epoch", 0)
            partial = ckpt.get("partial_steps", 0)  # steps of epoch start_epoch + 1 done before a SIGINT/SIGTERM
        logger.truncate_after(start_epoch)
        if main_proc:
            print("resumed from {} at epoch {}".format(resume_path, start_epoch))
    elif main_proc and (out / "log.jsonl").exists():
        (out / "log.jsonl").unlink()  # a fresh start (--overwrite) begins a fresh log
    if main_proc:
        print("{}: {} train / {} val images, {} process(es), batch {} per process, lr {:g}, {} epochs, device {}{}"
              .format(config["arch"], len(train_set), len(val_set), world, args.batch_size, args.lr, args.epochs,
                      device, ", amp " + str(dtype).replace("torch.", "") if dtype else ""))
        with open(out / "args.json", "w") as f:
            json.dump(plain(args), f, indent=2)

    metrics = {}  # type: Dict[str, Any]
    if ckpt is not None:  # a finished run that is resumed reports what it ended with
        metrics = {"val_miou": ckpt.get("val_miou"), "val_iou": ckpt.get("val_iou")}
    stop = StopRequest(every=args.print_freq)
    with stop:
        for epoch in range(start_epoch + 1, args.epochs + 1):
            dist_utils.start_epoch(sampler, args.seed, epoch, skip_batches=partial, batch_size=args.batch_size)
            train_stats = train_one_epoch(train_model, train_loader, optimizer, scaler, args, device, dtype, epoch,
                                          step, total_steps, warmup_steps, stop)
            step = train_stats.pop("step")
            if train_stats.pop("interrupted"):
                done = partial + train_stats["batches"]
                if main_proc:
                    weights = make_checkpoint(SEG_KIND, config, unwrap(model).state_dict(), args, epoch=epoch - 1,
                                              val_miou=metrics.get("val_miou"), val_iou=metrics.get("val_iou"))
                    save_atomic(dict(weights, optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                                     step=step, best_miou=best_miou, best_iou=best_iou, best_epoch=best_epoch,
                                     partial_steps=done), out / "checkpoint.pth")
                dist_utils.barrier()
                stop.exit(out / "checkpoint.pth", done, steps_per_epoch)
            partial = 0
            if not math.isfinite(train_stats["train_loss"]):
                raise SystemExit("error: the training loss became {} in epoch {}; the last good checkpoint {} is "
                                 "kept. Lower --lr, or try --no-amp".format(train_stats["train_loss"], epoch,
                                                                       out / "checkpoint.pth"))
            metrics = evaluate(model, val_loader, device, dtype, config)
            metrics.update(train_stats)
            metrics["epoch"] = epoch
            is_best = metrics["val_miou"] > best_miou
            best_miou = max(best_miou, metrics["val_miou"])
            if is_best:
                best_iou, best_epoch = metrics["val_iou"], epoch
            metrics["best_miou"] = best_miou
            if main_proc:
                state = unwrap(model).state_dict()
                weights = make_checkpoint(SEG_KIND, config, state, args, epoch=epoch, val_miou=metrics["val_miou"],
                                          val_iou=metrics["val_iou"])
                full = dict(weights, optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), step=step,
                            best_miou=best_miou, best_iou=best_iou, best_epoch=best_epoch)
                save_atomic(full, out / "checkpoint.pth")
                if args.save_every > 0 and epoch % args.save_every == 0:
                    save_atomic(full, out / "checkpoint_epoch{:03d}.pth".format(epoch))
                if is_best:
                    save_atomic(weights, out / "best.pth")
                if epoch in args.snapshot_epochs:
                    _snapshot(unwrap(model), config, args, epoch, device, dtype, weights)
                logger.log(metrics)
                plot_curves(read_jsonl(out / "log.jsonl"), ["train_loss", "val_miou", "lr"], out / "curves.png",
                            title=config["arch"])
                print("epoch {}/{}: train loss {:.4f}, val mIoU {:.4f} (best {:.4f})".format(
                    epoch, args.epochs, metrics["train_loss"], metrics["val_miou"], best_miou))
            dist_utils.barrier()

    result = {"arch": config["arch"], "epochs": args.epochs, "best_miou": best_miou,
              "best_iou": best_iou, "best_epoch": best_epoch, "last_miou": metrics.get("val_miou"),
              "last_iou": metrics.get("val_iou"), "seed": args.seed,
              "model_config": plain(config)}
    if main_proc:
        with open(out / "results.json", "w") as f:
            json.dump(result, f, indent=2)
    dist_utils.cleanup()
    return result
