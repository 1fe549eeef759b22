"""Shared fixtures: generated data in the real layout, and the repository root on sys.path."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Keep test runs quiet and reproducible on small CPUs.
os.environ.setdefault("TQDM_DISABLE", "1")
# The shell scripts under test (hw1_1.sh, hw1_2.sh, scripts/*.sh) call `python3`: make that the interpreter running
# the tests, so a suite run in another environment (e.g. .ci/grading_env.sh) tests the scripts there too.
_BIN = os.path.dirname(sys.executable)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _BIN:
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def toy_p2(tmp_path_factory) -> Path:
    """24 train + 8 validation 64x64 tiles in the real p2_data layout (read-only for tests)."""
    from tools.toydata import make_p2_data

    return make_p2_data(tmp_path_factory.mktemp("toy"), size=64, num_train=24, num_val=8, seed=0)


@pytest.fixture(scope="session")
def fake_coco_home(tmp_path_factory) -> Path:
    """A TORCH_HOME whose hub cache holds a *random* deeplabv3_resnet101 state_dict (torchvision's exact key
    format, 21-class heads) under the file name torchvision's COCO weights download to: tests exercise the
    COCO loading path without the network. Returns the TORCH_HOME folder."""
    import torch
    from torchvision.models import segmentation

    home = tmp_path_factory.mktemp("torch_home")
    url = segmentation.DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1.url
    path = home / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    model = segmentation.deeplabv3_resnet101(weights=None, weights_backbone=None, aux_loss=True)
    torch.save(model.state_dict(), str(path))
    return home
