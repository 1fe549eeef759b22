"""Throughput benchmark: augmentation, DINO / fine-tuning / segmentation training steps, segmentation inference.

Prints one JSON line per measurement: the median images/s over ``--repeats`` timed iterations after ``--warmup``
untimed ones, the peak resident memory of the process so far (``resource.getrusage``; it only grows, so it
covers every measurement up to that line) and, on CUDA, ``torch.cuda.max_memory_allocated`` of that measurement.
With ``--reference`` each measurement also times the plain path, iteration by iteration alternately with the fast
one (so a change in machine load hits both), and adds ``reference_images_per_s`` and ``ratio`` (fast /
reference).

    # tiny CPU run (about a minute on 2 cores)
    python -m tools.benchmark --device cpu --batch-size 4 --arch resnet18 --out-dim 1024 --seg-size 128 --steps 3 --warmup 1
    # the CPU comparison of docs/performance.md (batch 16, ResNet-50, out_dim 65,536, 2 x 128 + 6 x 64 crops of 84 px)
    python -m tools.benchmark --device cpu --only aug_per_image aug_batched --reference --batch-size 16 --steps 20 \\
        --warmup 3 --json-out bench_cpu_aug.jsonl
    python -m tools.benchmark --device cpu --cpu-amp --only dino_step --reference --batch-size 16 --steps 5 --warmup 2 \\
        --threads 1 --json-out bench_cpu_dino.jsonl
    # a GPU, every measurement at the default (GPU-sized) settings
    python -m tools.benchmark --reference --json-out bench_gpu.jsonl

Measurements (``--only`` picks some):

* ``aug_per_image``: ``utils.multicrop.MultiCropAugmentation`` on uint8 ``--input-size`` images, one image at a
  time, ``--aug-threads`` (1) intra-op threads, as in a DataLoader worker. Reference: DINO's own per-image PIL
  pipeline (``DataAugmentationDINO``: RandomResizedCrop bicubic, flip, ColorJitter, grayscale, PIL Gaussian blur
  and solarization, ToTensor, Normalize), re-written below.
* ``aug_batched``: ``utils.gpu_multicrop.BatchedMultiCrop`` on a (B, 3, S, S) uint8 batch on the device (one
  thread on the CPU, the same budget as one DataLoader worker). References: the PIL pipeline (``ratio``) and
  ``MultiCropAugmentation`` (``ratio_vs_per_image``).
* ``dino_step``: one DINO step on fixed pre-made crops: student over all views, teacher over the 2 global views,
  ``DINOLoss``, backward, per-parameter clipping, SGD, EMA (the pieces of ``p1_ssl_pretrain.py``). Fast path:
  channels_last (``--channels-last``), autocast (``--amp``: bf16, or fp16 with a GradScaler on GPUs without bf16;
  on the CPU with ``--cpu-amp`` bf16 where oneDNN has native bf16 kernels), foreach EMA
  (``ema_update``) and foreach SGD. Reference: fp32, contiguous memory, a per-parameter Python EMA loop and the
  default SGD. Both start from the same weights and inputs; ``loss_rel_diff`` compares their first-step losses.
* ``finetune_step``: the Office-Home classifier (``utils.classify.build_classifier``, 65 classes) on
  ``--image-size`` px: forward, label-smoothed cross-entropy, backward, SGD.
* ``seg_step_unet`` / ``seg_step_deeplab``: a training step of ``utils.models.build_seg_model`` (U-Net;
  model B: DeepLabV3-ResNet101 at output stride 8 with its auxiliary head) on ``--seg-size`` px, batch
  ``--seg-batch-size``.
* ``inference``: what ``p2_inference.py`` does per batch: a checkpoint (random weights, ``--inference-arch``)
  written and reloaded with ``utils.predict.load_segmenter``, then ``predict_classes`` on uint8
  ``--seg-size`` images (image decoding and PNG writing are not included).

Training-step measurements use ``--threads`` intra-op threads (default: every core this process may use). On a
machine other processes also load, prefer ``--threads 1``: OpenMP threads that wait for a busy core spin, and a
2-thread ResNet-50 step on the 2-core test machine ran up to 6x slower than a 1-thread one while another job ran.
"""
import argparse
import contextlib
import copy
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from utils.checkpoint import make_checkpoint, save_atomic
from utils.classify import build_classifier
from utils.cli import HelpFormatter, add_bool_flag, add_flag
from utils.dino import DINOLoss, build_dino_net, ema_update, train_step
from utils.distributed import resolve_device
from utils.fileio import check_target
from utils.gpu_multicrop import BatchedMultiCrop
from utils.models import CLASSIFIER_BACKBONES, build_seg_model
from utils.multicrop import MultiCropAugmentation
from utils.optim import weight_decay_groups
from utils.precision import amp_dtype, autocast, make_grad_scaler, maybe_compile
from utils.transforms import IMAGENET_MEAN, IMAGENET_STD
from utils.predict import SEG_KIND, load_segmenter, predict_classes

# p2_deeplab.py's default model (random weights here): DeepLabV3-ResNet101, output stride 8, auxiliary head
MODEL_B = {"arch": "deeplabv3", "num_classes": 7, "encoder": "resnet101", "output_stride": 8, "aux_loss": True,
           "backbone_weights": "none"}
MEASUREMENTS = ("aug_per_image", "aug_batched", "dino_step", "finetune_step", "seg_step_unet", "seg_step_deeplab",
                "inference")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Throughput benchmark (one JSON line per measurement).",
                                     formatter_class=HelpFormatter)
    add_flag(parser, "--device", "auto")
    parser.add_argument("--only", nargs="+", choices=MEASUREMENTS, default=list(MEASUREMENTS), metavar="NAME",
                        help="measurements to run: any of the default's")
    parser.add_argument("--reference", action="store_true",
                        help="also time the plain path and report the ratio")
    parser.add_argument("--steps", "--repeats", dest="repeats", type=int, default=10,
                        help="timed iterations per measurement (the median is reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    add_flag(parser, "--batch-size", 32, "of the augmentation, DINO and fine-tuning measurements")
    parser.add_argument("--input-size", type=int, default=84, help="side of the uint8 images to augment")
    add_flag(parser, "--global-crop-size", 224, "the DINO recipe's")
    add_flag(parser, "--local-crop-size", 96, "the DINO recipe's")
    add_flag(parser, "--local-crops-number", 8, "the DINO recipe's")
    add_flag(parser, "--arch", "resnet50", "the ResNet of the DINO and fine-tuning measurements",
             choices=CLASSIFIER_BACKBONES)
    add_flag(parser, "--out-dim", 65536)
    add_flag(parser, "--hidden-dim", 2048, "the DINO head's MLP")
    add_flag(parser, "--bottleneck-dim", 256)
    add_flag(parser, "--image-size", 224, "of the fine-tuning measurement (the recipe's)")
    parser.add_argument("--seg-size", type=int, default=512, help="segmentation tile side (use 128 on a CPU)")
    parser.add_argument("--seg-batch-size", type=int, default=None,
                        help="segmentation / inference batch (default: 8 on CUDA, 2 on the CPU)")
    parser.add_argument("--inference-arch", choices=("unet", "deeplabv3"), default="deeplabv3",
                        help="model of the inference measurement (deeplabv3: model B, DeepLabV3-ResNet101 OS 8)")
    add_flag(parser, "--amp", True, " in the fast path")
    add_flag(parser, "--cpu-amp", more="in the fast path (the CPU figures of docs/performance.md use it)")
    add_bool_flag(parser, "channels-last", True, "channels_last models and inputs in the fast path")
    add_flag(parser, "--compile", more="the fast path's models; compile time is spent in the warm-up iterations, "
                                       "so use a larger --warmup")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads for the model measurements (default: the cores this process may use)")
    parser.add_argument("--aug-threads", type=int, default=1, help="intra-op threads for the CPU augmentation")
    add_flag(parser, "--seed", 0, "of the synthetic inputs and initial weights")
    parser.add_argument("--json-out", type=Path, default=None,
                        help="also write every JSON line to this file (default: none: stdout only)")
    return parser


# ------------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------------


def fast_amp_dtype(args: argparse.Namespace, device: torch.device) -> Optional[torch.dtype]:
    """The fast path's autocast dtype (the trainers' rule, utils.precision.amp_dtype): None means fp32."""
    return amp_dtype(device, args.amp, cpu=args.cpu_amp)


def dtype_name(dtype: Optional[torch.dtype]) -> str:
    return "fp32" if dtype is None else str(dtype).replace("torch.", "")


def peak_rss_mb() -> Optional[float]:
    """Peak resident memory of this process so far (ru_maxrss is KiB on Linux, bytes on macOS; None on Windows)."""
    try:
        import resource
    except ImportError:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0, 1)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def num_threads(n: int):
    """Temporarily use ``n`` intra-op threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_alternating(fns: Dict[str, Callable[[], Any]], repeats: int, warmup: int,
                     device: torch.device) -> Dict[str, List[float]]:
    """Seconds per call of each function; the functions take turns, so load drifts affect all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
            sync(device)
    times = {name: [] for name in fns}  # type: Dict[str, List[float]]
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def make_record(name: str, args: argparse.Namespace, device: torch.device, batch: int,
                times: Dict[str, List[float]], threads: int, **extra: Any) -> Dict[str, Any]:
    """The JSON line of one measurement ("fast" is the measured path, "reference" the optional plain one)."""
    median = statistics.median(times["fast"])
    record = {"name": name, "device": str(device), "images_per_s": round(batch / median, 3),
              "seconds_per_iter": round(median, 6), "batch_size": batch, "repeats": len(times["fast"]),
              "warmup": args.warmup, "threads": threads}
    if "reference" in times:
        ref = statistics.median(times["reference"])
        record["reference_images_per_s"] = round(batch / ref, 3)
        record["ratio"] = round(ref / median, 3)
    record.update(extra)
    record["peak_rss_mb"] = peak_rss_mb()
    if device.type == "cuda":
        record["cuda_max_mem_mb"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)
    return record


def random_uint8(batch: int, size: int, device: torch.device, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g).to(device)


# ------------------------------------------------------------------------------------------------------------
# DINO's per-image PIL pipeline (the reference of the augmentation measurements), from its published recipe
# ------------------------------------------------------------------------------------------------------------

class PILGaussianBlur:
    """With probability p, PIL's Gaussian blur with a radius drawn uniformly from [0.1, 2]."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, img):
        from PIL import ImageFilter

        if random.random() >= self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))


class PILSolarize:
    """With probability p, PIL's solarization (invert pixels >= 128)."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, img):
        from PIL import ImageOps

        return ImageOps.solarize(img) if random.random() < self.p else img


class PILMultiCrop:
    """DINO's ``DataAugmentationDINO`` on one PIL image: 2 global + ``num_local`` local normalised views."""

    def __init__(self, global_size: int, local_size: int, num_local: int) -> None:
        from torchvision import transforms as T

        bicubic = T.InterpolationMode.BICUBIC
        colour = T.Compose([
            T.RandomHorizontalFlip(p=0.5),
            T.RandomApply([T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
        ])
        to_tensor = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
        self.global1 = T.Compose([T.RandomResizedCrop(global_size, scale=(0.14, 1.0), interpolation=bicubic),
                                  colour, PILGaussianBlur(1.0), to_tensor])
        self.global2 = T.Compose([T.RandomResizedCrop(global_size, scale=(0.14, 1.0), interpolation=bicubic),
                                  colour, PILGaussianBlur(0.1), PILSolarize(0.2), to_tensor])
        self.local = T.Compose([T.RandomResizedCrop(local_size, scale=(0.05, 0.14), interpolation=bicubic),
                                colour, PILGaussianBlur(0.5), to_tensor])
        self.num_local = num_local

    def __call__(self, img) -> List[torch.Tensor]:
        return [self.global1(img), self.global2(img)] + [self.local(img) for _ in range(self.num_local)]


# ------------------------------------------------------------------------------------------------------------
# augmentation
# ------------------------------------------------------------------------------------------------------------

def aug_functions(args: argparse.Namespace) -> Dict[str, Callable[[], Any]]:
    """Closures over one batch of images: per-image torch path, and DINO's PIL pipeline."""
    from PIL import Image

    images = random_uint8(args.batch_size, args.input_size, torch.device("cpu"), args.seed)
    pil_images = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]
    per_image = MultiCropAugmentation(args.global_crop_size, args.local_crop_size, args.local_crops_number, seed=args.seed)
    pil = PILMultiCrop(args.global_crop_size, args.local_crop_size, args.local_crops_number)
    random.seed(args.seed)
    return {"per_image": lambda: [per_image(img) for img in images], "pil": lambda: [pil(img) for img in pil_images]}


def measure_aug_per_image(args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    fns = aug_functions(args)
    timed = {"fast": fns["per_image"]}
    if args.reference:
        timed["reference"] = fns["pil"]
    with num_threads(args.aug_threads):
        times = time_alternating(timed, args.repeats, args.warmup, torch.device("cpu"))
    return make_record("aug_per_image", args, torch.device("cpu"), args.batch_size, times, args.aug_threads,
                       input_size=args.input_size, views="2x{} + {}x{}".format(
                           args.global_crop_size, args.local_crops_number, args.local_crop_size),
                       reference="DINO PIL pipeline" if args.reference else None)


def measure_aug_batched(args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    images = random_uint8(args.batch_size, args.input_size, device, args.seed)
    aug = BatchedMultiCrop(args.global_crop_size, args.local_crop_size, args.local_crops_number,
                           generator=torch.Generator().manual_seed(args.seed))
    timed = {"fast": lambda: aug(images)}  # type: Dict[str, Callable[[], Any]]
    if args.reference:
        fns = aug_functions(args)
        timed["reference"] = fns["pil"]
        timed["per_image"] = fns["per_image"]
    if device.type == "cpu":  # one DataLoader worker's budget, like the per-image references
        threads = args.aug_threads
        with num_threads(threads):
            times = time_alternating(timed, args.repeats, args.warmup, device)
    else:  # the CPU references do not touch the GPU: time them apart, without synchronising it
        threads = args.threads
        torch.cuda.reset_peak_memory_stats(device)
        times = time_alternating({"fast": timed["fast"]}, args.repeats, args.warmup, device)
        if args.reference:
            with num_threads(args.aug_threads):
                times.update(time_alternating({k: v for k, v in timed.items() if k != "fast"}, args.repeats,
                                              args.warmup, torch.device("cpu")))
    extra = {"input_size": args.input_size,
             "views": "2x{} + {}x{}".format(args.global_crop_size, args.local_crops_number, args.local_crop_size)}
    if args.reference:
        per_image = args.batch_size / statistics.median(times["per_image"])
        extra.update(reference="DINO PIL pipeline", per_image_images_per_s=round(per_image, 3),
                     ratio_vs_per_image=round(statistics.median(times["per_image"]) /
                                              statistics.median(times["fast"]), 3))
    return make_record("aug_batched", args, device, args.batch_size, {k: v for k, v in times.items()
                                                                       if k in ("fast", "reference")},
                       threads, **extra)


# ------------------------------------------------------------------------------------------------------------
# DINO step
# ------------------------------------------------------------------------------------------------------------

class DinoStep:
    """Student, teacher, loss and optimizer of one DINO training setup; ``__call__`` runs one step."""

    def __init__(self, config: Dict[str, Any], state: Dict[str, torch.Tensor], num_crops: int, batch: int,
                 device: torch.device, fast: bool, dtype: Optional[torch.dtype], channels_last: bool,
                 compile_model: bool) -> None:
        self.student = build_dino_net(config).to(device)
        self.student.load_state_dict(state)
        self.teacher = build_dino_net(config).to(device)
        self.teacher.load_state_dict(state)
        for p in self.teacher.parameters():
            p.requires_grad = False
        self.student.train()
        self.teacher.train()
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.student.to(memory_format=torch.channels_last)
            self.teacher.to(memory_format=torch.channels_last)
        self.student_fn = maybe_compile(self.student, compile_model)
        self.teacher_fn = maybe_compile(self.teacher, compile_model)
        self.loss = DINOLoss(config["out_dim"], num_crops, 0.04, 0.04, 0).to(device)
        groups = weight_decay_groups(self.student, 1e-4)
        lr = 0.04 * batch / 256  # the recipe's rule: --lr 0.04 per 256 images
        # the fast path also uses the multi-tensor SGD (the default only on CUDA)
        self.optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9, **({"foreach": True} if fast else {}))
        self.scaler = make_grad_scaler(dtype)
        self.device, self.fast, self.dtype = device, fast, dtype
        self.losses = []  # type: List[float]

    def ema(self, teacher: torch.nn.Module, student: torch.nn.Module, momentum: float) -> None:
        if self.fast:
            ema_update(teacher, student, momentum)
        else:  # one Python iteration and two kernels per parameter
            with torch.no_grad():
                for pt, ps in zip(teacher.parameters(), student.parameters()):
                    pt.mul_(momentum).add_(ps.detach(), alpha=1.0 - momentum)

    def __call__(self, crops: Sequence[torch.Tensor]) -> torch.Tensor:
        crops = [c.contiguous(memory_format=self.memory_format) for c in crops]
        res, _ = train_step(self.student_fn, self.teacher_fn, self.loss, self.optimizer, self.scaler, crops, 0,
                            0.996, clip_grad=3.0, freeze_last_layer=0, dtype=self.dtype, ema=self.ema)
        loss = res["loss"].detach()
        if not self.losses:  # the first step's loss, from the initial weights (one host sync, once)
            self.losses.append(float(loss))
        return loss


def measure_dino_step(args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    config = {"arch": args.arch, "out_dim": args.out_dim, "hidden_dim": args.hidden_dim,
              "bottleneck_dim": args.bottleneck_dim, "use_bn_in_head": False, "norm_last_layer": True}
    torch.manual_seed(args.seed)
    state = {k: v.clone() for k, v in build_dino_net(config).state_dict().items()}
    images = random_uint8(args.batch_size, args.input_size, device, args.seed)
    crops = BatchedMultiCrop(args.global_crop_size, args.local_crop_size, args.local_crops_number,
                             generator=torch.Generator().manual_seed(args.seed))(images)
    num_crops = len(crops)
    dtype = fast_amp_dtype(args, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fast = DinoStep(config, state, num_crops, args.batch_size, device, True, dtype, args.channels_last,
                    args.compile)
    timed = {"fast": lambda: fast(crops)}  # type: Dict[str, Callable[[], Any]]
    reference = None
    if args.reference:
        reference = DinoStep(config, state, num_crops, args.batch_size, device, False, None, False, False)
        timed["reference"] = lambda: reference(crops)
    with num_threads(args.threads):
        times = time_alternating(timed, args.repeats, args.warmup, device)
    extra = {"arch": args.arch, "out_dim": args.out_dim, "amp_dtype": dtype_name(dtype),
             "channels_last": args.channels_last, "compile": args.compile, "ema": "foreach",
             "views": "2x{} + {}x{}".format(args.global_crop_size, args.local_crops_number, args.local_crop_size),
             "loss": round(fast.losses[0], 6)}
    if reference is not None:
        ref_loss = reference.losses[0]
        extra.update(reference="fp32, contiguous, per-parameter EMA loop", reference_loss=round(ref_loss, 6),
                     loss_rel_diff=float("{:.3g}".format(abs(fast.losses[0] - ref_loss) / max(abs(ref_loss), 1e-12))))
    return make_record("dino_step", args, device, args.batch_size, times, args.threads, **extra)


# ------------------------------------------------------------------------------------------------------------
# supervised steps and inference
# ------------------------------------------------------------------------------------------------------------

class SupervisedStep:
    """forward + loss + backward + SGD step of a model on fixed inputs."""

    def __init__(self, model: torch.nn.Module, loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
                 inputs: torch.Tensor, targets: torch.Tensor, device: torch.device, dtype: Optional[torch.dtype],
                 channels_last: bool, compile_model: bool, nesterov: bool = False) -> None:
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(device).to(memory_format=self.memory_format).train()
        self.fn = maybe_compile(self.model, compile_model)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4,
                                         nesterov=nesterov)
        self.scaler = make_grad_scaler(dtype)
        self.loss_fn, self.inputs, self.targets = loss_fn, inputs, targets
        self.device, self.dtype = device, dtype

    def __call__(self) -> torch.Tensor:
        x = self.inputs.contiguous(memory_format=self.memory_format)
        with autocast(self.device, self.dtype):
            loss = self.loss_fn(self.fn(x), self.targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach()


def measure_supervised(name: str, args: argparse.Namespace, device: torch.device,
                       build: Callable[[], torch.nn.Module], loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
                       inputs: torch.Tensor, targets: torch.Tensor, nesterov: bool, **extra: Any) -> Dict[str, Any]:
    dtype = fast_amp_dtype(args, device)
    torch.manual_seed(args.seed)
    model = build()
    state = copy.deepcopy(model.state_dict())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timed = {"fast": SupervisedStep(model, loss_fn, inputs, targets, device, dtype, args.channels_last,
                                    args.compile, nesterov)}  # type: Dict[str, Callable[[], Any]]
    if args.reference:
        ref_model = build()
        ref_model.load_state_dict(state)
        timed["reference"] = SupervisedStep(ref_model, loss_fn, inputs, targets, device, None, False, False,
                                            nesterov)
    with num_threads(args.threads):
        times = time_alternating(timed, args.repeats, args.warmup, device)
    extra.update(amp_dtype=dtype_name(dtype), channels_last=args.channels_last, compile=args.compile)
    if args.reference:
        extra["reference"] = "fp32, contiguous"
    return make_record(name, args, device, inputs.shape[0], times, args.threads, **extra)


def normalised_images(batch: int, size: int, device: torch.device, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=g).to(device)


def measure_finetune_step(args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    config = {"arch": args.arch, "num_classes": 65, "hidden_dim": 1024, "dropout": 0.5}
    inputs = normalised_images(args.batch_size, args.image_size, device, args.seed)
    labels = torch.randint(0, 65, (args.batch_size,), generator=torch.Generator().manual_seed(args.seed)).to(device)

    def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), y, label_smoothing=0.1)

    return measure_supervised("finetune_step", args, device, lambda: build_classifier(config), loss_fn, inputs,
                              labels, True, arch=args.arch, image_size=args.image_size, num_classes=65)


def measure_seg_step(name: str, config: Dict[str, Any], args: argparse.Namespace,
                     device: torch.device) -> Dict[str, Any]:
    inputs = normalised_images(args.seg_batch_size, args.seg_size, device, args.seed)
    masks = torch.randint(0, 7, (args.seg_batch_size, args.seg_size, args.seg_size),
                          generator=torch.Generator().manual_seed(args.seed)).to(device)

    def loss_fn(out: Dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(out["out"].float(), y, ignore_index=255)
        if "aux" in out:  # as p2_deeplab.py: auxiliary head weighted 0.5
            loss = loss + 0.5 * F.cross_entropy(out["aux"].float(), y, ignore_index=255)
        return loss

    return measure_supervised(name, args, device, lambda: build_seg_model(config), loss_fn, inputs, masks, False,
                              arch=config["arch"], image_size=args.seg_size)


def measure_inference(args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    config = dict(MODEL_B) if args.inference_arch == "deeplabv3" else {"arch": "unet", "num_classes": 7}
    torch.manual_seed(args.seed)
    model = build_seg_model(config)
    dtype = fast_amp_dtype(args, device)  # what p2_inference.py does on CUDA; on the CPU with --cpu-amp
    images = random_uint8(args.seg_batch_size, args.seg_size, device, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "seg.pth"
        save_atomic(make_checkpoint(SEG_KIND, config, model.state_dict()), path)
        loaded, ckpt = load_segmenter(path, device)
    saved_config = ckpt["model_config"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timed = {"fast": lambda: predict_classes(loaded, images, saved_config, dtype)}  # type: Dict[str, Callable]
    if args.reference:
        timed["reference"] = lambda: predict_classes(loaded, images, saved_config, None)
    with num_threads(args.threads):
        times = time_alternating(timed, args.repeats, args.warmup, device)
    extra = {"arch": args.inference_arch, "image_size": args.seg_size, "amp_dtype": dtype_name(dtype)}
    if args.reference:
        extra["reference"] = "fp32"
    return make_record("inference", args, device, args.seg_batch_size, times, args.threads, **extra)


# ------------------------------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> List[Dict[str, Any]]:
    device = resolve_device(args.device)
    if args.threads is None:
        args.threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if args.seg_batch_size is None:
        args.seg_batch_size = 8 if device.type == "cuda" else 2
    if min(args.repeats, args.batch_size, args.seg_batch_size) < 1 or args.warmup < 0:
        raise SystemExit("error: --steps, --batch-size and --seg-batch-size must be >= 1, --warmup >= 0")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.set_num_threads(args.threads)
    measures = {
        "aug_per_image": measure_aug_per_image,
        "aug_batched": measure_aug_batched,
        "dino_step": measure_dino_step,
        "finetune_step": measure_finetune_step,
        "seg_step_unet": lambda a, d: measure_seg_step("seg_step_unet", {"arch": "unet", "num_classes": 7}, a, d),
        "seg_step_deeplab": lambda a, d: measure_seg_step("seg_step_deeplab", MODEL_B, a, d),
        "inference": measure_inference,
    }
    out = None
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        check_target(args.json_out, "benchmark log", signature=b"{")  # written line by line as figures come
        out = open(args.json_out, "w")
    records = []
    try:
        for name in MEASUREMENTS:
            if name not in args.only:
                continue
            record = measures[name](args, device)
            record = {k: v for k, v in record.items() if v is not None}
            line = json.dumps(record)
            print(line, flush=True)
            if out is not None:
                out.write(line + "\n")
                out.flush()
            records.append(record)
    finally:
        if out is not None:
            out.close()
    return records


if __name__ == "__main__":
    run(get_args_parser().parse_args())
