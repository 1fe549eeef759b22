"""Tests for tools.toydata: real layouts (p1 and p2), mask colours, determinism, learnable structure, CLI."""
import re
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import pytest
from PIL import Image

from utils.masks import NUM_CLASSES, PALETTE, read_mask
from tools.toydata import (GENERATED_MARKER, P1_MAX_CLASSES, P1_OFFICE_SIDE, P2_SPLITS, main, make_p1_data, make_p2_data,
                           p1_class_attributes, p1_image, p1_mini_classes, p2_tile, is_generated)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_COUNTS = {"train": 24, "validation": 8}


def _expected_names(count: int) -> List[str]:
    """Return the sorted file names a split with ``count`` pairs must contain."""
    names = []
    for i in range(count):
        names += ["{:04d}_sat.jpg".format(i), "{:04d}_mask.png".format(i)]
    return sorted(names)


def _read_bytes(root: Path) -> Dict[str, bytes]:
    """Return {relative path: file bytes} for every file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load_pixels(split_dir: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Return (N, 3) float image pixels and (N,) class labels of one split."""
    xs, ys = [], []
    for sat in sorted(split_dir.glob("*_sat.jpg")):
        with Image.open(sat) as img:
            xs.append(np.asarray(img.convert("RGB"), dtype=np.float64).reshape(-1, 3))
        ys.append(read_mask(split_dir / sat.name.replace("_sat.jpg", "_mask.png")).ravel())
    return np.concatenate(xs), np.concatenate(ys)


@pytest.fixture(scope="module")
def default_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generate the default data set once for the module (it is read-only for the tests)."""
    return make_p2_data(tmp_path_factory.mktemp("toy"))


def test_api_returns_p2_data_path(default_root: Path) -> None:
    assert default_root.name == "p2_data"
    assert sorted(p.name for p in default_root.iterdir()) == sorted(P2_SPLITS)


@pytest.mark.parametrize("split", P2_SPLITS)
def test_layout_names_sizes_and_formats(default_root: Path, split: str) -> None:
    split_dir = default_root / split
    assert sorted(p.name for p in split_dir.iterdir()) == _expected_names(DEFAULT_COUNTS[split])
    for sat in split_dir.glob("*_sat.jpg"):
        with Image.open(sat) as img:
            assert img.format == "JPEG"
            assert img.mode == "RGB"
            assert img.size == (64, 64)
    for mask in split_dir.glob("*_mask.png"):
        with Image.open(mask) as img:
            assert img.format == "PNG"
            assert img.mode == "RGB"
            assert img.size == (64, 64)


@pytest.mark.parametrize("split", P2_SPLITS)
def test_masks_use_only_palette_colours_and_cover_all_classes(default_root: Path, split: str) -> None:
    seen = set()
    palette_codes = set((PALETTE.astype(np.int64) @ np.array([65536, 256, 1])).tolist())
    for mask in sorted((default_root / split).glob("*_mask.png")):
        with Image.open(mask) as img:
            rgb = np.asarray(img.convert("RGB")).reshape(-1, 3).astype(np.int64)
        codes = set(np.unique(rgb @ np.array([65536, 256, 1])).tolist())
        assert codes <= palette_codes, "non-palette colour in {}".format(mask.name)
        assert not np.any(np.all(rgb == [255, 0, 0], axis=1)), "red in {}".format(mask.name)
        seen.update(np.unique(read_mask(mask)).tolist())
    assert seen == set(range(NUM_CLASSES))


def test_same_seed_gives_identical_bytes(default_root: Path, tmp_path: Path) -> None:
    again = make_p2_data(tmp_path)
    assert _read_bytes(again) == _read_bytes(default_root)


def test_different_seed_differs(default_root: Path, tmp_path: Path) -> None:
    other = _read_bytes(make_p2_data(tmp_path, seed=1))
    base = _read_bytes(default_root)
    assert other.keys() == base.keys()
    assert all(other[name] != base[name] for name in base)


def test_train_and_validation_tiles_differ() -> None:
    train_img, train_cls = p2_tile(64, 0, "train", 0)
    val_img, val_cls = p2_tile(64, 0, "validation", 0)
    assert not np.array_equal(train_img, val_img)
    assert not np.array_equal(train_cls, val_cls)


def test_tiles_do_not_depend_on_split_size(default_root: Path, tmp_path: Path) -> None:
    small = make_p2_data(tmp_path, num_train=3, num_val=2)
    for split, count in (("train", 3), ("validation", 2)):
        for name in _expected_names(count):
            assert (small / split / name).read_bytes() == (default_root / split / name).read_bytes()


def test_rerun_replaces_old_pairs_but_keeps_other_files(tmp_path: Path) -> None:
    make_p2_data(tmp_path, size=32, num_train=5, num_val=3)
    keep = tmp_path / "p2_data" / "train" / "notes.txt"
    keep.write_text("mine")
    root = make_p2_data(tmp_path, size=32, num_train=2, num_val=1)
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(_expected_names(2) + ["notes.txt"])
    assert sorted(p.name for p in (root / "validation").iterdir()) == _expected_names(1)


def test_nearest_colour_mean_classifier_beats_chance(default_root: Path) -> None:
    # Images must carry the labels: class colour means from train classify val pixels well above 1/7
    # (measured 0.73 for seed 0, 0.66-0.75 over seeds 0-7), yet colour alone is not perfect.
    x_train, y_train = _load_pixels(default_root / "train")
    x_val, y_val = _load_pixels(default_root / "validation")
    means = np.stack([x_train[y_train == c].mean(axis=0) for c in range(NUM_CLASSES)])
    pred = np.argmin(((x_val[:, None, :] - means[None]) ** 2).sum(axis=-1), axis=1)
    accuracy = float((pred == y_val).mean())
    assert accuracy > 0.5
    assert accuracy < 0.95  # classes overlap in colour on purpose; texture must help


def test_real_size_tile_shapes() -> None:
    image, classes = p2_tile(512, 0, "train", 0)
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    assert classes.shape == (512, 512) and classes.dtype == np.uint8
    assert classes.max() < NUM_CLASSES


@pytest.mark.parametrize("kwargs", [{"size": 8}, {"num_train": -1}, {"num_val": -1}, {"seed": -1}])
def test_invalid_arguments_raise(tmp_path: Path, kwargs: Dict[str, int]) -> None:
    with pytest.raises(ValueError):
        make_p2_data(tmp_path, **kwargs)


def test_main_in_process(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # No --parts: both problems are written by default.
    argv = ["--out", str(tmp_path), "--size", "32", "--num", "2", "--num-val", "1", "--p1-classes", "3",
            "--p1-mini-per-class", "2", "--p1-office-per-class", "2", "--p1-office-val-per-class", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "p1" in out and "p2" in out
    assert sorted(p.name for p in (tmp_path / "p2_data" / "validation").iterdir()) == _expected_names(1)
    assert len(list((tmp_path / "p1_data" / "mini" / "train").iterdir())) == 6


def test_cli_subprocess_writes_layout(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "tools.toydata", "--out", str(tmp_path), "--size", "32", "--num", "3",
           "--num-val", "2", "--seed", "5", "--parts", "p2"]
    result = subprocess.run(cmd, cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1
    root = tmp_path / "p2_data"
    assert sorted(p.name for p in (root / "train").iterdir()) == _expected_names(3)
    assert sorted(p.name for p in (root / "validation").iterdir()) == _expected_names(2)
    with Image.open(root / "train" / "0002_sat.jpg") as img:
        assert img.size == (32, 32)


def test_cli_help_shows_every_default() -> None:
    """--help names the value each optional flag takes when it is not given (--out is required: none)."""
    from tools.toydata import build_parser

    parser = build_parser()
    text = " ".join(parser.format_help().split())  # argparse wraps lines: compare with single spaces
    for action in parser._actions:
        if not action.option_strings or action.required or action.dest == "help":
            continue
        default = " ".join(action.default) if isinstance(action.default, list) else action.default
        help_text = " ".join((action.help % {"default": action.default}).split())
        assert help_text.endswith("(default: {})".format(default)), action.dest
        assert help_text in text, action.dest
    assert "(default: 24)" in text and "(default: p1 p2)" in text and "(default: objects)" in text


def test_cli_rejects_unknown_part(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path), "--parts", "p9"])
    assert exc.value.code == 2


# ---------------------------------------------------------------------------------------------------
# Problem 1: mini (unlabeled) and office (labeled) images
# ---------------------------------------------------------------------------------------------------

P1_DEFAULTS = {"num_classes": 8, "mini_per_class": 40, "office_train_per_class": 12,
               "office_val_per_class": 4}
P1_SMALL = {"num_classes": 3, "mini_per_class": 2, "office_train_per_class": 2, "office_val_per_class": 1}


def _read_csv(path: Path) -> Tuple[List[str], List[List[str]]]:
    """Return (header fields, rows as field lists) of a small comma-separated file."""
    lines = path.read_text().splitlines()
    return lines[0].split(","), [line.split(",") for line in lines[1:]]


def _office_pixels(root: Path, split: str, gray: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Return (N, D) raw 16x16 pixels in [0, 1] and (N,) labels of one office split, in csv order."""
    xs, ys = [], []
    for _, name, label in _read_csv(root / "office" / "{}.csv".format(split))[1]:
        with Image.open(root / "office" / split / name) as img:
            small = img.convert("L" if gray else "RGB").resize((16, 16), Image.BILINEAR)
        xs.append(np.asarray(small, dtype=np.float64).ravel() / 255.0)
        ys.append(int(label))
    return np.stack(xs), np.array(ys)


def _knn_accuracy(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                  k: int = 5) -> float:
    """Return the accuracy of a Euclidean k-NN majority vote (ties to the lowest label)."""
    d2 = ((x_val[:, None, :] - x_train[None]) ** 2).sum(axis=-1)
    nearest = y_train[np.argsort(d2, axis=1, kind="stable")[:, :k]]
    votes = np.stack([np.bincount(row, minlength=int(y_train.max()) + 1) for row in nearest])
    return float((votes.argmax(axis=1) == y_val).mean())


@pytest.fixture(scope="module")
def p1_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generate the default p1 data set once for the module (read-only for the tests)."""
    return make_p1_data(tmp_path_factory.mktemp("toy_p1"))


def test_p1_api_returns_p1_data_layout(p1_root: Path) -> None:
    assert p1_root.name == "p1_data"
    # the real layout, plus one generated-only file: the hidden mini labels for the stand-in SL backbone
    assert sorted(p.name for p in p1_root.iterdir()) == ["mini", "office", "standin_mini_labels.csv"]
    labels = (p1_root / "standin_mini_labels.csv").read_text().splitlines()
    assert labels[0] == "id,filename,label" and len(labels) == 1 + len(list((p1_root / "mini" / "train").iterdir()))
    hidden = p1_mini_classes(P1_DEFAULTS["num_classes"], P1_DEFAULTS["mini_per_class"], 0)
    assert [int(line.split(",")[2]) for line in labels[1:]] == hidden.tolist()
    assert sorted(p.name for p in (p1_root / "mini").iterdir()) == ["train"]
    assert sorted(p.name for p in (p1_root / "office").iterdir()) == ["train", "train.csv", "val", "val.csv"]


@pytest.mark.parametrize("split,per_class", [("train", 12), ("val", 4)])
def test_p1_office_csv_format(p1_root: Path, split: str, per_class: int) -> None:
    path = p1_root / "office" / "{}.csv".format(split)
    assert path.read_text().splitlines()[0] == "id,filename,label"
    header, rows = _read_csv(path)
    num_classes = P1_DEFAULTS["num_classes"]
    assert len(rows) == num_classes * per_class
    assert [int(r[0]) for r in rows] == list(range(len(rows)))
    names = [r[1] for r in rows]
    labels = [int(r[2]) for r in rows]
    for name, label in zip(names, labels):
        assert re.fullmatch(r"\d+_\d+\.jpg", name), name  # bare "{label}_{k}.jpg", as in the real data
        assert int(name.split("_")[0]) == label
    assert sorted(set(labels)) == list(range(num_classes))
    assert all(labels.count(c) == per_class for c in range(num_classes))
    # Every listed file exists and nothing else is in the folder.
    assert sorted(p.name for p in (p1_root / "office" / split).iterdir()) == sorted(names)


def test_p1_office_file_names_unique_across_splits(p1_root: Path) -> None:
    train = {r[1] for r in _read_csv(p1_root / "office" / "train.csv")[1]}
    val = {r[1] for r in _read_csv(p1_root / "office" / "val.csv")[1]}
    assert not train & val


def test_p1_mini_images_are_84px_rgb_jpegs_named_by_index(p1_root: Path) -> None:
    count = P1_DEFAULTS["num_classes"] * P1_DEFAULTS["mini_per_class"]
    files = sorted((p1_root / "mini" / "train").iterdir())
    assert [p.name for p in files] == ["{:05d}.jpg".format(i) for i in range(count)]
    for path in files[:: max(1, count // 40)]:
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.mode == "RGB" and img.size == (84, 84)


def test_p1_office_images_vary_in_size(p1_root: Path) -> None:
    sizes = set()
    for path in sorted((p1_root / "office").glob("*/*.jpg")):
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            sizes.add(img.size)
    low, high = P1_OFFICE_SIDE
    assert all(low <= w <= high and low <= h <= high for w, h in sizes)
    assert len(sizes) > 50
    assert any(w != h for w, h in sizes)


def test_p1_mini_classes_are_balanced_and_hidden() -> None:
    classes = p1_mini_classes(8, 40, seed=0)
    assert np.bincount(classes, minlength=8).tolist() == [40] * 8
    # The order is shuffled: neither sorted blocks nor a repeating cycle, so an index says nothing.
    assert not np.array_equal(classes, np.sort(classes))
    assert np.mean(classes == np.arange(classes.size) % 8) < 0.3
    assert np.mean(classes[1:] == classes[:-1]) < 0.3
    assert not np.array_equal(classes, p1_mini_classes(8, 40, seed=1))
    assert np.array_equal(classes, p1_mini_classes(8, 40, seed=0))


def test_p1_same_seed_gives_identical_bytes(p1_root: Path, tmp_path: Path) -> None:
    assert _read_bytes(make_p1_data(tmp_path)) == _read_bytes(p1_root)


def test_p1_different_seed_differs(p1_root: Path, tmp_path: Path) -> None:
    other = _read_bytes(make_p1_data(tmp_path, seed=1))
    base = _read_bytes(p1_root)
    assert other.keys() == base.keys()
    images = [name for name in base if name.endswith(".jpg")]
    assert len(images) == 8 * (40 + 12 + 4)
    assert all(other[name] != base[name] for name in images)


def test_p1_rerun_replaces_old_images_but_keeps_other_files(tmp_path: Path) -> None:
    make_p1_data(tmp_path, num_classes=4, mini_per_class=3, office_train_per_class=3, office_val_per_class=2)
    keep = tmp_path / "p1_data" / "mini" / "train" / "notes.txt"
    keep.write_text("mine")
    root = make_p1_data(tmp_path, **P1_SMALL)
    assert sorted(p.name for p in (root / "mini" / "train").iterdir()) == \
        ["00000.jpg", "00001.jpg", "00002.jpg", "00003.jpg", "00004.jpg", "00005.jpg", "notes.txt"]
    for split in ("train", "val"):
        names = sorted(r[1] for r in _read_csv(root / "office" / "{}.csv".format(split))[1])
        assert sorted(p.name for p in (root / "office" / split).iterdir()) == names


def test_p1_class_cues_are_unique_but_shared() -> None:
    attributes = [p1_class_attributes(c) for c in range(P1_MAX_CLASSES)]
    assert len(set(attributes)) == P1_MAX_CLASSES  # every class is a distinct combination
    first8 = attributes[:8]
    for cue in range(3):  # ...yet no single cue (shape, hue, texture) tells the 8 default classes apart
        assert len({a[cue] for a in first8}) < 8
    with pytest.raises(ValueError):
        p1_class_attributes(P1_MAX_CLASSES)


def test_p1_image_shapes_and_determinism() -> None:
    image = p1_image(3, np.random.default_rng(7), 84, "mini")
    assert image.shape == (84, 84, 3) and image.dtype == np.uint8
    assert np.array_equal(image, p1_image(3, np.random.default_rng(7), 84, "mini"))
    office = p1_image(3, np.random.default_rng(7), (70, 130), "office")
    assert office.shape == (70, 130, 3) and office.dtype == np.uint8
    assert image.std() > 10 and office.std() > 5  # not blank
    for bad in [dict(latent_class=-1), dict(domain="web"), dict(size=8)]:
        kwargs = dict(latent_class=0, rng=np.random.default_rng(0), size=84, domain="mini")
        kwargs.update(bad)
        with pytest.raises(ValueError):
            p1_image(**kwargs)


def test_p1_office_domain_is_lighter_than_mini() -> None:
    # Office backgrounds are plain and light, mini backgrounds busy: the domains differ in statistics.
    mini = [p1_image(c, np.random.default_rng([1, c, i]), 84, "mini") for c in range(8) for i in range(4)]
    office = [p1_image(c, np.random.default_rng([2, c, i]), 84, "office") for c in range(8) for i in range(4)]
    assert np.mean([im.mean() for im in office]) > np.mean([im.mean() for im in mini]) + 20


def test_p1_raw_pixel_knn_beats_chance_but_leaves_room(tmp_path: Path) -> None:
    # Office labels must be visible in the images, yet raw pixels must not solve the task (learned
    # features have to help). Measured for seed 0 (30 train / 15 val per class, 8 classes, k=5 on 16x16):
    # RGB 0.42, grayscale 0.24 (over seeds 0-9: RGB 0.35-0.47, grayscale 0.15-0.28; chance 0.125). A small
    # CNN reaches ~0.9 and logistic regression on colour + edge histograms ~0.8.
    root = make_p1_data(tmp_path, num_classes=8, mini_per_class=0, office_train_per_class=30,
                        office_val_per_class=15, seed=0)
    chance = 1.0 / 8
    rgb = _knn_accuracy(*_office_pixels(root, "train", gray=False), *_office_pixels(root, "val", gray=False))
    gray = _knn_accuracy(*_office_pixels(root, "train", gray=True), *_office_pixels(root, "val", gray=True))
    assert rgb > 2 * chance
    assert rgb < 0.75 and gray < 0.6


@pytest.mark.parametrize("kwargs", [{"mini_size": 8}, {"num_classes": 0}, {"num_classes": P1_MAX_CLASSES + 1},
                                    {"mini_per_class": -1}, {"office_train_per_class": -1},
                                    {"office_val_per_class": -1}, {"seed": -1}])
def test_p1_invalid_arguments_raise(tmp_path: Path, kwargs: Dict[str, int]) -> None:
    with pytest.raises(ValueError):
        make_p1_data(tmp_path, **kwargs)


def test_p1_cli_subprocess_writes_layout(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "tools.toydata", "--out", str(tmp_path), "--parts", "p1", "--seed", "3",
           "--p1-classes", "3", "--p1-mini-per-class", "2", "--p1-office-per-class", "2",
           "--p1-office-val-per-class", "1"]
    result = subprocess.run(cmd, cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 1 and "p1" in result.stdout
    # only the part asked for, and the marker that lets reports say "generated data"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["p1_data", GENERATED_MARKER])
    assert is_generated(tmp_path / "p1_data" / "office" / "val.csv") and not is_generated(tmp_path.parent)
    root = tmp_path / "p1_data"
    assert len(list((root / "mini" / "train").glob("*.jpg"))) == 6
    header, rows = _read_csv(root / "office" / "val.csv")
    assert header == ["id", "filename", "label"]
    assert [r[1] for r in rows] == ["0_2.jpg", "1_2.jpg", "2_2.jpg"]
    # The CLI writes exactly what the API writes.
    api = make_p1_data(tmp_path / "api", seed=3, **P1_SMALL)
    assert _read_bytes(api) == _read_bytes(root)


@pytest.mark.parametrize("flag", [["--p1-classes", "0"], ["--p1-classes", "85"],
                                  ["--p1-mini-per-class", "-1"], ["--p1-mini-size", "8"]])
def test_cli_rejects_bad_p1_arguments(tmp_path: Path, flag: List[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path), "--parts", "p1"] + flag)
    assert exc.value.code == 2


def test_p1_sanity_set_layout_and_that_only_shape_varies(tmp_path):
    from tools.toydata import make_p1_sanity_data, p1_sanity_image

    root = make_p1_sanity_data(tmp_path, size=24, num_classes=3, num_unlabeled=6, train_per_class=2,
                               val_per_class=1)
    assert len(list((root / "mini" / "train").glob("*.jpg"))) == 6
    rows = (root / "office" / "val.csv").read_text().splitlines()
    assert rows == ["id,filename,label", "0,0_0.jpg,0", "1,1_0.jpg,1", "2,2_0.jpg,2"]
    assert is_generated(root / "office" / "val.csv")
    rng = np.random.default_rng(0)
    images = [p1_sanity_image(c % 7, rng, 32).astype(float) for c in range(14)]
    for im in images:  # two grey levels (plus noise): dark ground, light shape, no colour
        assert np.abs(im - im.mean(axis=2, keepdims=True)).mean() < 6
        assert np.percentile(im, 5) < 50 and np.percentile(im, 95) > 200
    with pytest.raises(ValueError, match="num_classes"):
        make_p1_sanity_data(tmp_path, num_classes=8)


# ---------------------------------------------------------------------------------------------------
# The output folder: real data is never touched, a rerun deletes only what toydata wrote
# ---------------------------------------------------------------------------------------------------

def _fake_real_dataset(root: Path) -> Dict[str, bytes]:
    """A small folder in the course's layout, with names toydata also uses; returns its {path: bytes}."""
    files = {"p1_data/mini/train/00000.jpg": b"real mini", "p1_data/office/train/0_0.jpg": b"real office",
             "p1_data/office/val/1_7.jpg": b"real val", "p1_data/office/train.csv": b"id,filename,label\n0,0_0.jpg,0\n",
             "p1_data/office/val.csv": b"id,filename,label\n0,1_7.jpg,1\n", "p2_data/train/0000_sat.jpg": b"real sat",
             "p2_data/train/0000_mask.png": b"real mask", "p2_data/validation/0000_sat.jpg": b"real sat val"}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


@pytest.mark.parametrize("parts", [["p1"], ["p2"], ["p1", "p2"]])
def test_cli_refuses_a_non_empty_folder_it_did_not_make_and_changes_nothing(tmp_path: Path, parts: List[str]) -> None:
    real = tmp_path / "data_2025"
    before = _fake_real_dataset(real)
    cmd = [sys.executable, "-m", "tools.toydata", "--out", str(real), "--parts"] + parts + [
        "--p1-classes", "2", "--p1-mini-per-class", "1", "--p1-office-per-class", "1", "--p1-office-val-per-class",
        "1", "--num", "1", "--num-val", "1", "--size", "32"]
    result = subprocess.run(cmd, cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("toydata: error: ")
    assert "not empty" in result.stderr and str(real) in result.stderr and "Traceback" not in result.stderr
    assert _read_bytes(real) == before  # nothing deleted, rewritten or added (no marker either)


@pytest.mark.parametrize("maker", [make_p1_data, make_p2_data])
def test_api_refuses_a_non_empty_folder_it_did_not_make(tmp_path: Path, maker: Callable[..., Path]) -> None:
    from tools.toydata import OutputError, make_p1_sanity_data

    before = _fake_real_dataset(tmp_path)
    for make in (maker, make_p1_sanity_data):
        with pytest.raises(OutputError, match="not empty"):
            make(tmp_path)
    assert _read_bytes(tmp_path) == before


def test_cli_out_naming_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    target = tmp_path / "data.zip"
    target.write_bytes(b"zip")
    cmd = [sys.executable, "-m", "tools.toydata", "--out", str(target), "--parts", "p2", "--num", "1", "--num-val", "0"]
    result = subprocess.run(cmd, cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "is an existing file" in result.stderr
    assert target.read_bytes() == b"zip" and sorted(tmp_path.iterdir()) == [target]


def test_a_folder_marked_by_an_older_toydata_without_a_file_list_is_refused(tmp_path: Path) -> None:
    # earlier versions wrote only this one line, also into real data they were pointed at
    before = _fake_real_dataset(tmp_path)
    (tmp_path / GENERATED_MARKER).write_text("Generated by tools.toydata: synthetic data in the real layout, "
                                             "not the course's data.\n")
    before[GENERATED_MARKER] = (tmp_path / GENERATED_MARKER).read_bytes()
    assert main(["--out", str(tmp_path), "--parts", "p2", "--num", "1", "--num-val", "0"]) == 2
    assert _read_bytes(tmp_path) == before


def test_new_and_empty_folders_are_fine_and_the_marker_lists_every_file_written(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "new" / "deeper"):
        assert main(["--out", str(out), "--parts", "p1", "p2", "--size", "32", "--num", "1", "--num-val", "1",
                     "--p1-classes", "2", "--p1-mini-per-class", "1", "--p1-office-per-class", "1",
                     "--p1-office-val-per-class", "1"]) == 0
        listed = (out / GENERATED_MARKER).read_text().splitlines()[2:]
        written = sorted(str(p.relative_to(out).as_posix()) for p in out.rglob("*")
                         if p.is_file() and p.name != GENERATED_MARKER)
        assert sorted(listed) == written and len(written) == 2 + 4 + 2 + 1 + 4  # mini, office, csvs, mini labels, p2 pairs


def test_rerun_deletes_only_files_it_wrote(tmp_path: Path) -> None:
    make_p1_data(tmp_path, num_classes=2, mini_per_class=3, office_train_per_class=2, office_val_per_class=1)
    make_p2_data(tmp_path, size=32, num_train=3, num_val=1)
    # files toydata did not write, named as toydata names its own: a rerun must keep them
    theirs = {"p1_data/mini/train/00099.jpg": b"x", "p1_data/office/train/5_5.jpg": b"y",
              "p2_data/train/0042_sat.jpg": b"z", "p2_data/validation/0042_mask.png": b"w"}
    for name, data in theirs.items():
        (tmp_path / name).write_bytes(data)
    # a list entry pointing outside the folder is never followed
    outside = tmp_path.parent / (tmp_path.name + "_outside.jpg")
    outside.write_bytes(b"keep")
    with open(str(tmp_path / GENERATED_MARKER), "a") as f:
        f.write("p1_data/../../{}\n".format(outside.name))
    root = make_p1_data(tmp_path, num_classes=2, mini_per_class=1, office_train_per_class=1, office_val_per_class=1)
    assert sorted(p.name for p in (root / "mini" / "train").iterdir()) == ["00000.jpg", "00001.jpg", "00099.jpg"]
    assert sorted(p.name for p in (root / "office" / "train").iterdir()) == ["0_0.jpg", "1_0.jpg", "5_5.jpg"]
    make_p2_data(tmp_path, size=32, num_train=1, num_val=0)
    assert sorted(p.name for p in (tmp_path / "p2_data" / "train").iterdir()) == \
        ["0000_mask.png", "0000_sat.jpg", "0042_sat.jpg"]
    assert all((tmp_path / name).read_bytes() == data for name, data in theirs.items())
    assert outside.read_bytes() == b"keep"


# ---------------------------------------------------------------------------------------------------
# Problem 1, kind "shapes": the sanity set's images in the real layout
# ---------------------------------------------------------------------------------------------------

def test_p1_shapes_kind_layout_sizes_and_only_shape_carries_the_label(tmp_path: Path) -> None:
    root = make_p1_data(tmp_path, mini_size=32, num_classes=7, mini_per_class=2, office_train_per_class=3,
                        office_val_per_class=2, kind="shapes")
    assert sorted(p.name for p in root.iterdir()) == ["mini", "office", "standin_mini_labels.csv"]
    assert len(list((root / "mini" / "train").glob("*.jpg"))) == 14
    header, rows = _read_csv(root / "office" / "val.csv")
    assert header == ["id", "filename", "label"] and [r[1] for r in rows[:2]] == ["0_3.jpg", "0_4.jpg"]
    sizes = set()
    for path in sorted((root / "office").glob("*/*.jpg")):
        with Image.open(path) as img:
            im = np.asarray(img.convert("RGB"), dtype=np.float64)
        sizes.add(im.shape[:2])
        # grey only: a dark ground and a light shape (a small part of a long image)
        assert np.abs(im - im.mean(axis=2, keepdims=True)).mean() < 6
        assert np.percentile(im, 5) < 50 and np.percentile(im, 99.5) > 200
    low, high = P1_OFFICE_SIDE
    assert len(sizes) > 20 and any(h != w for h, w in sizes)
    assert all(low <= h <= high and low <= w <= high for h, w in sizes)
    with Image.open(root / "mini" / "train" / "00000.jpg") as img:
        assert img.size == (32, 32)
    # deterministic, and a different kind from the default for the same seed
    assert _read_bytes(make_p1_data(tmp_path / "again", mini_size=32, num_classes=7, mini_per_class=2,
                                    office_train_per_class=3, office_val_per_class=2, kind="shapes")) == \
        _read_bytes(root)
    objects = make_p1_data(tmp_path / "objects", mini_size=32, num_classes=7, mini_per_class=2,
                           office_train_per_class=3, office_val_per_class=2)
    assert (objects / "office" / "val" / "0_3.jpg").read_bytes() != (root / "office" / "val" / "0_3.jpg").read_bytes()
    with pytest.raises(ValueError, match="num_classes"):
        make_p1_data(tmp_path / "bad", num_classes=8, kind="shapes")
    with pytest.raises(ValueError, match="kind"):
        make_p1_data(tmp_path / "bad", kind="photos")


def test_p1_shapes_kind_from_the_cli(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path / "a"), "--parts", "p1", "--p1-kind", "shapes", "--p1-classes", "3",
                 "--p1-mini-per-class", "2", "--p1-office-per-class", "1", "--p1-office-val-per-class", "1",
                 "--p1-mini-size", "32"]) == 0
    assert _read_bytes(tmp_path / "a" / "p1_data") == _read_bytes(
        make_p1_data(tmp_path / "b", mini_size=32, num_classes=3, mini_per_class=2, office_train_per_class=1,
                     office_val_per_class=1, kind="shapes"))
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "c"), "--parts", "p1", "--p1-kind", "shapes", "--p1-classes", "8"])
    assert exc.value.code == 2


def test_a_part_folder_symlinked_to_real_data_is_refused_and_the_data_kept(tmp_path: Path) -> None:
    """Before: only the output root was checked; with OUT/p2_data a symlink to real data, a rerun (as demo.sh does
    every time) deleted the real tiles its list named and wrote new ones through the link. Now a symlinked folder
    inside the output is refused, one line naming it, before anything is deleted or written."""
    out = tmp_path / "demo"
    make_p2_data(out, size=32, num_train=2, num_val=1)
    real = tmp_path / "data_2025" / "p2_data"
    before = _fake_real_dataset(tmp_path / "data_2025")
    import shutil
    shutil.rmtree(str(out / "p2_data"))
    (out / "p2_data").symlink_to(real, target_is_directory=True)
    (real / "train").mkdir(parents=True, exist_ok=True)
    (real / "train" / "0000_sat.jpg").write_bytes(b"a real tile")  # named as the generator names its own
    before = _read_bytes(tmp_path / "data_2025")
    result = subprocess.run([sys.executable, "-m", "tools.toydata", "--out", str(out), "--parts", "p2", "--num", "2",
                             "--num-val", "1", "--size", "32"], cwd=str(REPO_ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "symbolic link" in result.stderr and str(out / "p2_data") in result.stderr
    assert _read_bytes(tmp_path / "data_2025") == before


def test_an_output_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    """Before: toydata on a folder it cannot write (read-only, a full disk; here the parent is a file, which fails
    alike for root) ended in a raw OSError traceback. Now one line naming the path, exit 1."""
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "demo"
    result = subprocess.run([sys.executable, "-m", "tools.toydata", "--out", str(out), "--parts", "p2", "--num", "1",
                             "--num-val", "0", "--size", "32"], cwd=str(REPO_ROOT), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and str(out) in result.stderr and result.stderr.startswith("toydata: error")


def test_rewriting_one_part_leaves_the_other_parts_files(tmp_path: Path) -> None:
    """The marker lists both parts' files; a rerun of p1 deletes only what it listed under p1_data (demo.sh makes p1
    and p2 into one folder; rewriting one must not remove the other's tiles)."""
    make_p2_data(tmp_path, size=32, num_train=2, num_val=1)
    p2_before = _read_bytes(tmp_path / "p2_data")
    for per_class in (1, 2):  # p1 made, then remade
        make_p1_data(tmp_path, num_classes=2, mini_per_class=per_class, office_train_per_class=1,
                     office_val_per_class=1)
        assert _read_bytes(tmp_path / "p2_data") == p2_before
    listed = (tmp_path / GENERATED_MARKER).read_text().splitlines()
    assert sum(name.startswith("p2_data/") for name in listed) == len(p2_before)
