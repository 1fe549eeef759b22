"""Problem 1, part I: DINO self-supervised pre-training of a ResNet-50 on unlabeled Mini-ImageNet.

A student sees 2 global (128 px) + 6 local (64 px) crops of each image and learns to match, on every other
view, the output distribution that an EMA teacher gives on the global views. Defaults are the report's recipe.

    # CPU smoke run on generated data
    python -m tools.toydata --out toy && python p1_ssl_pretrain.py --data-dir toy/p1_data/mini/train \
        --output-dir runs/dino_smoke --arch resnet18 --epochs 2 --batch-size 16 --out-dim 1024 --workers 0 \
        --knn-train-csv toy/p1_data/office/train.csv --knn-val-csv toy/p1_data/office/val.csv
    # one GPU, the report's recipe (300 epochs, batch 32, lr 0.04), k-NN on Office-Home every 10 epochs
    python p1_ssl_pretrain.py --data-dir hw1_data/p1_data/mini/train --output-dir runs/p1_dino \
        --knn-train-csv hw1_data/p1_data/office/train.csv --knn-val-csv hw1_data/p1_data/office/val.csv --knn-every 10
    # N GPUs on one node (batch 32 per GPU; the lr is scaled by the total batch)
    torchrun --nproc_per_node=N p1_ssl_pretrain.py --data-dir hw1_data/p1_data/mini/train --output-dir runs/p1_dino
    # several nodes: torchrun's own --nnodes/--node_rank/--rdzv_endpoint flags, nothing else changes
    # export the teacher backbone of any checkpoint as a plain torchvision resnet50 state_dict (no fc)
    python p1_ssl_pretrain.py --output-dir runs/p1_dino --export-only [--resume runs/p1_dino/checkpoint0100.pth]

A killed run resumes exactly (schedules, center, optimizer, scaler, epoch, step) from OUTPUT_DIR/checkpoint.pth.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import distributed as dist_utils
from utils.checkpoint import load_checkpoint, make_checkpoint, plain, save_atomic
from utils.datasets import CsvImages, UnlabeledImages
from utils.knn import extract_features, knn_accuracy
from utils.misc import (JsonlLogger, StopRequest, add_common_train_args, amp_dtype, autocast, fast_layout,
                        make_grad_scaler, maybe_compile, plot_curves, progress, read_jsonl, run_cli, seed_everything,
                        setup_determinism, weight_decay_groups)
from utils.models import CLASSIFIER_BACKBONES, build_resnet_backbone
from utils.gpu_multicrop import BatchedMultiCrop, InMemoryImages
from utils.multicrop import MultiCropAugmentation
from utils.transforms import classify_eval_transform

DINO_KIND = "p1_dino"


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="DINO self-supervised pre-training (report problem 1, part I).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_common_train_args(parser, epochs=300, batch_size=32, lr=0.04, workers=8,
                          data_dir="hw1_data/p1_data/mini/train", output_dir="runs/p1_dino")
    parser.set_defaults(save_every=50)
    g = parser.add_argument_group("model")
    g.add_argument("--arch", default="resnet50", choices=CLASSIFIER_BACKBONES,
                   help="torchvision ResNet backbone (fc replaced by identity); resnet18 for quick runs")
    g.add_argument("--out-dim", type=int, default=4096,
                   help="prototypes of the DINO head. DINO uses 65,536 for 1.28M ImageNet images (~20 images per "
                        "prototype); Mini-ImageNet's 38,400 images would give ~2,000, and 4,096 keeps a margin "
                        "above that (and far above its 64 classes) at 1/16 of the head's memory")
    g.add_argument("--hidden-dim", type=int, default=2048, help="width of the head's two hidden layers")
    g.add_argument("--bottleneck-dim", type=int, default=256, help="head bottleneck before the prototypes")
    g.add_argument("--use-bn-in-head", action="store_true",
                   help="BatchNorm in the head's MLP (off in the report, as in DINO's ViT recipe)")
    g.add_argument("--no-norm-last-layer", dest="norm_last_layer", action="store_false",
                   help="let the norm of the prototype layer train (DINO fixes it at 1 for stability)")
    g = parser.add_argument_group("DINO")
    g.add_argument("--momentum-teacher", type=float, default=0.996,
                   help="EMA momentum at the start; it rises to 1 on a cosine. Use 0.9995+ for small batches")
    g.add_argument("--warmup-teacher-temp", type=float, default=0.04, help="teacher temperature at epoch 0")
    g.add_argument("--teacher-temp", type=float, default=0.04,
                   help="teacher temperature after the warm-up; above 0.07 tends to collapse")
    g.add_argument("--warmup-teacher-temp-epochs", type=int, default=30,
                   help="epochs of linear teacher-temperature warm-up")
    g.add_argument("--student-temp", type=float, default=0.1, help="student temperature")
    g.add_argument("--center-momentum", type=float, default=0.9, help="EMA rate of the teacher-output center")
    g.add_argument("--freeze-last-layer", type=int, default=1,
                   help="epochs during which the prototype layer gets no updates (stabilises the start)")
    g = parser.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help="SGD (momentum 0.9) or AdamW")
    g.add_argument("--lr-ref-batch", type=int, default=32,
                   help="--lr is the rate at this total batch; the run uses lr * total_batch / lr_ref_batch")
    g.add_argument("--min-lr", type=float, default=1e-6, help="learning rate at the end of the cosine decay")
    g.add_argument("--warmup-epochs", type=int, default=10, help="epochs of linear learning-rate warm-up")
    g.add_argument("--weight-decay", type=float, default=1e-4,
                   help="constant weight decay; none on biases and norm parameters")
    g.add_argument("--clip-grad", type=float, default=3.0,
                   help="clip each parameter's gradient norm to this (DINO's per-parameter rule); 0 disables")
    g = parser.add_argument_group("multi-crop")
    g.add_argument("--global-crop-size", type=int, default=128, help="side of the 2 global crops")
    g.add_argument("--local-crop-size", type=int, default=64, help="side of the local crops")
    g.add_argument("--local-crops-number", type=int, default=6, help="local crops per image (0 disables)")
    g.add_argument("--global-crops-scale", type=float, nargs=2, default=(0.14, 1.0),
                   help="area range of the global crops")
    g.add_argument("--local-crops-scale", type=float, nargs=2, default=(0.05, 0.14),
                   help="area range of the local crops")
    g.add_argument("--max-images", type=int, default=None, help="use only the first N images (quick runs)")
    g.add_argument("--batched-aug", action="store_true",
                   help="fast data path: decode every image once into memory (uint8; Mini-ImageNet ~0.8 GB) and "
                        "run the multi-crop augmentation batched on the training device (utils/gpu_multicrop.py; "
                        "same distributions as the per-image path, tested). Off: per-image augmentation in "
                        "--workers processes")
    g.add_argument("--image-cache", type=Path, default=None,
                   help="with --batched-aug, keep the decoded images in this .npy file for the next run (rebuilt "
                        "when the folder changes)")
    g = parser.add_argument_group("monitoring")
    g.add_argument("--knn-train-csv", type=Path, default=None,
                   help="labeled probe set for weighted k-NN accuracy of the teacher backbone (e.g. Office-Home "
                        "train.csv); images are read from --knn-train-dir, default: the csv's folder/train")
    g.add_argument("--knn-train-dir", type=Path, default=None, help="image folder of --knn-train-csv")
    g.add_argument("--knn-val-csv", type=Path, default=None, help="probe queries (e.g. Office-Home val.csv)")
    g.add_argument("--knn-val-dir", type=Path, default=None, help="image folder of --knn-val-csv")
    g.add_argument("--knn-every", type=int, default=1, help="epochs between k-NN evaluations")
    g.add_argument("--knn-k", type=int, default=20, help="neighbours that vote")
    g.add_argument("--knn-temperature", type=float, default=0.07, help="temperature of the vote weights")
    g.add_argument("--knn-size", type=int, default=128, help="probe images: short side resize + centre crop")
    g.add_argument("--num-classes", type=int, default=65, help="classes of the probe set (Office-Home: 65)")
    g = parser.add_argument_group("export")
    g.add_argument("--export-only", action="store_true",
                   help="write backbone.pth from the checkpoint (--resume or OUTPUT_DIR/checkpoint.pth) and exit")
    g.add_argument("--export-from", choices=("teacher", "student"), default="teacher",
                   help="which network's backbone to export (DINO evaluates the teacher)")
    g.add_argument("--export-path", type=Path, default=None, help="default: OUTPUT_DIR/backbone.pth")
    return parser


class DINOHead(nn.Module):
    """MLP (GELU) -> L2-normalise -> prototype layer whose rows have unit norm (weight norm with g fixed at 1)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 use_bn: bool = False, norm_last_layer: bool = True) -> None:
        super().__init__()
        layers = []  # type: List[nn.Module]
        dims = [in_dim, hidden_dim, hidden_dim]
        for a, b in zip(dims[:-1], dims[1:]):
            layers.append(nn.Linear(a, b))
            if use_bn:
                layers.append(nn.BatchNorm1d(b))
            layers.append(nn.GELU())
        layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        # weight norm written out: W = g * v / ||v|| per prototype; g = 1 and frozen when norm_last_layer
        self.last_v = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        nn.init.trunc_normal_(self.last_v, std=0.02)
        self.last_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return F.linear(x, self.last_g * F.normalize(self.last_v, dim=1))


class MultiCropNet(nn.Module):
    """Backbone + head over a list of crops: crops of one resolution go through the backbone together."""

    def __init__(self, backbone: nn.Module, head: DINOHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        feats = []
        start = 0
        while start < len(crops):  # group consecutive crops of equal size into one batch
            end = start + 1
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            feats.append(self.backbone(torch.cat(list(crops[start:end]))))
            start = end
        feats_all = torch.cat(feats)  # (V*B, D)
        return {"out": self.head(feats_all), "features": feats_all}


def build_dino_net(config: Dict[str, Any]) -> MultiCropNet:
    """Student or teacher network from its config dict (stored in every checkpoint)."""
    backbone = build_resnet_backbone(config["arch"])
    head = DINOHead(backbone.feature_dim, config["out_dim"], config["hidden_dim"], config["bottleneck_dim"],
                    config["use_bn_in_head"], config["norm_last_layer"])
    return MultiCropNet(backbone, head)


class DINOLoss(nn.Module):
    """Cross-entropy between centred, sharpened teacher softmax on the 2 global views and the student's
    log-softmax on every other view, averaged over pairs; updates the center (all-reduced) after each call."""

    def __init__(self, out_dim: int, num_crops: int, warmup_teacher_temp: float, teacher_temp: float,
                 warmup_teacher_temp_epochs: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.num_crops, self.student_temp, self.center_momentum = num_crops, student_temp, center_momentum
        self.warmup_teacher_temp, self.teacher_temp = warmup_teacher_temp, teacher_temp
        self.warmup_epochs = warmup_teacher_temp_epochs
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temperature(self, epoch: int) -> float:
        """Linear warm-up from warmup_teacher_temp (epoch 0) to teacher_temp (epoch = warm-up epochs - 1)."""
        if epoch >= self.warmup_epochs:
            return self.teacher_temp
        if self.warmup_epochs == 1:
            return self.warmup_teacher_temp
        t = epoch / (self.warmup_epochs - 1)
        return self.warmup_teacher_temp + t * (self.teacher_temp - self.warmup_teacher_temp)

    def forward(self, student_output: torch.Tensor, teacher_output: torch.Tensor,
                epoch: int) -> Dict[str, torch.Tensor]:
        """student_output: (num_crops*B, K); teacher_output: (2*B, K). Returns loss and collapse signals."""
        student = (student_output.float() / self.student_temp).chunk(self.num_crops)
        temp = self.teacher_temperature(epoch)
        teacher_probs = F.softmax((teacher_output.float() - self.center) / temp, dim=-1).detach().chunk(2)
        total, pairs = 0.0, 0
        for iq, q in enumerate(teacher_probs):
            for v in range(self.num_crops):
                if v == iq:
                    continue  # no loss between a view and itself
                total = total + torch.sum(-q * F.log_softmax(student[v], dim=-1), dim=-1).mean()
                pairs += 1
        loss = total / pairs
        probs = torch.cat(teacher_probs)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()
        self.update_center(teacher_output.float())
        # loss = mean over pairs of H(teacher, student) = H(teacher) + KL(teacher || student)
        return {"loss": loss, "teacher_entropy": entropy.detach(), "kl": (loss - entropy).detach()}

    @torch.no_grad()
    def update_center(self, teacher_output: torch.Tensor) -> None:
        """center <- m * center + (1 - m) * mean teacher output over the global batch of all processes."""
        batch_center = teacher_output.sum(dim=0, keepdim=True)
        dist_utils.all_reduce_sum(batch_center)
        batch_center = batch_center / (teacher_output.shape[0] * dist_utils.get_world_size())
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)


def cosine_schedule(step: int, base: float, final: float, total_steps: int, warmup_steps: int = 0,
                    warmup_start: float = 0.0) -> float:
    """Linear warm-up from ``warmup_start`` to ``base`` over warmup_steps, then cosine from base to final."""
    if step < warmup_steps:
        return warmup_start + (base - warmup_start) * step / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * min(t, 1.0)))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher = m * teacher + (1 - m) * student for every parameter, in two fused foreach calls."""
    t_params = [p for p in teacher.parameters()]
    s_params = [p.detach() for p in student.parameters()]
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)


def clip_gradients(model: nn.Module, clip: float) -> None:
    """Scale each parameter's gradient to norm <= clip (DINO's per-parameter rule), without host syncs."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    scales = torch._foreach_norm(grads)  # min(1, clip / (norm + 1e-6)) per parameter, in a few fused calls
    torch._foreach_add_(scales, 1e-6)
    torch._foreach_reciprocal_(scales)
    torch._foreach_mul_(scales, clip)
    torch._foreach_clamp_max_(scales, 1.0)
    torch._foreach_mul_(grads, scales)


def model_config(args: argparse.Namespace) -> Dict[str, Any]:
    """What rebuilds the student/teacher networks."""
    return {"arch": args.arch, "out_dim": args.out_dim, "hidden_dim": args.hidden_dim,
            "bottleneck_dim": args.bottleneck_dim, "use_bn_in_head": args.use_bn_in_head,
            "norm_last_layer": args.norm_last_layer}


def export_backbone(ckpt: Dict[str, Any], which: str, path: Path) -> Path:
    """Write the chosen network's backbone as a plain torchvision ResNet state_dict without fc."""
    state = {k[len("backbone."):]: v for k, v in ckpt[which].items() if k.startswith("backbone.")}
    save_atomic(state, path)
    return path


def _probe_loaders(args: argparse.Namespace, device: torch.device):
    """(train, val) loaders of the labeled k-NN probe set, or None when not configured."""
    if args.knn_train_csv is None or args.knn_val_csv is None:
        return None
    tf = classify_eval_transform(args.knn_size)
    loaders = []
    for csv_path, image_dir, split in ((args.knn_train_csv, args.knn_train_dir, "train"),
                                       (args.knn_val_csv, args.knn_val_dir, "val")):
        image_dir = image_dir or Path(csv_path).parent / split
        ds = CsvImages(csv_path, image_dir, tf, num_classes=args.num_classes, strict=args.strict)
        loaders.append(torch.utils.data.DataLoader(ds, batch_size=max(args.batch_size, 64),
                                                   num_workers=min(args.workers, 4),
                                                   pin_memory=device.type == "cuda"))
    return loaders


def run_knn(teacher: MultiCropNet, loaders, args: argparse.Namespace, device: torch.device,
            dtype: Optional[torch.dtype]) -> float:
    """Weighted k-NN top-1 accuracy of the teacher backbone's features on the probe set."""
    train_f, train_y = extract_features(teacher.backbone, loaders[0], device, dtype)
    val_f, val_y = extract_features(teacher.backbone, loaders[1], device, dtype)
    return knn_accuracy(train_f, train_y, val_f, val_y, args.num_classes, args.knn_k, args.knn_temperature)


def train_one_epoch(student: nn.Module, teacher: MultiCropNet, dino_loss: DINOLoss, loader, optimizer, scaler,
                    args: argparse.Namespace, device: torch.device, dtype: Optional[torch.dtype], epoch: int,
                    step: int, total_steps: int, warmup_steps: int, lr_peak: float,
                    stop: Optional[StopRequest] = None, augment: Optional[Any] = None) -> Dict[str, Any]:
    """One DINO epoch (0-based ``epoch``); returns averaged loss and collapse signals, and the new step; a
    SIGINT/SIGTERM ends it after the current step (``interrupted``, after ``batches`` steps)."""
    student.train()
    plain_student = dist_utils.unwrap(student)
    sums = torch.zeros(4, device=device)  # loss, teacher entropy, KL, embedding std
    count = 0
    bar = progress(loader, desc="epoch {}/{}".format(epoch + 1, args.epochs), leave=False)
    t0 = time.time()
    lr = momentum = 0.0
    interrupted = False
    for i, crops in enumerate(bar):
        lr = cosine_schedule(step, lr_peak, args.min_lr, total_steps, warmup_steps)
        momentum = cosine_schedule(step, args.momentum_teacher, 1.0, total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if torch.is_tensor(crops):  # --batched-aug: a uint8 batch, augmented here on the device
            # seeded by (seed, global step, rank): a run resumed mid-epoch draws the same views as an unbroken one
            augment.generator.manual_seed((args.seed * 10 ** 9 + step) * 1000 + dist_utils.get_rank())
            crops = augment(crops.to(device, non_blocking=True))
        else:
            crops = [c.to(device, non_blocking=True) for c in crops]
        if fast_layout(device, dtype):
            crops = [c.contiguous(memory_format=torch.channels_last) for c in crops]
        with autocast(device, dtype):
            with torch.no_grad():
                teacher_out = teacher(crops[:2])["out"]  # only the global views go through the teacher
            student_res = student(crops)
            res = dino_loss(student_res["out"], teacher_out, epoch)
        loss = res["loss"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if args.clip_grad > 0:
            scaler.unscale_(optimizer)
            clip_gradients(plain_student, args.clip_grad)
        if epoch < args.freeze_last_layer:  # the prototypes stay fixed during the first epoch(s)
            plain_student.head.last_v.grad = None
            plain_student.head.last_g.grad = None
        scaler.step(optimizer)
        scaler.update()
        ema_update(teacher, plain_student, momentum)
        with torch.no_grad():
            feats = F.normalize(student_res["features"][: crops[0].shape[0]].float(), dim=1)
            embed_std = feats.std(0).mean() * math.sqrt(feats.shape[1])  # ~1 healthy, -> 0 collapsed
            sums += torch.stack([loss.detach().float(), res["teacher_entropy"], res["kl"], embed_std])
        count += 1
        step += 1
        if i % args.print_freq == 0:  # the only host sync in the loop, at an interval
            value = loss.item()
            if not math.isfinite(value):
                break
            bar.set_postfix(loss="{:.4f}".format(value), lr="{:.2e}".format(lr), m="{:.4f}".format(momentum),
                            img_s="{:.0f}".format(count * crops[0].shape[0] / max(time.time() - t0, 1e-6)))
        if stop is not None and stop.requested(i + 1, device):  # all ranks agree here
            interrupted = True
            break
    stats = torch.cat([sums, torch.tensor([float(count)], device=device)])
    dist_utils.all_reduce_sum(stats)
    n = max(float(stats[4]), 1.0)
    seconds = time.time() - t0
    return {"loss": float(stats[0]) / n, "teacher_entropy": float(stats[1]) / n, "kl": float(stats[2]) / n,
            "embed_std": float(stats[3]) / n, "lr": lr, "momentum": momentum, "step": step, "batches": count,
            "interrupted": interrupted,
            "teacher_temp": dino_loss.teacher_temperature(epoch), "seconds": seconds,
            "images_per_s": count * args.batch_size * dist_utils.get_world_size() / max(seconds, 1e-6)}


def collapse_warning(stats: Dict[str, Any], out_dim: int, epoch: int, warmup_epochs: int = 1) -> Optional[str]:
    """A message when the run looks collapsed: uniform teacher (loss ~ ln K after the warm-up, when a healthy
    run has left it) or one dominant prototype (teacher entropy and KL ~ 0)."""
    uniform = math.log(out_dim)
    if stats["embed_std"] < 0.05:
        return "student embeddings have ~zero spread (std {:.3f}): representation collapse".format(
            stats["embed_std"])
    if epoch >= warmup_epochs and abs(stats["loss"] - uniform) < 0.01 * uniform \
            and stats["teacher_entropy"] > 0.98 * uniform:
        return "loss is stuck at ln(out_dim) = {:.3f} with a uniform teacher: collapse to uniform " \
               "(lower --teacher-temp, check the center momentum)".format(uniform)
    if epoch >= 1 and stats["teacher_entropy"] < 0.05 and stats["kl"] < 1e-3:
        return "teacher output has ~zero entropy and student matches it: collapse to one prototype " \
               "(raise --teacher-temp or --center-momentum)"
    return None


def _resume_path(args: argparse.Namespace) -> Optional[Path]:
    if args.resume is not None:
        return Path(args.resume)
    path = Path(args.output_dir) / "checkpoint.pth"
    return path if path.is_file() and not args.overwrite else None


def main(args: argparse.Namespace) -> Dict[str, Any]:
    out = Path(args.output_dir)
    if args.export_only:
        path = _resume_path(args)
        if path is None:
            raise SystemExit("error: --export-only needs a checkpoint: --resume PATH or OUTPUT_DIR/checkpoint.pth")
        target = export_backbone(load_checkpoint(path, DINO_KIND), args.export_from,
                                 args.export_path or out / "backbone.pth")
        print("wrote the {} backbone of {} to {}".format(args.export_from, path, target))
        return {"backbone": str(target)}

    device = dist_utils.resolve_device(args.device)
    distributed = dist_utils.init_distributed(device)
    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    setup_determinism(args.deterministic)
    seed_everything(args.seed)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    dist_utils.barrier()

    config = model_config(args)
    resume = _resume_path(args)
    ckpt = load_checkpoint(resume, DINO_KIND) if resume else None
    if ckpt is not None:
        if ckpt["model_config"] != plain(config) and args.resume is None:
            raise SystemExit("error: {} holds a DINO run of another model ({} vs requested {}); use another "
                             "--output-dir or --overwrite".format(out, ckpt["model_config"], plain(config)))
        config = ckpt["model_config"]

    batched_aug = None  # type: Optional[BatchedMultiCrop]
    if args.batched_aug:
        checked = UnlabeledImages(args.data_dir, max_images=args.max_images, strict=args.strict).files
        if rank == 0:  # rank 0 decodes (and writes --image-cache); the other ranks then read the cache
            dataset = InMemoryImages(args.data_dir, cache_path=args.image_cache, files=checked)
        dist_utils.barrier()
        if rank != 0:
            dataset = InMemoryImages(args.data_dir, cache_path=args.image_cache, files=checked)
        batched_aug = BatchedMultiCrop(args.global_crop_size, args.local_crop_size, args.local_crops_number,
                                       tuple(args.global_crops_scale), tuple(args.local_crops_scale),
                                       generator=torch.Generator())
    else:
        aug = MultiCropAugmentation(args.global_crop_size, args.local_crop_size, args.local_crops_number,
                                    tuple(args.global_crops_scale), tuple(args.local_crops_scale))
        dataset = UnlabeledImages(args.data_dir, aug, max_images=args.max_images, strict=args.strict)
    student = build_dino_net(config).to(device)
    teacher = build_dino_net(config).to(device)
    if distributed and device.type == "cuda":
        student = nn.SyncBatchNorm.convert_sync_batchnorm(student)
        teacher = nn.SyncBatchNorm.convert_sync_batchnorm(teacher)
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    # The teacher runs in train mode, as in DINO: BatchNorm normalises with the batch's statistics, and its
    # running statistics (used for the exported backbone and k-NN) come from its own forward passes; only
    # parameters follow the EMA, not BN buffers.
    teacher.train()
    num_crops = 2 + args.local_crops_number
    dino_loss = DINOLoss(config["out_dim"], num_crops, args.warmup_teacher_temp, args.teacher_temp,
                         args.warmup_teacher_temp_epochs, args.student_temp, args.center_momentum).to(device)
    dtype = amp_dtype(device, args.amp, cpu=args.cpu_amp)
    if fast_layout(device, dtype):
        student = student.to(memory_format=torch.channels_last)
        teacher = teacher.to(memory_format=torch.channels_last)
    plain_student = student
    if distributed:  # SyncBatchNorm was applied above, to the teacher as well
        student = nn.parallel.DistributedDataParallel(student, device_ids=[device.index] if device.type == "cuda"
                                                      else None)
    train_student = maybe_compile(student, args.compile)  # shares parameters with student / plain_student
    sampler = dist_utils.train_sampler(dataset, args.seed)
    workers = 0 if batched_aug is not None else args.workers  # in-memory uint8: indexing is the whole load
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, sampler=sampler,
                                         num_workers=workers, pin_memory=device.type == "cuda",
                                         drop_last=True, persistent_workers=workers > 0 and not args.deterministic)
    if len(loader) == 0:
        raise SystemExit("error: {} images cannot fill one batch of {} per process; lower --batch-size".format(
            len(dataset), args.batch_size))
    total_batch = args.batch_size * world
    lr_peak = args.lr * total_batch / args.lr_ref_batch
    groups = weight_decay_groups(plain_student, args.weight_decay)
    optimizer = (torch.optim.SGD(groups, lr=lr_peak, momentum=0.9) if args.optimizer == "sgd"
                 else torch.optim.AdamW(groups, lr=lr_peak))
    scaler = make_grad_scaler(dtype)
    steps_per_epoch = len(loader)  # before any resume skips batches: len(loader) then shrinks for one epoch
    total_steps = args.epochs * steps_per_epoch
    warmup_steps = args.warmup_epochs * steps_per_epoch
    start_epoch, step, partial = 0, 0, 0
    logger = JsonlLogger(out / "log.jsonl", enabled=rank == 0)
    if ckpt is not None:
        plain_student.load_state_dict(ckpt["student"])
        teacher.load_state_dict(ckpt["teacher"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt.get("scaler", {}))
        dino_loss.center.copy_(ckpt["center"].to(device))
        start_epoch, step = ckpt["epoch"], ckpt["step"]
        partial = ckpt.get("partial_steps", 0)  # steps of the next epoch done before a SIGINT/SIGTERM
        logger.truncate_after(start_epoch)
        if rank == 0:
            print("resumed from {} at epoch {}".format(resume, start_epoch))
    elif rank == 0 and (out / "log.jsonl").exists():
        (out / "log.jsonl").unlink()
    probes = _probe_loaders(args, device) if rank == 0 else None
    if rank == 0:
        print("DINO {}: {} images, {} process(es) x batch {} = {}; lr {:g} = base {:g} x {} / {}; {} crops "
              "({}x{} + {}x{}); out_dim {}; {} epochs on {}{}".format(
                  config["arch"], len(dataset), world, args.batch_size, total_batch, lr_peak, args.lr, total_batch,
                  args.lr_ref_batch, num_crops, 2, args.global_crop_size, args.local_crops_number,
                  args.local_crop_size, config["out_dim"], args.epochs, device,
                  ", amp " + str(dtype).replace("torch.", "") if dtype else ""))
        with open(out / "args.json", "w") as f:
            json.dump(plain(args), f, indent=2)
        if ckpt is None and probes is not None:
            knn0 = run_knn(teacher, probes, args, device, dtype)
            logger.log({"epoch": 0, "knn_acc": knn0})
            print("k-NN accuracy of the initial teacher: {:.4f}".format(knn0))
    dist_utils.barrier()

    stats = {}  # type: Dict[str, Any]
    stop = StopRequest(every=args.print_freq)
    with stop:
        for epoch in range(start_epoch, args.epochs):
            dist_utils.start_epoch(sampler, args.seed, epoch, skip_batches=partial, batch_size=args.batch_size)
            stats = train_one_epoch(train_student, teacher, dino_loss, loader, optimizer, scaler, args, device, dtype,
                                    epoch, step, total_steps, warmup_steps, lr_peak, stop, augment=batched_aug)
            step = stats.pop("step")
            if stats.pop("interrupted") and math.isfinite(stats["loss"]):
                done = partial + stats["batches"]
                if rank == 0:
                    save_atomic(make_checkpoint(DINO_KIND, config, teacher.state_dict(), args,
                                                student=plain_student.state_dict(), teacher=teacher.state_dict(),
                                                optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                                                center=dino_loss.center.detach().cpu(), epoch=epoch, step=step,
                                                partial_steps=done), out / "checkpoint.pth")
                dist_utils.barrier()
                stop.exit(out / "checkpoint.pth", done, steps_per_epoch)
            partial = 0
            if not math.isfinite(stats["loss"]):
                raise SystemExit("error: the DINO loss became {} in epoch {}; the last good checkpoint {} is kept. "
                                 "Lower --lr or --clip-grad, or try --no-amp".format(stats["loss"], epoch + 1,
                                                                                       out / "checkpoint.pth"))
            stats["epoch"] = epoch + 1
            if probes is not None and ((epoch + 1) % args.knn_every == 0 or epoch + 1 == args.epochs):
                stats["knn_acc"] = run_knn(teacher, probes, args, device, dtype)
            warning = collapse_warning(stats, config["out_dim"], epoch, args.warmup_epochs)
            if rank == 0:
                ckpt_out = make_checkpoint(DINO_KIND, config, teacher.state_dict(), args,
                                           student=plain_student.state_dict(), teacher=teacher.state_dict(),
                                           optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                                           center=dino_loss.center.detach().cpu(), epoch=epoch + 1, step=step)
                save_atomic(ckpt_out, out / "checkpoint.pth")
                if args.save_every > 0 and (epoch + 1) % args.save_every == 0:
                    save_atomic(ckpt_out, out / "checkpoint_epoch{:03d}.pth".format(epoch + 1))
                if warning:
                    stats["warning"] = warning
                    print("\n" + "!" * 78 + "\nWARNING epoch {}: {}\n".format(epoch + 1, warning) + "!" * 78,
                          file=sys.stderr)
                logger.log(stats)
                plot_curves(read_jsonl(out / "log.jsonl"), ["loss", "knn_acc", "teacher_entropy", "kl", "embed_std",
                                                            "lr"], out / "curves.png", title="DINO " + config["arch"])
                print("epoch {}/{}: loss {:.4f}, teacher entropy {:.3f}, KL {:.4f}, embed std {:.3f}{}, {:.0f} img/s"
                      .format(epoch + 1, args.epochs, stats["loss"], stats["teacher_entropy"], stats["kl"],
                              stats["embed_std"],
                              ", k-NN {:.4f}".format(stats["knn_acc"]) if "knn_acc" in stats else "",
                              stats["images_per_s"]))
            dist_utils.barrier()

    result = {"epochs": args.epochs, "arch": config["arch"], "final_loss": stats.get("loss"),
              "final_knn_acc": stats.get("knn_acc"), "world_size": world}
    if distributed:  # every rank must hold the same center (it is all-reduced); record the largest gap
        centers = [torch.zeros_like(dino_loss.center) for _ in range(world)]
        torch.distributed.all_gather(centers, dino_loss.center)
        result["center_rank_max_diff"] = max(float((c - centers[0]).abs().max()) for c in centers)
    if rank == 0:
        final = load_checkpoint(out / "checkpoint.pth", DINO_KIND)
        result["backbone"] = str(export_backbone(final, args.export_from, out / "backbone.pth"))
        records = read_jsonl(out / "log.jsonl")
        knn = [r["knn_acc"] for r in records if "knn_acc" in r]
        result["initial_knn_acc"] = knn[0] if knn and records[0].get("epoch") == 0 else None
        with open(out / "results.json", "w") as f:
            json.dump(result, f, indent=2)
    dist_utils.cleanup()
    return result


def cli(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    return main(get_args_parser().parse_args(argv))


if __name__ == "__main__":
    run_cli(main, get_args_parser())
