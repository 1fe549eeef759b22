"""Problem 1, part II: Office-Home classification in the report's five settings (A-E).

| setting | pre-training (backbone initialisation)                    | fine-tuning           |
|---------|-----------------------------------------------------------|-----------------------|
| A       | none (random)                                             | backbone + classifier |
| B       | DINO on ImageNet-1k (TAs provided): official_dino_model.pth | backbone + classifier |
| C       | w/o label: our DINO backbone (p1_ssl_pretrain.py)         | backbone + classifier |
| D       | DINO on ImageNet-1k (TAs provided), frozen                | classifier only       |
| E       | w/o label: our DINO backbone, frozen                      | classifier only       |

    # one GPU, each setting (the classifier head is identical in all five)
    python p1_finetune.py --setting A --output-dir runs/p1_A
    python p1_finetune.py --setting B --output-dir runs/p1_B       # checkpoints/official_dino_model.pth
    python p1_finetune.py --setting C --output-dir runs/p1_C       # runs/p1_dino/backbone.pth
    python p1_finetune.py --setting D --output-dir runs/p1_D
    python p1_finetune.py --setting E --output-dir runs/p1_E
    python -m tools.report runs                # REPORT.md with the A-E table (and the rest of the report)
    # N GPUs
    torchrun --nproc_per_node=N p1_finetune.py --setting C --output-dir runs/p1_C

``--backbone PATH`` replaces the setting's default file: a plain torchvision ResNet state_dict with or without ``fc``
(the TAs' official_dino_model.pth, DINO's public dino_resnet50_pretrain.pth), a DINO training checkpoint (teacher by
default) or our exported backbone.pth; any missing or unexpected key is an error naming the keys. Nothing is
downloaded. ``--save-epochs 1 -1`` (the default) keeps epoch_001.pth and the last epoch's checkpoint for
``p1_tsne.py``.
"""
import argparse
import time
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.transforms import v2

from utils import distributed as dist_utils
from utils.classify import CLASSIFIER_KIND, build_classifier
from utils.cli import (HelpFormatter, add_common_train_args, add_flag, nonnegative_float, nonnegative_int,
                       nonzero_int, run_cli, unit_float)
from utils.datasets import CsvImages
from utils.distributed import unwrap
from utils.signals import ignore_stop_signals
from utils.lifecycle import Run, checkpoint_state
from utils.models import CLASSIFIER_BACKBONES, load_backbone_weights, load_resnet_state_dict
from utils.optim import make_optimizer, scaled_lr, schedule, set_lr, weight_decay_groups
from utils.precision import autocast, fast_layout, make_grad_scaler, maybe_compile
from utils.runlog import progress
from utils.transforms import IMAGENET_MEAN, IMAGENET_STD, classify_eval_transform, normalize

SETTINGS = {  # setting -> (which backbone, frozen)
    "A": ("none", False), "B": ("tas", False), "C": ("dino", False), "D": ("tas", True), "E": ("dino", True),
}
# The one documented place of the TAs' DINO ImageNet-1k ResNet-50 (the course's 2025 page: students name it
# official_dino_model.pth; a plain torchvision state_dict without fc), and of our own DINO backbone.
TA_BACKBONE = "checkpoints/official_dino_model.pth"
DEFAULT_BACKBONES = {"tas": TA_BACKBONE, "dino": "runs/p1_dino/backbone.pth"}
PRETRAINING = {"none": "–", "tas": "DINO on ImageNet-1k (TAs provided)",
               "dino": "w/o label (your SSL pre-trained backbone)"}
FINETUNING = {False: "Train full model (backbone + classifier)", True: "Fix the backbone. Train classifier only"}
MISSING = {
    "tas": "the TAs' DINO ImageNet-1k ResNet-50 for setting {setting} is not at {path}: put the course's "
           "official_dino_model.pth there (docs/problem1.md, 'Part II'), or run `bash hw1_download.sh "
           "--dino-official`, which puts DINO's public ResNet-50 (the same network, DINO on ImageNet-1k) at "
           "checkpoints/official_dino_model.pth, or pass --backbone PATH",
    "dino": "our DINO backbone for setting {setting} is not at {path}: run p1_ssl_pretrain.py first "
            "(scripts/p1_dino.sh), or pass --backbone PATH",
}


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Office-Home classification, settings A-E (report problem 1).",
                                     formatter_class=HelpFormatter)
    add_common_train_args(parser, epochs=100, batch_size=64, lr=0.01, lr_ref_batch=None, workers=8,
                          data_dir="data_2025/p1_data/office", output_dir="runs/p1_finetune")
    g = parser.add_argument_group("setting")
    g.add_argument("--setting", choices=sorted(SETTINGS), default="C",
                   help="A: random backbone; B/D: DINO on ImageNet-1k (TAs provided); C/E: our DINO backbone (w/o "
                        "label); D/E freeze it (classifier only)")
    g.add_argument("--backbone", default=None,
                   help="'none' or a PATH to backbone weights (default: the setting's: none for A; B/D, DINO on "
                        "ImageNet-1k (TAs provided): {}; C/E: {})".format(TA_BACKBONE, DEFAULT_BACKBONES["dino"]))
    freeze = g.add_mutually_exclusive_group()
    freeze.add_argument("--freeze-backbone", dest="freeze_backbone", action="store_true", default=None,
                        help="train the classifier only (default: the setting's: on for D and E)")
    freeze.add_argument("--no-freeze-backbone", dest="freeze_backbone", action="store_false", default=None,
                        help="train the backbone too (default: the setting's: on for A, B and C)")
    g.add_argument("--train-csv", type=Path, default=None, help="training images csv (default: DATA_DIR/train.csv)")
    g.add_argument("--train-dir", type=Path, default=None,
                   help="folder of --train-csv's images (default: DATA_DIR/train)")
    g.add_argument("--val-csv", type=Path, default=None, help="validation images csv (default: DATA_DIR/val.csv)")
    g.add_argument("--val-dir", type=Path, default=None, help="folder of --val-csv's images (default: DATA_DIR/val)")
    g = parser.add_argument_group("model")
    add_flag(g, "--arch", "resnet50", "the classifier's ResNet backbone", choices=CLASSIFIER_BACKBONES)
    add_flag(g, "--num-classes", 65, "Office-Home has 65")
    add_flag(g, "--hidden-dim", 1024, "the classifier MLP (Linear-BN-ReLU-Dropout-Linear); 0 = a linear classifier")
    g.add_argument("--dropout", type=float, default=0.5, help="dropout before the final linear layer")
    g = parser.add_argument_group("recipe")
    add_flag(g, "--image-size", 224, "the report's (and the ImageNet backbones') size; hw1_1.sh reads it from the "
                                     "checkpoint")
    add_flag(g, "--min-scale", 0.25, "RandomResizedCrop")
    add_flag(g, "--color-jitter", 0.3, "brightness/contrast/saturation (hue a third of it)")
    g.add_argument("--randaugment", type=nonnegative_int, default=0,
                   help="RandAugment with this many ops (0 = off); stronger regularisation for long runs")
    g.add_argument("--mixup", type=nonnegative_float, default=0.0, help="mixup alpha (0 = off)")
    g.add_argument("--label-smoothing", type=unit_float, default=0.1, help="label smoothing of the cross-entropy")
    add_flag(g, "--optimizer", "sgd", "SGD is Nesterov here")
    g.add_argument("--backbone-lr-mult", type=nonnegative_float, default=None,
                   help="backbone lr = lr x this (default: 1.0 for a random backbone (A, or --backbone none), 0.1 "
                        "for a pretrained one)")
    add_flag(g, "--weight-decay", 5e-4)
    add_flag(g, "--warmup-epochs", 5.0, "then cosine to 0")
    g.add_argument("--save-epochs", type=nonzero_int, nargs="*", default=[1, -1],
                   help="also keep epoch_NNN.pth at these epochs (-1 = the last); the t-SNE uses the first "
                        "and the last")
    g.add_argument("--linear-probe-epochs", type=int, default=0,
                   help="LP-FT: train the classifier alone (backbone frozen, BatchNorm statistics fixed) for this many "
                        "epochs, then the whole model; one schedule over the run, the backbone at lr x "
                        "--backbone-lr-mult once it trains (the linear-probe-then-fine-tune schedule of 2025's "
                        "strongest setting-C results; docs/problem1.md, Options that did best in 2025); 0 = off")
    g.add_argument("--cache-features", action="store_true",
                   help="frozen settings only: compute backbone features once on un-augmented images and train the "
                        "classifier on them (much faster; no augmentation)")
    return parser


def resolve_setting(args: argparse.Namespace) -> Dict[str, Any]:
    """Turn --setting plus explicit overrides into (backbone source, frozen, backbone lr multiplier, the report's
    wording); a missing backbone file is named before any work, with where it comes from."""
    kind, frozen = SETTINGS[args.setting]
    source = args.backbone if args.backbone is not None else DEFAULT_BACKBONES.get(kind, "none")
    if args.freeze_backbone is not None:
        frozen = args.freeze_backbone
    if frozen and source == "none":
        raise SystemExit("error: a frozen random backbone cannot learn anything; give --backbone PATH")
    if args.linear_probe_epochs and frozen:
        raise SystemExit("error: --linear-probe-epochs unfreezes the backbone after a linear probe; setting {} keeps "
                         "it frozen throughout".format(args.setting))
    if args.linear_probe_epochs < 0:
        raise SystemExit("error: --linear-probe-epochs must be 0 or more")
    if source != "none" and not Path(source).exists() and not args.eval_only and kind in MISSING:
        raise SystemExit("error: " + MISSING[kind].format(setting=args.setting, path=source))
    mult = args.backbone_lr_mult if args.backbone_lr_mult is not None else (1.0 if source == "none" else 0.1)
    pretraining = PRETRAINING[kind]
    if args.backbone is not None and args.backbone != "none" and kind == "none":
        pretraining = "from {}".format(args.backbone)
    if source == "none" and kind != "none":  # e.g. --setting C --backbone none: not the setting's pre-training
        pretraining = "none (random init, --backbone none), not {}".format(PRETRAINING[kind])
    finetuning = FINETUNING[frozen]
    if args.linear_probe_epochs:
        finetuning = "Linear probe for {} epoch(s), then train full model (LP-FT)".format(args.linear_probe_epochs)
    return {"backbone": source, "frozen": frozen, "backbone_lr_mult": mult, "pretraining": pretraining,
            "finetuning": finetuning}


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


def train_one_epoch(model: nn.Module, loader, optimizer, scaler, args: argparse.Namespace, run: Run, epoch: int,
                    step: int, lr_at: Any, frozen: bool, features: bool = False) -> Dict[str, Any]:
    """One epoch of cross-entropy training; a frozen backbone stays in eval mode (BN statistics fixed). A
    SIGINT/SIGTERM ends it after the current step (``interrupted``, after ``batches`` steps)."""
    model.train()
    if frozen:
        unwrap(model).backbone.eval()
    device, dtype = run.device, run.dtype
    sums = run.carried_sums(torch.zeros(3, device=device))  # loss, correct, samples (a resumed epoch's earlier too)
    ones = torch.ones((), device=device)  # samples are counted on the device: no host copy (and sync) per step
    bar = progress(loader, desc="epoch {}/{}".format(epoch, args.epochs), leave=False)
    batches = 0
    interrupted = False
    for i, (images, labels) in enumerate(bar):
        batches += 1
        set_lr(optimizer, lr_at(step))
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
            bar.set_postfix(loss="{:.4f}".format(loss.item()), lr="{:.2e}".format(lr_at(step - 1)))
        if run.stop.requested(i + 1, device):  # all ranks agree here
            interrupted = True
            break
    dist_utils.all_reduce_sum(sums)
    return {"train_loss": float(sums[0] / sums[2].clamp(min=1)), "train_acc": float(sums[1] / sums[2].clamp(min=1)),
            "step": step, "interrupted": interrupted, "sums": sums, "batches": batches, "lr": lr_at(max(step - 1, 0))}


def evaluate(model: nn.Module, loader, device: torch.device, dtype: Optional[torch.dtype]) -> Dict[str, float]:
    """Top-1 accuracy over the whole validation set (all ranks)."""
    with torch.no_grad():
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


def cache_backbone_features(model: nn.Module, dataset, args: argparse.Namespace, device: torch.device,
                            dtype: Optional[torch.dtype]) -> torch.utils.data.TensorDataset:
    """Frozen backbone features of every (un-augmented) image, computed once."""
    with torch.no_grad():
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size * 2, num_workers=args.workers,
                                             worker_init_fn=ignore_stop_signals)  # the trainer acts on a signal
        feats, labels = [], []
        model.backbone.eval()
        for images, y in progress(loader, desc="caching features", leave=False):
            x = normalize(images.to(device))
            with autocast(device, dtype):
                feats.append(model.backbone(x).float().cpu())
            labels.append(torch.as_tensor(y))
        return torch.utils.data.TensorDataset(torch.cat(feats), torch.cat(labels))


def build_model(run: Run, setting: Dict[str, Any]) -> nn.Module:
    """The classifier: resumed weights, else the setting's backbone weights; frozen backbone when asked."""
    model = build_classifier(run.config)
    if run.ckpt is not None:
        model.load_state_dict(run.ckpt["model"])
    elif setting["backbone"] != "none":
        load_backbone_weights(model.backbone, load_resnet_state_dict(setting["backbone"]),
                              source=str(setting["backbone"]), arch=run.config["arch"])
    if setting["frozen"]:
        for p in model.backbone.parameters():
            p.requires_grad = False
    model.to(run.device)
    return model.to(memory_format=torch.channels_last) if fast_layout(run.device, run.dtype) else model


def datasets(args: argparse.Namespace, run: Run, model: nn.Module, use_cache: bool):
    """(train set, val set): the train set as backbone features with --cache-features, else augmented images."""
    data = Path(args.data_dir)
    eval_tf = classify_eval_transform(args.image_size)
    val_set = CsvImages(args.val_csv or data / "val.csv", args.val_dir or data / "val", eval_tf,
                        num_classes=args.num_classes, strict=args.strict)
    if args.eval_only:
        return None, val_set
    train_csv, train_dir = args.train_csv or data / "train.csv", args.train_dir or data / "train"
    train_set = CsvImages(train_csv, train_dir, eval_tf if use_cache else train_transform(args),
                          num_classes=args.num_classes, strict=args.strict)
    run.use_data(train_set)  # checked against a resumed checkpoint's before features are cached
    if use_cache:
        return cache_backbone_features(model, train_set, args, run.device, run.dtype), val_set
    return train_set, val_set


def make_optimizer_for(args: argparse.Namespace, model: nn.Module, setting: Dict[str, Any], lr: float):
    """Head at the lr, backbone at lr x backbone_lr_mult; no weight decay on biases/norms in either."""
    groups = []
    for module, mult in ((model.head, 1.0), (model.backbone, setting["backbone_lr_mult"])):
        groups += [dict(g, lr_mult=mult) for g in weight_decay_groups(module, args.weight_decay) if g["params"]]
    return make_optimizer(args.optimizer, groups, lr, nesterov=True)


def main(args: argparse.Namespace) -> Dict[str, Any]:
    setting = resolve_setting(args)
    config = {"arch": args.arch, "num_classes": args.num_classes, "hidden_dim": args.hidden_dim,
              "dropout": args.dropout}
    run = Run(args, CLASSIFIER_KIND, config, curve_keys=(
        "train_loss", "train_acc", "val_acc"), title="setting " + args.setting)
    model = build_model(run, setting)
    use_cache = args.cache_features and setting["frozen"]
    train_set, val_set = datasets(args, run, model, use_cache)
    val_loader = run.loader(val_set, args.batch_size * 2, train=False)
    if args.eval_only:
        return run.finish(evaluate(model, val_loader, run.device, run.dtype), write=False)
    plain, frozen = model, None  # the backbone's state: frozen throughout (D/E) or for a linear probe first (LP-FT)
    if len(train_set) < args.batch_size * run.world:
        raise SystemExit("error: {} training images cannot fill one batch of {} per process; lower --batch-size"
                         .format(len(train_set), args.batch_size))
    loader = run.loader(train_set, args.batch_size, train=True, workers=0 if use_cache else None)
    lr = scaled_lr(args.lr, args.batch_size * run.world, args.lr_ref_batch)
    objects = {"optimizer": make_optimizer_for(args, plain, setting, lr),
               "scaler": make_grad_scaler(run.dtype)}
    total_steps, warmup_steps = args.epochs * len(loader), int(round(args.warmup_epochs * len(loader)))

    def lr_at(step: int) -> float:
        return schedule(step, total_steps, lr, 0.0, warmup_steps, lr / max(warmup_steps, 1))

    state = dict({"step": 0, "best_metric": -1.0}, **run.restore(**objects))
    last = {"val_acc": run.ckpt.get("val_acc")} if run.ckpt is not None else {}
    run.begin("setting {}: backbone {} ({}), {}; {} train / {} val images; {} process(es) x batch {}; lr {:g} "
              "(backbone x{:g}); {} epochs on {}".format(
                  args.setting, setting["backbone"], setting["pretraining"], setting["finetuning"], len(train_set),
                  len(val_set), run.world, args.batch_size, lr, setting["backbone_lr_mult"], args.epochs, run.device))
    for epoch in run.epochs(loader):
        t0 = time.time()
        if frozen != (setting["frozen"] or epoch <= args.linear_probe_epochs):
            frozen = setting["frozen"] or epoch <= args.linear_probe_epochs
            model, train_model = backbone_phase(run, plain, trainable=not frozen)
        stats = train_one_epoch(train_model, loader, objects["optimizer"], objects["scaler"], args, run, epoch,
                                state["step"], lr_at, frozen, features=use_cache)
        state["step"], sums = stats.pop("step"), stats.pop("sums", None)
        if stats.pop("interrupted"):
            run.save_and_exit(classifier_checkpoint(run, model, setting, epoch - 1, last, state, objects),
                              stats["batches"], len(loader), sums)
        run.check_finite(stats["train_loss"], epoch)
        last = dict(evaluate(model, val_loader, run.device, run.dtype), epoch=epoch, **stats)
        last["seconds"] = time.time() - t0
        end_of_epoch(run, model, setting, state, last, objects)
    return run.finish({"setting": args.setting, "backbone": str(setting["backbone"]),
                       "pretraining": setting["pretraining"], "finetuning": setting["finetuning"],
                       "best_val_acc": state["best_metric"], "last_val_acc": last.get("val_acc"),
                       "epochs": args.epochs, "seed": args.seed, "arch": run.config["arch"]})


def backbone_phase(run: Run, plain: nn.Module, trainable: bool):
    """(model, training model) with the backbone trainable or frozen: under torchrun the DDP wrapper is made anew
    (DDP fixes the parameters it synchronises when it is built), and torch.compile's with it."""
    for p in plain.backbone.parameters():
        p.requires_grad = trainable
    model = dist_utils.wrap_ddp(plain, run.device)
    return model, maybe_compile(model, run.args.compile)  # shares parameters; evaluation and checkpoints use model


def classifier_checkpoint(run: Run, model: nn.Module, setting: Dict[str, Any], epoch: int, metrics: Dict[str, Any],
                          state: Optional[Dict[str, Any]] = None, objects: Optional[Dict[str, Any]] = None
                          ) -> Dict[str, Any]:
    """The weights with what inference needs (image size, normalisation); with ``state``/``objects`` also what
    resumes the run."""
    args = run.args
    return checkpoint_state(CLASSIFIER_KIND, run.config, unwrap(model).state_dict(), args, epoch=epoch,
                            val_acc=metrics.get("val_acc"), setting=args.setting,
                            backbone_source=str(setting["backbone"]), image_size=args.image_size,
                            mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), num_classes=args.num_classes,
                            **dict(state or {}, **(objects or {})))


def end_of_epoch(run: Run, model: nn.Module, setting: Dict[str, Any], state: Dict[str, Any],
                 metrics: Dict[str, Any], objects: Dict[str, Any]) -> None:
    """Best-model bookkeeping, then best.pth / epoch_NNN.pth, the log line and the checkpoint, in that order."""
    epoch, args = metrics["epoch"], run.args
    is_best = metrics["val_acc"] > state["best_metric"]
    state["best_metric"] = max(state["best_metric"], metrics["val_acc"])
    metrics["best_acc"] = state["best_metric"]
    weights = classifier_checkpoint(run, model, setting, epoch, metrics)
    files = {"best.pth": weights} if is_best else {}
    if epoch in {e if e > 0 else args.epochs + 1 + e for e in args.save_epochs}:
        files["epoch_{:03d}.pth".format(epoch)] = weights
    run.end_epoch(classifier_checkpoint(run, model, setting, epoch, metrics, state, objects), epoch, metrics, files)
    if run.main:
        print("epoch {}/{}: train loss {:.4f}, train acc {:.4f}, val acc {:.4f} (best {:.4f})".format(
            epoch, args.epochs, metrics["train_loss"], metrics["train_acc"], metrics["val_acc"], state["best_metric"]))


if __name__ == "__main__":
    run_cli(main, get_args_parser())
