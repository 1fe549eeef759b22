"""The grading path: hw1_2.sh / p2_inference.py against the grader's contract."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import p2_unet
from utils.masks import PALETTE
from helpers import run_main


@pytest.fixture(scope="module")
def trained(toy_p2, tmp_path_factory):
    """A U-Net trained 3 epochs on the toy data, and its trainer-reported val mIoU."""
    out = tmp_path_factory.mktemp("p2train")
    result = run_main(p2_unet, ["--data-dir", str(toy_p2), "--output-dir", str(out), "--epochs", "3", "--batch-size", "4",
                          "--crop-size", "64", "--base-width", "8", "--depth", "3", "--workers", "0", "--lr", "3e-3",
                          "--snapshot-epochs", "--deterministic"])
    return out / "checkpoint.pth", result


@pytest.fixture(scope="module")
def random_unet(tmp_path_factory):
    """A tiny random-weight U-Net checkpoint (no training): for tests of the files written, not of the masks."""
    from utils.checkpoint import make_checkpoint, save_atomic
    from utils.models import build_seg_model
    from utils.predict import SEG_KIND

    config = {"arch": "unet", "num_classes": 7, "base_width": 4, "depth": 2, "drop_skip": [], "bilinear": False}
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("random_unet") / "unet.pth"
    save_atomic(make_checkpoint(SEG_KIND, config, build_seg_model(config).state_dict(), None), path)
    return path


def _sat_folder(toy_p2, folder, count=3):
    """``count`` of the toy validation images (64x64 *_sat.jpg) copied into a new ``folder``."""
    folder.mkdir(parents=True)
    for path in sorted((toy_p2 / "validation").glob("*_sat.jpg"))[:count]:
        shutil.copy(str(path), str(folder / path.name))
    return folder


def _hw1_2(repo_root, in_dir, out_dir, checkpoint, cwd=None, timeout=300):
    env = dict(os.environ, HW1_P2_CHECKPOINT=str(checkpoint), TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    return subprocess.run(["bash", str(repo_root / "hw1_2.sh"), str(in_dir), str(out_dir)],
                          cwd=str(cwd or repo_root), env=env, capture_output=True, text=True, timeout=timeout)


def _palette_only(path: Path) -> bool:
    arr = np.asarray(Image.open(path))
    colours = {tuple(c) for c in arr.reshape(-1, 3)}
    return colours <= {tuple(c) for c in PALETTE} and (255, 0, 0) not in colours


def test_hw1_2_masks_score_as_the_trainer_reports(toy_p2, trained, tmp_path, repo_root):
    checkpoint, result = trained
    in_dir = tmp_path / "sat"
    in_dir.mkdir()
    for path in sorted((toy_p2 / "validation").glob("*_sat.jpg")):
        shutil.copy(str(path), str(in_dir / path.name))
    out_dir = tmp_path / "nested" / "masks"  # created by the script itself
    proc = _hw1_2(repo_root, in_dir, out_dir, checkpoint)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == sorted(p.name.replace("_sat.jpg", "_mask.png") for p in in_dir.iterdir())
    for path in out_dir.iterdir():
        img = Image.open(path)
        assert img.mode == "RGB" and img.size == (64, 64)
        assert _palette_only(path)
    # the grader's mIoU of the written masks equals the trainer's validation mIoU for the same weights
    score = subprocess.run([sys.executable, "-m", "utils.metrics", "-g", str(toy_p2 / "validation"),
                            "-p", str(out_dir), "--json"], cwd=str(repo_root), capture_output=True, text=True)
    assert score.returncode == 0, score.stderr
    import json

    graded = json.loads(score.stdout)
    assert graded["miou"] == pytest.approx(result["last_miou"], abs=1e-9)


def test_mixed_sizes_modes_and_a_corrupt_file(trained, tmp_path, repo_root):
    checkpoint, _ = trained
    in_dir = tmp_path / "mixed"
    in_dir.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(str(in_dir / "a_rgb.jpg"))
    Image.fromarray(rng.integers(0, 255, (50, 70), dtype=np.uint8)).save(str(in_dir / "b_gray.png"))
    Image.fromarray(rng.integers(0, 255, (33, 47, 4), dtype=np.uint8), "RGBA").save(str(in_dir / "c_rgba.png"))
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).convert("P").save(str(in_dir / "d_pal.png"))
    Image.fromarray(rng.integers(0, 255, (130, 100, 3), dtype=np.uint8)).save(str(in_dir / "e_big.jpg"))
    (in_dir / "f_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    out_dir = tmp_path / "out"
    proc = _hw1_2(repo_root, in_dir, out_dir, checkpoint)
    assert proc.returncode != 0
    assert "f_corrupt.jpg" in proc.stderr
    expected = {"a_rgb_mask.png": (64, 64), "b_gray_mask.png": (70, 50), "c_rgba_mask.png": (47, 33),
                "d_pal_mask.png": (64, 64), "e_big_mask.png": (100, 130)}
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(expected)
    for name, size in expected.items():
        img = Image.open(out_dir / name)
        assert img.mode == "RGB" and img.size == size, name
        assert _palette_only(out_dir / name)


def test_clear_errors(tmp_path, repo_root, trained):
    checkpoint, _ = trained
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _hw1_2(repo_root, empty, tmp_path / "o1", checkpoint)
    assert proc.returncode != 0 and "error: no images (*_sat.jpg, .jpg, .png) in {}".format(empty) in proc.stderr
    bad_ckpt = tmp_path / "bad.pth"
    bad_ckpt.write_bytes(os.urandom(1000))
    Image.new("RGB", (32, 32)).save(str(empty / "x_sat.jpg"))
    proc = _hw1_2(repo_root, empty, tmp_path / "o2", bad_ckpt)
    assert proc.returncode != 0 and "bad.pth" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_symlink_in_the_output_folder_is_replaced_not_written_through(toy_p2, random_unet, tmp_path, repo_root):
    """Before: an output folder holding 0000_mask.png -> ../input/0000_sat.jpg made hw1_2.sh overwrite the input
    image with a mask. Now every mask is written to a temp file in the output folder and renamed over its name."""
    in_dir = _sat_folder(toy_p2, tmp_path / "input", count=2)
    before = {p.name: p.read_bytes() for p in in_dir.iterdir()}
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    os.symlink(os.path.join("..", "input", "0000_sat.jpg"), str(out_dir / "0000_mask.png"))
    proc = _hw1_2(repo_root, in_dir, out_dir, random_unet)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in in_dir.iterdir()} == before  # the input image is untouched
    assert sorted(p.name for p in out_dir.iterdir()) == ["0000_mask.png", "0001_mask.png"]
    mask = out_dir / "0000_mask.png"
    assert not mask.is_symlink() and Image.open(mask).mode == "RGB" and Image.open(mask).size == (64, 64)


def test_an_output_folder_holding_pngs_this_run_does_not_write_is_refused_before_any_work(toy_p2, random_unet,
                                                                                           tmp_path, repo_root):
    """Before: an output folder holding a stale 9999_mask.png (a run on other images) got the new masks beside it,
    exit 0, no word: the grader pairs every .png of the folder by sorted name, so every mask was misaligned. Now
    such PNGs are an error naming them before any work (exit 2, nothing written or deleted); other files are
    named in a warning; a temp file an earlier killed run left (.0000_mask.png.XXXX.tmp, ours) is removed."""
    in_dir = _sat_folder(toy_p2, tmp_path / "input", count=2)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "9999_mask.png").write_bytes(b"stale")
    (out_dir / "notes.txt").write_text("mine")
    (out_dir / ".0000_mask.png.abc123.tmp").write_bytes(b"half a mask")
    proc = _hw1_2(repo_root, in_dir, out_dir, random_unet)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: the output folder {} holds 1 .png file(s) this run does not write: "
                                  "9999_mask.png;".format(out_dir)), proc.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == [".0000_mask.png.abc123.tmp", "9999_mask.png", "notes.txt"]
    (out_dir / "9999_mask.png").unlink()
    proc = _hw1_2(repo_root, in_dir, out_dir, random_unet)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "warning: " in proc.stderr and "notes.txt" in proc.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["0000_mask.png", "0001_mask.png", "notes.txt"]
    proc = _hw1_2(repo_root, in_dir, out_dir, random_unet)  # a rerun into its own masks: no complaint about them
    assert proc.returncode == 0 and "mask.png" not in proc.stderr, proc.stderr[-2000:]


def test_every_image_gets_a_mask_a_png_beside_the_sat_jpgs_too(toy_p2, random_unet, tmp_path, repo_root):
    """Before: a folder of *_sat.jpg files and one 0102_sat.png (RGBA) got no mask for the PNG, exit 0."""
    in_dir = _sat_folder(toy_p2, tmp_path / "input", count=2)
    Image.new("RGBA", (40, 30), (10, 200, 30, 128)).save(str(in_dir / "0102_sat.png"))
    out_dir = tmp_path / "out"
    proc = _hw1_2(repo_root, in_dir, out_dir, random_unet)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in out_dir.iterdir()) == ["0000_mask.png", "0001_mask.png", "0102_mask.png"]
    mask = Image.open(out_dir / "0102_mask.png")
    assert mask.mode == "RGB" and mask.size == (40, 30) and _palette_only(out_dir / "0102_mask.png")


def test_images_that_would_write_one_mask_are_an_error_before_any_work(tmp_path, repo_root):
    """Before: a.jpg, a.png and a.jpeg all wrote a_mask.png (the last one won). Now: exit 2 naming the clash,
    before the checkpoint is read (here it does not even exist) and before the output folder is created."""
    in_dir = tmp_path / "input"
    in_dir.mkdir()
    for name in ("a.jpg", "a.png", "a.jpeg", "0001_sat.jpg", "0001.png", "b.jpg"):
        Image.new("RGB", (8, 8)).save(str(in_dir / name))
    out_dir = tmp_path / "out"
    proc = _hw1_2(repo_root, in_dir, out_dir, tmp_path / "no_such.pth")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: 2 mask name(s) would be written by more than one image")
    assert "a_mask.png (a.jpeg, a.jpg, a.png)" in proc.stderr and "0001_mask.png (0001.png, 0001_sat.jpg)" \
        in proc.stderr
    assert "Traceback" not in proc.stderr and not out_dir.exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_device_or_folder_named_like_an_image_is_an_error_naming_it(toy_p2, random_unet, tmp_path,
                                                                          repo_root):
    """Before: a FIFO named 0001_sat.jpg hung hw1_2.sh forever (a folder named like an image was skipped silently
    when no *_sat.jpg was there). Now each is an error naming it, the other images get masks, exit 1."""
    in_dir = _sat_folder(toy_p2, tmp_path / "input", count=3)
    (in_dir / "0001_sat.jpg").unlink()
    os.mkfifo(str(in_dir / "0001_sat.jpg"))
    (in_dir / "0003_sat.jpg").mkdir()
    os.symlink(os.devnull, str(in_dir / "0004_sat.jpg"))
    out_dir = tmp_path / "out"
    proc = _hw1_2(repo_root, in_dir, out_dir, random_unet, timeout=60)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    for name, kind in (("0001_sat.jpg", "a FIFO"), ("0003_sat.jpg", "a folder"), ("0004_sat.jpg", "a character")):
        assert any(name in line and kind in line for line in errors), (name, proc.stderr)
    assert sorted(p.name for p in out_dir.iterdir()) == ["0000_mask.png", "0002_mask.png"]


def test_write_mask_bytes_are_those_of_a_plain_png_save(tmp_path):
    """Atomic writing changes where the bytes go, not the bytes: a mask equals PIL's PNG of its colours."""
    from utils.masks import class_to_rgb, write_mask

    classes = np.random.default_rng(0).integers(0, 7, (37, 53)).astype(np.uint8)
    write_mask(tmp_path / "a_mask.png", classes)
    Image.fromarray(class_to_rgb(classes)).save(str(tmp_path / "plain.png"), format="PNG")
    assert (tmp_path / "a_mask.png").read_bytes() == (tmp_path / "plain.png").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_mask.png", "plain.png"]  # no temp file left


@pytest.mark.parametrize("argv", [["IN"], [], ["IN", "OUT", "extra"], ["", "OUT"]])
def test_hw1_2_checks_its_arguments(tmp_path, repo_root, argv):
    """Before: `bash hw1_2.sh DIR` (no output folder) wrote masks into the repository root, exit 0."""
    Image.new("RGB", (8, 8)).save(str(tmp_path / "0000_sat.jpg"))
    argv = [str(tmp_path) if a == "IN" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    before = sorted(os.listdir(str(repo_root)))
    proc = subprocess.run(["bash", str(repo_root / "hw1_2.sh")] + argv, cwd=str(repo_root), capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("usage: bash hw1_2.sh <folder of xxxx_sat.jpg> "), \
        proc.stderr
    assert sorted(os.listdir(str(repo_root))) == before and sorted(os.listdir(str(tmp_path))) == ["0000_sat.jpg"]


def test_hw1_2_runs_from_any_folder(toy_p2, random_unet, tmp_path, repo_root):
    """The code and the default checkpoint are found beside the script; relative arguments follow the caller."""
    work = tmp_path / "elsewhere"
    _sat_folder(toy_p2, work / "input", count=1)
    proc = _hw1_2(repo_root, "input", "masks", random_unet, cwd=work)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [p.name for p in (work / "masks").iterdir()] == ["0000_mask.png"]
    if (repo_root / "checkpoints" / "p2_best.pth").exists():
        return
    env = {k: v for k, v in os.environ.items() if k != "HW1_P2_CHECKPOINT"}
    proc = subprocess.run(["bash", str(repo_root / "hw1_2.sh"), "input", "masks2"], cwd=str(work), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and str(repo_root / "checkpoints" / "p2_best.pth") in proc.stderr, proc.stderr


def test_hw1_2_obeys_the_script_rules(repo_root):
    text = (repo_root / "hw1_2.sh").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.strip().startswith("#"))
    for word in ("rm", "cp", "mv", "mkdir", "cd", "pip", "sudo", "CUDA_VISIBLE_DEVICES"):
        assert not any(tok == word for tok in code.replace('"', " ").split()), word
    assert "python3" in code


# ------------------------------------------------------------------------ TTA and checkpoint ensembles
class _TinySegmenter(torch.nn.Module):
    """A position-dependent stand-in model (any input size): a 3x3 conv, so flips and scales change its output."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 7, 3, padding=1)

    def forward(self, x):
        return {"out": self.conv(x) * 3.0}


def _reference_probs(model, images, scales, flip):
    """Multi-scale (+ flip) probabilities written out directly with F.interpolate, for comparison."""
    import torch.nn.functional as F

    from utils.transforms import normalize

    h, w = images.shape[-2:]
    x = normalize(images)
    views = []
    for s in scales:
        size = (int(h * s + 0.5), int(w * s + 0.5))
        xs = x if size == (h, w) else F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                                                     antialias=s < 1)
        for flipped in ([False, True] if flip else [False]):
            p = model(xs.flip(-1) if flipped else xs)["out"].softmax(1)
            p = p.flip(-1) if flipped else p
            if size != (h, w):
                p = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False, antialias=s > 1)
            views.append(p)
    return torch.stack(views).mean(0)


@pytest.mark.parametrize("flip", [False, True])
def test_multiscale_output_is_the_average_of_the_per_scale_outputs(flip):
    from utils.predict import predict_probs

    model = _TinySegmenter().eval()
    config = {"arch": "deeplabv3"}  # input multiple 1: no padding
    images = torch.randint(0, 256, (2, 3, 30, 42), dtype=torch.uint8)
    scales = (0.75, 1.0, 1.25)
    probs = predict_probs(model, images, config, tta=flip, scales=scales)
    assert probs.shape == (2, 7, 30, 42)
    with torch.no_grad():
        expected = _reference_probs(model, images, scales, flip)
    assert torch.allclose(probs, expected, atol=1e-6)
    per_scale = torch.stack([predict_probs(model, images, config, tta=flip, scales=(s,)) for s in scales]).mean(0)
    assert torch.allclose(probs, per_scale, atol=1e-6)
    assert torch.allclose(probs.sum(1), torch.ones(2, 30, 42), atol=1e-5)
    # the views really differ: averaging is not a no-op
    assert not torch.allclose(per_scale, predict_probs(model, images, config, tta=flip), atol=1e-3)


@pytest.mark.parametrize("scales", [(1.0,), (0.75, 1.0)])
def test_flip_tta_is_undone_before_averaging(scales):
    """With flip TTA the prediction is flip-equivariant: an image's probabilities are the flipped probabilities of
    its mirror image, although the model itself is not (checked first)."""
    from utils.predict import predict_probs

    model = _TinySegmenter().eval()
    config = {"arch": "deeplabv3"}  # input multiple 1: no padding, which would break the symmetry
    images = torch.randint(0, 256, (2, 3, 20, 28), dtype=torch.uint8)
    mirror = images.flip(-1)
    plain = predict_probs(model, images, config, scales=scales)
    assert not torch.allclose(plain, predict_probs(model, mirror, config, scales=scales).flip(-1), atol=1e-2)
    probs = predict_probs(model, images, config, tta=True, scales=scales)
    assert torch.allclose(probs, predict_probs(model, mirror, config, tta=True, scales=scales).flip(-1), atol=1e-6)


def test_ensemble_averages_members_and_plain_tta_flag_is_flip():
    import p2_inference
    from p2_inference import predict_ensemble
    from utils.predict import predict_probs

    a, b = _TinySegmenter().eval(), _TinySegmenter().eval()
    torch.nn.init.normal_(b.conv.weight)
    images = torch.randint(0, 256, (1, 3, 16, 24), dtype=torch.uint8)
    unet = {"arch": "unet", "depth": 3}  # b is treated as a U-Net: padded to multiples of 8, cropped back
    mean = predict_ensemble([(a, {"arch": "fcn32s"}), (b, unet)], images, tta=True, scales=(1.0, 0.5))
    each = [predict_probs(a, images, {"arch": "fcn32s"}, tta=True, scales=(1.0, 0.5)),
            predict_probs(b, images, unet, tta=True, scales=(1.0, 0.5))]
    assert torch.allclose(mean, (each[0] + each[1]) / 2, atol=1e-7)
    parse = p2_inference.get_args_parser().parse_args
    base = ["--input-dir", "x", "--output-dir", "y"]
    assert parse(base).tta == () and parse(base + ["--tta"]).tta == ("flip",)
    assert parse(base + ["--tta", "scale,flip"]).tta == ("flip", "scale")
    assert parse(base + ["--checkpoint", "a.pth", "b.pth"]).checkpoint == [Path("a.pth"), Path("b.pth")]
    with pytest.raises(SystemExit):
        parse(base + ["--tta", "rotate"])


def test_tta_flip_scale_with_two_checkpoints_writes_contract_valid_masks(toy_p2, trained, tmp_path, repo_root):
    """`p2_inference.py --tta flip,scale --checkpoint A.pth B.pth`: a classic U-Net and a ResNet U-Net (different
    input multiples, 8 and 32) averaged over 6 views each; masks RGB, input size, palette only, never red."""
    from utils.checkpoint import make_checkpoint, save_atomic
    from utils.models import build_seg_model
    from utils.predict import SEG_KIND

    checkpoint_a, _ = trained
    config = {"arch": "unet", "num_classes": 7, "encoder": "resnet18", "drop_skip": [1], "backbone_weights": "none"}
    torch.manual_seed(0)
    checkpoint_b = tmp_path / "b.pth"
    save_atomic(make_checkpoint(SEG_KIND, config, build_seg_model(config).state_dict()), checkpoint_b)
    in_dir = tmp_path / "sat"
    in_dir.mkdir()
    for path in sorted((toy_p2 / "validation").glob("*_sat.jpg"))[:3]:
        shutil.copy(str(path), str(in_dir / path.name))
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(str(in_dir / "0099_sat.jpg"))
    out_dir = tmp_path / "masks"
    proc = subprocess.run([sys.executable, "p2_inference.py", "--input-dir", str(in_dir), "--output-dir",
                           str(out_dir), "--tta", "flip,scale", "--checkpoint", str(checkpoint_a), str(checkpoint_b),
                           "--workers", "0"], cwd=str(repo_root), capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TQDM_DISABLE="1"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name.replace("_sat.jpg", "_mask.png")
                                                               for p in in_dir.iterdir())
    for path in out_dir.iterdir():
        img = Image.open(path)
        assert img.mode == "RGB" and path.name.endswith("_mask.png")
        assert img.size == ((70, 50) if path.name == "0099_mask.png" else (64, 64))
        assert _palette_only(path)
    # the masks are the ensemble's mean over both flips and the three default scales, computed here directly
    from utils.datasets import read_rgb, to_chw_uint8
    from utils.masks import read_mask
    from p2_inference import predict_ensemble
    from utils.predict import load_segmenter

    cpu = torch.device("cpu")
    members = [(m, c["model_config"]) for m, c in (load_segmenter(p, cpu) for p in (checkpoint_a, checkpoint_b))]
    plain_differs = False
    for image_path in sorted(in_dir.iterdir()):
        image = to_chw_uint8(read_rgb(image_path))[None]
        expected = predict_ensemble(members, image, tta=True, scales=(0.75, 1.0, 1.25)).argmax(1)[0].numpy()
        written = read_mask(out_dir / image_path.name.replace("_sat.jpg", "_mask.png"))
        assert (written == expected).all(), image_path.name
        plain_differs |= bool((predict_ensemble(members, image).argmax(1)[0].numpy() != expected).any())
    assert plain_differs  # (so the check above tells the augmented prediction from the plain one)


# ------------------------------------------------------------------------ failures while writing
def _disk_fills_after(monkeypatch, good_writes):
    """Make PIL's save write half of its bytes and raise ENOSPC from the (good_writes + 1)-th call on."""
    import errno
    import io
    import threading

    real_save, lock, calls = Image.Image.save, threading.Lock(), []

    def save(self, fp, format=None, **params):
        with lock:
            calls.append(1)
            count = len(calls)
        if count <= good_writes:
            return real_save(self, fp, format, **params)
        buffer = io.BytesIO()
        real_save(self, buffer, format, **params)
        fp.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Image.Image, "save", save)


def test_a_full_disk_keeps_every_earlier_mask_and_names_the_file(toy_p2, random_unet, tmp_path, monkeypatch, capsys):
    """Before: a full disk during hw1_2.sh left zero-byte masks (earlier good ones truncated too) and an error
    naming no file. Now: masks already there are kept whole, no temp file stays, the error names the mask, exit 2."""
    import p2_inference
    from utils.cli import run_cli

    in_dir = _sat_folder(toy_p2, tmp_path / "input", count=4)
    out_dir = tmp_path / "out"
    argv = ["--input-dir", str(in_dir), "--output-dir", str(out_dir), "--checkpoint", str(random_unet),
            "--device", "cpu", "--workers", "0", "--batch-size", "2"]
    run_main(p2_inference, argv)
    good = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    assert len(good) == 4
    fresh = tmp_path / "fresh"
    for folder in (out_dir, fresh):  # the same run again over the good masks, and into an empty folder
        _disk_fills_after(monkeypatch, good_writes=2)
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            run_cli(p2_inference.main, p2_inference.get_args_parser(),
                    argv[:2] + ["--output-dir", str(folder)] + argv[4:])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert "No space left on device" in err and str(folder / "00") in err and "_mask.png" in err, err
        monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == good  # nothing truncated, no temp file
    written = sorted(fresh.iterdir())
    assert len(written) == 2 and all(p.read_bytes() == good[p.name] for p in written)


# ------------------------------------------------------------------------ large images: tiles
def test_tile_starts_cover_the_length_with_the_overlap():
    from p2_inference import tile_starts

    assert tile_starts(500, 1024, 128) == [0] and tile_starts(1024, 1024, 128) == [0]
    for length, tile, overlap in [(6000, 1024, 128), (1025, 1024, 128), (2048, 1024, 0), (777, 100, 99), (65, 64, 0)]:
        starts = tile_starts(length, tile, overlap)
        assert starts[0] == 0 and starts[-1] + tile == length and starts == sorted(set(starts))
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))  # neighbours share >= overlap
        assert len(starts) == max(1, -(-(length - tile) // (tile - overlap)) + 1)  # the fewest that do
    with pytest.raises(ValueError, match=r"^tile overlap must lie in 0\.\.99 for tiles of 100, got 100$"):
        tile_starts(300, 100, 100)


@pytest.mark.parametrize("config", [{"arch": "deeplabv3"}, {"arch": "unet", "depth": 3}])
def test_tiled_prediction_averages_the_windows_and_one_window_is_the_whole_image(config):
    """A tile >= the image is exactly the whole-image prediction; smaller tiles give the input's size and equal a
    direct computation (every window's probabilities summed into a full-size array, divided by the window count)."""
    from p2_inference import predict_ensemble, predict_tiled, tile_starts

    members = [(_TinySegmenter().eval(), config)]
    torch.manual_seed(1)
    image = torch.randint(0, 256, (1, 3, 45, 70), dtype=torch.uint8)
    whole = predict_ensemble(members, image, tta=True).argmax(1)[0].to(torch.uint8)
    assert torch.equal(predict_tiled(members, image, None, True, (1.0,), tile=70, overlap=8), whole)
    assert torch.equal(predict_tiled(members, image, None, True, (1.0,), tile=500, overlap=8), whole)
    tiled = predict_tiled(members, image, None, True, (1.0,), tile=24, overlap=6)
    assert tiled.shape == (45, 70) and tiled.dtype == torch.uint8
    total, count = torch.zeros(7, 45, 70), torch.zeros(45, 70)
    for y in tile_starts(45, 24, 6):
        for x in tile_starts(70, 24, 6):
            total[:, y:y + 24, x:x + 24] += predict_ensemble(members, image[..., y:y + 24, x:x + 24], tta=True)[0]
            count[y:y + 24, x:x + 24] += 1
    assert count.min() >= 1 and count.max() > 1
    assert torch.equal(tiled, (total / count).argmax(0).to(torch.uint8))
    assert (tiled != whole).any()  # windows see less context: the check above is not the whole-image one
    with pytest.raises(ValueError, match=r"^predict_tiled takes one image \(1, 3, H, W\), got shape \(3, 45, 70\)$"):
        predict_tiled(members, image[0], None, True, (1.0,), tile=24, overlap=6)


def test_p2_inference_tiles_large_images_to_their_exact_size(toy_p2, random_unet, tmp_path):
    """Before: every image went through the model whole (6000x6000: 10 GB). Now an image with a side over
    --tile-threshold is predicted in tiles; the mask has the input's exact size; a tile >= the image writes the
    same bytes as whole-image prediction, and images under the threshold are untouched by the flags."""
    import p2_inference

    in_dir = _sat_folder(toy_p2, tmp_path / "input", count=2)  # 64x64, under every threshold below
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 255, (90, 150, 3), dtype=np.uint8)).save(str(in_dir / "0009_sat.jpg"))
    base = ["--input-dir", in_dir, "--checkpoint", random_unet, "--device", "cpu", "--workers", "0"]
    outputs = {}
    for name, flags in (("whole", []), ("one_tile", ["--tile-threshold", "100", "--tile-size", "150"]),
                        ("tiles", ["--tile-threshold", "100", "--tile-size", "48", "--tile-overlap", "12"])):
        run_main(p2_inference, base + ["--output-dir", tmp_path / name] + flags)
        outputs[name] = {p.name: p.read_bytes() for p in (tmp_path / name).iterdir()}
    assert sorted(outputs["tiles"]) == ["0000_mask.png", "0001_mask.png", "0009_mask.png"]
    mask = Image.open(tmp_path / "tiles" / "0009_mask.png")
    assert mask.mode == "RGB" and mask.size == (150, 90) and _palette_only(tmp_path / "tiles" / "0009_mask.png")
    assert outputs["one_tile"] == outputs["whole"]
    assert outputs["tiles"]["0000_mask.png"] == outputs["whole"]["0000_mask.png"]
    assert outputs["tiles"]["0009_mask.png"] != outputs["whole"]["0009_mask.png"]  # the tiled path really ran
    with pytest.raises(SystemExit, match="--tile-overlap"):
        run_main(p2_inference, base + ["--output-dir", tmp_path / "bad", "--tile-size", "64", "--tile-overlap", "64"])


def test_tiled_prediction_holds_one_band_of_window_rows_at_a_time(monkeypatch):
    """Memory stays that of one band: before each window, the summed probabilities held cover at most ``tile`` rows
    (rows no later window reaches are finished into the class map at once). A tall image, 10 window rows."""
    import sys

    import p2_inference

    held = []

    def fake_ensemble(members, crop, *args):
        count = sys._getframe(1).f_locals["count"]  # predict_tiled's rows in hand
        held.append(0 if count is None else count.shape[0])
        return torch.rand(1, 7, *crop.shape[-2:])

    monkeypatch.setattr(p2_inference, "predict_ensemble", fake_ensemble)  # where predict_tiled looks it up
    out = p2_inference.predict_tiled([], torch.zeros(1, 3, 300, 40, dtype=torch.uint8), None, False, (1.0,),
                                     tile=32, overlap=4)
    assert out.shape == (300, 40) and len(held) == len(p2_inference.tile_starts(300, 32, 4)) * 2
    assert 0 < max(held) <= 32, held


def test_an_unknown_tta_view_is_a_usage_error_naming_it(capsys):
    import p2_inference

    parse = p2_inference.get_args_parser().parse_args
    base = ["--input-dir", "in", "--output-dir", "out"]
    assert parse(base + ["--tta", " scale,flip,flip"]).tta == ("flip", "scale")
    assert parse(base + ["--tta", ""]).tta == ()
    assert parse(base).tta_scales == [0.75, 1.0, 1.25] and parse(base + ["--tta-scales", "0.5", "2"]).tta_scales == [
        0.5, 2.0]
    with pytest.raises(SystemExit):
        parse(base + ["--tta", "flip,rot90,blur"])
    assert "unknown --tta view 'blur', 'rot90'; use flip, scale or flip,scale" in capsys.readouterr().err


# ------------------------------------------------------------- Ctrl-C, a symlink loop, the checkpoint, out of memory

def test_an_output_path_that_is_a_symlink_loop_is_a_one_line_error(toy_p2, random_unet, tmp_path, repo_root):
    in_dir = _sat_folder(toy_p2, tmp_path / "in", count=1)
    loop = tmp_path / "loop"
    os.symlink("loop", str(loop))
    proc = _hw1_2(repo_root, in_dir, loop, random_unet)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and str(loop) in proc.stderr and "symlink loop" in proc.stderr


def test_ctrl_c_in_p2_inference_keeps_the_masks_written_and_leaves_no_temp_file(toy_p2, random_unet, tmp_path,
                                                                                  monkeypatch, capsys):
    """Ctrl-C while the second image is predicted: the first mask stays, masks queued but not started are not
    written, no temp file is left, one line, exit 130."""
    import p2_inference

    in_dir, out = _sat_folder(toy_p2, tmp_path / "in", count=4), tmp_path / "out"
    calls = []
    real = p2_inference.predict_ensemble

    def interrupted_on_the_second_call(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            for _ in range(3000):  # the first mask is queued in the writer threads: let it land (bounded wait)
                if (out / "0000_mask.png").exists():
                    break
                time.sleep(0.01)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(p2_inference, "predict_ensemble", interrupted_on_the_second_call)
    with pytest.raises(SystemExit) as info:
        p2_inference.cli(["--input-dir", str(in_dir), "--output-dir", str(out), "--checkpoint", str(random_unet),
                          "--device", "cpu", "--workers", "0", "--batch-size", "1"])
    err = capsys.readouterr().err
    assert info.value.code == 130 and err.startswith("interrupted") and err.count("\n") == 1, err
    assert sorted(p.name for p in out.iterdir()) == ["0000_mask.png"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_during_hw1_2_is_one_line_exit_130_and_no_temp_file(random_unet, tmp_path, repo_root, sig):
    """A real Ctrl-C (SIGINT to the terminal's whole process group: bash, python3, its workers) once the first mask
    is written: one line, exit 130, no traceback, only whole masks in the output folder. SIGTERM to the group of
    p2_inference.py (a scheduler's kill; before: killed at once, a temp file could stay): the same, exit 143."""
    in_dir, out = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    rng = np.random.default_rng(0)
    for i in range(400):  # far more work than the moment between the first mask and the signal
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(str(in_dir / "{:04d}_sat.jpg".format(i)))
    env = dict(os.environ, HW1_P2_CHECKPOINT=str(random_unet), TQDM_DISABLE="1", OMP_NUM_THREADS="1")
    command = ["bash", str(repo_root / "hw1_2.sh"), str(in_dir), str(out)] if sig == signal.SIGINT else [
        sys.executable, str(repo_root / "p2_inference.py"), "--input-dir", str(in_dir), "--output-dir", str(out),
        "--checkpoint", str(random_unet), "--workers", "2"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        for _ in range(6000):  # bounded wait for the first mask, not a timing
            if (out / "0000_mask.png").exists() or proc.poll() is not None:
                break
            time.sleep(0.02)
        os.killpg(proc.pid, sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + int(sig) and "Traceback" not in err, err[-3000:]
    assert [line for line in err.splitlines() if line.strip()][-1].startswith("interrupted"), err[-3000:]
    names = [p.name for p in out.iterdir()]
    assert names and all(n.endswith("_mask.png") and not n.startswith(".") for n in names), names
    assert len(names) < 400
    for name in names:  # whole masks
        with Image.open(str(out / name)) as img:
            img.load()


def _checkout_without_checkpoints(repo_root, folder, names):
    """A folder holding links to the grading script and code, but no checkpoints/: a fresh clone before
    hw1_download_ckpt.sh."""
    folder.mkdir()
    for name in names + ["utils"]:
        os.symlink(str(repo_root / name), str(folder / name))
    return folder


def test_a_missing_default_checkpoint_says_to_run_hw1_download_ckpt(toy_p2, tmp_path, repo_root):
    clone = _checkout_without_checkpoints(repo_root, tmp_path / "clone", ["hw1_2.sh", "p2_inference.py"])
    in_dir = _sat_folder(toy_p2, tmp_path / "in", count=1)
    env = {k: v for k, v in os.environ.items() if k != "HW1_P2_CHECKPOINT"}
    proc = subprocess.run(["bash", str(clone / "hw1_2.sh"), str(in_dir), str(tmp_path / "out")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert str(clone / "checkpoints" / "p2_best.pth") in proc.stderr
    assert "run `bash hw1_download_ckpt.sh` first" in proc.stderr
    # a path the user gave is named, without the hint
    proc = _hw1_2(repo_root, in_dir, tmp_path / "out", tmp_path / "mine.pth")
    assert proc.returncode == 2 and str(tmp_path / "mine.pth") in proc.stderr
    assert "hw1_download_ckpt" not in proc.stderr


def test_inference_out_of_memory_says_what_to_lower_without_resume(toy_p2, random_unet, tmp_path, monkeypatch,
                                                                   capsys):
    """Inference has nothing to resume: the line names --batch-size, --tile-size and --device cpu instead."""
    import p2_inference
    from utils import datasets

    def open_without_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(datasets.Image, "open", open_without_memory)
    with pytest.raises(SystemExit) as info:
        p2_inference.cli(["--input-dir", str(toy_p2 / "validation"), "--output-dir", str(tmp_path / "out"),
                          "--checkpoint", str(random_unet), "--device", "cpu", "--workers", "0"])
    err = capsys.readouterr().err
    assert info.value.code == 3 and err.startswith("error: out of memory (MemoryError)") and err.count("\n") == 1
    assert "--batch-size" in err and "--tile-size" in err and "--device cpu" in err
    assert "resume" not in err and "checkpoint is kept" not in err


def test_a_file_at_a_mask_name_that_is_not_a_png_is_refused_before_any_work(toy_p2, random_unet, tmp_path, repo_root):
    """Before: hw1_2.sh replaced whatever was at OUT/0000_mask.png (a user's notes saved under that name) with the new
    mask, exit 0. A file there is replaced only when it is a PNG (a mask of an earlier run); anything else is an error
    naming it before any mask is written, and is left as it was."""
    in_dir = _sat_folder(toy_p2, tmp_path / "input", count=2)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "0001_mask.png").write_text("my notes, not a mask")
    proc = _hw1_2(repo_root, in_dir, out_dir, random_unet)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "refusing to replace {}".format(out_dir / "0001_mask.png") in proc.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["0001_mask.png"]
    assert (out_dir / "0001_mask.png").read_text() == "my notes, not a mask"
