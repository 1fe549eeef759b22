"""The grading path imports nothing outside the 2025 grading environment (docs/development.md, the grading environment): imageio,
matplotlib, numpy, Pillow, pandas, scipy, torch, torchvision, tensorboard, timm, gdown (+ tqdm, which gdown
brings) and the standard library. An import hook, installed through a sitecustomize.py on PYTHONPATH, refuses
any other top-level package that *our* code (the repository's files, or ``python -c``) asks for; what those
packages import themselves (torch's own dependencies) is theirs. It runs in this environment, which has
scikit-learn, pytest and more, so a stray import fails here and not only on the TAs' machine."""
import os
import subprocess
import sys

import pytest
import torch

from utils.checkpoint import make_checkpoint, save_atomic
from utils.classify import build_classifier
from utils.models import build_seg_model

ALLOWED = ["imageio", "matplotlib", "numpy", "PIL", "pandas", "scipy", "torch", "torchvision", "tensorboard",
           "timm", "gdown", "tqdm"]
if os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) == "mutants":
    ALLOWED.append("mutmut")  # mutmut's copy of the tree (docs/development.md): every mutated module imports it

GUARD = r'''
import importlib
import os
import sys
import sysconfig
from importlib.machinery import PathFinder

REPO = os.path.realpath({repo!r})
ALLOWED = set({allowed!r})
LOG = os.environ.get("HW1_IMPORT_GUARD_LOG", "")
STDLIB = [os.path.realpath(sysconfig.get_paths()[key]) for key in ("stdlib", "platstdlib")]
IMPORTLIB = os.path.dirname(os.path.realpath(importlib.__file__))


def _inside(path, folder):
    return path == folder or path.startswith(folder + os.sep)


def _importer():
    """The file of the first frame outside the import machinery and this hook."""
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not (name.startswith("<frozen") or name == __file__ or _inside(os.path.realpath(name), IMPORTLIB)):
            return name
        frame = frame.f_back
    return "<unknown>"


def _ours(filename):
    """Our code: the repository's files, and code given on the command line (python -c)."""
    return not os.path.isfile(filename) or _inside(os.path.realpath(filename), REPO)


def _in_stdlib(path):
    real = os.path.realpath(path)
    return any(_inside(real, s) for s in STDLIB) and "site-packages" not in real and "dist-packages" not in real


def _stdlib(spec):
    if spec.origin in ("built-in", "frozen"):
        return True
    places = [spec.origin] if spec.origin else list(spec.submodule_search_locations or [])
    return bool(places) and all(_in_stdlib(p) for p in places)


class GradingEnvironmentGuard(object):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if path is not None or top in ALLOWED or top in sys.builtin_module_names:
            return None  # submodules follow their package; allowed packages pass
        importer = _importer()
        if not _ours(importer):
            return None  # a third-party package importing its own dependencies
        spec = PathFinder.find_spec(top)
        if spec is None:
            return None  # not installed: the import fails as it would anyway
        if spec.origin and _inside(os.path.realpath(spec.origin), REPO):
            return None  # our own modules
        if _stdlib(spec):
            return None
        message = "grading-environment guard: {{}} imports {{}}, which the 2025 grading environment does not " \
                  "install".format(importer, top)
        if LOG:
            with open(LOG, "a") as f:
                f.write(message + "\n")
        raise ModuleNotFoundError(message, name=name)


sys.meta_path.insert(0, GradingEnvironmentGuard())
'''


def write_guard(folder, repo):
    """A folder holding the sitecustomize.py that installs the guard, ``repo`` being "our" code."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(GUARD.format(repo=str(repo), allowed=ALLOWED))
    return folder


@pytest.fixture(scope="module")
def guard(tmp_path_factory, repo_root):
    return write_guard(tmp_path_factory.mktemp("guard"), repo_root)


def guarded_env(guard, log):
    env = dict(os.environ, PYTHONPATH=str(guard), HW1_IMPORT_GUARD_LOG=str(log), TQDM_DISABLE="1")
    for name in ("HW1_P1_CHECKPOINT", "HW1_P2_CHECKPOINT"):
        env.pop(name, None)
    return env


def run(command, env, cwd):
    return subprocess.run(command, env=env, cwd=str(cwd), capture_output=True, text=True, timeout=600)


def test_the_guard_refuses_what_the_grading_environment_lacks(guard, tmp_path, repo_root):
    log = tmp_path / "refused.log"
    env = guarded_env(guard, log)
    # pytest is installed wherever this test runs, and is not in the grading environment
    proc = run([sys.executable, "-c", "import json, numpy\nimport pytest"], env, repo_root)
    assert proc.returncode != 0 and "grading-environment guard" in proc.stderr and "pytest" in proc.stderr
    # a file of ours importing it is refused as well, a lazy import inside a function too
    probe = tmp_path / "probe_repo"
    probe.mkdir()
    (probe / "pkg_probe.py").write_text("def later():\n    import pytest\n")
    probe_env = dict(env, PYTHONPATH=os.pathsep.join([str(write_guard(tmp_path / "guard2", probe)), str(probe)]))
    proc = run([sys.executable, "-c", "import pkg_probe\npkg_probe.later()"], probe_env, tmp_path)
    assert proc.returncode != 0 and "pkg_probe.py imports pytest" in proc.stderr
    assert "pytest" in log.read_text()


def test_grading_modules_import_within_the_list(guard, tmp_path, repo_root):
    log = tmp_path / "refused.log"
    proc = run([sys.executable, "-c", "import p1_inference, p2_inference, tools.download\n"
                "import utils.classify, utils.predict, utils.metrics, utils.masks"], guarded_env(guard, log),
               repo_root)
    assert proc.returncode == 0, proc.stderr
    assert not log.exists(), log.read_text()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Random-weight tiny models in the grading format (what the scripts load; no training needed here)."""
    folder = tmp_path_factory.mktemp("guard_ckpt")
    torch.manual_seed(0)
    config = {"arch": "resnet18", "num_classes": 3, "hidden_dim": 8, "dropout": 0.0}
    save_atomic(make_checkpoint("p1_classifier", config, build_classifier(config).state_dict(), image_size=32),
                folder / "p1.pth")
    seg = {"arch": "unet", "num_classes": 7, "base_width": 8, "depth": 2}
    save_atomic(make_checkpoint("p2_segmentation", seg, build_seg_model(seg).state_dict()), folder / "p2.pth")
    return folder


def test_the_grading_commands_run_under_the_guard(guard, checkpoints, tmp_path, repo_root, server):
    """bash hw1_download_ckpt.sh, hw1_1.sh and hw1_2.sh as the TAs run them, every lazy import included."""
    from tools.toydata import make_p1_data, make_p2_data

    log = tmp_path / "refused.log"
    env = guarded_env(guard, log)
    p1 = make_p1_data(tmp_path / "data", num_classes=3, mini_per_class=0, office_train_per_class=0,
                      office_val_per_class=2, seed=0)
    p2 = make_p2_data(tmp_path / "data", size=32, num_train=0, num_val=2, seed=0)
    # the download script, with gdown absent or present (the grading machine has it)
    import hashlib

    rows = []
    for problem in ("1", "2"):  # each graded checkpoint needs its row
        blob = (checkpoints / "p{}.pth".format(problem)).read_bytes()
        rows.append("grading,{},{},checkpoints/p{}_best.pth\n".format(
            server.add("/p{}_best.pth".format(problem), blob), hashlib.sha256(blob).hexdigest(), problem))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("group,url,sha256,destination\n" + "".join(rows))
    proc = run(["bash", str(repo_root / "hw1_download_ckpt.sh"), "--manifest", str(manifest), "--root",
                str(tmp_path / "root")], env, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run(["bash", "hw1_1.sh", str(p1 / "office" / "val.csv"), str(p1 / "office" / "val"),
                str(tmp_path / "pred.csv")], dict(env, HW1_P1_CHECKPOINT=str(checkpoints / "p1.pth")), repo_root)
    assert proc.returncode == 0, proc.stderr
    proc = run(["bash", "hw1_2.sh", str(p2 / "validation"), str(tmp_path / "masks")],
               dict(env, HW1_P2_CHECKPOINT=str(checkpoints / "p2.pth")), repo_root)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "masks").iterdir())) == 2
    assert not log.exists(), log.read_text()
