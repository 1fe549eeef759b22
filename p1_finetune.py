"""Problem 1, part II: Office-Home classification in the report's five settings (A-E).

| setting | backbone initialisation                          | what trains           |
|---------|--------------------------------------------------|-----------------------|
| A       | none (random)                                    | backbone + classifier |
| B       | the course's labeled backbone (pretrain_model_SL) | backbone + classifier |
| C       | our DINO backbone (p1_ssl_pretrain.py)           | backbone + classifier |
| D       | the course's backbone, frozen                    | classifier only       |
| E       | our DINO backbone, frozen                        | classifier only       |

    # one GPU, each setting (the classifier head is identical in all five)
    python p1_finetune.py --setting A --output-dir runs/p1_A
    python p1_finetune.py --setting B --output-dir runs/p1_B --backbone hw1_data/p1_data/pretrain_model_SL.pt
    python p1_finetune.py --setting C --output-dir runs/p1_C --backbone runs/p1_dino/backbone.pth
    python p1_finetune.py --setting D --output-dir runs/p1_D --backbone hw1_data/p1_data/pretrain_model_SL.pt
    python p1_finetune.py --setting E --output-dir runs/p1_E --backbone runs/p1_dino/backbone.pth
    python -m tools.report runs                # REPORT.md with the A-E table (and the rest of the report)
    # N GPUs
    torchrun --nproc_per_node=N p1_finetune.py --setting C --output-dir runs/p1_C --backbone runs/p1_dino/backbone.pth

``--backbone`` takes a plain torchvision ResNet state_dict with or without ``fc`` (the course's
pretrain_model_SL.pt, the official DINO ResNet-50 release), a DINO training checkpoint (teacher by default) or
our exported backbone.pth; any missing or unexpected key is an error naming the keys. Nothing is downloaded.
``--save-epochs 1 -1`` (the default) keeps epoch_001.pth and the last epoch's checkpoint for ``p1_tsne.py``.
"""
import argparse
import json
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.transforms import v2

from utils import distributed as dist_utils
from utils.checkpoint import load_checkpoint, make_checkpoint, plain, save_atomic
from utils.classify import CLASSIFIER_KIND
from utils.datasets import CsvImages
from utils.misc import (JsonlLogger, StopRequest, add_common_train_args, amp_dtype, autocast, fast_layout,
                        make_grad_scaler, maybe_compile, plot_curves, progress, read_jsonl, run_cli, seed_everything,
                        setup_determinism, weight_decay_groups)
from utils.models import CLASSIFIER_BACKBONES, build_classifier, load_backbone_weights, load_resnet_state_dict
from utils.distributed import ShardSampler, unwrap
from utils.seg_engine import lr_at
from utils.transforms import IMAGENET_MEAN, IMAGENET_STD, classify_eval_transform, normalize

SETTINGS = {  # setting -> (which backbone, frozen)
    "A": ("none", False), "B": ("course", False), "C": ("dino", False), "D": ("course", True), "E": ("dino", True),
}
DEFAULT_BACKBONES = {"course": "hw1_data/p1_data/pretrain_model_SL.pt", "dino": "runs/p1_dino/backbone.pth"}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Office-Home classification, settings A-E (report problem 1).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_train_args(parser, epochs=100, batch_size=64, lr=0.01, workers=8,
                          data_dir="hw1_data/p1_data/office", output_dir="runs/p1_finetune")
    g = parser.add_argument_group("setting")
    g.add_argument("--setting", choices=sorted(SETTINGS), default="C",
                   help="A: random backbone; B/D: the course's labeled backbone; C/E: our DINO backbone; "
                        "D/E freeze it (classifier only)")
    g.add_argument("--backbone", default=None,
                   help="'none' or a PATH to backbone weights; default: the setting's ({})".format(
                       ", ".join("{}: {}".format(k, v) for k, v in DEFAULT_BACKBONES.items())))
    freeze = g.add_mutually_exclusive_group()
    freeze.add_argument("--freeze-backbone", dest="freeze_backbone", action="store_true", default=None,
                        help="train the classifier only (the default for D and E)")
    freeze.add_argument("--no-freeze-backbone", dest="freeze_backbone", action="store_false",
                        help="train the backbone too (the default for A, B and C)")
    g.add_argument("--train-csv", type=Path, default=None, help="default: DATA_DIR/train.csv")
    g.add_argument("--train-dir", type=Path, default=None, help="default: DATA_DIR/train")
    g.add_argument("--val-csv", type=Path, default=None, help="default: DATA_DIR/val.csv")
    g.add_argument("--val-dir", type=Path, default=None, help="default: DATA_DIR/val")
    g = parser.add_argument_group("model")
    g.add_argument("--arch", default="resnet50", choices=CLASSIFIER_BACKBONES, help="backbone architecture")
    g.add_argument("--num-classes", type=int, default=65, help="Office-Home has 65 classes")
    g.add_argument("--hidden-dim", type=int, default=1024,
                   help="classifier MLP width (Linear-BN-ReLU-Dropout-Linear); 0 = a linear classifier")
    g.add_argument("--dropout", type=float, default=0.5, help="dropout before the final linear layer")
    g = parser.add_argument_group("recipe")
    g.add_argument("--image-size", type=int, default=128, help="train crop and eval size (the report: 128)")
    g.add_argument("--min-scale", type=float, default=0.25, help="smallest RandomResizedCrop area fraction")
    g.add_argument("--color-jitter", type=float, default=0.3, help="colour jitter strength; 0 disables")
    g.add_argument("--randaugment", type=int, default=0,
                   help="RandAugment with this many ops (0 = off); stronger regularisation for long runs")
    g.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (0 = off)")
    g.add_argument("--label-smoothing", type=float, default=0.1, help="label smoothing of the cross-entropy")
    g.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help="SGD (momentum 0.9) or AdamW")
    g.add_argument("--backbone-lr-mult", type=float, default=None,
                   help="backbone lr = lr x this; default 1.0 for a random backbone (A), 0.1 for a pretrained one")
    g.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (not on biases/norms)")
    g.add_argument("--warmup-epochs", type=float, default=5.0, help="linear warm-up epochs, then cosine to 0")
    g.add_argument("--save-epochs", type=int, nargs="*", default=[1, -1],
                   help="also keep epoch_NNN.pth at these epochs (-1 = the last); the t-SNE uses the first "
                        "and the last")
    g.add_argument("--cache-features", action="store_true",
                   help="frozen settings only: compute backbone features once on un-augmented images and train the "
                        "classifier on them (much faster; no augmentation)")
    return parser


def resolve_setting(args: argparse.Namespace) -> Dict[str, Any]:
    """Turn --setting plus explicit overrides into (backbone source, frozen, backbone lr multiplier)."""
    kind, frozen = SETTINGS[args.setting]
    source = args.backbone if args.backbone is not None else DEFAULT_BACKBONES.get(kind, "none")
    if args.freeze_backbone is not None:
        frozen = args.freeze_backbone
    if frozen and source == "none":
        raise SystemExit("error: a frozen random backbone cannot learn anything; give --backbone PATH")
    mult = args.backbone_lr_mult if args.backbone_lr_mult is not None else (1.0 if source == "none" else 0.1)
    pretraining = {"none": "none", "course": "labeled (course backbone)", "dino": "DINO (ours)"}[kind]
    if args.backbone is not None and args.backbone != "none" and kind == "none":
        pretraining = "from {}".format(args.backbone)
    return {"backbone": source, "frozen": frozen, "backbone_lr_mult": mult, "pretraining": pretraining,
            "finetuning": "classifier only (frozen backbone)" if frozen else "full fine-tuning"}


def train_transform(args: argparse.Namespace) -> v2.Compose:
    """RandomResizedCrop to --image-size, flip, colour jitter, optional RandAugment (uint8 kept)."""
    ops = [v2.RandomResizedCrop(args.image_size, scale=(args.min_scale, 1.0), antialias=True),
           v2.RandomHorizontalFlip()]
    if args.color_jitter > 0:
        j = args.color_jitter
        ops.append(v2.ColorJitter(j, j, j, min(j / 3.0, 0.5)))
    if args.randaugment > 0:
        ops.append(v2.RandAugment(num_ops=args.randaugment))
    return v2.Compose(ops)


def train_one_epoch(model: nn.Module, loader, optimizer, scaler, args: argparse.Namespace, device: torch.device,
                    dtype: Optional[torch.dtype], epoch: int, step: int, total_steps: int, warmup_steps: int,
                    frozen: bool, features: bool = False, stop: Optional[StopRequest] = None) -> Dict[str, Any]:
    """One epoch of cross-entropy training; a frozen backbone stays in eval mode (BN statistics fixed). A
    SIGINT/SIGTERM ends it after the current step (``interrupted``, after ``batches`` steps)."""
    model.train()
    if frozen:
        unwrap(model).backbone.eval()
    sums = torch.zeros(3, device=device)  # loss, correct, samples
    ones = torch.ones((), device=device)  # samples are counted on the device: no host copy (and sync) per step
    bar = progress(loader, desc="epoch {}/{}".format(epoch, args.epochs), leave=False)
    batches = 0
    interrupted = False
    for i, (images, labels) in enumerate(bar):
        batches += 1
        lr = lr_at(step, total_steps, warmup_steps, args.lr, "cosine")
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        labels = labels.to(device, non_blocking=True)
        x = images.to(device, non_blocking=True)
        if not features:
            x = normalize(x)
            if fast_layout(device, dtype):
                x = x.contiguous(memory_format=torch.channels_last)
        targets = F.one_hot(labels, args.num_classes).float()
        if args.mixup > 0:
            lam = float(torch.distributions.Beta(args.mixup, args.mixup).sample())
            perm = torch.randperm(x.shape[0], device=device)
            x = lam * x + (1 - lam) * x[perm]
            targets = lam * targets + (1 - lam) * targets[perm]
        with autocast(device, dtype):
            logits = unwrap(model).head(x) if features else model(x)
            loss = F.cross_entropy(logits.float(), targets, label_smoothing=args.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        sums += torch.stack([loss.detach() * labels.shape[0], (logits.argmax(1) == labels).sum().float(),
                             ones * labels.shape[0]])
        step += 1
        if i % args.print_freq == 0:
            bar.set_postfix(loss="{:.4f}".format(loss.item()), lr="{:.2e}".format(lr))
        if stop is not None and stop.requested(i + 1, device):  # all ranks agree here
            interrupted = True
            break
    dist_utils.all_reduce_sum(sums)
    return {"train_loss": float(sums[0] / sums[2].clamp(min=1)), "train_acc": float(sums[1] / sums[2].clamp(min=1)),
            "step": step, "interrupted": interrupted, "batches": batches,
            "lr": lr_at(max(step - 1, 0), total_steps, warmup_steps, args.lr, "cosine")}


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, dtype: Optional[torch.dtype]) -> Dict[str, float]:
    """Top-1 accuracy over the whole validation set (all ranks)."""
    model.eval()
    sums = torch.zeros(2, device=device)
    for images, labels in progress(loader, desc="validate", leave=False):
        x = normalize(images.to(device, non_blocking=True))
        if fast_layout(device, dtype):
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            pred = model(x).argmax(1)
        labels = labels.to(device, non_blocking=True)
        sums += torch.stack([(pred == labels).sum().float(), torch.ones((), device=device) * labels.shape[0]])
    dist_utils.all_reduce_sum(sums)
    return {"val_acc": float(sums[0] / sums[1])}


@torch.no_grad()
def cache_backbone_features(model: nn.Module, dataset, args: argparse.Namespace, device: torch.device,
                            dtype: Optional[torch.dtype]) -> torch.utils.data.TensorDataset:
    """Frozen backbone features of every (un-augmented) image, computed once."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size * 2, num_workers=args.workers)
    feats, labels = [], []
    model.backbone.eval()
    for images, y in progress(loader, desc="caching features", leave=False):
        x = normalize(images.to(device))
        with autocast(device, dtype):
            feats.append(model.backbone(x).float().cpu())
        labels.append(torch.as_tensor(y))
    return torch.utils.data.TensorDataset(torch.cat(feats), torch.cat(labels))


def main(args: argparse.Namespace) -> Dict[str, Any]:
    device = dist_utils.resolve_device(args.device)
    dist_utils.init_distributed(device)
    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    setup_determinism(args.deterministic)
    seed_everything(args.seed)
    out = Path(args.output_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    dist_utils.barrier()
    setting = resolve_setting(args)
    config = {"arch": args.arch, "num_classes": args.num_classes, "hidden_dim": args.hidden_dim,
              "dropout": args.dropout}

    resume = args.resume or (out / "checkpoint.pth" if (out / "checkpoint.pth").is_file() and not args.overwrite
                             else None)
    ckpt = load_checkpoint(resume, CLASSIFIER_KIND) if resume else None
    if ckpt is not None and args.resume is None and (ckpt["model_config"] != plain(config)
                                                     or ckpt.get("setting") != args.setting):
        raise SystemExit("error: {} holds another run (setting {}, {}); use another --output-dir or --overwrite"
                         .format(out, ckpt.get("setting"), ckpt["model_config"]))
    model = build_classifier(ckpt["model_config"] if ckpt else config)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    elif setting["backbone"] != "none":
        load_backbone_weights(model.backbone, load_resnet_state_dict(setting["backbone"]),
                              source=str(setting["backbone"]), arch=args.arch)
    if setting["frozen"]:
        for p in model.backbone.parameters():
            p.requires_grad = False
    model.to(device)
    dtype = amp_dtype(device, args.amp, cpu=args.cpu_amp)
    data = Path(args.data_dir)
    eval_tf = classify_eval_transform(args.image_size)
    train_csv, train_dir = args.train_csv or data / "train.csv", args.train_dir or data / "train"
    val_set = CsvImages(args.val_csv or data / "val.csv", args.val_dir or data / "val", eval_tf,
                        num_classes=args.num_classes, strict=args.strict)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=args.batch_size * 2, num_workers=args.workers,
                                             sampler=ShardSampler(len(val_set), rank, world),
                                             pin_memory=device.type == "cuda")
    if args.eval_only:
        if ckpt is None:
            raise SystemExit("error: --eval-only needs a checkpoint (--resume PATH or OUTPUT_DIR/checkpoint.pth)")
        metrics = evaluate(model, val_loader, device, dtype)
        if rank == 0:
            print(json.dumps(metrics))
        dist_utils.cleanup()
        return metrics

    use_cache = args.cache_features and setting["frozen"]
    if use_cache:
        plain_set = CsvImages(train_csv, train_dir, eval_tf, num_classes=args.num_classes, strict=args.strict)
        train_set = cache_backbone_features(model, plain_set, args, device, dtype)
    else:
        train_set = CsvImages(train_csv, train_dir, train_transform(args), num_classes=args.num_classes,
                              strict=args.strict)
    if fast_layout(device, dtype):
        model = model.to(memory_format=torch.channels_last)
    model = dist_utils.wrap_ddp(model, device)
    plain_model = unwrap(model)
    train_model = maybe_compile(model, args.compile)  # shares parameters; evaluation and checkpoints use model
    sampler = dist_utils.train_sampler(train_set, args.seed)
    loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, sampler=sampler,
                                         num_workers=0 if use_cache else args.workers, drop_last=True,
                                         pin_memory=device.type == "cuda",
                                         persistent_workers=(args.workers > 0 and not use_cache
                                                             and not args.deterministic))
    if len(loader) == 0:
        raise SystemExit("error: {} training images cannot fill one batch of {}".format(len(train_set),
                                                                                       args.batch_size))
    groups = []  # head at --lr, backbone at --lr x backbone_lr_mult; no decay on biases/norms in either
    for module, mult in ((plain_model.head, 1.0), (plain_model.backbone, setting["backbone_lr_mult"])):
        groups += [dict(g, lr_mult=mult) for g in weight_decay_groups(module, args.weight_decay) if g["params"]]
    optimizer = (torch.optim.SGD(groups, lr=args.lr, momentum=0.9, nesterov=True) if args.optimizer == "sgd"
                 else torch.optim.AdamW(groups, lr=args.lr))
    scaler = make_grad_scaler(dtype)
    steps_per_epoch = len(loader)
    total_steps = args.epochs * steps_per_epoch
    warmup_steps = int(round(args.warmup_epochs * len(loader)))
    start_epoch, step, best_acc, partial = 0, 0, -1.0, 0
    logger = JsonlLogger(out / "log.jsonl", enabled=rank == 0)
    if ckpt is not None and "optimizer" in ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt.get("scaler", {}))
        start_epoch, step, best_acc = ckpt["epoch"], ckpt["step"], ckpt.get("best_acc", -1.0)
        partial = ckpt.get("partial_steps", 0)  # steps of epoch start_epoch + 1 done before a SIGINT/SIGTERM
        logger.truncate_after(start_epoch)
    elif rank == 0 and (out / "log.jsonl").exists():
        (out / "log.jsonl").unlink()
    if rank == 0:
        print("setting {}: backbone {} ({}), {}; {} train / {} val images; {} process(es) x batch {}; lr {:g} "
              "(backbone x{:g}); {} epochs on {}".format(
                  args.setting, setting["backbone"], setting["pretraining"], setting["finetuning"], len(train_set),
                  len(val_set), world, args.batch_size, args.lr, setting["backbone_lr_mult"], args.epochs, device))
        with open(out / "args.json", "w") as f:
            json.dump(plain(args), f, indent=2)
    save_epochs = {e if e > 0 else args.epochs + 1 + e for e in args.save_epochs}
    extra = {"setting": args.setting, "backbone_source": str(setting["backbone"]), "image_size": args.image_size,
             "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "num_classes": args.num_classes}
    metrics = {"val_acc": ckpt.get("val_acc")} if ckpt is not None else {}  # type: Dict[str, Any]
    stop = StopRequest(every=args.print_freq)
    with stop:
        for epoch in range(start_epoch + 1, args.epochs + 1):
            dist_utils.start_epoch(sampler, args.seed, epoch, skip_batches=partial, batch_size=args.batch_size)
            t0 = time.time()
            stats = train_one_epoch(train_model, loader, optimizer, scaler, args, device, dtype, epoch, step,
                                    total_steps, warmup_steps, setting["frozen"], features=use_cache, stop=stop)
            step = stats.pop("step")
            if stats.pop("interrupted"):
                done = partial + stats["batches"]
                if rank == 0:
                    weights = make_checkpoint(CLASSIFIER_KIND, config, plain_model.state_dict(), args, epoch=epoch - 1,
                                              val_acc=metrics.get("val_acc"), **extra)
                    save_atomic(dict(weights, optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), step=step,
                                     best_acc=best_acc, partial_steps=done), out / "checkpoint.pth")
                dist_utils.barrier()
                stop.exit(out / "checkpoint.pth", done, steps_per_epoch)
            partial = 0
            if not math.isfinite(stats["train_loss"]):
                raise SystemExit("error: the training loss became {} in epoch {}; the last good checkpoint is kept. "
                                 "Lower --lr or try --no-amp".format(stats["train_loss"], epoch))
            metrics = evaluate(model, val_loader, device, dtype)
            metrics.update(stats, epoch=epoch, seconds=time.time() - t0)
            is_best = metrics["val_acc"] > best_acc
            best_acc = max(best_acc, metrics["val_acc"])
            metrics["best_acc"] = best_acc
            if rank == 0:
                weights = make_checkpoint(CLASSIFIER_KIND, config, plain_model.state_dict(), args, epoch=epoch,
                                          val_acc=metrics["val_acc"], **extra)
                save_atomic(dict(weights, optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), step=step,
                                 best_acc=best_acc), out / "checkpoint.pth")
                if is_best:
                    save_atomic(weights, out / "best.pth")
                if epoch in save_epochs:
                    save_atomic(weights, out / "epoch_{:03d}.pth".format(epoch))
                logger.log(metrics)
                plot_curves(read_jsonl(out / "log.jsonl"), ["train_loss", "train_acc", "val_acc"], out / "curves.png",
                            title="setting " + args.setting)
                print("epoch {}/{}: train loss {:.4f}, train acc {:.4f}, val acc {:.4f} (best {:.4f})".format(
                    epoch, args.epochs, metrics["train_loss"], metrics["train_acc"], metrics["val_acc"], best_acc))
            dist_utils.barrier()

    result = {"setting": args.setting, "backbone": str(setting["backbone"]), "pretraining": setting["pretraining"],
              "finetuning": setting["finetuning"], "best_val_acc": best_acc, "last_val_acc": metrics.get("val_acc"),
              "epochs": args.epochs, "seed": args.seed, "arch": args.arch}
    if rank == 0:
        with open(out / "results.json", "w") as f:
            json.dump(result, f, indent=2)
    dist_utils.cleanup()
    return result


def cli(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    return main(get_args_parser().parse_args(argv))


if __name__ == "__main__":
    run_cli(main, get_args_parser())
