"""Problem 2's models and grading path against what the report relies on: logits at the input's full resolution
(computed there, not upsampled from half), the ablated skip being the one asked for, test-time augmentation as
named, masks in the grader's colours, and publish's check really comparing the run's file with the published one."""
import numpy as np
import pytest
import torch
from PIL import Image

import p2_inference
import p2_unet
from helpers import run_main
from utils.checkpoint import make_checkpoint, save_atomic
from utils.models import build_seg_model, input_multiple
from utils.predict import SEG_KIND

R50 = {"encoder": "resnet50", "output_stride": 16, "aux_loss": True, "backbone_weights": "none"}
MODELS = {
    "unet": {"arch": "unet", "base_width": 4, "depth": 3},
    "unet_bilinear": {"arch": "unet", "base_width": 4, "depth": 2, "bilinear": True},
    "resnet_unet": {"arch": "unet", "encoder": "resnet18"},
    "deeplabv3": dict(R50, arch="deeplabv3"),
    "deeplabv3plus": dict(R50, arch="deeplabv3plus"),
}


def _sizes(config):
    m = input_multiple(config)
    # multiples of the model's input multiple, square and not; DeepLab (multiple 1) also odd sizes that no stride
    # divides, where a fixed upsampling factor would miss the input size
    return [(2 * m, 2 * m), (m, 3 * m)] if m > 1 else [(64, 32), (66, 90), (45, 61)]


def _hooked_sizes(model, names):
    """Run-time (input, output) spatial sizes and channels of the named submodules, through forward hooks."""
    seen = {}
    for name in names:
        module = model.get_submodule(name)
        module.register_forward_hook(lambda mod, inp, out, name=name: seen.__setitem__(
            name, (tuple(inp[0].shape[1:]), tuple(out.shape[1:]))))
    return seen


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_returns_logits_at_the_input_size(name):
    torch.manual_seed(0)
    model = build_seg_model(MODELS[name]).eval()
    for h, w in _sizes(MODELS[name]):
        with torch.no_grad():
            out = model(torch.randn(1, 3, h, w))
        assert out["out"].shape == (1, 7, h, w), (name, h, w)
        if "aux" in out:
            assert out["aux"].shape == (1, 7, h, w), (name, h, w)


def test_resnet_unet_decoder_blocks_run_at_their_stage_resolution_and_the_last_at_full_resolution():
    """Skip i of the ResNet U-Net sits at 1/2^(i+1); the block after skip 0 and the classifier run at the input's
    resolution (a last block at half resolution, upsampled after, would give the right shape but blurred masks)."""
    model = build_seg_model(MODELS["resnet_unet"]).eval()
    seen = _hooked_sizes(model, ["decoders.0", "decoders.1", "decoders.2", "decoders.3", "final", "head"])
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 96))
    for i in range(4):
        assert seen["decoders.{}".format(i)][1][1:] == (64 // 2 ** (i + 1), 96 // 2 ** (i + 1)), i
    assert seen["final"][0][1:] == (64, 96) and seen["final"][1][1:] == (64, 96)
    assert seen["head"][0][1:] == (64, 96)
    # each block joins exactly its skip: the stem's 64 channels at 1/2, layer1's 64 at 1/4, ...
    assert [seen["decoders.{}".format(i)][0][0] for i in range(4)] == [64 + 64, 64 + 128, 128 + 256, 256 + 512]


@pytest.mark.parametrize("drop", [[0], [1], [2], [0, 2]])
def test_unet_ablation_removes_exactly_the_asked_skip(drop):
    """--drop-skip i (0 = shallowest, full resolution): the decoder block at scale 1/2^i receives only the
    upsampled deeper features; every other block still gets its encoder stage's features (channels read at run
    time)."""
    args = p2_unet.get_args_parser().parse_args(["--base-width", "4", "--depth", "3", "--drop-skip"]
                                                + [str(i) for i in drop])
    config = p2_unet.model_config(args)
    assert config["drop_skip"] == drop
    for bilinear in (False, True):
        model = build_seg_model(dict(config, bilinear=bilinear)).eval()
        seen = _hooked_sizes(model, ["decoders.{}".format(i) for i in range(3)] + ["head"])
        with torch.no_grad():
            model(torch.randn(1, 3, 16, 24))
        for i in range(3):
            width = 4 * 2 ** i
            upsampled = 2 * width if bilinear else width  # bilinear keeps the deeper stage's width
            channels, h, w = seen["decoders.{}".format(i)][0]
            assert (h, w) == (16 // 2 ** i, 24 // 2 ** i), (i, bilinear)
            assert channels == upsampled + (0 if i in drop else width), (i, bilinear)
        assert seen["head"][0][1:] == (16, 24)


def test_resnet_unet_ablation_removes_exactly_the_asked_skip():
    for drop in ([0], [3]):
        config = p2_unet.model_config(p2_unet.get_args_parser().parse_args(
            ["--encoder", "resnet18", "--drop-skip"] + [str(i) for i in drop]))
        model = build_seg_model(config).eval()
        seen = _hooked_sizes(model, ["decoders.{}".format(i) for i in range(4)])
        with torch.no_grad():
            model(torch.randn(1, 3, 64, 64))
        skips = [64, 64, 128, 256]  # stem, layer1..3 of a ResNet-18
        upsampled = [64, 128, 256, 512]
        for i in range(4):
            channels, h, _ = seen["decoders.{}".format(i)][0]
            assert h == 64 // 2 ** (i + 1) and channels == upsampled[i] + (0 if i in drop else skips[i]), (drop, i)


def test_deeplabv3plus_decodes_at_a_quarter_and_deeplab_layer4_at_the_output_stride():
    torch.manual_seed(0)
    plus = build_seg_model(MODELS["deeplabv3plus"]).eval()
    seen = _hooked_sizes(plus, ["backbone.layer1", "backbone.layer4", "decoder", "classifier"])
    with torch.no_grad():
        plus(torch.randn(1, 3, 64, 96))
    assert seen["backbone.layer1"][1][1:] == (16, 24) and seen["backbone.layer4"][1][1:] == (4, 6)  # 1/4, 1/16
    assert seen["decoder"][0] == (256 + 48, 16, 24) and seen["classifier"][1] == (7, 16, 24)
    for stride in (8, 16):
        model = build_seg_model(dict(MODELS["deeplabv3"], output_stride=stride)).eval()
        seen = _hooked_sizes(model, ["backbone.layer4"])
        with torch.no_grad():
            model(torch.randn(1, 3, 64, 64))
        assert seen["backbone.layer4"][1][1:] == (64 // stride, 64 // stride)
