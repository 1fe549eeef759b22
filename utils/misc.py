"""Small shared pieces: the trainers' common flags, seeding, precision, JSON-lines logs and curves."""
import argparse
import contextlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch


def add_bool_flag(parser: argparse.ArgumentParser, name: str, default: bool, help: str) -> None:
    """Add ``--name`` / ``--no-name`` (argparse.BooleanOptionalAction needs Python 3.9)."""
    dest = name.replace("-", "_")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--" + name, dest=dest, action="store_true", help=help + " (default: %(default)s)")
    group.add_argument("--no-" + name, dest=dest, action="store_false",
                       help="turn --{} off (its default: %(default)s)".format(name))
    parser.set_defaults(**{dest: default})


def add_common_train_args(parser: argparse.ArgumentParser, epochs: int, batch_size: int, lr: float,
                          workers: int, data_dir: str, output_dir: str) -> None:
    """Flags every trainer of this project shares, with the experiment's own defaults."""
    g = parser.add_argument_group("common training flags")
    g.add_argument("--data-dir", type=Path, default=Path(data_dir), help="dataset folder (default: %(default)s)")
    g.add_argument("--output-dir", type=Path, default=Path(output_dir),
                   help="where checkpoints, logs and figures go; a run there is resumed automatically "
                        "(default: %(default)s)")
    g.add_argument("--epochs", type=int, default=epochs, help="training epochs (default: %(default)s)")
    g.add_argument("--batch-size", type=int, default=batch_size,
                   help="images per process per step; the total batch is this times the number of processes "
                        "(default: %(default)s)")
    g.add_argument("--lr", type=float, default=lr,
                   help="peak learning rate for the total batch (default: %(default)s)")
    g.add_argument("--workers", type=int, default=workers,
                   help="data-loader worker processes per GPU; 0 loads in the main process (default: %(default)s)")
    g.add_argument("--device", default="auto", help="'auto' (cuda when available), 'cpu', 'cuda' or 'cuda:N'")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    add_bool_flag(g, "amp", True, "mixed precision on CUDA (bf16 where supported, else fp16 with a GradScaler); "
                                  "ignored on CPU")
    g.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms and no cudnn autotuning: bit-reproducible CPU runs, slower GPU")
    g.add_argument("--resume", type=Path, default=None,
                   help="checkpoint to resume from (default: OUTPUT_DIR/checkpoint.pth when it exists)")
    g.add_argument("--eval-only", action="store_true", help="evaluate the resumed/--resume model and exit")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh in an output folder that holds a different run (otherwise refused)")
    g.add_argument("--save-every", type=int, default=0,
                   help="also keep the full resumable state as checkpoint_epochNNN.pth every K epochs; 0 keeps only "
                        "the latest checkpoint.pth (default: %(default)s)")
    g.add_argument("--print-freq", type=int, default=20, help="steps between progress-bar loss updates")
    g.add_argument("--cpu-amp", action="store_true",
                   help="on a CPU with native bf16 kernels (AVX-512 BF16 / AMX), bf16 autocast and channels_last "
                        "(about 2x faster DINO steps on such a CPU; see README, Performance); off by default so "
                        "CPU runs stay fp32")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the training forward pass (PyTorch 2; worth it for long GPU runs, the first "
                        "steps are slow while it compiles)")
    g.add_argument("--strict", action="store_true",
                   help="an unreadable image or mask found by the check before training is an error; by default "
                        "it is skipped with a warning naming it")


def progress(iterable: Any, **kwargs: Any) -> Any:
    """A tqdm bar on the main process only; TQDM_DISABLE=1 silences it (tests, batch jobs)."""
    from tqdm import tqdm

    from utils.distributed import is_main_process

    quiet = os.environ.get("TQDM_DISABLE", "") not in ("", "0") or not is_main_process()
    return tqdm(iterable, disable=quiet, dynamic_ncols=True, **kwargs)


OOM_HINT = ("error: out of memory ({}).\nLower --batch-size (DINO's lr follows the total batch); for DINO also "
            "--local-crops-number, --global-crop-size or --local-crop-size; for segmentation --crop-size and "
            "--val-batch-size; for inference --batch-size. Host memory: lower --workers. The last checkpoint is kept: "
            "run the same command again to resume.")


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA (or CPU allocator) out-of-memory error."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom_type is not None and isinstance(exc, oom_type)) or "out of memory" in str(exc).lower()


def run_cli(main: Any, parser: argparse.ArgumentParser) -> Any:
    """Parse flags and run ``main``; bad input (missing or corrupt files, wrong formats) ends with a one-line
    'error: ...' naming the file and exit code 2 instead of a traceback; out of memory ends with the flags to
    lower and exit code 3."""
    import sys

    args = parser.parse_args()
    try:
        return main(args)
    except (OSError, ValueError) as exc:  # missing/unreadable/corrupt files, wrong formats, permissions
        print("error: {}".format(exc), file=sys.stderr)
        sys.exit(2)
    except RuntimeError as exc:
        if not is_out_of_memory(exc):
            raise
        print(OOM_HINT.format(str(exc).splitlines()[0][:200]), file=sys.stderr)
        sys.exit(3)
    except SystemExit as exc:
        if isinstance(exc.code, str):  # raise SystemExit("error: ...") -> the same exit code 2
            print(exc.code, file=sys.stderr)
            sys.exit(2)
        raise


class StopRequest(object):
    """SIGINT (Ctrl-C) or SIGTERM (a scheduler's kill) during training: the loop finishes its step, the trainer
    saves a resumable checkpoint and exits with 128 + the signal number. A second signal aborts at once.

    ``requested(i)`` is what the training loop asks after step ``i``; under torchrun the ranks agree through an
    all-reduce (every ``every`` steps, the loop's existing sync points) so that all of them stop at the same step.
    """

    def __init__(self, every: int = 1) -> None:
        self.signum = None  # type: Optional[int]
        self.every = max(1, int(every))
        self._previous = {}  # type: Dict[int, Any]

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # second signal: stop now
        self.signum = signum
        print("\n{} received: finishing this step, saving a checkpoint, then stopping (send it again to abort)"
              .format(signal.Signals(signum).name), file=sys.stderr, flush=True)

    def __enter__(self) -> "StopRequest":
        import threading

        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def requested(self, step_in_epoch: int, device: Optional[torch.device] = None) -> bool:
        from utils import distributed as dist_utils

        if not dist_utils.is_dist():
            return self.signum is not None
        if step_in_epoch % self.every:
            return False
        flag = torch.tensor([0.0 if self.signum is None else 1.0], device=device)
        dist_utils.all_reduce_sum(flag)
        return bool(flag.item() > 0)

    def exit(self, checkpoint: Union[str, Path], done: int, total: int) -> None:
        """Leave with 128 + signal number after the checkpoint was saved (main process prints)."""
        from utils import distributed as dist_utils

        signum = self.signum if self.signum is not None else signal.SIGTERM
        if dist_utils.is_main_process():
            print("stopped after step {} of {} of this epoch; checkpoint saved to {}. Run the same command again to "
                  "resume.".format(done, total, checkpoint), file=sys.stderr, flush=True)
        dist_utils.cleanup()
        sys.exit(128 + int(signum))


def maybe_compile(model: torch.nn.Module, enabled: bool, backend: str = "inductor") -> torch.nn.Module:
    """``torch.compile(model)`` when asked and available, else ``model``. The compiled module shares the
    parameters, so optimizers and checkpoints keep using the original module (no ``_orig_mod.`` keys)."""
    if not enabled:
        return model
    if not hasattr(torch, "compile"):
        print("warning: --compile needs PyTorch 2; running uncompiled", file=sys.stderr)
        return model
    return torch.compile(model, backend=backend)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def setup_determinism(deterministic: bool) -> None:
    """Pick cudnn autotuning for speed, or deterministic kernels for bit-reproducible runs."""
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True


def cpu_bf16_supported() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (AVX-512 BF16 / AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amp_dtype(device: torch.device, enabled: bool, cpu: bool = False) -> Optional[torch.dtype]:
    """bf16 on GPUs that support it, else fp16; on the CPU bf16 only when ``cpu`` is asked for and the CPU has
    native bf16 kernels; None (fp32) otherwise or when disabled."""
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu and cpu_bf16_supported():
        return torch.bfloat16
    return None


def fast_layout(device: torch.device, dtype: Optional[torch.dtype]) -> bool:
    """channels_last pays on GPUs and with CPU bf16 (oneDNN); plain fp32 CPU runs keep the default layout."""
    return device.type == "cuda" or dtype is not None


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> Any:
    """Autocast context for ``dtype``, or a no-op context for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(dtype: Optional[torch.dtype]) -> Any:
    """A GradScaler that is active only for fp16 (bf16 and fp32 need no loss scaling)."""
    enabled = dtype == torch.float16
    try:
        return torch.amp.GradScaler("cuda", enabled=enabled)
    except (AttributeError, TypeError):  # torch < 2.3
        return torch.cuda.amp.GradScaler(enabled=enabled)


class JsonlLogger:
    """Appends one JSON object per line; safe to reopen when a run resumes."""

    def __init__(self, path: Union[str, Path], enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled

    def log(self, record: Dict[str, Any]) -> None:
        """Append ``record`` (with a wall-clock timestamp)."""
        if not self.enabled:
            return
        record = dict(record, time=round(time.time(), 3))
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def truncate_after(self, epoch: int) -> None:
        """Drop records of epochs after ``epoch`` (a resumed run redoes them)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in read_jsonl(self.path) if r.get("epoch", -1) <= epoch]
        with open(self.path, "w") as f:
            for r in kept:
                f.write(json.dumps(r) + "\n")


def read_jsonl(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """Read a JSON-lines file, skipping a torn last line."""
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def plot_curves(records: Sequence[Dict[str, Any]], keys: Iterable[str], path: Union[str, Path],
                title: str = "") -> None:
    """One panel per key against epoch, saved as PNG (keys missing from the log are skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(k in r and r[k] is not None for r in records)]
    if not keys:
        return
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(r["epoch"], r[key]) for r in records if key in r and r[key] is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(str(path), dpi=100)
    plt.close(fig)


def weight_decay_groups(model: torch.nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """Two optimizer groups: weight decay on weights, none on biases and normalisation parameters (1-d)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
