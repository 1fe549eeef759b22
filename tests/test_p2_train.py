"""The segmentation trainers on generated data: they learn, resume exactly, and refuse to clobber."""
import json
import shutil
import urllib.request
from pathlib import Path
from typing import Optional

import pytest
import torch

import p2_deeplab
import p2_unet
from utils.checkpoint import load_checkpoint, save_atomic
from utils.datasets import SegmentationDataset
from utils.models import build_seg_model
from utils.distributed import ShardSampler
from utils.optim import schedule
from utils.segmentation import evaluate
from helpers import run_main

UNET_FLAGS = ["--batch-size", "4", "--crop-size", "64", "--base-width", "8", "--depth", "3", "--workers", "0",
              "--deterministic", "--snapshot-epochs"]


def _unet(data: Path, out: Path, *extra: str) -> dict:
    return run_main(p2_unet, ["--data-dir", str(data), "--output-dir", str(out)] + UNET_FLAGS + list(extra))


def _untrained_miou(data: Path, config: Optional[dict] = None) -> float:
    torch.manual_seed(0)
    config = config or {"arch": "unet", "num_classes": 7, "base_width": 8, "depth": 3, "drop_skip": [],
                        "bilinear": False}
    model = build_seg_model(dict(config, backbone_weights="none"))
    val = SegmentationDataset(data / "validation")
    loader = torch.utils.data.DataLoader(val, batch_size=4, sampler=ShardSampler(len(val), 0, 1))
    return evaluate(model, loader, torch.device("cpu"), None, config)["val_miou"]


def test_unet_learns_on_structured_toy_data(toy_p2, tmp_path):
    # Measured on this data: untrained ~0.02, after 6 epochs ~0.24 (lr 3e-3). Threshold with margin.
    before = _untrained_miou(toy_p2)
    result = _unet(toy_p2, tmp_path / "run", "--epochs", "6", "--lr", "3e-3", "--warmup-epochs", "0.5")
    assert result["best_miou"] > 0.15
    assert result["best_miou"] > before + 0.1
    out = tmp_path / "run"
    for name in ("checkpoint.pth", "best.pth", "log.jsonl", "curves.png", "results.json", "args.json"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(1, 7))
    assert len(records[-1]["val_iou"]) == 6
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    # the best checkpoint rebuilds its model from the file alone
    ckpt = load_checkpoint(out / "best.pth", expected_kind="p2_segmentation")
    assert ckpt["model_config"]["arch"] == "unet" and ckpt["format_version"] == 1
    torch.load(str(out / "checkpoint.pth"), weights_only=True)


def test_resume_after_epoch_one_matches_uninterrupted_run(toy_p2, tmp_path):
    full = _unet(toy_p2, tmp_path / "full", "--epochs", "2", "--save-every", "1")
    # A run killed after epoch 1 leaves exactly checkpoint_epoch001's state as its checkpoint.pth.
    (tmp_path / "resumed").mkdir()
    shutil.copy(str(tmp_path / "full" / "checkpoint_epoch001.pth"), str(tmp_path / "resumed" / "checkpoint.pth"))
    resumed = _unet(toy_p2, tmp_path / "resumed", "--epochs", "2")
    assert resumed["last_miou"] == full["last_miou"]
    assert resumed["last_iou"] == full["last_iou"]
    a = torch.load(str(tmp_path / "full" / "checkpoint.pth"), weights_only=True)
    b = torch.load(str(tmp_path / "resumed" / "checkpoint.pth"), weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_eval_only_and_refusing_another_model(toy_p2, tmp_path):
    out = tmp_path / "run"
    trained = _unet(toy_p2, out, "--epochs", "1")
    metrics = _unet(toy_p2, out, "--epochs", "1", "--eval-only")
    assert metrics["val_miou"] == pytest.approx(trained["last_miou"], abs=1e-12)
    with pytest.raises(SystemExit, match="holds another run"):
        _unet(toy_p2, out, "--epochs", "1", "--base-width", "4")
    with pytest.raises(SystemExit, match="needs a checkpoint"):
        _unet(toy_p2, tmp_path / "empty", "--eval-only")


def test_snapshots_grid_and_ablation(toy_p2, tmp_path):
    out = tmp_path / "ablation"
    run_main(p2_unet, ["--data-dir", str(toy_p2), "--output-dir", str(out), "--epochs", "2", "--batch-size", "4",
                 "--crop-size", "64", "--base-width", "8", "--depth", "3", "--workers", "0", "--drop-skip", "0", "1",
                 "--snapshot-epochs", "1", "2", "--snapshot-images", "0000_sat.jpg", "0003_sat.jpg", "9999_sat.jpg"])
    assert (out / "snapshots.png").is_file()
    for epoch in (1, 2):
        assert (out / "snapshot_epoch{:03d}.pth".format(epoch)).is_file()
        masks = sorted(p.name for p in (out / "snapshots" / "epoch_{:03d}".format(epoch)).iterdir())
        assert masks == ["0000_mask.png", "0003_mask.png"]
    ckpt = load_checkpoint(out / "best.pth")
    assert ckpt["model_config"]["drop_skip"] == [0, 1]


@pytest.fixture
def offline(monkeypatch):
    """Every download path raises."""

    def no_network(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


def test_deeplab_trains_two_epochs_without_network(toy_p2, tmp_path, offline):
    result = run_main(p2_deeplab, ["--data-dir", str(toy_p2), "--output-dir", str(tmp_path / "dl"), "--epochs", "2",
                             "--batch-size", "4", "--crop-size", "64", "--workers", "0", "--weights", "none",
                             "--encoder", "resnet50", "--output-stride", "16", "--snapshot-epochs"])
    assert result["arch"] == "deeplabv3" and result["model_config"]["aux_loss"] is True
    assert result["model_config"]["output_stride"] == 16 and result["model_config"]["encoder"] == "resnet50"
    # A run started before --encoder/--output-stride existed saved {"backbone": "resnet50"} and no output stride:
    # the same network as --encoder resnet50 --output-stride 16, which resumes it; the new defaults (model B) are
    # another model, refused naming the differences.
    ckpt = torch.load(str(tmp_path / "dl" / "checkpoint.pth"), weights_only=True)
    ckpt["model_config"] = {"arch": "deeplabv3", "num_classes": 7, "backbone": "resnet50", "aux_loss": True,
                            "backbone_weights": "imagenet"}
    save_atomic(ckpt, tmp_path / "old" / "checkpoint.pth")
    common = ["--data-dir", str(toy_p2), "--output-dir", str(tmp_path / "old"), "--epochs", "3", "--batch-size", "4",
              "--crop-size", "64", "--workers", "0", "--snapshot-epochs"]
    with pytest.raises(SystemExit, match="holds another run .*model encoder: 'resnet50' in the checkpoint, 'resnet101'"):
        run_main(p2_deeplab, common)
    resumed = run_main(p2_deeplab, common + ["--encoder", "resnet50", "--output-stride", "16"])
    assert resumed["model_config"]["backbone"] == "resnet50" and resumed["epochs"] == 3
    assert [json.loads(line)["epoch"] for line in (tmp_path / "old" / "log.jsonl").read_text().splitlines()] == [3]
    records = [json.loads(line) for line in (tmp_path / "dl" / "log.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(r["train_loss"] == r["train_loss"] for r in records)


def test_deeplab_flags_map_to_model_b_by_default():
    parse = p2_deeplab.get_args_parser().parse_args
    assert p2_deeplab.model_config(parse([])) == {
        "arch": "deeplabv3", "num_classes": 7, "encoder": "resnet101", "output_stride": 8, "aux_loss": True,
        "backbone_weights": "coco"}
    plus = p2_deeplab.model_config(parse(["--arch", "deeplabv3plus", "--encoder", "resnet50", "--weights", "none"]))
    assert plus["arch"] == "deeplabv3plus" and plus["output_stride"] == 16 and plus["encoder"] == "resnet50"
    assert p2_deeplab.model_config(parse(["--output-stride", "16"]))["output_stride"] == 16
    with pytest.raises(SystemExit, match="fcn32s has no COCO weights"):
        p2_deeplab.model_config(parse(["--arch", "fcn32s"]))
    with pytest.raises(SystemExit):  # the old flag names are gone
        parse(["--backbone", "resnet50"])
    unet = p2_unet.get_args_parser().parse_args
    classic = p2_unet.model_config(unet([]))
    assert "encoder" not in classic and "backbone_weights" not in classic  # old runs keep resuming
    with pytest.raises(SystemExit, match="needs a ResNet --encoder"):
        p2_unet.model_config(unet(["--encoder-weights", "imagenet"]))


def test_model_b_with_no_flags_trains_from_the_coco_cache(toy_p2, tmp_path, fake_coco_home, monkeypatch, offline):
    """`p2_deeplab.py` with only data/size flags: DeepLabV3-ResNet101, OS 8, COCO weights from the hub cache
    (here a random state_dict in torchvision's format under torchvision's file name), 7-class heads re-made."""
    monkeypatch.setenv("TORCH_HOME", str(fake_coco_home))
    result = run_main(p2_deeplab, ["--data-dir", str(toy_p2), "--output-dir", str(tmp_path / "b"), "--epochs", "1",
                             "--batch-size", "4", "--crop-size", "64", "--workers", "0", "--snapshot-epochs"])
    assert result["model_config"] == {"arch": "deeplabv3", "num_classes": 7, "encoder": "resnet101",
                                      "output_stride": 8, "aux_loss": True, "backbone_weights": "coco"}
    ckpt = load_checkpoint(tmp_path / "b" / "best.pth", "p2_segmentation")
    assert ckpt["model"]["classifier.4.weight"].shape == (7, 256, 1, 1)
    assert ckpt["model"]["aux_classifier.4.weight"].shape == (7, 256, 1, 1)
    assert len(ckpt["model"]["backbone.layer3.22.conv1.weight"]) == 256  # ResNet-101


# Measured on toy_p2 (untrained -> best val mIoU, seeds 0 / 1 / 2, without --deterministic):
#   U-Net, ResNet-34 encoder, random, 6 epochs, AdamW 3e-3:          0.03 / 0.03 / 0.00 -> 0.31 / 0.36 / 0.26
#   the same without skip 0 (stem):                                  0.02 / 0.03 / 0.02 -> 0.22 / 0.22 / 0.16
#   DeepLabV3+ ResNet-50 OS 16, random, 4 epochs, AdamW 3e-3:        0.03 / 0.03 / 0.02 -> 0.21 / 0.14 / 0.21
R34_UNET = ["--encoder", "resnet34", "--encoder-weights", "none", "--batch-size", "4", "--crop-size", "64",
            "--workers", "0", "--deterministic", "--snapshot-epochs", "--epochs", "6", "--lr", "3e-3",
            "--warmup-epochs", "0.5"]


def test_resnet34_unet_learns(toy_p2, tmp_path, offline):
    result = run_main(p2_unet, ["--data-dir", str(toy_p2), "--output-dir", str(tmp_path / "r34")] + R34_UNET)
    before = _untrained_miou(toy_p2, result["model_config"])
    assert result["model_config"]["encoder"] == "resnet34"
    assert result["best_miou"] > 0.15 and result["best_miou"] > before + 0.1, (before, result["best_miou"])


@pytest.mark.slow  # in CI's slow step: it keeps the default suite under ~15 minutes
def test_resnet34_unet_one_skip_ablation_learns(toy_p2, tmp_path, offline):
    result = run_main(p2_unet, ["--data-dir", str(toy_p2), "--output-dir", str(tmp_path / "r34s")] + R34_UNET
                         + ["--drop-skip", "0"])
    before = _untrained_miou(toy_p2, result["model_config"])
    assert result["model_config"]["drop_skip"] == [0]
    model = build_seg_model(result["model_config"])
    assert model.decoders[0][0].in_channels == 64  # only the upsampled features: the stem's 64 are gone
    assert result["best_miou"] > 0.1 and result["best_miou"] > before + 0.08, (before, result["best_miou"])


@pytest.mark.slow  # in CI's slow step: it keeps the default suite under ~15 minutes
def test_deeplabv3plus_learns(toy_p2, tmp_path, offline):
    result = run_main(p2_deeplab, ["--data-dir", str(toy_p2), "--output-dir", str(tmp_path / "v3p"), "--arch",
                             "deeplabv3plus", "--encoder", "resnet50", "--weights", "none", "--epochs", "4",
                             "--batch-size", "4", "--crop-size", "64", "--workers", "0", "--optimizer", "adamw",
                             "--lr", "3e-3", "--warmup-epochs", "0.5", "--deterministic", "--snapshot-epochs"])
    before = _untrained_miou(toy_p2, result["model_config"])
    assert result["model_config"]["arch"] == "deeplabv3plus"
    assert result["best_miou"] > 0.09 and result["best_miou"] > before + 0.06, (before, result["best_miou"])


def test_lr_schedule_points():
    def lr_at(step, shape):  # the segmentation trainers' ramp: base * (step + 1) / W, then the decay
        return schedule(step, 100, 1.0, 0.0, 10, 1.0 / 10, shape)

    assert lr_at(0, "poly") == pytest.approx(0.1)
    assert lr_at(9, "poly") == pytest.approx(1.0)
    assert lr_at(10, "cosine") == pytest.approx(1.0)
    assert lr_at(55, "cosine") == pytest.approx(0.5)
    assert lr_at(55, "poly") == pytest.approx(0.5 ** 0.9)
    assert lr_at(100, "poly") == pytest.approx(0.0)


def test_compile_flag_trains_through_the_compiled_module(toy_p2, tmp_path, monkeypatch):
    """--compile trains through torch.compile (here its 'eager' backend: no C++ compiler needed, same graph
    capture), and the checkpoint keeps the plain module's keys."""
    real_compile = torch.compile
    calls = []

    def eager_compile(model, backend="inductor", **kwargs):
        calls.append(type(model).__name__)
        return real_compile(model, backend="eager", **kwargs)

    monkeypatch.setattr(torch, "compile", eager_compile)
    _unet(toy_p2, tmp_path / "c", "--epochs", "1", "--compile")
    assert calls == ["UNet"]
    ckpt = load_checkpoint(tmp_path / "c" / "checkpoint.pth", "p2_segmentation")
    assert not any("_orig_mod" in k for k in ckpt["model"])
    model = build_seg_model(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])  # strict: loads into the plain model
    init = build_seg_model(ckpt["model_config"]).state_dict()
    assert any(not torch.equal(init[k], ckpt["model"][k]) for k in init if init[k].is_floating_point())


def test_cpu_amp_trains_in_bf16_where_the_cpu_has_bf16_kernels(toy_p2, tmp_path, capsys):
    from utils.precision import cpu_bf16_supported

    _unet(toy_p2, tmp_path / "bf16", "--epochs", "2", "--cpu-amp")
    out = capsys.readouterr().out
    if cpu_bf16_supported():
        assert "amp bfloat16" in out
    else:
        assert "amp" not in out.split("\n")[0]
    ckpt = load_checkpoint(tmp_path / "bf16" / "checkpoint.pth", "p2_segmentation")
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())
    _unet(toy_p2, tmp_path / "fp32", "--epochs", "2")
    losses = [[json.loads(line)["train_loss"] for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
              for run in ("bf16", "fp32")]
    assert losses[0][1] < losses[0][0]  # it learns
    assert all(abs(a - b) < 0.05 * b for a, b in zip(*losses)), losses  # and follows the fp32 run closely


def test_drop_skip_random_is_drawn_with_the_seed_and_recorded():
    def config(seed, *extra):
        args = p2_unet.get_args_parser().parse_args(["--drop-skip", "random", "--seed", str(seed)] + list(extra))
        return p2_unet.model_config(args)

    first = config(3)
    assert len(first["drop_skip"]) == 1 and first["drop_skip_random"] == {"seed": 3, "chosen": first["drop_skip"][0]}
    assert config(3) == first  # the same seed, the same skip: a resumed run finds the same model
    assert {config(seed)["drop_skip"][0] for seed in range(30)} == {0, 1, 2, 3}  # depth 4: skips 0..3
    assert {config(seed, "--depth", "2")["drop_skip"][0] for seed in range(30)} == {0, 1}
    assert {config(seed, "--encoder", "resnet34")["drop_skip"][0] for seed in range(30)} == {0, 1, 2, 3}
    both = p2_unet.model_config(p2_unet.get_args_parser().parse_args(["--drop-skip", "0", "random", "--seed", "1"]))
    assert len(both["drop_skip"]) == 2 and 0 in both["drop_skip"]  # the random one is another skip
    with pytest.raises(SystemExit):
        p2_unet.get_args_parser().parse_args(["--drop-skip", "first"])
    assert build_seg_model(dict(first, base_width=8)).drop_skip == tuple(first["drop_skip"])


def test_a_crop_size_the_unet_depth_cannot_divide_is_refused_before_the_model_is_built(capsys):
    """Before: `p2_unet.py --crop-size 64 --base-width 8 --depth 12` built a 32,768-channel U-Net and was killed by
    the kernel's out-of-memory killer (exit 137, no message); `--crop-size 36 --depth 3` failed only at the first
    training step, after the data check, leaving an args.json behind. Now both are one line naming the flags."""
    for argv in (["--crop-size", "64", "--base-width", "8", "--depth", "12"], ["--crop-size", "36", "--depth", "3"]):
        args = p2_unet.get_args_parser().parse_args(argv)
        with pytest.raises(SystemExit) as info:
            p2_unet.model_config(args)
        assert str(info.value).startswith("error: --crop-size") and "--depth" in str(info.value)
    assert p2_unet.model_config(p2_unet.get_args_parser().parse_args(["--crop-size", "64", "--depth", "6"]))
    # the ResNet-encoder U-Net (stride 32) likewise; before: a ValueError at the first training step
    with pytest.raises(SystemExit, match=r"^error: --crop-size 48 is not a multiple of the ResNet encoder's stride"):
        p2_unet.model_config(p2_unet.get_args_parser().parse_args(["--crop-size", "48", "--encoder", "resnet18"]))
