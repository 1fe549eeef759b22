"""utils/classify.py against hand-written computations: the penultimate features, the checkpoint's own
normalisation, and a loaded classifier in eval mode."""
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
