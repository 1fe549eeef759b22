"""p1_tsne.py on generated data: outputs, separability of a trained vs a random classifier, palette, errors."""
import contextlib
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import p1_tsne
from utils.checkpoint import make_checkpoint, save_atomic
from utils.classify import eval_transform_for
from utils.datasets import CsvImages
from utils.classify import build_classifier
from utils.transforms import normalize
from helpers import run_main

# scikit-learn runs the t-SNE; the grading environment (.ci/grading_env.sh) does not install it
needs_sklearn = pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="needs scikit-learn")

CONFIG = {"arch": "resnet18", "num_classes": 4, "hidden_dim": 32, "dropout": 0.0}
IMAGE_SIZE = 32
TRAIN_STEPS = 10


def _one_openmp_thread():
    """One OpenMP thread for torch and sklearn: Barnes-Hut t-SNE syncs its threads 1000 times, and on a busy
    2-core CI machine that turned 0.1 s into 5-35 s (threadpoolctl comes with scikit-learn)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="openmp")


def _run(argv):
    with _one_openmp_thread():
        return run_main(p1_tsne, argv)


def _save(model, path, epoch):
    save_atomic(make_checkpoint("p1_classifier", CONFIG, model.state_dict(), None, image_size=IMAGE_SIZE,
                                epoch=epoch, setting="C"), path)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Generated office train set (4 classes x 12 images) and two checkpoints: random, and trained on it."""
    from tools.toydata import make_p1_data

    root = tmp_path_factory.mktemp("tsne")
    data = make_p1_data(root, num_classes=4, mini_per_class=0, office_train_per_class=12, office_val_per_class=1,
                        seed=0)
    csv = data / "office" / "train.csv"
    torch.manual_seed(0)
    model = build_classifier(CONFIG)
    _save(model, root / "random.pth", epoch=1)
    # Train the whole classifier (backbone + head) on the same 48 images, full batch, as fine-tuning would.
    dataset = CsvImages(csv, data / "office" / "train", eval_transform_for({"image_size": IMAGE_SIZE}))
    x = normalize(torch.stack([dataset[i][0] for i in range(len(dataset))]))
    y = torch.tensor(dataset.labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    with _one_openmp_thread():  # ~2 s; 5-100 s with two threads on a busy 2-core machine
        for _ in range(TRAIN_STEPS):
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        with torch.no_grad():  # settle the BatchNorm running statistics on the final weights
            for _ in range(5):
                model(x)
    _save(model, root / "trained.pth", epoch=TRAIN_STEPS)
    return {"csv": csv, "random": root / "random.pth", "trained": root / "trained.pth", "labels": dataset.labels,
            "filenames": [r.filename for r in dataset.rows]}


@needs_sklearn
def test_random_vs_trained_outputs_and_separability(toy, tmp_path):
    out = tmp_path / "out"
    result = _run(["--checkpoints", str(toy["random"]), str(toy["trained"]), "--titles", "random", "trained",
                          "--csv", str(toy["csv"]), "--output-dir", str(out), "--device", "cpu", "--workers", "0",
                          "--batch-size", "16", "--perplexity", "10"])
    for name in ("tsne.png", "tsne_coords.npz", "tsne_metrics.json"):
        assert (out / name).is_file(), name
    n = len(toy["labels"])
    with np.load(str(out / "tsne_coords.npz"), allow_pickle=False) as npz:
        assert npz["coords"].shape == (2, n, 2)
        assert np.isfinite(npz["coords"]).all()
        assert npz["labels"].tolist() == toy["labels"]
        assert npz["filenames"].tolist() == toy["filenames"]
        assert npz["names"].tolist() == ["random", "trained"]
    metrics = json.loads((out / "tsne_metrics.json").read_text())
    random, trained = metrics["checkpoints"]
    assert [random["name"], trained["name"]] == ["random", "trained"]
    assert random["num_images"] == trained["num_images"] == n and trained["feature_dim"] == 32
    assert trained["epoch"] == TRAIN_STEPS and random["pca_dim"] == 32 and trained["perplexity"] == 10
    assert result["checkpoints"] == metrics["checkpoints"]
    print("random: silhouette {:.3f} knn {:.3f}; trained: silhouette {:.3f} knn {:.3f}".format(
        random["silhouette"], random["knn_acc"], trained["silhouette"], trained["knn_acc"]))
    # Measured (silhouette / 5-NN): random -0.09 / 0.38, trained 0.67 / 0.96; the margins leave room for
    # CPU nondeterminism and library versions.
    assert trained["silhouette"] > random["silhouette"] + 0.2
    assert trained["knn_acc"] > random["knn_acc"] + 0.2


@needs_sklearn
def test_max_images_subset_and_default_titles(toy, tmp_path):
    out = tmp_path / "sub"
    result = _run(["--checkpoints", str(toy["trained"]), "--csv", str(toy["csv"]), "--output-dir", str(out),
                          "--device", "cpu", "--workers", "0", "--max-images", "10", "--pca-dim", "0"])
    record = result["checkpoints"][0]
    assert record["name"] == "setting C, epoch {}".format(TRAIN_STEPS)
    assert (record["setting"], record["epoch"], record["checkpoint"]) == ("C", TRAIN_STEPS, str(toy["trained"]))
    assert record["num_images"] == 10 and record["pca_dim"] == 32  # --pca-dim 0: the raw 32-d features
    assert record["perplexity"] == pytest.approx(3.0)  # capped at (N-1)/3
    with np.load(str(out / "tsne_coords.npz"), allow_pickle=False) as npz:
        assert npz["coords"].shape == (1, 10, 2)
        by_name = dict(zip(toy["filenames"], toy["labels"]))
        files = npz["filenames"].tolist()
        assert files == sorted(files, key=toy["filenames"].index)  # csv order kept
        assert npz["labels"].tolist() == [by_name[f] for f in files]


def test_palette_has_65_distinct_colours():
    for n in (4, 20, 65, 80):
        colours = p1_tsne.class_palette(n)
        assert len(colours) == n and len(set(colours)) == n
        assert all(len(c) == 3 and all(0.0 <= v <= 1.0 for v in c) for c in colours)
    colours = np.array(p1_tsne.class_palette(65))
    dist = np.sqrt(((colours[:, None] - colours[None]) ** 2).sum(-1)) + np.eye(65)
    assert dist.min() > 0.05  # no two classes share a colour up to rounding


def test_loo_knn_leaves_the_point_itself_out():
    # every point alone in its class: with the point itself counted the accuracy would be 1
    feats = np.eye(6)
    assert p1_tsne.loo_knn_accuracy(feats, np.arange(6), k=1) == 0.0
    with pytest.raises(ValueError, match=r"^k-NN accuracy needs at least 2 points, got 1$"):
        p1_tsne.loo_knn_accuracy(feats[:1], np.arange(1), k=5)  # one point has no other to vote
    # two tight clusters in different directions: every neighbour agrees; cosine ignores the scale
    rng = np.random.default_rng(0)
    a = np.array([1.0, 0.0]) + 0.01 * rng.standard_normal((5, 2))
    b = np.array([0.0, 3.0]) + 0.01 * rng.standard_normal((5, 2))
    feats, labels = np.concatenate([a, b * 100]), np.array([0] * 5 + [1] * 5)
    assert p1_tsne.loo_knn_accuracy(feats, labels, k=3) == 1.0
    # points on the unit circle at 0, 1, 5, 6 and 90 degrees, classes 0, 1, 0, 0, 1 (worked out by hand):
    # k=1: only the 5 and 6 degree points are right; k=2: ties go to the nearer neighbour, the same 2 right;
    # k=3: the majority also rescues the 0 degree point, whose nearest neighbour is of the other class
    angles = np.deg2rad([0.0, 1.0, 5.0, 6.0, 90.0])
    feats, labels = np.stack([np.cos(angles), np.sin(angles)], 1), np.array([0, 1, 0, 0, 1])
    assert p1_tsne.loo_knn_accuracy(feats, labels, k=1) == pytest.approx(0.4)
    assert p1_tsne.loo_knn_accuracy(feats, labels, k=2) == pytest.approx(0.4)
    assert p1_tsne.loo_knn_accuracy(feats, labels, k=3) == pytest.approx(0.6)


def test_missing_checkpoint_and_bad_labels_are_clear_errors(toy, tmp_path):
    missing = tmp_path / "nowhere" / "epoch_100.pth"
    with pytest.raises(FileNotFoundError, match="epoch_100.pth"):
        _run(["--checkpoints", str(toy["random"]), str(missing), "--csv", str(toy["csv"]),
                     "--output-dir", str(tmp_path / "o")])
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        _run(["--checkpoints", str(toy["random"]), "--csv", str(tmp_path / "nope.csv"),
                     "--output-dir", str(tmp_path / "o")])
    with pytest.raises(ValueError, match="--titles"):
        _run(["--checkpoints", str(toy["random"]), "--titles", "a", "b", "--csv", str(toy["csv"]),
                     "--output-dir", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()  # nothing written before the inputs are checked


def test_cli_reports_a_missing_checkpoint_in_one_line(toy, tmp_path, repo_root):
    missing = tmp_path / "epoch_001.pth"
    proc = subprocess.run([sys.executable, "p1_tsne.py", "--checkpoints", str(missing), "--csv", str(toy["csv"]),
                           "--output-dir", str(tmp_path / "o")], cwd=str(repo_root), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: checkpoint not found: {}".format(missing)


def _loo_knn_by_hand(features, labels, k):
    """Leave-one-out k-NN accuracy from scikit-learn's cosine neighbours: majority vote of the k nearest other
    points, a tie going to the class with the larger summed cosine similarity."""
    from sklearn.neighbors import NearestNeighbors

    x = np.asarray(features, dtype=np.float64)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    _, idx = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(x).kneighbors(x)
    right = 0
    for i, row in enumerate(idx):
        nearest = [j for j in row if j != i][:k]
        count, similarity = {}, {}
        for j in nearest:
            count[labels[j]] = count.get(labels[j], 0) + 1
            similarity[labels[j]] = similarity.get(labels[j], 0.0) + float(unit[i] @ unit[j])
        right += max(count, key=lambda c: (count[c], similarity[c])) == labels[i]
    return right / len(labels)


def _penultimate_by_hand(path, csv):
    """Each checkpoint's second-last-layer features, computed without p1_tsne: the eval transform, normalisation,
    backbone, then Linear -> BatchNorm (running statistics) -> ReLU written out (dropout is off in eval)."""
    from utils.classify import load_classifier

    model, ckpt = load_classifier(path, torch.device("cpu"))
    dataset = CsvImages(csv, csv.parent / "train", eval_transform_for(ckpt))
    x = normalize(torch.stack([dataset[i][0] for i in range(len(dataset))]))
    linear, bn = model.head[0], model.head[1]
    with torch.no_grad():
        h = linear(model.backbone(x))
        h = (h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        return torch.relu(h).double().numpy(), np.array(dataset.labels)


@needs_sklearn
def test_panel_numbers_equal_scikit_learn_on_each_checkpoints_own_features(toy, tmp_path):
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score

    out = tmp_path / "out"
    result = _run(["--checkpoints", str(toy["random"]), str(toy["trained"]), "--csv", str(toy["csv"]),
                   "--output-dir", str(out), "--device", "cpu", "--workers", "0", "--batch-size", "16",
                   "--perplexity", "10", "--pca-dim", "8", "--knn-k", "7"])
    with np.load(str(out / "tsne_coords.npz"), allow_pickle=False) as npz:
        coords, npz_labels = npz["coords"], npz["labels"]
    differs = []
    for panel, (record, key) in enumerate(zip(result["checkpoints"], ("random", "trained"))):
        feats, labels = _penultimate_by_hand(toy[key], toy["csv"])
        assert npz_labels.tolist() == labels.tolist()
        reduced = PCA(n_components=8, random_state=0).fit_transform(feats)
        assert record["silhouette"] == pytest.approx(silhouette_score(reduced, labels, metric="cosine"), abs=1e-4)
        assert record["knn_acc"] == pytest.approx(_loo_knn_by_hand(feats, labels, 7), abs=1e-9)
        assert record["silhouette_2d"] == pytest.approx(silhouette_score(coords[panel], labels), abs=1e-5)
        # the numbers above can tell features from the picture and cosine from Euclidean
        assert abs(silhouette_score(reduced, labels) - record["silhouette"]) > 1e-3
        assert abs(silhouette_score(feats, labels, metric="cosine") - record["silhouette"]) > 1e-3
        differs.append((_loo_knn_by_hand(coords[panel], labels, 7) != record["knn_acc"],
                        _loo_knn_by_hand(feats, labels, 5) != record["knn_acc"]))
    # the check can tell: the picture's k-NN, and the default k=5, would give other numbers
    assert any(d[0] for d in differs) and any(d[1] for d in differs)
    assert result["checkpoints"][0]["silhouette"] != pytest.approx(result["checkpoints"][1]["silhouette"], abs=1e-3)


@needs_sklearn
def test_embed_is_scikit_learns_seeded_pca_and_tsne():
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    rng = np.random.default_rng(0)
    feats = rng.standard_normal((20, 12)).astype(np.float32)
    with _one_openmp_thread():
        reduced, coords, tsne = p1_tsne.embed(feats, pca_dim=5, perplexity=30.0, seed=3)
        expected_reduced = PCA(n_components=5, random_state=3).fit_transform(feats.astype(np.float64))
        expected = TSNE(n_components=2, perplexity=19 / 3.0, init="pca", random_state=3).fit_transform(
            expected_reduced)
    assert np.allclose(reduced, expected_reduced)
    assert tsne.perplexity == pytest.approx(19 / 3.0)  # capped at (N - 1) / 3
    assert np.allclose(coords, expected.astype(np.float32), atol=1e-5)
