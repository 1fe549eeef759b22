"""What a run reports: progress bars, one JSON line per epoch, PNG curves, and optional TensorBoard."""
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence, Union

from utils.fileio import save_figure, write_text

PathLike = Union[str, Path]


def progress(iterable: Any, **kwargs: Any) -> Any:
    """A tqdm bar on the main process only; TQDM_DISABLE=1 silences it (tests, batch jobs)."""
    from tqdm import tqdm

    from utils.distributed import is_main_process

    quiet = os.environ.get("TQDM_DISABLE", "") not in ("", "0") or not is_main_process()
    return tqdm(iterable, disable=quiet, dynamic_ncols=True, **kwargs)


def read_jsonl(path: PathLike) -> List[Dict[str, Any]]:
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


def plot_curves(records: Sequence[Dict[str, Any]], keys: Iterable[str], path: PathLike, title: str = "") -> None:
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
    try:
        save_figure(fig, path, "curves")
    finally:
        plt.close(fig)


def tensorboard_writer(log_dir: PathLike) -> Any:
    """A TensorBoard SummaryWriter; a clear error when the optional ``tensorboard`` package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SystemExit("error: --tensorboard needs the optional package tensorboard: pip install tensorboard "
                         "(or drop --tensorboard)") from None
    return SummaryWriter(log_dir=str(log_dir))


class RunLog:
    """``log.jsonl`` (one JSON object per epoch, reopened on resume), ``curves.png`` of ``curve_keys`` and, with
    ``tensorboard``, the same numbers as TensorBoard scalars plus images (``image``) under ``OUTPUT_DIR/tensorboard``.
    Only the main process writes (``enabled``)."""

    def __init__(self, out_dir: PathLike, curve_keys: Sequence[str] = (), title: str = "", enabled: bool = True,
                 tensorboard: bool = False) -> None:
        self.out = Path(out_dir)
        self.path = self.out / "log.jsonl"
        self.curve_keys, self.title, self.enabled = list(curve_keys), title, enabled
        self.writer = tensorboard_writer(self.out / "tensorboard") if tensorboard and enabled else None

    def records(self) -> List[Dict[str, Any]]:
        """Every record logged so far."""
        return read_jsonl(self.path) if self.path.exists() else []

    def truncate_after(self, epoch: int) -> None:
        """Drop records of epochs after ``epoch``: a resumed run redoes them."""
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in read_jsonl(self.path) if r.get("epoch", -1) <= epoch]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept), "run log")

    def log(self, record: Dict[str, Any]) -> None:
        """Append ``record`` (with a timestamp), redraw the curves, and add its numbers to TensorBoard."""
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(dict(record, time=round(time.time(), 3))) + "\n")
        if self.curve_keys:
            plot_curves(self.records(), self.curve_keys, self.out / "curves.png", self.title)
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                    self.writer.add_scalar(key, value, record["epoch"])
            self.writer.flush()

    def image(self, tag: str, png: PathLike, epoch: int) -> None:
        """Show a PNG figure (mask grid, t-SNE) in TensorBoard at ``epoch``; no-op without --tensorboard."""
        if self.writer is None or not Path(png).is_file():
            return
        import numpy as np
        from PIL import Image

        with Image.open(png) as img:
            self.writer.add_image(tag, np.asarray(img.convert("RGB")), epoch, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        """Flush and close TensorBoard's writer."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
