"""Tests for utils/metrics.py and utils/masks.py against the course's grading contract (docs/data.md).

Every expected value is computed independently in this file (plain numpy counting, the grader's threshold
rule written out by hand); the code under test is never used to produce an expectation.
"""
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from utils import masks, metrics
from utils.masks import IGNORE_INDEX, PALETTE, class_to_rgb, read_mask, rgb_to_class, write_mask
from utils.metrics import ConfusionMatrix, confusion_matrix, iou_from_confusion

ROOT = Path(__file__).resolve().parents[1]

# docs/data.md's table, copied by hand: class -> (name, (R, G, B), code = 4R + 2G + B after thresholding)
GRADING_TABLE = {
    0: ("urban", (0, 255, 255), 3),
    1: ("agriculture", (255, 255, 0), 6),
    2: ("rangeland", (255, 0, 255), 5),
    3: ("forest", (0, 255, 0), 2),
    4: ("water", (0, 0, 255), 1),
    5: ("barren", (255, 255, 255), 7),
    6: ("unknown", (0, 0, 0), 0),
}
RED_CODE = 4  # not a class; we decode it as IGNORE_INDEX and never write it


# ----------------------------------------------------------------------------------------------------------
# Independent reference implementations (the course's formulas, written out)
# ----------------------------------------------------------------------------------------------------------

def ref_code(r, g, b):
    """The grader's decoding of one pixel: threshold each channel at >= 128, code = 4R + 2G + B."""
    return 4 * int(r >= 128) + 2 * int(g >= 128) + int(b >= 128)


def ref_class_of_code(code):
    for cls, (_, _, c) in GRADING_TABLE.items():
        if c == code:
            return cls
    assert code == RED_CODE
    return IGNORE_INDEX


def ref_pooled_iou(pairs):
    """Course mIoU, pooled over all (pred, label) pairs; IGNORE label pixels dropped; NaN classes skipped."""
    tp = [0] * 6
    n_pred = [0] * 6
    n_label = [0] * 6
    for pred, label in pairs:
        pred = np.asarray(pred).reshape(-1)
        label = np.asarray(label).reshape(-1)
        keep = (label != IGNORE_INDEX) & (pred != IGNORE_INDEX)
        pred, label = pred[keep], label[keep]
        for c in range(6):
            tp[c] += int(np.sum((pred == c) & (label == c)))
            n_pred[c] += int(np.sum(pred == c))
            n_label[c] += int(np.sum(label == c))
    ious = []
    for c in range(6):
        union = n_pred[c] + n_label[c] - tp[c]
        ious.append(tp[c] / union if union > 0 else float("nan"))
    present = [v for v in ious if not math.isnan(v)]
    miou = sum(present) / len(present) if present else float("nan")
    return ious, miou


def assert_iou_equal(got, expected, tol=1e-12):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        if math.isnan(e):
            assert math.isnan(g), (got, expected)
        else:
            assert g == pytest.approx(e, abs=tol), (got, expected)


def random_pair(rng, shape, noise=0.4, with_ignore=False):
    """A label with all 7 classes and a prediction that agrees on ~(1-noise) of the pixels."""
    label = rng.integers(0, 7, size=shape).astype(np.uint8)
    pred = label.copy()
    flip = rng.random(shape) < noise
    pred[flip] = rng.integers(0, 7, size=int(flip.sum())).astype(np.uint8)
    if with_ignore:
        label[rng.random(shape) < 0.1] = IGNORE_INDEX
    return pred, label


# ----------------------------------------------------------------------------------------------------------
# confusion matrix and IoU
# ----------------------------------------------------------------------------------------------------------

def test_confusion_matrix_matches_direct_count():
    rng = np.random.default_rng(0)
    pred, label = random_pair(rng, (2, 13, 17), with_ignore=True)
    mat = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(label))
    assert mat.shape == (7, 7)
    assert mat.dtype == torch.int64
    expected = np.zeros((7, 7), dtype=np.int64)
    for l_val, p_val in zip(label.reshape(-1), pred.reshape(-1)):
        if l_val < 7 and p_val < 7:
            expected[l_val, p_val] += 1  # rows: label, columns: prediction
    np.testing.assert_array_equal(mat.numpy(), expected)


def test_confusion_matrix_skips_values_outside_the_classes_in_either_tensor():
    label = torch.tensor([0, 7, 1, -1, 2, 255, 3])
    pred = torch.tensor([7, 0, -1, 1, 2, 3, 255])
    expected = torch.zeros(7, 7, dtype=torch.int64)
    expected[2, 2] = 1  # the one pixel with both values in 0..6
    assert torch.equal(confusion_matrix(pred, label), expected)


def test_accumulated_matrix_is_label_by_prediction():
    cm = ConfusionMatrix()
    cm.update(torch.tensor([[1, 1], [2, 6]]), torch.tensor([[0, 1], [2, 2]]))  # update(pred, target)
    expected = torch.zeros(7, 7, dtype=torch.int64)
    expected[0, 1] = expected[1, 1] = expected[2, 2] = expected[2, 6] = 1  # [label, pred]
    assert torch.equal(cm.mat, expected)


def test_accumulated_counts_stay_exact_beyond_float32_and_other_class_counts_work():
    # the full validation set is 257 x 512 x 512 = 67M pixels: float32 counts would stop at 2^24 + 1 -> 2^24
    cm = ConfusionMatrix()
    cm.update(torch.zeros(2 ** 24, dtype=torch.uint8), torch.zeros(2 ** 24, dtype=torch.uint8))
    cm.update(torch.zeros(1, dtype=torch.uint8), torch.zeros(1, dtype=torch.uint8))
    assert cm.mat.dtype == torch.int64 and int(cm.mat[0, 0]) == 2 ** 24 + 1
    three = ConfusionMatrix(num_classes=3)
    three.update(torch.tensor([0, 2, 2, 5]), torch.tensor([0, 1, 2, 2]))  # 5 is no class of 3: skipped
    assert torch.equal(three.mat, torch.tensor([[1, 0, 0], [0, 0, 1], [0, 0, 1]]))


def test_a_class_of_one_pixel_has_an_iou_and_pixel_accuracy_is_correct_over_all():
    mat = confusion_matrix(torch.tensor([3, 0, 0, 1, 6]), torch.tensor([3, 0, 1, 1, 6]))
    result = iou_from_confusion(mat)
    assert result["iou"][3] == 1.0  # union 1
    assert result["pixel_acc"] == pytest.approx(4 / 5)
    assert math.isnan(iou_from_confusion(torch.zeros(7, 7, dtype=torch.int64))["pixel_acc"])


def test_reduce_is_a_no_op_outside_distributed_runs():
    cm = ConfusionMatrix()
    cm.update(torch.tensor([1, 2]), torch.tensor([1, 1]))
    before = cm.mat.clone()
    cm.reduce()
    assert torch.equal(cm.mat, before)


def test_reduce_sums_the_matrix_itself_across_processes(monkeypatch):
    cm = ConfusionMatrix()
    cm.update(torch.tensor([1, 2]), torch.tensor([1, 1]))
    before = cm.mat.clone()
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t: t.mul_(3))  # three ranks holding the same counts
    cm.reduce()
    assert torch.equal(cm.mat, 3 * before)


def test_pooled_iou_matches_course_formula_batch_by_batch():
    rng = np.random.default_rng(1)
    pairs = [random_pair(rng, (3, 11, 9)), random_pair(rng, (2, 20, 7)), random_pair(rng, (1, 5, 31))]
    cm = ConfusionMatrix()
    total = torch.zeros(7, 7, dtype=torch.int64)
    for pred, label in pairs:  # batches of several "images"
        cm.update(torch.from_numpy(pred), torch.from_numpy(label))
        total += confusion_matrix(torch.from_numpy(pred), torch.from_numpy(label))
    expected_iou, expected_miou = ref_pooled_iou(pairs)
    assert all(not math.isnan(v) for v in expected_iou)
    for result in (cm.compute(), iou_from_confusion(total)):
        assert_iou_equal(result["iou"], expected_iou)
        assert result["miou"] == pytest.approx(expected_miou, abs=1e-12)
    # the six classes are averaged, not seven: unknown (6) is not in the list
    assert len(cm.compute()["iou"]) == 6


def test_counts_are_pooled_not_averaged_per_image():
    # image A: a large, perfectly predicted class-0 region
    label_a = np.zeros((10, 10), dtype=np.uint8)
    pred_a = label_a.copy()
    # image B: small, everything wrong (0 <-> 1 swapped)
    label_b = np.array([[0, 0, 1, 1]], dtype=np.uint8)
    pred_b = np.array([[1, 1, 0, 0]], dtype=np.uint8)

    per_image = [ref_pooled_iou([(pred_a, label_a)])[1], ref_pooled_iou([(pred_b, label_b)])[1]]
    averaged = sum(per_image) / 2.0  # (1.0 + 0.0) / 2 = 0.5
    _, pooled = ref_pooled_iou([(pred_a, label_a), (pred_b, label_b)])  # (100/104 + 0) / 2
    assert abs(pooled - averaged) > 1e-2  # the construction really separates the two rules
    assert pooled == pytest.approx((100.0 / 104.0 + 0.0) / 2.0)

    cm = ConfusionMatrix()
    cm.update(torch.from_numpy(pred_a), torch.from_numpy(label_a))
    cm.update(torch.from_numpy(pred_b), torch.from_numpy(label_b))
    got = cm.compute()["miou"]
    assert got == pytest.approx(pooled, abs=1e-12)
    assert abs(got - averaged) > 1e-2


def test_real_class_on_unknown_pixel_is_a_false_positive():
    label = np.array([[0, 0, 0, 0, 6, 6, 6, 6]], dtype=np.uint8)
    pred_ok = np.array([[0, 0, 0, 0, 6, 6, 6, 6]], dtype=np.uint8)
    pred_fp = np.array([[0, 0, 0, 0, 0, 0, 6, 6]], dtype=np.uint8)  # urban on two unknown pixels

    def run(pred):
        cm = ConfusionMatrix()
        cm.update(torch.from_numpy(pred), torch.from_numpy(label))
        return cm.compute()

    ok, fp = run(pred_ok), run(pred_fp)
    assert ok["iou"][0] == pytest.approx(1.0)
    assert fp["iou"][0] == pytest.approx(4.0 / 6.0)  # 4 / (6 predicted + 4 labelled - 4)
    assert fp["miou"] < ok["miou"]
    assert fp["iou"][0] == pytest.approx(ref_pooled_iou([(pred_fp, label)])[0][0])


def test_class_absent_from_both_is_nan_and_left_out_of_mean():
    rng = np.random.default_rng(2)
    label = rng.choice(np.array([0, 1, 6], dtype=np.uint8), size=(9, 9))
    pred = rng.choice(np.array([0, 1, 3, 6], dtype=np.uint8), size=(9, 9))  # 3: predicted, never labelled
    cm = ConfusionMatrix()
    cm.update(torch.from_numpy(pred), torch.from_numpy(label))
    result = cm.compute()
    iou = result["iou"]
    for c in (2, 4, 5):
        assert math.isnan(iou[c])
    assert iou[3] == 0.0  # predicted but absent from the label: a real 0, not NaN
    expected_iou, expected_miou = ref_pooled_iou([(pred, label)])
    assert_iou_equal(iou, expected_iou)
    assert result["miou"] == pytest.approx((iou[0] + iou[1] + iou[3]) / 3.0)
    assert result["miou"] == pytest.approx(expected_miou)
    assert not math.isnan(result["miou"])


def test_ignore_label_pixels_are_not_counted():
    rng = np.random.default_rng(3)
    pred, label = random_pair(rng, (4, 16, 16), with_ignore=True)
    assert np.sum(label == IGNORE_INDEX) > 0
    cm = ConfusionMatrix()
    cm.update(torch.from_numpy(pred), torch.from_numpy(label))
    result = cm.compute()
    expected_iou, expected_miou = ref_pooled_iou([(pred, label)])
    assert_iou_equal(result["iou"], expected_iou)
    assert result["miou"] == pytest.approx(expected_miou, abs=1e-12)
    assert int(cm.mat.sum()) == int(np.sum(label != IGNORE_INDEX))

    # whatever is predicted on ignored pixels does not matter
    pred2 = pred.copy()
    pred2[label == IGNORE_INDEX] = (pred2[label == IGNORE_INDEX] + 1) % 7
    cm2 = ConfusionMatrix()
    cm2.update(torch.from_numpy(pred2), torch.from_numpy(label))
    assert torch.equal(cm.mat, cm2.mat)


# ----------------------------------------------------------------------------------------------------------
# mask colours
# ----------------------------------------------------------------------------------------------------------

def test_palette_matches_grading_table():
    assert PALETTE.shape == (7, 3)
    assert PALETTE.dtype == np.uint8
    for cls, (name, rgb, code) in GRADING_TABLE.items():
        assert tuple(int(v) for v in PALETTE[cls]) == rgb, name
        assert ref_code(*rgb) == code  # the table itself is consistent
        assert masks.CLASS_NAMES[cls] == name
    assert masks.NUM_CLASSES == 7
    assert masks.NUM_EVAL_CLASSES == 6


def test_class_to_rgb_round_trip_all_classes():
    classes = np.array([[0, 1, 2, 3], [4, 5, 6, 0]], dtype=np.int64)
    rgb = class_to_rgb(classes)
    assert rgb.shape == (2, 4, 3)
    assert rgb.dtype == np.uint8
    for y in range(2):
        for x in range(4):
            assert tuple(int(v) for v in rgb[y, x]) == GRADING_TABLE[int(classes[y, x])][1]
    np.testing.assert_array_equal(rgb_to_class(rgb), classes)


def test_class_to_rgb_never_writes_red():
    for cls in range(7):
        rgb = class_to_rgb(np.full((2, 2), cls, dtype=np.uint8))
        assert not np.any(np.all(rgb == np.array([255, 0, 0], dtype=np.uint8), axis=-1))
        for pixel in rgb.reshape(-1, 3):
            assert ref_code(*pixel) != RED_CODE


@pytest.mark.parametrize("bad", [-1, 7, 8, IGNORE_INDEX])
def test_class_to_rgb_rejects_out_of_range(bad):
    classes = np.array([[0, 1], [bad, 2]], dtype=np.int64)
    with pytest.raises(ValueError):
        class_to_rgb(classes)


@pytest.mark.parametrize("rgb, expected", [
    ((130, 250, 10), 1),  # code 6 -> agriculture
    ((127, 127, 127), 6),  # all below 128 -> black -> unknown
    ((128, 128, 128), 5),  # exactly 128 counts as on -> white -> barren
    ((200, 30, 30), IGNORE_INDEX),  # red-ish: code 4, not a class
    ((255, 0, 0), IGNORE_INDEX),
    ((10, 140, 250), 0),  # cyan-ish -> urban
    ((240, 20, 129), 2),  # purple-ish -> rangeland
    ((3, 200, 100), 3),  # green-ish -> forest
    ((0, 60, 190), 4),  # blue-ish -> water
])
def test_damaged_colours_decode_like_the_grader(rgb, expected):
    pixel = np.array([[rgb]], dtype=np.uint8)
    assert int(rgb_to_class(pixel)[0, 0]) == expected
    assert ref_class_of_code(ref_code(*rgb)) == expected


def test_rgb_to_class_matches_threshold_rule_on_a_grid():
    levels = [0, 1, 64, 126, 127, 128, 129, 200, 254, 255]
    pixels = [(r, g, b) for r in levels for g in levels for b in levels]
    arr = np.array(pixels, dtype=np.uint8).reshape(len(levels) ** 2, len(levels), 3)
    got = rgb_to_class(arr).reshape(-1)
    expected = [ref_class_of_code(ref_code(*p)) for p in pixels]
    np.testing.assert_array_equal(got, np.array(expected))


@pytest.mark.parametrize("shape", [(4, 4), (4, 4, 2), (2, 4, 4, 3)])
def test_rgb_to_class_refuses_what_is_not_an_rgb_image(shape):
    with pytest.raises(ValueError, match=r"expected an \(H, W, 3\) RGB mask, got shape {}".format(
            re.escape(str(shape)))):
        rgb_to_class(np.zeros(shape, dtype=np.uint8))


def test_class_to_rgb_takes_any_integer_array_like_and_refuses_floats():
    np.testing.assert_array_equal(class_to_rgb([[0, 4]]), PALETTE[[[0, 4]]])
    with pytest.raises(ValueError, match="must be integers, got dtype float32"):
        class_to_rgb(np.zeros((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=r"must lie in 0\.\.6; got 0\.\.7"):
        class_to_rgb(np.array([0, 7]))


def test_read_mask_names_a_missing_or_unreadable_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="mask not found: .*0000_mask.png"):
        read_mask(tmp_path / "0000_mask.png")
    (tmp_path / "bad_mask.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read mask .*bad_mask.png: cannot identify image file"):
        read_mask(tmp_path / "bad_mask.png")  # PIL's own reason follows the name


def test_write_read_mask_png_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    classes = rng.integers(0, 7, size=(5, 9)).astype(np.uint8)  # non-square: catches H/W swaps
    path = tmp_path / "0000_mask.png"
    write_mask(path, classes)
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.mode == "RGB"
        assert img.size == (9, 5)
        pixels = np.asarray(img)
    for y in range(5):
        for x in range(9):
            assert tuple(int(v) for v in pixels[y, x]) == GRADING_TABLE[int(classes[y, x])][1]
    back = read_mask(path)
    assert back.shape == (5, 9)
    np.testing.assert_array_equal(back, classes)


def _png_rgb16(path, rgb16):
    """A 48-bit RGB PNG (16 bits per channel), which PIL cannot write: built from its chunks."""
    import struct
    import zlib

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _save_indices(path, classes, mode):
    """Class indices saved as a mask image: grey 'L' / 'I;16', grey RGB, or 'P' with a grey or the VOC palette."""
    if mode == "L":
        Image.fromarray(classes).save(str(path))
    elif mode == "I;16":
        Image.fromarray(classes.astype(np.uint16)).save(str(path))
    elif mode == "RGB":
        Image.fromarray(np.dstack([classes] * 3)).save(str(path))
    else:
        image = Image.fromarray(classes, "P")
        image.putpalette([v for i in range(256) for v in (i, i, i)] if mode == "P-grey" else _voc_palette())
        image.save(str(path))
    return path


@pytest.mark.parametrize("mode", ["L", "I;16", "RGB", "P"])
def test_class_index_masks_are_refused_naming_the_file_and_the_colours(tmp_path, mode):
    """Before: a grayscale mask holding 0..6 decoded to 'unknown' everywhere and training ran to mIoU 0 silently."""
    classes = np.random.default_rng(0).integers(0, 7, (6, 9)).astype(np.uint8)
    path = _save_indices(tmp_path / "0000_mask.png", classes, "P-grey" if mode == "P" else mode)
    with pytest.raises(ValueError) as info:
        read_mask(path)
    message = str(info.value)
    assert "0000_mask.png" in message and "class indices" in message and "'Mask colours'" in message


def test_colour_masks_in_other_modes_decode_as_before(tmp_path):
    """16-bit, RGBA and palette colour masks, and an all-zero grey mask (ambiguous: left as all 'unknown'), are
    read as PIL's RGB conversion + the grader's threshold rule decode them (what read_mask did before)."""
    classes = np.random.default_rng(1).integers(0, 7, (6, 9)).astype(np.uint8)
    colours = class_to_rgb(classes)
    cases = {}
    cases["rgb16.png"] = colours.astype(np.uint16) * 257
    _png_rgb16(tmp_path / "rgb16.png", cases["rgb16.png"])
    Image.fromarray(np.dstack([colours, np.full(classes.shape, 255, np.uint8)]), "RGBA").save(str(tmp_path / "rgba.png"))
    Image.fromarray(colours).quantize(colors=7).save(str(tmp_path / "palette.png"))
    Image.fromarray(np.where(classes == 5, 65535, 0).astype(np.uint16)).save(str(tmp_path / "grey16.png"))
    Image.fromarray(np.zeros((6, 9), np.uint8)).save(str(tmp_path / "zeros.png"))
    for name in ("rgb16.png", "rgba.png", "palette.png"):
        np.testing.assert_array_equal(read_mask(tmp_path / name), classes, err_msg=name)
    np.testing.assert_array_equal(read_mask(tmp_path / "grey16.png"), np.where(classes == 5, 5, 6))
    np.testing.assert_array_equal(read_mask(tmp_path / "zeros.png"), np.full((6, 9), 6))
    for name in ("rgb16.png", "rgba.png", "palette.png", "grey16.png", "zeros.png"):
        expected = rgb_to_class(np.asarray(Image.open(str(tmp_path / name)).convert("RGB")))
        np.testing.assert_array_equal(read_mask(tmp_path / name), expected, err_msg=name)


# ----------------------------------------------------------------------------------------------------------
# command-line evaluator (subprocesses start together: each pays torch's import time)
# ----------------------------------------------------------------------------------------------------------

def _write_colour_mask(path, classes):
    """Write a mask with the table's colours, independently of write_mask."""
    rgb = np.zeros(classes.shape + (3,), dtype=np.uint8)
    for cls, (_, colour, _) in GRADING_TABLE.items():
        rgb[classes == cls] = colour
    Image.fromarray(rgb, "RGB").save(str(path), format="PNG")


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(5)
    names = ["0000_mask.png", "0001_mask.png", "0002_mask.png"]
    shapes = [(12, 12), (12, 12), (8, 20)]
    gt, pred, other, sized, empty = (base / n for n in ("gt", "pred", "other", "sized", "empty"))
    for folder in (gt, pred, other, sized, empty):
        folder.mkdir()
    pairs = []
    for name, shape in zip(names, shapes):
        p, l = random_pair(rng, shape, noise=0.3)
        _write_colour_mask(gt / name, l)
        _write_colour_mask(pred / name, p)
        pairs.append((p, l))
        _write_colour_mask(sized / name, p if name != "0001_mask.png" else p[:, :-3])
    # same count, different names: 0002 is missing from the predictions
    for name in ("0000_mask.png", "0001_mask.png", "0009_mask.png"):
        _write_colour_mask(other / name, np.zeros((12, 12), dtype=np.uint8))
    (pred / "notes.txt").write_text("not a mask")  # non-png files are ignored, as by the grader

    commands = {
        "text": ["-g", str(gt), "-p", str(pred)],
        "json": ["-g", str(gt), "-p", str(pred), "--json"],
        "names": ["-g", str(gt), "-p", str(other)],
        "size": ["-g", str(gt), "-p", str(sized)],
        "empty": ["-g", str(gt), "-p", str(empty)],
    }
    procs = {key: subprocess.Popen([sys.executable, "-m", "utils.metrics"] + argv, cwd=str(ROOT),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
             for key, argv in commands.items()}
    results = {}
    for key, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        results[key] = (proc.returncode, out, err)
    results["expected"] = ref_pooled_iou(pairs)
    results["folders"] = {"gt": gt, "pred": pred, "other": other, "sized": sized, "empty": empty}
    return results


def test_folder_errors_name_the_folder_and_at_most_five_files(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    for i in range(6):
        _write_colour_mask(gt / "{:04d}_mask.png".format(i), np.zeros((2, 2), dtype=np.uint8))
        _write_colour_mask(pred / "{:04d}_mask.png".format(i + 10), np.zeros((2, 2), dtype=np.uint8))
    with pytest.raises(SystemExit, match="not a folder: .*missing"):
        metrics.evaluate_folders(tmp_path / "missing", pred)
    for argv in (["-p", str(pred)], ["-g", str(gt)]):  # both folders are required arguments
        with pytest.raises(SystemExit):
            metrics.main(argv)
    with pytest.raises(SystemExit) as info:
        metrics.evaluate_folders(gt, pred)
    message = str(info.value)
    assert "the folders hold different .png files (6 vs 6)" in message
    assert "missing from predictions: {}".format(["{:04d}_mask.png".format(i) for i in range(5)]) in message
    assert "not in labels: {}".format(["{:04d}_mask.png".format(i) for i in range(10, 15)]) in message
    # sizes are named as width x height
    for folder, shape in ((gt, (2, 3)), (pred, (3, 2))):
        for old in folder.iterdir():
            old.unlink()
        _write_colour_mask(folder / "0000_mask.png", np.zeros(shape, dtype=np.uint8))
    with pytest.raises(SystemExit, match=r"size mismatch for 0000_mask.png: label \(3, 2\) vs prediction \(2, 3\)"):
        metrics.evaluate_folders(gt, pred)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no mask here")
    with pytest.raises(SystemExit, match="error: no .png files in .*empty$"):
        metrics.evaluate_folders(gt, tmp_path / "empty")
    result = metrics.evaluate_folders(gt, gt)  # one 2 x 3 mask, against itself
    assert result["num_images"] == 1 and result["pixel_acc"] == 1.0


def test_cli_text_output(cli_runs):
    rc, out, err = cli_runs["text"]
    assert rc == 0, err
    expected_iou, expected_miou = cli_runs["expected"]
    # the course script's lines, whole: "class #0 : 0.12345   (Urban)", then "mean_iou: 0.123456"
    class_lines = re.findall(r"^class #(\d+) : ([0-9.]+|nan)   \((\w+)\)$", out, re.M)
    assert [int(c) for c, _, _ in class_lines] == [0, 1, 2, 3, 4, 5]
    assert [name for _, _, name in class_lines] == ["urban", "agriculture", "rangeland", "forest", "water", "barren"]
    for (_, value, _), exp in zip(class_lines, expected_iou):
        assert float(value) == pytest.approx(exp, abs=1e-5)
    match = re.search(r"^mean_iou: ([0-9.]+)$", out, re.M)
    assert match, out
    assert float(match.group(1)) == pytest.approx(expected_miou, abs=1e-6)


def test_cli_json_output(cli_runs):
    rc, out, err = cli_runs["json"]
    assert rc == 0, err
    result = json.loads(out)
    expected_iou, expected_miou = cli_runs["expected"]
    assert result["miou"] == pytest.approx(expected_miou, abs=1e-12)
    assert_iou_equal(result["iou"], expected_iou)
    assert result["num_images"] == 3


def test_cli_different_file_names(cli_runs):
    rc, out, err = cli_runs["names"]
    assert rc != 0
    assert "different .png files (3 vs 3)" in out + err
    assert "missing from predictions: ['0002_mask.png']; not in labels: ['0009_mask.png']" in out + err
    assert "Traceback" not in err


def test_cli_size_mismatch(cli_runs):
    rc, out, err = cli_runs["size"]
    assert rc != 0
    message = out + err
    assert "size mismatch for 0001_mask.png: label (12, 12) vs prediction (9, 12)" in message  # (W, H)
    assert "Traceback" not in err


def test_cli_empty_folder(cli_runs):
    rc, out, err = cli_runs["empty"]
    assert rc != 0
    message = out + err
    assert str(cli_runs["folders"]["empty"]) in message
    assert ".png" in message
    assert "Traceback" not in err


def test_an_empty_array_is_not_taken_for_class_indices():
    assert not masks.looks_like_class_indices(np.zeros((0, 0, 3), dtype=np.uint8))


def test_class_index_detection_needs_every_pixel_grey_and_values_1_to_6(tmp_path):
    """Grey masks whose largest value is 1 (two classes) are class indices too, and the error gives the range;
    dark masks that are not grey (any one channel differs) are colours: they decode by the threshold rule."""
    path = tmp_path / "0000_mask.png"
    Image.fromarray(np.repeat(np.array([[0, 1], [1, 0]], dtype=np.uint8)[..., None], 3, axis=2)).save(str(path))
    with pytest.raises(ValueError, match=r"holds class indices \(grey levels 0\.\.6\)"):
        read_mask(path)
    for pixel in ((5, 0, 0), (0, 0, 5), (0, 5, 5)):
        rgb = np.zeros((2, 2, 3), dtype=np.uint8)
        rgb[0, 0] = pixel
        Image.fromarray(rgb).save(str(path))
        assert (read_mask(path) == 6).all(), pixel  # every channel < 128: black, "unknown"


# ----------------------------------------------------------------------------------------------------------
# class indices in other disguises: a 255 "ignore" border, a palette image whose indices are the classes
# ----------------------------------------------------------------------------------------------------------

# The PASCAL VOC colour map (bit-interleaved), the palette most segmentation tools write index masks with.
def _voc_palette():
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def _indices_with_ignore_border():
    classes = np.random.default_rng(3).integers(0, 7, (8, 10)).astype(np.uint8)
    classes[0, :] = classes[-1, :] = classes[:, 0] = classes[:, -1] = 255  # the "ignore" border
    return classes


@pytest.mark.parametrize("mode", ["L", "I;16", "RGB", "P-grey", "P-voc"])
def test_class_indices_with_a_255_ignore_border_are_refused(tmp_path, mode):
    """Before: indices 0..6 with a 255 border decoded to 'unknown' + 'barren' and trained silently to mIoU 0."""
    classes = _indices_with_ignore_border()
    path = _save_indices(tmp_path / "0000_mask.png", classes, mode)
    with pytest.raises(ValueError) as info:
        read_mask(path)
    message = str(info.value)
    assert "0000_mask.png" in message and "class indices" in message and "docs/data.md#mask-colours" in message


@pytest.mark.parametrize("palette", ["voc", "none", "tab10"])
def test_palette_masks_whose_indices_are_the_classes_are_refused(tmp_path, palette):
    """Before: a 'P' mask of indices 0..6 went through its palette (VOC: black, dark red, dark green, ...) and
    decoded to permuted classes (or, with no palette, to all 'unknown')."""
    classes = np.random.default_rng(4).integers(0, 7, (6, 9)).astype(np.uint8)
    path = tmp_path / "0007_mask.png"
    image = Image.fromarray(classes, "P")
    if palette == "voc":
        image.putpalette(_voc_palette())
    elif palette == "tab10":  # matplotlib's default colours
        image.putpalette([31, 119, 180, 255, 127, 14, 44, 160, 44, 214, 39, 40, 148, 103, 189, 140, 86, 75,
                          227, 119, 194])
    image.save(str(path))
    with pytest.raises(ValueError) as info:
        read_mask(path)
    message = str(info.value)
    assert "0007_mask.png" in message and "class indices" in message and "palette" in message
    assert "docs/data.md#mask-colours" in message


def test_palette_masks_in_the_course_colours_and_black_and_white_grey_masks_decode_as_before(tmp_path):
    """A 'P' mask whose palette gives the course's colours (in any order, red included, unused entries anything)
    and a grey mask of only 0 and 255 (black 'unknown' and white 'barren') are colour masks: they decode by PIL's
    RGB conversion + the grader's threshold rule, as before."""
    classes = np.random.default_rng(5).integers(0, 7, (6, 9)).astype(np.uint8)
    order = [3, 6, 0, 5, 1, 4, 2]  # palette index i holds the colour of class order[i]
    inverse = np.argsort(order).astype(np.uint8)
    colours = [v for cls in order for v in GRADING_TABLE[cls][1]] + [255, 0, 0]  # entry 7: red
    indices = inverse[classes].copy()
    indices[0, 0] = 7  # one red pixel
    image = Image.fromarray(indices, "P")
    image.putpalette(colours + _voc_palette()[len(colours):])
    image.save(str(tmp_path / "course.png"))
    expected = classes.copy()
    expected[0, 0] = IGNORE_INDEX
    np.testing.assert_array_equal(read_mask(tmp_path / "course.png"), expected)
    # the course's palette in the table's order: index i is class i's colour
    image = Image.fromarray(classes, "P")
    image.putpalette([v for cls in range(7) for v in GRADING_TABLE[cls][1]])
    image.save(str(tmp_path / "table.png"))
    np.testing.assert_array_equal(read_mask(tmp_path / "table.png"), classes)
    bw = np.where(classes == 5, 255, 0).astype(np.uint8)
    Image.fromarray(bw).save(str(tmp_path / "bw.png"))
    np.testing.assert_array_equal(read_mask(tmp_path / "bw.png"), np.where(classes == 5, 5, 6))
    for name in ("course.png", "table.png", "bw.png"):
        expected = rgb_to_class(np.asarray(Image.open(str(tmp_path / name)).convert("RGB")))
        np.testing.assert_array_equal(read_mask(tmp_path / name), expected, err_msg=name)
