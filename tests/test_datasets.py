"""Tests for utils/datasets.py: robust image decoding, p2 pair listing, datasets; and p2_inference.py's inputs."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from p2_inference import InferenceImages, list_input_images
from utils.datasets import (
    SegmentationDataset,
    list_satellite_pairs,
    mask_name_for,
    read_rgb,
)
from utils.masks import read_mask

# docs/data.md's colours, by class
COLOURS = {0: (0, 255, 255), 1: (255, 255, 0), 2: (255, 0, 255), 3: (0, 255, 0), 4: (0, 0, 255),
           5: (255, 255, 255), 6: (0, 0, 0)}


def _blocks(h=16, w=24):
    """An image of flat 8x8 blocks (JPEG reproduces flat, block-aligned colours almost exactly)."""
    colours = [(200, 30, 40), (20, 180, 60), (30, 60, 220), (240, 240, 20), (128, 128, 128), (10, 10, 10)]
    arr = np.zeros((h, w, 3), dtype=np.uint8)
    k = 0
    for y in range(0, h, 8):
        for x in range(0, w, 8):
            arr[y:y + 8, x:x + 8] = colours[k % len(colours)]
            k += 1
    return arr


def _write_jpg(path, arr, quality=95):
    # no chroma subsampling, so flat 8x8 blocks survive
    Image.fromarray(arr, "RGB").save(str(path), format="JPEG", quality=quality, subsampling=0)


def _write_colour_mask(path, classes):
    rgb = np.zeros(classes.shape + (3,), dtype=np.uint8)
    for cls, colour in COLOURS.items():
        rgb[classes == cls] = colour
    Image.fromarray(rgb, "RGB").save(str(path), format="PNG")


def _check_rgb(arr, shape):
    assert isinstance(arr, np.ndarray)
    assert arr.dtype == np.uint8
    assert arr.shape == shape + (3,)


# ----------------------------------------------------------------------------------------------------------
# read_rgb
# ----------------------------------------------------------------------------------------------------------

def test_read_rgb_jpeg(tmp_path):
    src = _blocks()
    path = tmp_path / "rgb.jpg"
    _write_jpg(path, src)
    arr = read_rgb(path)
    _check_rgb(arr, (16, 24))
    assert np.abs(arr.astype(int) - src.astype(int)).max() <= 8


def test_read_rgb_grayscale_png(tmp_path):
    gray = np.arange(6 * 7, dtype=np.uint8).reshape(6, 7) * 6
    path = tmp_path / "gray.png"
    Image.fromarray(gray, "L").save(str(path))
    arr = read_rgb(path)
    _check_rgb(arr, (6, 7))
    for c in range(3):
        np.testing.assert_array_equal(arr[..., c], gray)


def test_read_rgb_rgba_transparent_becomes_black(tmp_path):
    rgb = np.full((4, 6, 3), (90, 160, 230), dtype=np.uint8)
    alpha = np.full((4, 6), 255, dtype=np.uint8)
    alpha[:, :3] = 0  # left half fully transparent (its hidden colour must not leak through)
    path = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(str(path))
    arr = read_rgb(path)
    _check_rgb(arr, (4, 6))
    assert np.all(arr[:, :3] == 0)
    assert np.all(arr[:, 3:] == np.array([90, 160, 230], dtype=np.uint8))


def test_read_rgb_palette_png(tmp_path):
    palette = np.array([[255, 0, 0], [0, 128, 0], [10, 20, 250], [7, 8, 9]], dtype=np.uint8)
    index = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [1, 1, 3, 2]], dtype=np.uint8)
    img = Image.fromarray(index, "P")
    img.putpalette(palette.reshape(-1).tolist() + [0] * (768 - palette.size))
    path = tmp_path / "palette.png"
    img.save(str(path))
    with Image.open(path) as check:
        assert check.mode == "P"
    arr = read_rgb(path)
    _check_rgb(arr, (3, 4))
    np.testing.assert_array_equal(arr, palette[index])


def test_read_rgb_palette_png_with_transparency(tmp_path):
    palette = np.array([[255, 255, 255], [0, 128, 0]], dtype=np.uint8)
    index = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    img = Image.fromarray(index, "P")
    img.putpalette(palette.reshape(-1).tolist() + [0] * (768 - palette.size))
    path = tmp_path / "palette_t.png"
    img.save(str(path), transparency=0)  # index 0 fully transparent
    arr = read_rgb(path)
    _check_rgb(arr, (2, 2))
    np.testing.assert_array_equal(arr, np.array([[[0, 0, 0], [0, 128, 0]], [[0, 128, 0], [0, 0, 0]]]))


def test_read_rgb_cmyk_jpeg(tmp_path):
    src = _blocks()
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(src, "RGB").convert("CMYK").save(str(path), format="JPEG", quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    arr = read_rgb(path)
    _check_rgb(arr, (16, 24))
    assert np.abs(arr.astype(int) - src.astype(int)).max() <= 12


def test_read_rgb_32bit_integer_images_are_scaled_when_they_exceed_8_bits(tmp_path):
    """PIL's 32-bit "I" mode has no fixed range: values up to 255 are kept, larger ones read as 16-bit."""
    for values, expected in (([[0, 100, 255]], [[0, 100, 255]]), ([[0, 60000, 65535]], [[0, 233, 255]])):
        path = tmp_path / "i32.tif"
        Image.fromarray(np.array(values, dtype=np.int32), mode="I").save(str(path))
        with Image.open(path) as check:
            assert check.mode == "I"
        arr = read_rgb(path)
        assert arr.dtype == np.uint8 and (arr == np.array(expected)[..., None]).all(), arr[..., 0]


def test_read_rgb_16bit_png_is_scaled(tmp_path):
    values = np.array([[0, 32768, 65535], [1000, 16384, 49152]], dtype=np.uint16)
    path = tmp_path / "depth16.png"
    Image.fromarray(values).save(str(path))
    with Image.open(path) as check:
        assert check.mode in ("I;16", "I;16B", "I;16L", "I")  # 16 bits per pixel on disk
    arr = read_rgb(path)
    _check_rgb(arr, (2, 3))
    expected = values.astype(np.float64) / 65535.0 * 255.0
    for c in range(3):
        assert np.abs(arr[..., c].astype(np.float64) - expected).max() <= 1.0
    assert arr[..., 0].tolist() == np.floor(expected + 0.5).astype(int).tolist()  # rounded, exactly
    assert arr[0, 0, 0] == 0
    assert arr[0, 2, 0] == 255  # not clipped flat: 65535 -> 255, 32768 -> ~128
    assert abs(int(arr[0, 1, 0]) - 128) <= 1


def test_read_rgb_truncated_jpeg(tmp_path):
    good = tmp_path / "good.jpg"
    _write_jpg(good, _blocks(64, 64))
    path = tmp_path / "truncated.jpg"
    path.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ValueError) as info:
        read_rgb(path)
    assert "truncated.jpg" in str(info.value)


def test_read_rgb_zero_byte_jpeg(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ValueError) as info:
        read_rgb(path)
    assert "empty.jpg" in str(info.value)


def test_read_rgb_text_named_jpeg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not an image\n")
    with pytest.raises(ValueError) as info:
        read_rgb(path)
    assert "notes.jpg" in str(info.value)


def test_read_rgb_missing_file(tmp_path):
    path = tmp_path / "missing_sat.jpg"
    with pytest.raises(FileNotFoundError) as info:
        read_rgb(path)
    assert "missing_sat.jpg" in str(info.value)


# ----------------------------------------------------------------------------------------------------------
# p2 pairs and SegmentationDataset
# ----------------------------------------------------------------------------------------------------------

def test_list_satellite_pairs_sorted(tmp_path):
    for stem in ("0002", "0000", "0001"):
        _write_jpg(tmp_path / (stem + "_sat.jpg"), _blocks(8, 8))
        _write_colour_mask(tmp_path / (stem + "_mask.png"), np.zeros((8, 8), dtype=np.uint8))
    pairs = list_satellite_pairs(tmp_path)
    assert [(a.name, b.name) for a, b in pairs] == [
        ("0000_sat.jpg", "0000_mask.png"), ("0001_sat.jpg", "0001_mask.png"), ("0002_sat.jpg", "0002_mask.png")]


def test_list_satellite_pairs_missing_mask(tmp_path):
    _write_jpg(tmp_path / "0000_sat.jpg", _blocks(8, 8))
    _write_colour_mask(tmp_path / "0000_mask.png", np.zeros((8, 8), dtype=np.uint8))
    _write_jpg(tmp_path / "0001_sat.jpg", _blocks(8, 8))
    with pytest.raises(FileNotFoundError) as info:
        list_satellite_pairs(tmp_path)
    assert "0001_mask.png" in str(info.value)
    with pytest.raises(FileNotFoundError):
        SegmentationDataset(tmp_path)


def test_list_satellite_pairs_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(FileNotFoundError) as info:
        list_satellite_pairs(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "_sat.jpg" in str(info.value)
    with pytest.raises(FileNotFoundError) as info:
        list_satellite_pairs(tmp_path / "does_not_exist")
    assert "does_not_exist" in str(info.value)


def test_segmentation_dataset_size_mismatch(tmp_path):
    image, mask = tmp_path / "0000_sat.jpg", tmp_path / "0000_mask.png"
    _write_jpg(image, _blocks(16, 16))
    _write_colour_mask(mask, np.zeros((16, 8), dtype=np.uint8))
    with pytest.raises(ValueError) as info:
        SegmentationDataset(tmp_path)
    message = str(info.value)
    assert "0000_sat.jpg" in message and "0000_mask.png" in message
    assert "0000_mask.png is 8x16 but its image {} is 16x16".format(image) in message  # width x height of each


def test_segmentation_dataset_valid_pair(tmp_path):
    rng = np.random.default_rng(0)
    h, w = 16, 24
    classes = rng.integers(0, 7, size=(h, w)).astype(np.uint8)
    _write_jpg(tmp_path / "0007_sat.jpg", _blocks(h, w))
    _write_colour_mask(tmp_path / "0007_mask.png", classes)
    ds = SegmentationDataset(tmp_path)
    assert len(ds) == 1
    assert ds.image_id(0) == "0007"
    image, mask = ds[0]
    assert type(image) is torch.Tensor and type(mask) is torch.Tensor  # plain tensors, not tv_tensors
    assert image.dtype == torch.uint8 and image.shape == (3, h, w)
    assert mask.dtype == torch.int64 and mask.shape == (h, w)
    np.testing.assert_array_equal(mask.numpy(), classes.astype(np.int64))
    with Image.open(tmp_path / "0007_sat.jpg") as img:
        decoded = np.asarray(img.convert("RGB"))
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), decoded)


# ----------------------------------------------------------------------------------------------------------
# inference inputs
# ----------------------------------------------------------------------------------------------------------

def test_list_input_images_includes_every_image_beside_the_sat_jpgs(tmp_path, capsys):
    """Before: with *_sat.jpg present, every other image was skipped silently (0102_sat.png got no mask)."""
    for name in ("0001_sat.jpg", "0000_sat.jpg"):
        _write_jpg(tmp_path / name, _blocks(8, 8))
    _write_jpg(tmp_path / "extra.jpg", _blocks(8, 8))
    Image.fromarray(_blocks(8, 8)).save(str(tmp_path / "other.png"))
    Image.new("RGBA", (8, 8), (1, 2, 3, 128)).save(str(tmp_path / "0102_sat.png"))
    _write_jpg(tmp_path / "0103_SAT.JPG", _blocks(8, 8))
    _write_colour_mask(tmp_path / "0000_mask.png", np.zeros((8, 8), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_input_images(tmp_path)] == ["0000_sat.jpg", "0001_sat.jpg", "0102_sat.png",
                                                             "0103_SAT.JPG", "extra.jpg", "other.png"]
    err = capsys.readouterr().err
    assert err == "warning: ignoring 1 file(s) in {} that are not .jpg/.jpeg/.png images: notes.txt\n".format(tmp_path)
    for k in range(6):  # six more: five named, then " ..."
        (tmp_path / "n{}.txt".format(k)).write_text("x")
    assert len(list_input_images(str(tmp_path))) == 6
    assert capsys.readouterr().err == ("warning: ignoring 7 file(s) in {} that are not .jpg/.jpeg/.png images: n0.txt, "
                                       "n1.txt, n2.txt, n3.txt, n4.txt ...\n".format(tmp_path))


def test_list_input_images_without_sat(tmp_path):
    _write_jpg(tmp_path / "b.jpg", _blocks(8, 8))
    _write_jpg(tmp_path / "c.jpeg", _blocks(8, 8))
    Image.fromarray(_blocks(8, 8)).save(str(tmp_path / "a.png"))
    _write_colour_mask(tmp_path / "a_mask.png", np.zeros((8, 8), dtype=np.uint8))
    _write_colour_mask(tmp_path / "b_mask.png", np.zeros((8, 8), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in list_input_images(tmp_path)] == ["a.png", "b.jpg", "c.jpeg"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_only_regular_files_are_read(tmp_path):
    """A FIFO, a folder or a device named like an image or mask: a ValueError naming it, never a blocking read
    (run in a thread so that a regression fails here instead of hanging the suite)."""
    import threading

    os.mkfifo(str(tmp_path / "a_sat.jpg"))
    os.mkfifo(str(tmp_path / "a_mask.png"))
    (tmp_path / "b.png").mkdir()
    os.symlink(os.devnull, str(tmp_path / "c.jpg"))
    cases = [(read_rgb, "a_sat.jpg", "a FIFO"), (read_mask, "a_mask.png", "a FIFO"), (read_rgb, "b.png", "a folder"),
             (read_rgb, "c.jpg", "a character device")]
    outcome = {}

    def run():
        for read, name, _ in cases:
            try:
                read(tmp_path / name)
            except ValueError as exc:
                outcome[name] = str(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "a read blocked"
    for _, name, kind in cases:
        assert name in outcome[name] and kind in outcome[name], outcome
    with pytest.raises(FileNotFoundError, match="image not found: .*nope.jpg"):
        read_rgb(tmp_path / "nope.jpg")


def test_tiny_images_give_no_non_writable_warning(tmp_path, repo_root):
    """Before: a 1x1 image read by PIL made torch warn 'The given NumPy array is not writable' (its transpose was
    contiguous, so no copy was made). In a fresh interpreter, as torch warns once per process."""
    import subprocess
    import sys

    for h, w in ((1, 1), (1, 7), (7, 1), (5, 4)):
        Image.fromarray(np.full((h, w, 3), 90, dtype=np.uint8)).save(str(tmp_path / "{}x{}.png".format(h, w)))
    code = ("import sys, pathlib, numpy as np, torch; from utils.datasets import read_rgb, to_chw_uint8\n"
            "for p in sorted(pathlib.Path(sys.argv[1]).iterdir()):\n"
            "    rgb = read_rgb(p); t = to_chw_uint8(rgb)\n"
            "    assert t.shape == (3,) + rgb.shape[:2] and t.is_contiguous()\n"
            "    assert np.array_equal(t.permute(1, 2, 0).numpy(), rgb)\n")
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code, str(tmp_path)], cwd=str(repo_root),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr[-2000:]


def test_mask_name_for():
    assert mask_name_for(Path("0013_sat.jpg")) == "0013_mask.png"
    assert mask_name_for(Path("/data/test/0104_sat.jpg")) == "0104_mask.png"
    assert mask_name_for(Path("x.png")) == "x_mask.png"
    assert mask_name_for(Path("y.jpeg")) == "y_mask.png"


def test_inference_images_good_and_corrupt(tmp_path):
    good, bad = tmp_path / "good_sat.jpg", tmp_path / "bad_sat.jpg"
    _write_jpg(good, _blocks(16, 8))
    bad.write_bytes(good.read_bytes()[:100])
    ds = InferenceImages([good, bad, tmp_path / "gone_sat.jpg"])
    assert len(ds) == 3

    index, tensor, message = ds[0]
    assert index == 0 and message is None
    assert isinstance(tensor, torch.Tensor)
    assert tensor.dtype == torch.uint8 and tensor.shape == (3, 16, 8)
    assert tensor.is_contiguous()

    index, tensor, message = ds[1]
    assert index == 1 and tensor is None
    assert isinstance(message, str) and "bad_sat.jpg" in message

    index, tensor, message = ds[2]
    assert index == 2 and tensor is None
    assert isinstance(message, str) and "gone_sat.jpg" in message


def test_read_rgb_names_a_damaged_file_and_pils_reason(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"^cannot read image .*bad\.jpg: cannot identify image file"):
        read_rgb(tmp_path / "bad.jpg")


def test_read_rgb_names_the_error_type_when_the_error_has_no_message(tmp_path, monkeypatch):
    from utils import datasets

    (tmp_path / "x.jpg").write_bytes(b"whatever")

    def silent_failure(*args, **kwargs):
        raise OSError()

    monkeypatch.setattr(datasets.Image, "open", silent_failure)
    with pytest.raises(ValueError, match=r"^cannot read image .*x\.jpg: OSError$"):
        read_rgb(tmp_path / "x.jpg")


def test_unusable_items_are_counted_and_the_first_five_named_on_stderr_or_in_the_error(capsys):
    from utils.datasets import verify_items

    def check(i):
        if i % 4:
            raise ValueError("item {} is broken".format(i))

    items = list(range(9))  # 1, 2, 3, 5, 6, 7 are broken: six of nine
    listing = "item 1 is broken; item 2 is broken; item 3 is broken; item 5 is broken; item 6 is broken (and 1 more)"
    assert verify_items(items, check, "things", strict=False, workers=3) == [0, 4, 8]
    out = capsys.readouterr()
    assert out.out == "" and out.err == ("warning: skipping 6 of 9 things that cannot be used (--strict makes this an "
                                         "error): {}\n".format(listing))
    with pytest.raises(ValueError, match=r"^6 of 9 things cannot be used: {}$".format(listing.replace("(", r"\(")
                                                                                      .replace(")", r"\)"))):
        verify_items(items, check, "things", strict=True)
    assert verify_items(items[:6:4], check, "things", strict=False) == [0, 1]  # five or fewer: no "more"
    with pytest.raises(ValueError, match=r"^2 of 2 things cannot be used: item 1 is broken; item 2 is broken$"):
        verify_items([1, 2], check, "things", strict=False)  # none usable: an error even without --strict
    assert capsys.readouterr().err == ""


def test_two_images_that_would_write_one_mask_are_named_together():
    from p2_inference import mask_names_for

    with pytest.raises(ValueError, match=r"^2 mask name\(s\) would be written by more than one image of d: a_mask\.png "
                                         r"\(a\.jpg, a_sat\.png\); b_mask\.png \(b\.jpg, b\.png\); rename"):
        mask_names_for([Path("d/a.jpg"), Path("d/a_sat.png"), Path("d/b.jpg"), Path("d/b.png"), Path("d/c.jpg")])
    assert mask_names_for([Path("d/0001_sat.jpg"), Path("d/x.png")]) == ["0001_mask.png", "x_mask.png"]


# ------------------------------------------------------------------------------------------- image csvs
def test_image_csv_rows_labels_lines_and_odd_headers(tmp_path, capsys):
    """The course's csv (id,filename,label) in any header spelling; 'None', 'nan', '-1' and empty are unlabeled (the
    hidden test csv); each row keeps its physical line for the messages; all-empty rows are no rows."""
    from utils.datasets import read_image_csv

    path = tmp_path / "val.csv"
    path.write_text("\ufeff ID , FileName ,Label\n0,a.jpg,3\n\n1,sub/b.jpg,None\n,,\n2,c.jpg,nan\n3,d.jpg,-1\n"
                    "4,e.jpg,\n5,f.jpg,4.0\n")
    rows = read_image_csv(path, num_classes=5)
    assert [(r.row, r.id, r.filename, r.label, r.line) for r in rows] == [
        (0, "0", "a.jpg", 3, 2), (1, "1", "b.jpg", None, 4), (2, "2", "c.jpg", None, 6), (3, "3", "d.jpg", None, 7),
        (4, "4", "e.jpg", None, 8), (5, "5", "f.jpg", 4, 9)]
    assert capsys.readouterr().err == ""
    path.write_text("filename,label\na.jpg,NONE\nb.jpg,NaN\n")  # any case
    assert [(r.id, r.label) for r in read_image_csv(path)] == [("0", None), ("1", None)]


def test_image_csv_bad_labels_and_empty_filenames_are_named_by_line(tmp_path, capsys):
    from utils.datasets import read_image_csv

    path = tmp_path / "train.csv"
    path.write_text("id,filename,label\n0,a.jpg,1\n1,b.jpg,cat\n2,c.jpg,9\n")
    with pytest.raises(ValueError, match=r"^csv {} line 3: label 'cat' is not an integer$".format(path)):
        read_image_csv(path, num_classes=5)
    rows = read_image_csv(path, num_classes=5, bad_labels="warn")  # inference: predicted, not scored
    assert [r.label for r in rows] == [1, None, None]
    assert capsys.readouterr().err == ("warning: csv {}: 2 row(s) without a usable label are predicted but not scored: "
                                       "line 3: label 'cat' is not an integer; line 4: label 9 outside 0..4\n"
                                       .format(path))
    path.write_text("id,filename,label\n0,a.jpg,1\n1,,2\n")
    with pytest.raises(ValueError, match=r"^csv {} line 3: empty filename$".format(path)):
        read_image_csv(path)
    path.write_text("")
    with pytest.raises(ValueError, match=r"^csv {} is empty$".format(path)):
        read_image_csv(path)
    # (Latin-1 files and duplicate ids or filenames: test_reliability.py)


def test_csv_images_need_labels_for_training_and_give_image_label_pairs(tmp_path, capsys):
    from utils.datasets import CsvImages, to_chw_uint8

    _write_jpg(tmp_path / "a.jpg", _blocks(8, 8))
    _write_jpg(tmp_path / "b.jpg", _blocks(8, 8))
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("id,filename,label\n0,a.jpg,2\n1,b.jpg,\n")
    with pytest.raises(ValueError, match=r"has rows without a label \(lines \[3\]\); training and probing need"):
        CsvImages(csv_path, tmp_path)
    ds = CsvImages(csv_path, tmp_path, transform=lambda x: x.float() / 255, require_labels=False)
    assert ds.labels == [2, -1] and len(ds) == 2
    image, label = ds[0]
    assert label == 2 and image.dtype == torch.float32 and image.shape == (3, 8, 8)
    assert torch.equal(image, to_chw_uint8(read_rgb(tmp_path / "a.jpg")).float() / 255)
    assert ds[1][1] == -1
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")  # by default an unreadable image is skipped, and named
    ds = CsvImages(csv_path, tmp_path, require_labels=False)
    assert ds.labels == [2] and "b.jpg" in capsys.readouterr().err
    with pytest.raises(ValueError, match="b.jpg"):
        CsvImages(csv_path, tmp_path, require_labels=False, strict=True)


def test_unlabeled_images_apply_the_transform_when_given(tmp_path):
    from utils.datasets import UnlabeledImages

    _write_jpg(tmp_path / "b.jpg", _blocks(8, 8))
    _write_jpg(tmp_path / "a.jpg", _blocks(8, 8))
    (tmp_path / "notes.txt").write_text("x")
    raw = UnlabeledImages(tmp_path)
    assert [p.name for p in raw.files] == ["a.jpg", "b.jpg"] and raw[0].dtype == torch.uint8
    assert torch.equal(UnlabeledImages(tmp_path, transform=lambda x: x[:1])[0], raw[0][:1])


def test_a_missing_folder_is_named():
    from utils.datasets import list_images

    with pytest.raises(FileNotFoundError, match=r"^input folder not found: nowhere/p2$"):
        list_input_images("nowhere/p2")
    with pytest.raises(FileNotFoundError, match=r"^image folder not found: nowhere/mini$"):
        list_images("nowhere/mini")


def test_a_csv_filename_with_a_folder_is_looked_up_there_never_at_the_top_level(tmp_path):
    """`sub/dir/0_5.jpg` means that file under the image folder: missing there, it is a missing file named as
    written, even when a top-level 0_5.jpg exists; found there, it is read (the output keeps the bare name)."""
    from utils.datasets import CsvImages, read_image_csv

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(str(images / "0_5.jpg"))
    csv_path = tmp_path / "a.csv"
    csv_path.write_text("id,filename,label\n0,sub/dir/0_5.jpg,5\n")
    (row,) = read_image_csv(csv_path)
    assert (row.path, row.filename) == ("sub/dir/0_5.jpg", "0_5.jpg")
    with pytest.raises(FileNotFoundError, match="sub/dir/0_5.jpg"):
        CsvImages(csv_path, images, num_classes=65)
    (images / "sub" / "dir").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 100, 0)).save(str(images / "sub" / "dir" / "0_5.jpg"))
    image, label = CsvImages(csv_path, images, num_classes=65)[0]
    assert label == 5 and image[0, 0, 0].item() > 150  # the file in sub/dir, not the top-level one


@pytest.mark.parametrize("header", ["id,filename,filename,label", "id, FileName ,filename,label"])
def test_a_csv_with_two_filename_columns_is_a_one_line_error_naming_it(tmp_path, header):
    from utils.datasets import read_image_csv

    csv_path = tmp_path / "two.csv"
    csv_path.write_text(header + "\n0,a.jpg,b.jpg,1\n")
    with pytest.raises(ValueError) as info:
        read_image_csv(csv_path)
    message = str(info.value)
    assert str(csv_path) in message and "2 'filename' columns" in message and "\n" not in message


@pytest.mark.parametrize("name", ["/abs/0_5.jpg", "../0_5.jpg", "sub/../../0_5.jpg"])
def test_a_csv_filename_outside_the_image_folder_is_refused_naming_file_and_line(tmp_path, name):
    from utils.datasets import read_image_csv

    csv_path = tmp_path / "a.csv"
    csv_path.write_text("id,filename,label\n0,{},1\n".format(name))
    with pytest.raises(ValueError, match="line 2: filename .* must be a path inside the image folder"):
        read_image_csv(csv_path)
