"""Shared fixtures: generated data in the real layout, and the repository root on sys.path."""
import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Keep test runs quiet and reproducible on small CPUs.
os.environ.setdefault("TQDM_DISABLE", "1")
# Under mutmut (docs/development.md): while it maps tests to the functions they reach ("stats"), a script that a test
# starts in a subprocess records the functions it reaches in its own process; utils/__init__.py writes them to this
# file at exit, and they are added to the test's before mutmut reads them at teardown. In a mutant's run the
# variable MUTANT_UNDER_TEST is inherited, so a subprocess runs the mutant too.
if os.environ.get("MUTANT_UNDER_TEST") == "stats":
    _HITS = Path(tempfile.mkstemp(prefix="hw1-mutmut-hits.")[1])
    os.environ["HW1_MUTMUT_HITS"] = str(_HITS)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_teardown(item):
        from mutmut.state import state

        state()._stats.update(_HITS.read_text().split())
        _HITS.write_text("")
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


class FileServer:
    """Serves ``routes`` from 127.0.0.1 on a free port (exact path + query); ``plan`` queues statuses per path
    (500 / 404 / "truncate" / "slow", one per request), ``types`` the Content-Type, ``hits`` counts GETs."""

    def __init__(self):
        import http.server
        import threading
        from collections import Counter

        self.routes = {}  # path -> body
        self.plan = {}
        self.types = {}
        self.hits = Counter()
        self.lock = threading.Lock()
        state = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                with state.lock:
                    state.hits[self.path] += 1
                    queued = state.plan.get(self.path)
                    action = queued.pop(0) if queued else None
                    body = state.routes.get(self.path)
                    content_type = state.types.get(self.path, "application/octet-stream")
                assert self.headers.get("User-Agent", "").startswith("hw1-download/")
                if action == "slow":
                    threading.Event().wait(0.6)  # longer than the client's timeout in the test
                if body is None or isinstance(action, int):
                    self.send_error(action if isinstance(action, int) else 404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2] if action == "truncate" else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.handle_error = lambda request, address: None  # a client that timed out: not our concern
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def add(self, path, body, plan=(), content_type="application/octet-stream"):
        self.routes[path] = body
        self.plan[path] = list(plan)
        self.types[path] = content_type
        return self.url(path)

    @property
    def base(self):
        return "http://127.0.0.1:{}".format(self.httpd.server_address[1])

    def url(self, path):
        return self.base + path

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    """A local HTTP server; proxies are bypassed so that requests to 127.0.0.1 go to it directly."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    srv = FileServer()
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def tiny_submission(tmp_path_factory):
    """Generated data in the real layout (one root holding p1_data/ and p2_data/) and two tiny trained models
    as a student would publish them: a setting-C classifier (p1_finetune.py, from a random resnet18 standing
    in for the DINO backbone) and a U-Net (p2_unet.py). Returns a dict of paths and the trainers' results."""
    import torchvision

    import p1_finetune
    import p2_unet
    from helpers import run_main
    from tools.toydata import make_p1_data, make_p2_data

    root = tmp_path_factory.mktemp("submission")
    data = root / "data"
    make_p1_data(data, num_classes=4, mini_per_class=0, office_train_per_class=6, office_val_per_class=3, seed=0)
    make_p2_data(data, size=64, num_train=8, num_val=4, seed=0)
    import torch

    torch.manual_seed(0)
    backbone = root / "backbone.pth"
    torch.save({k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")},
               str(backbone))
    p1 = run_main(p1_finetune, ["--setting", "C", "--backbone", backbone, "--data-dir", data / "p1_data" / "office",
                                "--output-dir", root / "p1_C", "--arch", "resnet18", "--epochs", "1",
                                "--batch-size", "8", "--image-size", "32", "--workers", "0", "--num-classes", "4",
                                "--hidden-dim", "16", "--deterministic", "--warmup-epochs", "0"])
    p2 = run_main(p2_unet, ["--data-dir", data / "p2_data", "--output-dir", root / "p2_unet", "--epochs", "2",
                            "--batch-size", "4", "--crop-size", "64", "--base-width", "8", "--depth", "3",
                            "--workers", "0", "--lr", "3e-3", "--snapshot-epochs", "--deterministic"])
    return {"data": data, "p1": root / "p1_C" / "best.pth", "p2": root / "p2_unet" / "best.pth",
            "p1_checkpoint": root / "p1_C" / "checkpoint.pth", "p1_result": p1, "p2_result": p2}


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
