"""Command lines: one name and one meaning per flag across every script, and one way to run a script's main.

``FLAGS`` is the registry of every flag that more than one script has: its type and the sentence that says what
it means. ``add_flag`` builds an argument from it (a script adds only its default and, after the meaning, what is
particular to it), so ``--workers`` or ``--checkpoint`` cannot mean two things; ``tests/test_flags.py`` checks
every parser against the registry. ``HelpFormatter`` (every script's parser uses it) ends each optional flag's
help with its real default once, in plain words; ``tests/test_flags.py`` reads every --help for that too.
"""
import argparse
import errno
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from utils.signals import Interrupted, interruptible


def _checked(name: str, convert: Callable[[str], Any], ok: Callable[[Any], bool], rule: str) -> Callable[[str], Any]:
    """An argparse type: ``convert`` the text, then refuse a value that breaks ``ok`` with 'must <rule>'. Its
    ``__name__`` is what argparse names when ``convert`` itself fails ("invalid positive_int value: 'x'")."""
    def parse(text: str) -> Any:
        value = convert(text)
        if not ok(value):
            raise argparse.ArgumentTypeError("must {}, got {}".format(rule, text))
        return value
    parse.__name__ = name
    return parse


def _finite(value: float) -> bool:
    return abs(value) != float("inf") and value == value


positive_int = _checked("positive_int", int, lambda v: v >= 1, "be a positive integer")
nonnegative_int = _checked("nonnegative_int", int, lambda v: v >= 0, "be 0 or more")
nonzero_int = _checked("nonzero_int", int, lambda v: v != 0, "not be 0 (1 is the first epoch, -1 the last)")
nonnegative_float = _checked("nonnegative_float", float, lambda v: _finite(v) and v >= 0, "be a finite number >= 0")
positive_float = _checked("positive_float", float, lambda v: _finite(v) and v > 0, "be a finite number > 0")
unit_float = _checked("unit_float", float, lambda v: 0 <= v <= 1, "lie in [0, 1]")


def file_path(text: str) -> Path:
    """argparse type: the path of a file; a trailing separator (a folder's spelling) is refused, since Path drops
    it and a file of the folder's name would be written."""
    if not text or text.endswith(("/", "\\")):
        raise argparse.ArgumentTypeError("{!r} names a folder; give a file path".format(text))
    return Path(text)


def device_name(text: str) -> str:
    """argparse type: 'auto', 'cpu', 'cuda' or 'cuda:N'."""
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise argparse.ArgumentTypeError("unknown device {!r}: use auto, cpu, cuda or cuda:N".format(text))


# name -> (argparse keywords, meaning). The meaning opens the help text of that flag in every script.
FLAGS = {
    "--data-dir": ({"type": Path}, "dataset folder"),
    "--output-dir": ({"type": Path}, "folder for this script's outputs"),
    "--epochs": ({"type": positive_int}, "training epochs"),
    "--batch-size": ({"type": positive_int}, "images per process per step (training) or forward pass"),
    "--lr": ({"type": positive_float},
             "peak learning rate; with --lr-ref-batch N it is the rate for a total batch of N images and the run "
             "uses lr x total_batch / N (printed at start-up)"),
    "--lr-ref-batch": ({"type": positive_int},
                       "the total batch that --lr is given for (linear scaling rule); none: --lr is used as given"),
    "--workers": ({"type": nonnegative_int}, "data-loading worker processes per process; 0 loads in the main process"),
    "--device": ({"type": device_name}, "'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'"),
    "--seed": ({"type": int}, "random seed"),
    "--amp": ({}, "mixed precision on CUDA (bf16 where supported, else fp16)"),
    "--cpu-amp": ({"action": "store_true"},
                  "on a CPU with native bf16 kernels (AVX-512 BF16 / AMX), bf16 autocast and channels_last"),
    "--compile": ({"action": "store_true"}, "torch.compile the model's forward pass (PyTorch 2)"),
    "--deterministic": ({"action": "store_true"},
                        "deterministic algorithms and no cudnn autotuning: bit-reproducible CPU runs, slower GPU"),
    "--resume": ({"type": Path}, "checkpoint to resume from; its model and recipe flags must match this command's"),
    "--eval-only": ({"action": "store_true"}, "evaluate the checkpoint (--resume or OUTPUT_DIR's) and exit"),
    "--overwrite": ({"action": "store_true"},
                    "start afresh in an output folder that holds another run: the files that run wrote there are "
                    "deleted (otherwise refused)"),
    "--save-every": ({"type": nonnegative_int},
                     "also keep the full resumable state as checkpoint_epochNNN.pth every K epochs; 0 keeps only "
                     "checkpoint.pth"),
    "--print-freq": ({"type": positive_int}, "steps between progress-bar updates (and interrupt checks)"),
    "--strict": ({"action": "store_true"},
                 "an unreadable image or mask found by the check before training is an error; by default it is "
                 "skipped with a warning naming it"),
    "--tensorboard": ({"action": "store_true"},
                      "also write TensorBoard events to OUTPUT_DIR/tensorboard (needs the optional package "
                      "tensorboard)"),
    "--arch": ({}, "network architecture"),
    "--encoder": ({}, "ResNet encoder (backbone) of the model"),
    "--num-classes": ({"type": positive_int}, "number of classes"),
    "--hidden-dim": ({"type": nonnegative_int}, "width of the head's hidden layers"),
    "--out-dim": ({"type": positive_int}, "prototypes (outputs) of the DINO head"),
    "--bottleneck-dim": ({"type": positive_int}, "DINO head bottleneck before the prototypes"),
    "--optimizer": ({"choices": ("sgd", "adamw")}, "SGD (momentum 0.9) or AdamW"),
    "--weight-decay": ({"type": nonnegative_float}, "weight decay, not applied to biases and norm parameters"),
    "--warmup-epochs": ({"type": nonnegative_float}, "linear learning-rate warm-up, in epochs"),
    "--min-scale": ({"type": positive_float}, "smallest random crop, as a fraction of the image area"),
    "--color-jitter": ({"type": nonnegative_float}, "colour jitter strength on the image; 0 disables"),
    "--image-size": ({"type": positive_int}, "classification train crop and eval size in pixels"),
    "--crop-size": ({"type": positive_int}, "segmentation training crop side in pixels"),
    "--global-crop-size": ({"type": positive_int}, "side of DINO's 2 global crops"),
    "--local-crop-size": ({"type": positive_int}, "side of DINO's local crops"),
    "--local-crops-number": ({"type": nonnegative_int}, "DINO local crops per image"),
    "--checkpoint": ({"type": Path}, "a checkpoint written by this project's trainers"),
    "--csv": ({"type": Path}, "images csv (id,filename,label)"),
    "--image-dir": ({"type": Path}, "folder of the csv's images"),
    "--max-images": ({"type": positive_int}, "use at most this many images (quick runs)"),
    "--knn-k": ({"type": positive_int}, "neighbours that vote in the k-NN"),
}  # type: Dict[str, Tuple[Dict[str, Any], str]]


def plain(value: Any) -> str:
    """A default in plain words, as it would be typed: a list or tuple as its items, a path as its text, a switch as
    on/off, None and an empty value as 'none' (never a Python repr such as [PosixPath('x')])."""
    if value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0):
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return " ".join(plain(item) for item in value)
    return str(value)


class HelpFormatter(argparse.HelpFormatter):
    """--help with every optional flag's default once, at the end of its help, in plain words (``plain``): a
    switch reads 'on' when it is in effect by default (so ``--no-aux`` reads 'off' while the head is kept), a
    required flag shows none, and a help that already says '(default: ...)' in words keeps them."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required or not action.option_strings or action.default is argparse.SUPPRESS:
            return text
        if "%(default)" not in text and "(default:" not in text:
            text += " (default: %(default)s)"
        if action.nargs == 0 and action.default is not None:  # a switch: in effect or not
            shown = "on" if action.default == action.const else "off"
        else:
            shown = plain(action.default)
        return text.replace("%(default)s", shown.replace("%", "%%"))


def add_flag(parser: Any, name: str, default: Any = None, more: str = "", default_text: str = "",
             **kwargs: Any) -> argparse.Action:
    """Add the registered flag ``name`` with this script's ``default``; ``more`` follows the shared meaning;
    ``default_text`` says in words what a default of None means (shown as '(default: <default_text>)')."""
    spec, meaning = FLAGS[name]
    options = dict(spec, **kwargs)
    if name == "--amp":
        return add_bool_flag(parser, "amp", default, meaning + more)
    help_text = meaning + ("; " + more if more else "")
    if default_text:
        help_text += " (default: {})".format(default_text.replace("%", "%%"))
    if options.get("action") not in ("store_true", "store_false"):
        options.setdefault("default", default)
    return parser.add_argument(name, help=help_text, **options)


def add_bool_flag(parser: Any, name: str, default: bool, help: str) -> None:
    """Add ``--name`` / ``--no-name`` (argparse.BooleanOptionalAction needs Python 3.9); with ``HelpFormatter``
    the first reads '(default: on)' or '(default: off)', the second what it turns off and the true state
    ('(default: --name is on)'). A later ``set_defaults`` of ``name`` would make that text stale."""
    dest = name.replace("-", "_")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--" + name, action="store_true", help=help)  # its dest: name with "_"
    group.add_argument("--no-" + name, dest=dest, action="store_false",
                       help="turn --{0} off (default: --{0} is {1})".format(name, plain(default)))
    parser.set_defaults(**{dest: default})


def add_common_train_args(parser: argparse.ArgumentParser, epochs: int, batch_size: int, lr: float,
                          lr_ref_batch: Optional[int], workers: int, data_dir: str, output_dir: str) -> None:
    """Flags every trainer of this project shares, with the experiment's own defaults."""
    g = parser.add_argument_group("common training flags")
    add_flag(g, "--data-dir", Path(data_dir))
    add_flag(g, "--output-dir", Path(output_dir), "checkpoints, logs and figures; a run there is resumed "
                                                  "automatically")
    add_flag(g, "--epochs", epochs)
    add_flag(g, "--batch-size", batch_size, "the total batch is this times the number of processes")
    add_flag(g, "--lr", lr)
    add_flag(g, "--lr-ref-batch", lr_ref_batch)
    add_flag(g, "--workers", workers)
    add_flag(g, "--device", "auto")
    add_flag(g, "--seed", 0)
    add_flag(g, "--amp", True, "; ignored on the CPU (see --cpu-amp)")
    add_flag(g, "--cpu-amp", more="about 2x faster DINO steps on such a CPU (docs/performance.md); off by default "
                                  "so CPU runs stay fp32")
    add_flag(g, "--compile", more="worth it for long GPU runs; the first steps are slow while it compiles")
    add_flag(g, "--deterministic")
    add_flag(g, "--resume", None, default_text="OUTPUT_DIR/checkpoint.pth when it exists, else a fresh "
                                                "start")
    add_flag(g, "--eval-only")
    add_flag(g, "--overwrite")
    add_flag(g, "--save-every", 0)
    add_flag(g, "--print-freq", 20)
    add_flag(g, "--strict")
    add_flag(g, "--tensorboard")


OOM_HINT = ("error: out of memory ({}). Lower --batch-size (the lr follows the total batch); for DINO also "
            "--local-crops-number, --global-crop-size or --local-crop-size; for segmentation --crop-size and "
            "--val-batch-size. Host memory: lower --workers. The last checkpoint is kept: run the same command again "
            "to resume.")
# inference writes its outputs afresh on every run: nothing to resume, only what to lower
INFERENCE_OOM_HINT = ("error: out of memory ({}). Lower --batch-size (p2_inference.py: also --tile-size and "
                      "--tile-threshold) or run on --device cpu; host memory: lower --workers. Then run the command "
                      "again: it starts over.")
INTERRUPTED = "interrupted ({}): stopped; the outputs already written stay whole, and no partial file is left"
DOWNLOAD_HINT = "run `bash hw1_download_ckpt.sh` first: it fetches the graded checkpoints"
# RuntimeError messages of allocators that ran out: CUDA's, torch's CPU allocator ("DefaultCPUAllocator: can't
# allocate memory"), ENOMEM's text, and a DataLoader worker killed by the kernel's out-of-memory killer (SIGKILL)
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "cannot allocate memory", "is killed by signal: killed")


def is_out_of_memory(exc: BaseException) -> bool:
    """An out-of-memory error of the GPU or the host: CUDA's OutOfMemoryError, an allocator's RuntimeError (CUDA,
    torch's CPU allocator, a DataLoader worker killed by the OOM killer), any MemoryError (Python's, numpy's
    _ArrayMemoryError, PIL's) and an OSError ENOMEM. Other errors never match, whatever their text."""
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOMEM
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc).lower() for text in _OOM_MESSAGES)


def run_cli(main: Callable[[argparse.Namespace], Any], parser: argparse.ArgumentParser,
            argv: Optional[list] = None, inference: bool = False) -> Any:
    """Parse flags and run ``main``; bad input (missing or corrupt files, wrong formats) ends with a one-line
    'error: ...' naming the file and exit code 2 instead of a traceback; out of memory (GPU or host) ends with one
    line naming the flags to lower and exit code 3. ``inference``: the out-of-memory line says what to lower
    without a resume (inference has none), and Ctrl-C ends with one line and exit code 130."""
    args = parser.parse_args(argv)
    try:
        if not inference:
            return main(args)
        with interruptible():  # SIGINT or SIGTERM: the masks / csv already written stay, no temp file is left
            return main(args)
    except KeyboardInterrupt as exc:
        if not inference:  # a trainer's second signal: abort at once, as it says
            raise
        print(INTERRUPTED.format(exc.name if isinstance(exc, Interrupted) else "Ctrl-C"), file=sys.stderr)
        sys.exit(exc.exit_code if isinstance(exc, Interrupted) else 130)
    except (OSError, ValueError, RuntimeError, MemoryError) as exc:
        if is_out_of_memory(exc):
            hint = INFERENCE_OOM_HINT if inference else OOM_HINT
            print(hint.format((str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]), file=sys.stderr)
            sys.exit(3)
        if not isinstance(exc, (OSError, ValueError)):
            raise
        print("error: {}".format(exc), file=sys.stderr)  # missing/unreadable/corrupt files, formats, permissions
        sys.exit(2)
    except SystemExit as exc:
        if isinstance(exc.code, str):  # raise SystemExit("error: ...") -> the same exit code 2
            print(exc.code, file=sys.stderr)
            sys.exit(2)
        raise


def require_grading_checkpoint(path: Path, script: str, name: str) -> None:
    """A checkpoint missing at its grading default (``checkpoints/<name>`` beside ``script``, the path hw1_1.sh /
    hw1_2.sh pass, or the flag's default of the current folder) is a FileNotFoundError that says to run
    hw1_download_ckpt.sh first; any other missing path is left to the loader, which names it."""
    defaults = {os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(script)), "checkpoints", name)),
                os.path.abspath(os.path.join("checkpoints", name))}
    if not path.exists() and os.path.abspath(str(path)) in defaults:
        raise FileNotFoundError("checkpoint not found: {}; {}".format(path, DOWNLOAD_HINT))
