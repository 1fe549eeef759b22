"""The grading path: hw1_2.sh / p2_inference.py against the grader's contract."""
import os
import shutil
import subprocess
import sys
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


def _hw1_2(repo_root, in_dir, out_dir, checkpoint):
    env = dict(os.environ, HW1_P2_CHECKPOINT=str(checkpoint), TQDM_DISABLE="1")
    return subprocess.run(["bash", "hw1_2.sh", str(in_dir), str(out_dir)], cwd=str(repo_root), env=env,
                          capture_output=True, text=True, timeout=300)


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
    assert proc.returncode != 0 and "no images" in proc.stderr
    bad_ckpt = tmp_path / "bad.pth"
    bad_ckpt.write_bytes(os.urandom(1000))
    Image.new("RGB", (32, 32)).save(str(empty / "x_sat.jpg"))
    proc = _hw1_2(repo_root, empty, tmp_path / "o2", bad_ckpt)
    assert proc.returncode != 0 and "bad.pth" in proc.stderr
    assert "Traceback" not in proc.stderr


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
    from utils.predict import predict_ensemble, predict_probs

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
