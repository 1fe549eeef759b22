"""p2_inference.py's flags reach the prediction as named (--tta flip / scale / flip,scale, --tta-scales, on whole
images and on tiles), it feeds the image's own pixels, and it writes the argmax class in the grader's colours."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import p2_inference
from helpers import run_main
from utils.checkpoint import make_checkpoint, save_atomic
from utils.models import build_seg_model
from utils.predict import SEG_KIND

# docs/data.md's table, class index -> (R, G, B): urban cyan, agriculture yellow, rangeland purple, forest green,
# water blue, barren white, unknown black
GRADER_COLOURS = [(0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)]


def _pattern(h, w):
    """A class map using all seven classes: (y + 2x) mod 7."""
    return (torch.arange(h).view(h, 1) + 2 * torch.arange(w).view(1, w)) % 7


@pytest.fixture
def setup(tmp_path):
    config = {"arch": "unet", "num_classes": 7, "base_width": 4, "depth": 2, "drop_skip": [], "bilinear": False}
    torch.manual_seed(0)
    checkpoint = tmp_path / "unet.pth"
    save_atomic(make_checkpoint(SEG_KIND, config, build_seg_model(config).state_dict(), None), checkpoint)
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(0)
    pixels = {}
    for name in ("0001_sat.png", "0002_sat.png"):  # lossless: the pixels fed must be exactly these
        pixels[name] = rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)
        Image.fromarray(pixels[name]).save(str(images / name))
    return checkpoint, images, pixels


@pytest.mark.parametrize("flags,flip,scales", [
    ([], False, [1.0]),
    (["--tta"], True, [1.0]),
    (["--tta", "flip"], True, [1.0]),
    (["--tta", "scale"], False, [0.75, 1.0, 1.25]),
    (["--tta", "flip,scale"], True, [0.75, 1.0, 1.25]),
    (["--tta", "scale", "--tta-scales", "0.5", "1.5"], False, [0.5, 1.5]),
])
@pytest.mark.parametrize("tiled", [False, True])
def test_tta_flags_select_exactly_the_views_they_name_and_masks_are_the_argmax_in_grader_colours(
        setup, tmp_path, monkeypatch, flags, flip, scales, tiled):
    checkpoint, images, pixels = setup
    calls = []

    def fake_ensemble(members, batch, amp_dtype=None, tta=False, scales=(1.0,)):
        calls.append((tta, list(scales), batch.clone()))
        pattern = _pattern(*batch.shape[-2:])
        return F.one_hot(pattern, 7).permute(2, 0, 1).float().expand(batch.shape[0], -1, -1, -1)

    def fake_tiled(members, image, amp_dtype, tta, scales, tile, overlap):
        calls.append((tta, list(scales), image.clone()))
        return _pattern(*image.shape[-2:]).to(torch.uint8)

    monkeypatch.setattr(p2_inference, "predict_ensemble", fake_ensemble)
    monkeypatch.setattr(p2_inference, "predict_tiled", fake_tiled)
    size_flags = ["--tile-threshold", "8", "--tile-size", "8", "--tile-overlap", "2"] if tiled else []
    out = tmp_path / "out"
    record = run_main(p2_inference, ["--input-dir", images, "--output-dir", out, "--checkpoint", checkpoint,
                                     "--device", "cpu", "--workers", "0"] + flags + size_flags)
    assert (record["written"], record["failed"], record["checkpoints"], record["scales"]) == \
        (2, [], [str(checkpoint)], scales)  # the run's own account of what it used
    assert calls and all((tta, s) == (flip, scales) for tta, s, _ in calls), [(c[0], c[1]) for c in calls]
    fed = torch.cat([batch for _, _, batch in calls])
    assert fed.dtype == torch.uint8
    assert torch.equal(fed, torch.stack([torch.from_numpy(pixels[n]).permute(2, 0, 1) for n in sorted(pixels)]))
    expected = np.array(GRADER_COLOURS, dtype=np.uint8)[_pattern(10, 14).numpy()]
    for name in pixels:
        mask = Image.open(str(out / name.replace("_sat.png", "_mask.png")))
        assert mask.mode == "RGB" and np.array_equal(np.asarray(mask), expected), name
