"""utils/classify.py against hand-written computations: the penultimate features, the checkpoint's own
normalisation, and a loaded classifier in eval mode."""
import re

import pytest
import torch

from utils.checkpoint import make_checkpoint, save_atomic
from utils.classify import build_classifier, classify, eval_transform_for, load_classifier, penultimate_features

CONFIG = {"arch": "resnet18", "num_classes": 5, "hidden_dim": 6, "dropout": 0.5}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = build_classifier(CONFIG)
    with torch.no_grad():  # BatchNorm statistics that matter (a train-mode BN would ignore them)
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("cls") / "c.pth"
    mean, std = [0.2, 0.5, 0.7], [0.1, 0.3, 0.2]  # not ImageNet's
    save_atomic(make_checkpoint("p1_classifier", CONFIG, model.state_dict(), None, image_size=40, mean=mean,
                                std=std), path)
    images = torch.randint(0, 256, (4, 3, 40, 40), generator=torch.Generator().manual_seed(1)).float()
    return path, images, mean, std


def _by_hand(model, images, mean, std):
    """(penultimate, logits): normalise with the given statistics, backbone, then the head written out in eval
    mode: Linear, BatchNorm with running statistics, ReLU, (no dropout), Linear."""
    m = torch.tensor(mean).view(1, 3, 1, 1) * 255
    s = torch.tensor(std).view(1, 3, 1, 1) * 255
    linear, bn, _, _, last = model.head
    with torch.no_grad():
        h = linear(model.backbone.eval()((images - m) / s))
        h = torch.relu((h - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias)
        return h, last(h)


def test_loaded_classifier_is_in_eval_mode_and_keeps_the_checkpoints_eval_settings(saved):
    path, _, _, _ = saved
    model, ckpt = load_classifier(path, torch.device("cpu"))
    assert not any(m.training for m in model.modules())
    transform = eval_transform_for(ckpt)
    assert transform(torch.zeros(3, 60, 80, dtype=torch.uint8)).shape == (3, 40, 40)


def test_penultimate_features_and_logits_equal_the_head_written_out(saved):
    path, images, mean, std = saved
    model, ckpt = load_classifier(path, torch.device("cpu"))
    features, logits = _by_hand(model, images, mean, std)
    assert torch.allclose(penultimate_features(model, images, ckpt), features, atol=1e-5)
    assert torch.allclose(classify(model, images, ckpt), logits, atol=1e-5)
    assert (features == 0).any() and (features > 0).any()  # the ReLU is inside: values before it would be negative


def test_the_classifier_defaults_are_the_reports_recipe_and_a_linear_probe_is_one_layer():
    from utils.classify import ImageClassifier

    for model in (ImageClassifier(), build_classifier({})):  # ResNet-50, 65 classes, MLP 1024, dropout 0.5
        assert model.backbone.feature_dim == 2048 and model.head[0].out_features == 1024
        assert model.head[3].p == 0.5 and model.head[-1].out_features == 65
    probe = build_classifier(dict(CONFIG, hidden_dim=0, dropout=0.3)).eval()
    assert [type(m) for m in probe.head] == [torch.nn.Dropout, torch.nn.Linear] and probe.head[0].p == 0.3
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = probe.backbone(x)
        assert torch.equal(probe.penultimate(x), features) and features.shape == (2, 512)
        torch.testing.assert_close(probe(x), probe.head[1](features))
        assert probe(x).shape == (2, 5)


@pytest.mark.parametrize("entry, value, message", [
    ("image_size", 7, r"invalid image_size 7 \(an integer in 8\.\.4096 is expected\)"),
    ("image_size", 4097, "invalid image_size 4097"),
    ("image_size", True, "invalid image_size True"),
    ("mean", [0.5, 0.5], r"invalid normalisation mean \[0.5, 0.5\] \(3 finite numbers expected\)"),
    ("mean", [0.5, float("nan"), 0.5], "invalid normalisation mean"),
    ("mean", ["a", 0.5, 0.5], "invalid normalisation mean"),
    ("std", [0.2, 0.0, 0.2], r"invalid normalisation std \[0.2, 0.0, 0.2\] \(3 finite numbers, all > 0, expected\)"),
    ("std", [0.2, 0.2], r"invalid normalisation std \[0.2, 0.2\] \(3 finite numbers, all > 0, expected\)"),
])
def test_a_checkpoint_with_degenerate_eval_settings_is_refused_naming_the_file(saved, tmp_path, entry, value,
                                                                              message):
    ckpt = torch.load(str(saved[0]), weights_only=True)
    ckpt[entry] = value
    path = tmp_path / "bad.pth"
    torch.save(ckpt, str(path))
    with pytest.raises(ValueError, match=re.escape("checkpoint {} has an ".format(path)) + message):
        load_classifier(path, torch.device("cpu"))


def test_eval_settings_a_checkpoint_lacks_are_128_and_imagenets(saved):
    from utils.classify import check_eval_settings
    from utils.transforms import normalize

    _, images, _, _ = saved
    check_eval_settings({}, "old.pth")  # nothing to refuse
    assert eval_transform_for({})(torch.zeros(3, 200, 300, dtype=torch.uint8)).shape == (3, 128, 128)
    model = build_classifier(CONFIG).eval()
    with torch.no_grad():
        expected = model(normalize(images))  # ImageNet's statistics
    for ckpt in (None, {}, {"image_size": 40}):
        torch.testing.assert_close(classify(model, images, ckpt), expected)
    # with an autocast dtype the model runs in it, on the images' device
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(normalize(images)).float()
        low_features = model.penultimate(normalize(images)).float()
    assert torch.equal(classify(model, images, None, torch.bfloat16), low)
    assert torch.equal(penultimate_features(model, images, None, torch.bfloat16), low_features)
