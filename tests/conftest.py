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


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def toy_p2(tmp_path_factory) -> Path:
    """24 train + 8 validation 64x64 tiles in the real p2_data layout (read-only for tests)."""
    from utils.toydata import make_p2_data

    return make_p2_data(tmp_path_factory.mktemp("toy"), size=64, num_train=24, num_val=8, seed=0)
