"""p2_sam.py: SAM automatic masks beside our model (CPU; needs the optional segment-anything package).

The fast tests swap SAM's vit_b builder for a tiny SAM (one 32-wide block) so the whole pipeline runs in
seconds; the slow one runs the real ViT-B architecture with random weights through the command line.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("segment_anything")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import p2_sam  # noqa: E402
from utils.masks import write_mask  # noqa: E402

# thresholds that keep masks even with random weights (SAM's defaults keep none)
RELAXED = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


def tiny_sam(checkpoint=None):
    """Same modules as SAM, but a 1-block 32-wide encoder and decoder: seconds instead of a minute on CPU."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    dim = 32
    return Sam(
        image_encoder=ImageEncoderViT(img_size=1024, patch_size=16, embed_dim=dim, depth=1, num_heads=1,
                                      mlp_ratio=1.0, out_chans=dim, window_size=14),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(64, 64), input_image_size=(1024, 1024),
                                     mask_in_chans=4),
        mask_decoder=MaskDecoder(transformer_dim=dim, num_multimask_outputs=3, iou_head_depth=1,
                                 iou_head_hidden_dim=16,
                                 transformer=TwoWayTransformer(depth=1, embedding_dim=dim, num_heads=1, mlp_dim=dim)),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    ).eval()


@pytest.fixture
def tiny_registry(monkeypatch):
    import segment_anything

    monkeypatch.setitem(segment_anything.sam_model_registry, "vit_b", tiny_sam)


def write_tile(path: Path, size: int = 64) -> None:
    """Three flat regions, like a toy land-cover tile."""
    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[: size // 2] = (200, 60, 50)
    image[size // 2:, : size // 2] = (30, 150, 40)
    image[size // 2:, size // 2:] = (30, 40, 200)
    Image.fromarray(image).save(str(path))


def run(argv):
    return p2_sam.main(p2_sam.get_args_parser().parse_args([str(a) for a in argv]))


def seg_checkpoint(path: Path) -> Path:
    """A tiny U-Net checkpoint in our own format."""
    from utils.checkpoint import make_checkpoint, save_atomic
    from utils.models import build_seg_model

    config = {"arch": "unet", "num_classes": 7, "base_width": 4, "depth": 2, "drop_skip": [], "bilinear": False}
    save_atomic(make_checkpoint("p2_segmentation", config, build_seg_model(config).state_dict()), path)
    return path


def test_plumbing_with_prediction_and_ground_truth(tmp_path, tiny_registry):
    write_tile(tmp_path / "0018_sat.jpg", size=64)
    write_mask(tmp_path / "0018_mask.png", np.full((64, 64), 3, dtype=np.uint8))
    out = tmp_path / "out"
    summary = run(["--images", tmp_path / "0018_sat.jpg", "--random-init", "--model-type", "vit_b",
                   "--device", "cpu", "--output-dir", out, "--checkpoint", seg_checkpoint(tmp_path / "seg.pth"),
                   "--masks-dir", tmp_path] + RELAXED)

    assert summary["with_prediction"] is True and summary["failed"] == []
    (entry,) = summary["images"]
    assert entry["num_masks"] >= 1 and entry["with_ground_truth"] is True
    assert 0.0 < entry["coverage"] <= 1.0 and entry["seconds"] >= 0
    assert (out / "0018_sat_sam.png").is_file()
    assert json.loads((out / "sam_summary.json").read_text()) == summary

    npz = np.load(str(out / "0018_sat_sam_masks.npz"))
    labels = npz["labels"]
    assert labels.dtype == np.uint16 and labels.shape == (64, 64)
    n = entry["num_masks"]
    assert npz["areas"].shape == (n,) and npz["predicted_iou"].shape == (n,) and npz["bboxes"].shape == (n, 4)
    assert list(npz["areas"]) == sorted(npz["areas"], reverse=True)  # largest first
    assert labels.max() <= n and np.isclose((labels > 0).mean(), entry["coverage"])


def test_corrupt_image_is_reported_and_others_continue(tmp_path, tiny_registry, capsys):
    write_tile(tmp_path / "good.png", size=40)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg at all")
    summary = run(["--images", tmp_path / "bad.jpg", tmp_path / "good.png", "--random-init", "--model-type", "vit_b",
                   "--device", "cpu", "--output-dir", tmp_path / "out"] + RELAXED)
    assert [f["image"] for f in summary["failed"]] == [str(tmp_path / "bad.jpg")]
    assert len(summary["images"]) == 1 and summary["with_prediction"] is False
    assert np.load(str(tmp_path / "out" / "good_sam_masks.npz"))["labels"].shape == (40, 40)
    assert "bad.jpg" in capsys.readouterr().err


def test_label_image_keeps_smallest_mask():
    big = np.ones((4, 4), dtype=bool)
    small = np.zeros((4, 4), dtype=bool)
    small[1:3, 1:3] = True
    labels = p2_sam.label_image([{"segmentation": big}, {"segmentation": small}], 4, 4)
    assert labels[0, 0] == 1 and labels[1, 1] == 2 and labels.dtype == np.uint16


def test_missing_package_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "segment_anything", None)
    with pytest.raises(SystemExit, match="pip install -r requirements-sam.txt"):
        run(["--images", tmp_path / "x.jpg", "--random-init", "--output-dir", tmp_path / "out"])


def test_missing_checkpoint_names_file_and_official_weights(tmp_path):
    missing = tmp_path / "sam_vit_h_4b8939.pth"
    with pytest.raises(SystemExit, match="not found.*sam_vit_h_4b8939.pth.*dl.fbaipublicfiles.com"):
        run(["--images", tmp_path / "x.jpg", "--sam-weights", missing, "--output-dir", tmp_path / "out"])


def test_checkpoint_or_random_init_is_required(tmp_path, capsys):
    with pytest.raises(SystemExit):
        p2_sam.get_args_parser().parse_args(["--images", "x.jpg", "--output-dir", str(tmp_path)])
    assert "--sam-weights" in capsys.readouterr().err


def test_corrupt_checkpoint_names_file(tmp_path):
    bad = tmp_path / "sam_vit_b.pth"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(SystemExit, match="sam_vit_b.pth.*corrupt"):
        run(["--images", tmp_path / "x.jpg", "--sam-weights", bad, "--model-type", "vit_b",
             "--output-dir", tmp_path / "out"])


def test_model_type_mismatch_is_explained(tmp_path):
    # just the keys that identify the variant: a vit_b encoder (width 768, 12 blocks)
    fake = {"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16)}
    fake.update({"image_encoder.blocks.{}.norm1.weight".format(i): torch.zeros(768) for i in range(12)})
    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(fake, str(path))
    with pytest.raises(SystemExit, match="holds SAM vit_b but --model-type is vit_h"):
        run(["--images", tmp_path / "x.jpg", "--sam-weights", path, "--model-type", "vit_h",
             "--output-dir", tmp_path / "out"])


def test_not_a_sam_checkpoint(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, str(path))
    with pytest.raises(SystemExit, match="other.pth is not a SAM checkpoint"):
        run(["--images", tmp_path / "x.jpg", "--sam-weights", path, "--output-dir", tmp_path / "out"])


def test_help_explains_flags():
    out = subprocess.run([sys.executable, "p2_sam.py", "--help"], cwd=str(ROOT), capture_output=True, text=True)
    assert out.returncode == 0 and "--min-mask-region-area" in out.stdout and "OpenCV" in out.stdout


def test_autocast_encoder_feeds_fp32_embeddings():
    """The --amp wrapper (used on CUDA) runs the encoder in low precision but hands SAM fp32 features."""
    torch.manual_seed(0)
    sam = tiny_sam()
    wrapped = p2_sam.AutocastEncoder(sam.image_encoder, torch.device("cpu"), torch.bfloat16)
    assert wrapped.img_size == 1024
    with torch.no_grad():
        out = wrapped(torch.zeros(1, 3, 1024, 1024))
    assert out.dtype == torch.float32 and out.shape == (1, 32, 64, 64)


@pytest.mark.slow
def test_cli_real_vit_b_random_init(tmp_path):
    """The real ViT-B architecture end to end through the command line (~1 min on 2 CPU cores)."""
    write_tile(tmp_path / "0065_sat.png", size=64)
    (tmp_path / "bad_sat.jpg").write_bytes(b"\xff\xd8 truncated")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "p2_sam.py", "--images", str(tmp_path / "0065_sat.png"), str(tmp_path / "bad_sat.jpg"),
         "--random-init", "--model-type", "vit_b", "--device", "cpu", "--output-dir", str(out)] + RELAXED,
        cwd=str(ROOT), capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr  # one unreadable image -> non-zero exit, the other still done
    assert "meaningless" in proc.stderr and "bad_sat.jpg" in proc.stderr
    summary = json.loads((out / "sam_summary.json").read_text())
    assert summary["images"][0]["num_masks"] >= 1
    assert np.load(str(out / "0065_sat_sam_masks.npz"))["labels"].shape == (64, 64)
    assert (out / "0065_sat_sam.png").is_file()

