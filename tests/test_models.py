"""Tests for utils/models.py: shapes, U-Net skip ablation, DeepLabV3 output stride, weight loading, no network."""
import argparse
import socket
import urllib.request

import pytest
import torch
import torchvision

from utils import models
from utils.models import (
    SEG_ARCHS,
    UNet,
    build_deeplabv3,
    build_fcn32s,
    build_seg_model,
    input_multiple,
    load_backbone_weights,
    load_resnet_state_dict,
)


def _num_params(model: torch.nn.Module) -> int:
    """Total number of parameters."""
    return sum(p.numel() for p in model.parameters())


@pytest.fixture
def no_network(monkeypatch):
    """Make every download path torch/torchvision could take raise instead."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    # torchvision's WeightsEnum.get_state_dict calls its own imported copy of load_state_dict_from_url
    api = getattr(torchvision.models, "_api", None)
    if api is not None:
        monkeypatch.setattr(api, "load_state_dict_from_url", refuse, raising=False)
    iru = getattr(torchvision, "_internally_replaced_utils", None)
    if iru is not None:
        monkeypatch.setattr(iru, "load_state_dict_from_url", refuse, raising=False)


@pytest.fixture(scope="module")
def resnet50_state():
    """A random torchvision ResNet-50 state_dict, fc included (built once for the module)."""
    torch.manual_seed(0)
    return torchvision.models.resnet50(weights=None).state_dict()


# --------------------------------------------------------------------------------------------- U-Net
@pytest.mark.parametrize("depth,size,bilinear", [(2, 32, False), (3, 64, False), (3, 32, True)])
def test_unet_output_shape(depth, size, bilinear):
    model = UNet(num_classes=7, base_width=4, depth=depth, bilinear=bilinear).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, 2 * size))  # non-square on purpose
    assert set(out) == {"out"}
    assert out["out"].shape == (2, 7, size, 2 * size)


@pytest.mark.parametrize("bilinear", [False, True])
def test_unet_drop_skip_removes_params_and_runs(bilinear):
    full = UNet(base_width=4, depth=3, bilinear=bilinear)
    for drop in [(0,), (2,), (0, 1, 2)]:
        ablated = UNet(base_width=4, depth=3, drop_skip=drop, bilinear=bilinear)
        assert _num_params(ablated) < _num_params(full)
        assert ablated.drop_skip == tuple(sorted(drop))
        out = ablated.eval()(torch.randn(1, 3, 32, 32))["out"]
        assert out.shape == (1, 7, 32, 32)
    # decoder stage 0 loses exactly the skip's input channels: (up + skip) -> up
    ablated = UNet(base_width=4, depth=3, drop_skip=[0], bilinear=bilinear)
    up_ch = 8 if bilinear else 4
    assert full.decoders[0][0].in_channels == up_ch + 4
    assert ablated.decoders[0][0].in_channels == up_ch


@pytest.mark.parametrize("bad", [3, -1, 7])
def test_unet_bad_drop_skip_index(bad):
    with pytest.raises(ValueError, match=r"drop_skip index {}.*0\.\.2".format(bad)):
        UNet(base_width=4, depth=3, drop_skip=(bad,))


def test_unet_non_divisible_input_raises():
    model = UNet(base_width=4, depth=3)
    with pytest.raises(ValueError, match=r"divisible by 8.*pad.*multiple of 2\*\*depth"):
        model(torch.randn(1, 3, 36, 32))


# ----------------------------------------------------------------------------------------- DeepLabV3
def test_deeplabv3_shapes_and_output_stride_16(no_network):
    torch.manual_seed(0)
    model = build_deeplabv3("resnet50", num_classes=7, aux_loss=True, backbone_weights="none").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        feats = model.backbone(x)
    assert set(out) == {"out", "aux"}
    assert out["out"].shape == (2, 7, 64, 64)
    assert out["aux"].shape == (2, 7, 64, 64)
    # output stride 16: 64 / 16 = 4; layer3 (aux) is also at stride 16 since only layer4 is dilated
    assert feats["out"].shape == (2, 2048, 4, 4)
    assert feats["aux"].shape == (2, 1024, 4, 4)
    # backbone parameter names are exactly torchvision's ResNet-50 minus fc.*
    ref = torchvision.models.resnet50(weights=None).state_dict()
    assert set(model.backbone.state_dict()) == {k for k in ref if not k.startswith("fc.")}
    # the ASPP uses the OS-16 rates
    rates = [m[0].dilation[0] for m in model.classifier[0].convs[1:4]]
    assert rates == [6, 12, 18]


def test_deeplabv3_without_aux_and_resnet101(no_network):
    model = build_deeplabv3("resnet101", num_classes=5, aux_loss=False).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert set(out) == {"out"}
    assert out["out"].shape == (1, 5, 64, 64)
    assert len(model.backbone.layer3) == 23  # really ResNet-101


def test_deeplabv3_bad_backbone():
    with pytest.raises(ValueError, match="resnet50"):
        build_deeplabv3("resnet18")


def test_backbone_weights_from_path(tmp_path, resnet50_state, no_network):
    path = tmp_path / "r50.pth"
    torch.save(resnet50_state, str(path))
    model = build_deeplabv3("resnet50", backbone_weights=str(path))
    loaded = model.backbone.state_dict()
    expected = {k: v for k, v in resnet50_state.items() if not k.startswith("fc.")}
    assert set(loaded) == set(expected)
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key


def test_backbone_weights_mismatch_names_keys(tmp_path, resnet50_state):
    state = dict(resnet50_state)
    state.pop("layer2.0.conv1.weight")
    state["layer9.renamed.weight"] = state.pop("layer1.0.bn1.weight")
    path = tmp_path / "bad.pth"
    torch.save(state, str(path))
    with pytest.raises(ValueError) as info:
        build_deeplabv3("resnet50", backbone_weights=str(path))
    msg = str(info.value)
    assert str(path) in msg and "resnet50" in msg
    assert "layer2.0.conv1.weight" in msg and "layer1.0.bn1.weight" in msg  # missing
    assert "layer9.renamed.weight" in msg  # unexpected


def test_backbone_weights_shape_mismatch(resnet50_state):
    backbone = build_deeplabv3("resnet50", aux_loss=False).backbone
    state = {k: v for k, v in resnet50_state.items() if not k.startswith("fc.")}
    state["conv1.weight"] = torch.zeros(64, 4, 7, 7)
    with pytest.raises(ValueError, match=r"shape mismatch.*conv1\.weight"):
        load_backbone_weights(backbone, state, source="x.pth", arch="resnet50")


def test_dino_style_checkpoint(tmp_path, resnet50_state):
    teacher = {"module.backbone." + k: v for k, v in resnet50_state.items() if not k.startswith("fc.")}
    teacher["module.head.mlp.0.weight"] = torch.zeros(3, 2048)
    student = {k: torch.zeros_like(v) for k, v in teacher.items()}
    ckpt = {"student": student, "teacher": teacher, "epoch": 3,
            "args": argparse.Namespace(arch="resnet50", lr=0.1)}
    path = tmp_path / "dino.pth"
    torch.save(ckpt, str(path))
    state = load_resnet_state_dict(path)
    assert "conv1.weight" in state and not any(k.startswith("head.") for k in state)
    assert torch.equal(state["conv1.weight"], resnet50_state["conv1.weight"])  # teacher, not student
    backbone = build_deeplabv3("resnet50", aux_loss=False).backbone
    load_backbone_weights(backbone, state)
    assert torch.equal(backbone.layer4[2].conv3.weight, resnet50_state["layer4.2.conv3.weight"])


def test_wrapped_state_dict_and_missing_num_batches_tracked(tmp_path, resnet50_state):
    state = {"model." + k: v for k, v in resnet50_state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": state, "epoch": 1}, str(path))
    loaded = load_resnet_state_dict(path)
    assert "fc.weight" not in loaded and "conv1.weight" in loaded
    backbone = build_deeplabv3("resnet50", aux_loss=False).backbone
    load_backbone_weights(backbone, loaded)  # old checkpoints without BN counters still load
    assert torch.equal(backbone.bn1.running_var, resnet50_state["bn1.running_var"])


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ValueError, match=r"cannot load .*corrupt\.pth.*corrupt, truncated or not a torch file"):
        load_resnet_state_dict(bad)
    with pytest.raises(ValueError, match="corrupt.pth"):
        build_deeplabv3("resnet50", backbone_weights=str(bad))
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_resnet_state_dict(missing)
    not_weights = tmp_path / "list.pth"
    torch.save([1, 2, 3], str(not_weights))
    with pytest.raises(ValueError, match="list.pth"):
        load_resnet_state_dict(not_weights)


def test_none_weights_never_touch_network(no_network):
    # the fixture makes every download path raise; "none" must build without calling any of them
    build_seg_model({"arch": "deeplabv3", "backbone_weights": "none", "aux_loss": False})
    build_seg_model({"arch": "unet", "base_width": 4, "depth": 2})
    # sanity check that the fixture really blocks the download path "imagenet" takes
    with pytest.raises(AssertionError, match="network access attempted"):
        build_deeplabv3("resnet50", aux_loss=False, backbone_weights="imagenet")


# -------------------------------------------------------------------------------- FCN32s / entry point
def test_fcn32s_shape_and_path_rejected(no_network):
    # VGG16 is slow to build, so this one build also covers build_seg_model and "none" without network
    model = build_seg_model({"arch": "fcn32s", "backbone_weights": None}).eval()
    assert isinstance(model, models.FCN32s)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert set(out) == {"out"} and out["out"].shape == (1, 7, 64, 64)
    with pytest.raises(ValueError, match="fcn32s"):
        build_fcn32s(backbone_weights="/some/vgg.pth")  # rejected before anything is built


def test_build_seg_model_each_arch(no_network):
    unet = build_seg_model({"arch": "unet", "base_width": 4, "depth": 2, "drop_skip": [1], "num_classes": 3})
    assert isinstance(unet, UNet) and unet.drop_skip == (1,)
    assert unet.eval()(torch.randn(1, 3, 32, 32))["out"].shape == (1, 3, 32, 32)
    deeplab = build_seg_model({"arch": "deeplabv3", "aux_loss": True, "lr": 0.01})  # extra keys ignored
    assert deeplab.aux_classifier is not None
    assert set(SEG_ARCHS) == {"unet", "deeplabv3", "fcn32s"}
    with pytest.raises(ValueError, match=r"unknown model arch 'segformer'.*unet.*deeplabv3.*fcn32s"):
        build_seg_model({"arch": "segformer"})


def test_input_multiple():
    assert input_multiple({"arch": "unet"}) == 16
    assert input_multiple({"arch": "unet", "depth": 3}) == 8
    assert input_multiple({"arch": "deeplabv3"}) == 1
    assert input_multiple({"arch": "fcn32s"}) == 1
    with pytest.raises(ValueError, match="valid"):
        input_multiple({"arch": "nope"})
