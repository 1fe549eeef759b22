"""Problem 1, report item: t-SNE of a classifier's second-last-layer features, one panel per checkpoint.

For each checkpoint, the penultimate features (the input of the final linear layer, ``utils.classify``) of
every image in a csv are reduced by PCA to ``--pca-dim`` dimensions and embedded in 2-D by t-SNE. The
panels sit side by side, points coloured by class, and each title carries two separability numbers computed
on the features themselves, not on the 2-D picture (t-SNE can make clusters look cleaner than they are):

* ``silhouette``: mean silhouette score of the classes, cosine distance, in the PCA space (-1..1, higher is
  better separated);
* ``knn_acc``: leave-one-out k-NN accuracy (k=5, majority vote, cosine similarity) on the full features.

Commands (one GPU is used when available; torchrun is not needed: this is one forward pass over ~4k images).
Per checkpoint on the real train set (3,951 images, ResNet-50 at 128 px): the extraction takes ~4.5 min on a
busy 2-core CPU, seconds on a GPU; PCA + t-SNE run on the CPU, ~1 min::

    # the report figure: setting C after its first and its last epoch, on the Office-Home train set
    python p1_tsne.py --checkpoints runs/p1_C/epoch_001.pth runs/p1_C/epoch_100.pth \\
        --titles "epoch 1" "epoch 100" --csv data_2025/p1_data/office/train.csv --output-dir runs/p1_tsne
    # CPU smoke run on generated data (any p1_classifier checkpoint works)
    python -m tools.toydata --out toy --parts p1 && python p1_tsne.py --checkpoints CKPT.pth \\
        --csv toy/p1_data/office/train.csv --output-dir runs/p1_tsne_smoke --device cpu --workers 0

Outputs in ``--output-dir``:

* ``tsne.png``: the figure;
* ``tsne_metrics.json``: per checkpoint its label, path, epoch, ``silhouette``, ``knn_acc``, the
  silhouette of the 2-D embedding (``silhouette_2d``, Euclidean), t-SNE's final KL divergence, sizes
  and timings; plus the settings used;
* ``tsne_coords.npz`` (loads with ``allow_pickle=False``): ``coords`` float32 (num_checkpoints, N, 2),
  ``labels`` int64 (N,), ``filenames`` (N,), ``names`` and ``checkpoints`` (num_checkpoints,). Row i of
  every panel is the same image, the csv's row order (a ``--max-images`` subset keeps that order).
"""
import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from utils.classify import eval_transform_for, load_classifier, penultimate_features
from utils.datasets import CsvImages
from utils.distributed import resolve_device
from utils.fileio import make_folder, save_figure, write_atomic, write_text
from utils.cli import HelpFormatter, add_flag, nonnegative_int, positive_float, run_cli
from utils.knn import knn_classify
from utils.precision import amp_dtype
from utils.runlog import RunLog, progress

# Five colours as far as possible from the 60 of tab20/tab20b/tab20c (greedy max-min RGB distance over a
# 5-level grid, too-light colours excluded): black, blue, magenta, violet, lime.
EXTRA_COLOURS = ((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), (1.0, 0.0, 1.0), (0.5, 0.0, 1.0), (0.0, 1.0, 0.0))
MARKERS = ("o", "s", "^", "D")  # one per block of 20 colours, so near-identical colours differ in shape
CLUSTER_SPREAD = 0.06  # a class is named on a panel when its points lie within this x the panel diagonal (median)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="t-SNE of classifier penultimate features (report problem 1).",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--checkpoints", type=Path, nargs="+", required=True,
                        help="p1_classifier checkpoints, one panel each, in this order (e.g. setting C's first "
                             "and last epoch)")
    parser.add_argument("--titles", nargs="+", default=None,
                        help="panel titles, one per checkpoint (default: 'setting S, epoch E' from the checkpoint, "
                             "or its file name)")
    add_flag(parser, "--csv", Path("data_2025/p1_data/office/train.csv"), "the images to embed; the report uses the "
                                                                          "train set")
    add_flag(parser, "--image-dir", None, default_text="the csv's folder / the csv's name without .csv, e.g. "
                                                       "office/train for office/train.csv")
    add_flag(parser, "--output-dir", Path("runs/p1_tsne"), "tsne.png, tsne_metrics.json and tsne_coords.npz")
    parser.add_argument("--perplexity", type=positive_float, default=30.0,
                        help="t-SNE perplexity (~ neighbours per point); capped at (N-1)/3. 30 suits ~60 images "
                             "per class; lower it for a few images per class")
    parser.add_argument("--pca-dim", type=nonnegative_int, default=50,
                        help="PCA dimensions before t-SNE and for the silhouette (capped at N and the feature size; "
                             "0 = no PCA). PCA to ~50 removes noise directions and speeds t-SNE up")
    add_flag(parser, "--knn-k", 5, "the leave-one-out k-NN accuracy, capped at N-1")
    add_flag(parser, "--seed", 0, "of PCA, t-SNE and the --max-images subset")
    add_flag(parser, "--max-images", None, "a seeded random subset, for quick looks", default_text="all")
    add_flag(parser, "--device", "auto")
    add_flag(parser, "--batch-size", 128, "lower it on out-of-memory")
    add_flag(parser, "--workers", min(4, os.cpu_count() or 1), "image decoding; up to 4, no more than the CPU count")
    add_flag(parser, "--amp", True, " for the feature extraction")
    add_flag(parser, "--tensorboard", more="the figure as an image")
    return parser


def class_palette(num_classes: int) -> List[Tuple[float, float, float]]:
    """``num_classes`` pairwise-different RGB colours: tab10/tab20 when they suffice, tab20+tab20b+tab20c and
    five extras up to 65 (Office-Home), an HSV wheel of three lightness levels beyond."""
    import matplotlib

    def table(name: str) -> List[Tuple[float, float, float]]:
        return [tuple(float(x) for x in c[:3]) for c in matplotlib.colormaps[name].colors]

    if num_classes <= 10:
        return table("tab10")[:num_classes]
    if num_classes <= 20:
        return table("tab20")[:num_classes]
    colours = table("tab20") + table("tab20b") + table("tab20c") + list(EXTRA_COLOURS)
    if num_classes <= len(colours):
        return colours[:num_classes]
    import colorsys

    per_ring = -(-num_classes // 3)  # ceil
    wheel = [colorsys.hsv_to_rgb(i / per_ring, 0.85, value) for value in (0.95, 0.7, 0.45) for i in range(per_ring)]
    return [tuple(float(x) for x in c) for c in wheel[:num_classes]]


def class_marker(label: int, num_classes: int) -> str:
    """Marker of a class: circles up to 20 classes; beyond, one shape per block of 20 colours."""
    return "o" if num_classes <= 20 else MARKERS[(label // 20) % len(MARKERS)]


def extract(path: Path, dataset_kwargs: Dict[str, Any], indices: Optional[np.ndarray], device: torch.device,
            args: argparse.Namespace) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
    """Penultimate features (N, D) float32 and labels (N,) of one checkpoint on the csv's images."""
    with torch.no_grad():
        model, ckpt = load_classifier(path, device)
        dataset = CsvImages(transform=eval_transform_for(ckpt), num_classes=int(ckpt["model_config"]["num_classes"]),
                            **dataset_kwargs)
        if indices is not None:
            dataset = torch.utils.data.Subset(dataset, indices.tolist())
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers,
                                             pin_memory=device.type == "cuda")
        dtype = amp_dtype(device, args.amp)
        feats, labels = [], []
        for images, target in progress(loader, desc="features {}".format(path.name), unit="batch"):
            feats.append(penultimate_features(model, images.to(device, non_blocking=True), ckpt, dtype).cpu())
            labels.append(torch.as_tensor(target))
        del model
        return torch.cat(feats).numpy(), torch.cat(labels).numpy().astype(np.int64), ckpt


def loo_knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy: each point's majority label among its k most cosine-similar other points
    (ties go to the class with the larger summed similarity)."""
    n = features.shape[0]
    if min(k, n - 1) < 1:
        raise ValueError("k-NN accuracy needs at least 2 points, got {}".format(n))
    x = torch.from_numpy(np.ascontiguousarray(features)).double()
    y = torch.from_numpy(labels).long()
    pred = knn_classify(x, y, x, int(y.max()) + 1, k, temperature=None, leave_one_out=True)
    return float((pred == y).double().mean())


def silhouette(points: np.ndarray, labels: np.ndarray, metric: str) -> Optional[float]:
    """sklearn's mean silhouette score, or None where it is undefined (one class, or one point per class)."""
    from sklearn.metrics import silhouette_score

    if not 2 <= len(np.unique(labels)) <= len(labels) - 1:
        return None
    return float(silhouette_score(points, labels, metric=metric))


def embed(features: np.ndarray, pca_dim: int, perplexity: float, seed: int) -> Tuple[np.ndarray, np.ndarray, Any]:
    """(PCA features (N, P), t-SNE coordinates (N, 2), the fitted TSNE) of (N, D) features."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n, d = features.shape
    reduced = features.astype(np.float64)
    if pca_dim > 0:
        reduced = PCA(n_components=min(pca_dim, n, d), random_state=seed).fit_transform(reduced)
    # Iterations keep sklearn's default (1000): the keyword is n_iter up to 1.4 and max_iter from 1.5.
    tsne = TSNE(n_components=2, perplexity=min(perplexity, (n - 1) / 3.0), init="pca", random_state=seed)
    coords = tsne.fit_transform(reduced).astype(np.float32)
    return reduced, coords, tsne


def default_label(path: Path, ckpt: Dict[str, Any]) -> str:
    """'setting C, epoch 100' from the checkpoint, else the file name."""
    parts = []
    if ckpt.get("setting"):
        parts.append("setting {}".format(ckpt["setting"]))
    if ckpt.get("epoch") is not None:
        parts.append("epoch {}".format(ckpt["epoch"]))
    return ", ".join(parts) or path.stem


def plot_panels(coords: Sequence[np.ndarray], labels: np.ndarray, titles: Sequence[str], path: Path) -> None:
    """Side-by-side scatter panels coloured by class, one shared legend; beyond 10 classes the id of every
    compact class is also written at its median."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patheffects as pe
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    classes = np.unique(labels)
    num_classes = int(classes.max()) + 1
    palette = class_palette(num_classes)
    legend_cols = max(1, -(-len(classes) // 22))
    legend_width = 0.3 + 0.45 * legend_cols  # inches
    fig, axes = plt.subplots(1, len(coords), figsize=(5.6 * len(coords) + legend_width, 5.6), squeeze=False)
    small = len(labels) < 500
    for ax, xy, title in zip(axes[0], coords, titles):
        for c in classes:
            pts = xy[labels == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=18 if small else 7, color=palette[c],
                       marker=class_marker(c, num_classes), linewidths=0, alpha=0.85)
        diagonal = float(np.linalg.norm(xy.max(0) - xy.min(0))) or 1.0
        for c in (classes if num_classes > 10 else []):  # ids at compact classes tell look-alike colours apart
            centre = np.median(xy[labels == c], axis=0)
            if np.median(np.linalg.norm(xy[labels == c] - centre, axis=1)) > CLUSTER_SPREAD * diagonal:
                continue  # a scattered class has no place to name it (its median lies among other classes)
            cx, cy = centre
            ax.text(cx, cy, str(c), fontsize=6.5, ha="center", va="center", color=palette[c], weight="bold",
                    path_effects=[pe.withStroke(linewidth=2, foreground="white")])
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Line2D([], [], linestyle="", marker=class_marker(c, num_classes), color=palette[c], markersize=4,
                      label=str(c)) for c in classes]
    fig.legend(handles=handles, loc="center right", ncol=legend_cols, fontsize=6.5, title="class",
               title_fontsize=7, frameon=False, handletextpad=0.1, columnspacing=0.6, labelspacing=0.25)
    fig.tight_layout(rect=(0, 0, 1 - legend_width / fig.get_figwidth(), 1))
    try:
        save_figure(fig, path, "t-SNE figure", dpi=150)
    finally:
        plt.close(fig)


def main(args: argparse.Namespace) -> Dict[str, Any]:
    t0 = time.time()
    # Fail on bad input before minutes of feature extraction.
    for path in args.checkpoints:
        if not path.is_file():
            raise FileNotFoundError("checkpoint not found: {}".format(path))
    if not args.csv.is_file():
        raise FileNotFoundError("csv not found: {}".format(args.csv))
    if args.titles is not None and len(args.titles) != len(args.checkpoints):
        raise ValueError("--titles has {} title(s) for {} checkpoint(s)".format(
            len(args.titles), len(args.checkpoints)))
    if args.max_images is not None and args.max_images < 5:
        raise ValueError("--max-images must be at least 5, got {}".format(args.max_images))
    image_dir = args.image_dir if args.image_dir is not None else args.csv.parent / args.csv.stem
    dataset_kwargs = {"csv_path": args.csv, "image_dir": image_dir, "require_labels": True}
    all_rows = CsvImages(**dataset_kwargs).rows  # checks every file exists and has a label
    if len(all_rows) < 5:
        raise ValueError("t-SNE needs at least 5 images; {} lists {}".format(args.csv, len(all_rows)))
    indices = None  # type: Optional[np.ndarray]
    if args.max_images is not None and args.max_images < len(all_rows):
        rng = np.random.default_rng(args.seed)
        indices = np.sort(rng.choice(len(all_rows), size=args.max_images, replace=False))
    rows = all_rows if indices is None else [all_rows[i] for i in indices]
    device = resolve_device(args.device)
    make_folder(args.output_dir)

    results, coords, titles, names = [], [], [], []
    labels = None  # type: Optional[np.ndarray]
    for i, path in enumerate(args.checkpoints):
        t1 = time.time()
        feats, labels, ckpt = extract(path, dataset_kwargs, indices, device, args)
        name = args.titles[i] if args.titles is not None else default_label(path, ckpt)
        t2 = time.time()
        reduced, xy, tsne = embed(feats, args.pca_dim, args.perplexity, args.seed)
        t3 = time.time()
        record = {
            "name": name, "checkpoint": str(path), "epoch": ckpt.get("epoch"), "setting": ckpt.get("setting"),
            "silhouette": silhouette(reduced, labels, "cosine"),
            "knn_acc": loo_knn_accuracy(feats, labels, args.knn_k),
            "silhouette_2d": silhouette(xy, labels, "euclidean"),
            "kl_divergence": float(tsne.kl_divergence_),
            "num_images": int(feats.shape[0]), "feature_dim": int(feats.shape[1]), "pca_dim": int(reduced.shape[1]),
            "perplexity": float(tsne.perplexity),
            "extract_seconds": round(t2 - t1, 2), "pca_tsne_seconds": round(t3 - t2, 2),
            "metrics_seconds": round(time.time() - t3, 2),
        }
        sil = "n/a" if record["silhouette"] is None else "{:.3f}".format(record["silhouette"])
        titles.append("{}\nsilhouette {} | {}-NN acc {:.1%}".format(
            name, sil, min(args.knn_k, len(labels) - 1), record["knn_acc"]))
        print("{}: silhouette (cosine, PCA-{}) {}, leave-one-out {}-NN accuracy {:.4f}, {} images, {:.1f} s".format(
            name, record["pca_dim"], sil, args.knn_k, record["knn_acc"], record["num_images"], time.time() - t1))
        results.append(record)
        coords.append(xy)
        names.append(name)

    figure = args.output_dir / "tsne.png"
    plot_panels(coords, labels, titles, figure)
    if args.tensorboard:
        log = RunLog(args.output_dir, tensorboard=True)
        log.image("tsne", figure, 0)
        log.close()
    coords_path = args.output_dir / "tsne_coords.npz"
    write_atomic(coords_path, lambda f: np.savez(f, coords=np.stack(coords), labels=labels,
                                                 filenames=np.array([r.filename for r in rows]), names=np.array(names),
                                                 checkpoints=np.array([str(p) for p in args.checkpoints])),
                 "t-SNE coordinates")
    summary = {
        "checkpoints": results, "csv": str(args.csv), "image_dir": str(image_dir), "num_images": len(rows),
        "max_images": args.max_images, "perplexity": args.perplexity, "pca_dim": args.pca_dim, "knn_k": args.knn_k,
        "seed": args.seed, "figure": str(figure), "coords": str(coords_path), "seconds": round(time.time() - t0, 2),
    }
    metrics_path = args.output_dir / "tsne_metrics.json"
    write_text(metrics_path, json.dumps(summary, indent=2), "t-SNE metrics")
    summary["metrics"] = str(metrics_path)
    print("wrote {}, {} and {} in {:.1f} s".format(figure, coords_path, metrics_path, summary["seconds"]))
    return summary


if __name__ == "__main__":
    run_cli(main, get_args_parser())
