"""Helpers shared by the tests (this folder is on sys.path while pytest runs them)."""
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, List

import torch

ROOT = Path(__file__).resolve().parents[1]


def run_main(script: ModuleType, argv: List[Any]) -> Any:
    """Run a script's ``main`` in process, as its command line would, with exceptions left to the test."""
    return script.main(script.get_args_parser().parse_args([str(a) for a in argv]))


def env():
    """The environment of a script run by a test: one thread, no progress bars, the repository importable."""
    return dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1", PYTHONPATH=str(ROOT))


def run(args, ok=True):
    """Run ``python3 ARGS...`` from the repository root; with ``ok`` assert it succeeded."""
    proc = subprocess.run([sys.executable] + [str(a) for a in args], cwd=str(ROOT), env=env(), capture_output=True,
                          text=True, timeout=600)
    if ok:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def same_weights(a: Path, b: Path) -> bool:
    """Whether two checkpoints hold bit-identical weights (their 'model' entries)."""
    wa, wb = torch.load(str(a), weights_only=True)["model"], torch.load(str(b), weights_only=True)["model"]
    return sorted(wa) == sorted(wb) and all(torch.equal(wa[k], wb[k]) for k in wa)


def stop_mid_epoch(args, sig, marker="epoch 1/"):
    """Start a run, signal it once training is under way (after epoch 1 is reported), wait for its exit."""
    proc = subprocess.Popen([sys.executable] + [str(a) for a in args], cwd=str(ROOT), env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if marker in line:
            break
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + int(sig), stderr
    return stderr


def figure_target(target):
    """The file name a Figure.savefig call writes: ``target`` is a path or, through utils.fileio's atomic write, the
    open temp file named after its target ('.curves.png.x1y2.tmp' -> 'curves.png')."""
    from utils.checkpoint import atomic_temp_target

    base = os.path.basename(str(getattr(target, "name", target)))
    return atomic_temp_target(base) or base
