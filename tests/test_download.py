"""Tests for utils/download.py and hw1_download.sh, against a local HTTP server on 127.0.0.1 (no internet)."""
import hashlib
import http.server
import os
import shlex
import shutil
import subprocess
import sys
import threading
import types
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from tools import download as dl

FORBIDDEN_WORDS = {"rm", "cp", "mv", "mkdir", "cd", "pip", "pip3", "sudo", "CUDA_VISIBLE_DEVICES"}


# ------------------------------------------------------------------------------------------ local server

class FileServer:
    """Serves ``routes`` from 127.0.0.1 on a free port; ``plan`` queues statuses per path, ``hits`` counts GETs."""

    def __init__(self):
        self.routes = {}  # path -> body
        self.plan = {}  # path -> list of 500 / 404 / "truncate" / "slow", consumed one per request
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
                assert self.headers.get("User-Agent", "").startswith("hw1-download/")
                if action == "slow":
                    threading.Event().wait(0.6)  # longer than the client's timeout in the test
                if body is None or isinstance(action, int):
                    self.send_error(action if isinstance(action, int) else 404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2] if action == "truncate" else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.handle_error = lambda request, address: None  # a client that timed out: not our concern
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def add(self, path, body, plan=()):
        self.routes[path] = body
        self.plan[path] = list(plan)
        return self.url(path)

    def url(self, path):
        return "http://127.0.0.1:{}{}".format(self.httpd.server_address[1], path)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # talk to 127.0.0.1 directly
    srv = FileServer()
    yield srv
    srv.close()


@pytest.fixture
def blob():
    return os.urandom(300_000)  # a fake checkpoint: several 1 MiB-read chunks are not needed, 300 kB is enough


def sha(data):
    return hashlib.sha256(data).hexdigest()


def write_manifest(path, rows, header="group,url,sha256,destination"):
    lines = ["# test manifest", header] + [",".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run_main(tmp_path, rows, *flags):
    manifest = write_manifest(tmp_path / "manifest.csv", rows)
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    return dl.main(["--manifest", manifest, "--root", str(root), "--backoff", "0", *flags]), root


def folder_names(folder):
    return sorted(os.listdir(str(folder)))


# ------------------------------------------------------------------------------------------ checkpoints

def test_good_checksum_installs_file(server, blob, tmp_path, capsys):
    url = server.add("/p1.pth", blob)
    rc, root = run_main(tmp_path, [("grading", url, sha(blob), "checkpoints/p1_best.pth")])
    assert rc == 0
    assert (root / "checkpoints" / "p1_best.pth").read_bytes() == blob
    assert folder_names(root / "checkpoints") == ["p1_best.pth"]  # no temp file left
    assert "downloaded (sha256 verified)" in capsys.readouterr().out


def test_bad_checksum_refused(server, blob, tmp_path, capsys):
    url = server.add("/p1.pth", blob)
    wrong = sha(b"something else")
    rc, root = run_main(tmp_path, [("grading", url, wrong, "checkpoints/p1_best.pth")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "checkpoints/p1_best.pth" in err and "sha256 mismatch" in err
    assert wrong in err and sha(blob) in err  # expected and actual
    assert folder_names(root / "checkpoints") == []  # nothing at the final path, no temp file
    assert server.hits["/p1.pth"] == 1  # a wrong checksum is final, not retried


def test_download_function_raises_on_bad_checksum(server, blob, tmp_path):
    url = server.add("/x.bin", blob)
    destination = tmp_path / "sub" / "x.bin"
    with pytest.raises(dl.DownloadError, match="x.bin: sha256 mismatch"):
        dl.download(url, str(destination), sha(b"other"), retries=3, backoff=0)
    assert folder_names(tmp_path / "sub") == []
    assert dl.download(url, str(destination), "", retries=1, backoff=0) == sha(blob)
    assert dl.sha256_of(str(destination)) == sha(blob)


def test_present_and_valid_is_skipped(server, blob, tmp_path, capsys):
    url = server.add("/p1.pth", blob)
    (tmp_path / "root" / "checkpoints").mkdir(parents=True)
    (tmp_path / "root" / "checkpoints" / "p1_best.pth").write_bytes(blob)
    rows = [("grading", url, sha(blob), "checkpoints/p1_best.pth")]
    assert run_main(tmp_path, rows)[0] == 0
    assert run_main(tmp_path, rows, "--force")[0] == 0  # a verified file is byte-identical: kept
    assert server.hits["/p1.pth"] == 0
    assert "ok (already present)" in capsys.readouterr().out


def test_present_with_wrong_content_is_replaced(server, blob, tmp_path):
    url = server.add("/p1.pth", blob)
    target = tmp_path / "root" / "checkpoints" / "p1_best.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"truncated or stale")
    rc, _ = run_main(tmp_path, [("grading", url, sha(blob), "checkpoints/p1_best.pth")])  # no --force
    assert rc == 0 and target.read_bytes() == blob
    assert folder_names(target.parent) == ["p1_best.pth"]


def test_present_without_hash_skipped_unless_force(server, blob, tmp_path, capsys):
    url = server.add("/p1.pth", blob)
    target = tmp_path / "root" / "checkpoints" / "p1_best.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"my own model")
    rows = [("grading", url, "", "checkpoints/p1_best.pth")]
    assert run_main(tmp_path, rows)[0] == 0
    assert server.hits["/p1.pth"] == 0 and target.read_bytes() == b"my own model"
    assert run_main(tmp_path, rows, "--force")[0] == 0
    assert server.hits["/p1.pth"] == 1 and target.read_bytes() == blob
    captured = capsys.readouterr()
    assert sha(blob) in captured.err and "unverified" in captured.err  # printed so the user can pin it


def test_failed_redownload_keeps_existing_file(server, tmp_path, capsys):
    url = server.add("/gone.pth", None)  # 404
    target = tmp_path / "root" / "checkpoints" / "p1_best.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"good file")
    rc, _ = run_main(tmp_path, [("grading", url, "", "checkpoints/p1_best.pth")], "--force")
    assert rc == 1
    assert target.read_bytes() == b"good file"
    assert folder_names(target.parent) == ["p1_best.pth"]
    assert "left untouched" in capsys.readouterr().out


def test_retries_after_two_500s(server, blob, tmp_path, monkeypatch):
    waits = []
    monkeypatch.setattr(dl.time, "sleep", waits.append)
    url = server.add("/flaky.pth", blob, plan=[500, 500])
    destination = tmp_path / "flaky.pth"
    assert dl.download(url, str(destination), sha(blob), retries=3, backoff=1.0) == sha(blob)
    assert server.hits["/flaky.pth"] == 3
    assert waits == [1.0, 2.0]  # backoff doubles
    assert destination.read_bytes() == blob and folder_names(tmp_path) == ["flaky.pth"]


def test_gives_up_after_three_attempts(server, blob, tmp_path, capsys):
    url = server.add("/down.pth", blob, plan=[503, 503, 503, 503])
    rc, root = run_main(tmp_path, [("grading", url, sha(blob), "checkpoints/p1_best.pth")])
    assert rc == 1 and server.hits["/down.pth"] == 3
    assert "giving up after 3 attempt(s)" in capsys.readouterr().err
    assert folder_names(root / "checkpoints") == []


def test_truncated_transfer_and_timeout_are_retried(server, blob, tmp_path):
    url = server.add("/short.pth", blob, plan=["truncate"])
    assert dl.download(url, str(tmp_path / "a.pth"), sha(blob), retries=2, backoff=0) == sha(blob)
    assert server.hits["/short.pth"] == 2
    url = server.add("/slow.pth", blob, plan=["slow"])
    assert dl.download(url, str(tmp_path / "b.pth"), sha(blob), retries=2, backoff=0, timeout=0.2) == sha(blob)
    assert server.hits["/slow.pth"] == 2
    assert folder_names(tmp_path) == ["a.pth", "b.pth"]


def test_404_is_final(server, tmp_path, capsys):
    url = server.add("/missing.pth", None)
    rc, root = run_main(tmp_path, [("grading", url, "", "checkpoints/p1_best.pth")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "HTTP 404" in err and "not retried" in err and "checkpoints/p1_best.pth" in err
    assert server.hits["/missing.pth"] == 1
    assert folder_names(root / "checkpoints") == []


def test_network_error_is_reported(tmp_path, monkeypatch, capsys):
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    srv = FileServer()
    url = srv.url("/p1.pth")
    srv.close()  # nothing listens on that port any more: connection refused
    rc, root = run_main(tmp_path, [("grading", url, "", "checkpoints/p1_best.pth")])
    assert rc == 1
    assert "giving up after 3 attempt(s)" in capsys.readouterr().err
    assert folder_names(root / "checkpoints") == []


def test_empty_url_explains_what_to_do(tmp_path, capsys):
    rows = [("grading", "", "", "checkpoints/p1_best.pth")]
    rc, root = run_main(tmp_path, rows)
    err = capsys.readouterr().err
    assert rc == 1
    assert "no URL" in err and "copy best.pth to checkpoints/p1_best.pth" in err
    assert "GitHub release" in err and "sha256sum" in err
    (root / "checkpoints" / "p1_best.pth").parent.mkdir(parents=True, exist_ok=True)
    (root / "checkpoints" / "p1_best.pth").write_bytes(b"trained here")
    assert run_main(tmp_path, rows)[0] == 0  # present (the user's own model): nothing missing


def test_dino_group_only_on_request(server, blob, tmp_path):
    grading = server.add("/p1.pth", blob)
    dino = server.add("/dino.pth", b"dino weights")
    rows = [("grading", grading, sha(blob), "checkpoints/p1_best.pth"),
            ("dino-official", dino, "", "checkpoints/dino.pth")]
    rc, root = run_main(tmp_path, rows)
    assert rc == 0 and server.hits["/dino.pth"] == 0 and not (root / "checkpoints" / "dino.pth").exists()
    assert run_main(tmp_path, rows, "--dino-official")[0] == 0
    assert (root / "checkpoints" / "dino.pth").read_bytes() == b"dino weights"


# ---------------------------------------------------------------------------------------------- manifest

def test_read_manifest_comments_and_blank_lines(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("# a comment\n\ngroup,url,sha256,destination\n  # indented comment\n"
                    "grading,,,checkpoints/a.pth\n"
                    "dino-official,https://example.org/b.pth,{},checkpoints/b.pth\n".format("AB" * 32))
    entries = dl.read_manifest(str(path))
    assert [(e.group, e.url, e.sha256, e.destination) for e in entries] == [
        ("grading", "", "", "checkpoints/a.pth"),
        ("dino-official", "https://example.org/b.pth", "ab" * 32, "checkpoints/b.pth")]
    assert entries[0].line == 5


@pytest.mark.parametrize("row, message", [
    ("grading,,,../outside.pth", "destination"),
    ("grading,,,/abs/path.pth", "destination"),
    ("grading,,xyz,checkpoints/a.pth", "64 hex"),
    ("grading,ftp://host/a.pth,,checkpoints/a.pth", "https://"),
    ("grading,,checkpoints/a.pth", "3 fields"),
])
def test_read_manifest_rejects_bad_rows(tmp_path, row, message):
    path = tmp_path / "m.csv"
    path.write_text("group,url,sha256,destination\n" + row + "\n")
    with pytest.raises(dl.ManifestError, match=message):
        dl.read_manifest(str(path))


def test_bad_header_fails_cleanly(tmp_path, capsys):
    manifest = write_manifest(tmp_path / "m.csv", [], header="url,destination")
    assert dl.main(["--manifest", manifest, "--root", str(tmp_path)]) == 1
    assert "expected 'group,url,sha256,destination'" in capsys.readouterr().err


def test_shipped_manifest_covers_the_grading_scripts(repo_root):
    entries = dl.read_manifest(str(repo_root / "checkpoints" / "manifest.csv"))
    grading = {e.destination for e in entries if e.group == "grading"}
    assert grading == {"checkpoints/p1_best.pth", "checkpoints/p2_best.pth"}
    for script, checkpoint in (("hw1_1.sh", "checkpoints/p1_best.pth"), ("hw1_2.sh", "checkpoints/p2_best.pth")):
        assert checkpoint in (repo_root / script).read_text()
    (dino,) = [e for e in entries if e.group == "dino-official"]
    assert dino.url == "https://dl.fbaipublicfiles.com/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth"
    assert dino.destination == "checkpoints/dino_resnet50_pretrain.pth"


# -------------------------------------------------------------------------------------------------- data

def make_zip(path, names):
    with zipfile.ZipFile(str(path), "w") as zf:
        for name in names:
            zf.writestr(name, "content of " + name)
    return path


DATA_NAMES = ["hw1_data/p1_data/office/train.csv", "hw1_data/p1_data/mini/train/0.jpg",
              "hw1_data/p2_data/train/0000_sat.jpg", "hw1_data/p2_data/validation/0000_mask.png"]


def test_zip_slip_is_refused(tmp_path):
    archive = make_zip(tmp_path / "evil.zip", ["p1_data/a.txt", "../evil.txt"])
    target = tmp_path / "out" / "hw1_data"
    with pytest.raises(dl.UnsafeArchiveError, match="evil.txt"):
        dl.unpack_archive(str(archive), str(target))
    assert not (tmp_path / "out" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not target.exists()  # every entry is checked before anything is written
    for bad in ("/etc/evil.txt", "a/../../evil.txt", "..\\evil.txt", "C:/evil.txt"):
        with pytest.raises(dl.UnsafeArchiveError):
            dl.unpack_archive(str(make_zip(tmp_path / "bad.zip", [bad])), str(target))


def test_zip_slip_through_a_symlinked_folder_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(str(outside), str(target / "link"))
    archive = make_zip(tmp_path / "a.zip", ["link/evil.txt", "p1_data/x"])
    with pytest.raises(dl.UnsafeArchiveError):
        dl.unpack_archive(str(archive), str(target))
    assert folder_names(outside) == []


def test_data_zip_slip_via_main(tmp_path, capsys):
    root = tmp_path / "root"
    root.mkdir()
    make_zip(root / "hw1_data.zip", DATA_NAMES + ["hw1_data/../../evil.txt"])
    manifest = write_manifest(tmp_path / "m.csv", [])
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 1
    assert "outside" in capsys.readouterr().err
    assert not (tmp_path / "evil.txt").exists()
    assert folder_names(root) == ["hw1_data.zip"]  # no hw1_data/, no staging folder left


def test_data_unpacks_existing_archive_and_then_skips(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gdown", None)  # not needed when the archive is already there
    root = tmp_path / "root"
    root.mkdir()
    make_zip(root / "hw1_data.zip", DATA_NAMES + ["__MACOSX/._junk"])
    manifest = write_manifest(tmp_path / "m.csv", [])
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 0
    assert folder_names(root / "hw1_data") == ["p1_data", "p2_data"]  # top folder stripped, no __MACOSX
    assert (root / "hw1_data/p2_data/validation/0000_mask.png").read_text().startswith("content of")
    assert folder_names(root) == ["hw1_data", "hw1_data.zip"]
    (root / "hw1_data.zip").write_bytes(b"not a zip")  # would fail if used: the skip must not touch it
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 0


def test_data_downloads_with_gdown_and_checks_layout(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, output, quiet=False):
        calls.append(url)
        make_zip(Path(output), names)
        return output

    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download=fake_download))
    root = tmp_path / "root"
    root.mkdir()
    manifest = write_manifest(tmp_path / "m.csv", [])
    names = ["hw1_data/readme.txt", "hw1_data/p1_data/x"]  # no p2_data: refused
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 1
    assert not (root / "hw1_data").exists()
    names = DATA_NAMES
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data", "--force"]) == 0
    assert calls == ["https://drive.google.com/uc?id=1x77fyA9BONMHnQXhvxP-87hFTCFwGm9a"] * 2
    assert (root / "hw1_data" / "p2_data" / "validation").is_dir()
    assert folder_names(root) == ["hw1_data", "hw1_data.zip"]


def test_data_without_gdown_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gdown", None)  # import gdown -> ImportError
    manifest = write_manifest(tmp_path / "m.csv", [])
    assert dl.main(["--manifest", manifest, "--root", str(tmp_path), "--data"]) == 1
    err = capsys.readouterr().err
    assert "pip install gdown" in err and "drive.google.com" in err and "hw1_data.zip" in err
    assert folder_names(tmp_path) == ["m.csv"]


# ------------------------------------------------------------------------------------------------ script

def code_words(text):
    """The shell words of ``text`` outside comments, split at pipes, ``;``, ``&&`` and ``$( )``."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def rule_violations(text):
    """Forbidden words among the code words, also inside ``VAR=value`` and ``/usr/bin/cmd``."""
    parts = {part for word in code_words(text) for piece in word.split("=") for part in piece.split("/")}
    return sorted(FORBIDDEN_WORDS & parts)


@pytest.mark.parametrize("line, bad", [
    ("python3 -m tools.download \"$@\" | rm -rf x", ["rm"]),
    ("true && mkdir -p out; cd out", ["cd", "mkdir"]),
    ("echo $(cp a b)", ["cp"]),
    ("CUDA_VISIBLE_DEVICES=0 python3 a.py", ["CUDA_VISIBLE_DEVICES"]),
    ("/usr/bin/sudo pip install gdown", ["pip", "sudo"]),
    ("python3 a.py  # rm, mv and cd in a comment are fine", []),
])
def test_rule_checker_itself(line, bad):
    assert rule_violations(line) == bad


def test_download_script_obeys_the_rules(repo_root):
    text = (repo_root / "hw1_download.sh").read_text()
    assert rule_violations(text) == []
    words = code_words(text)
    assert "python3" in words and "python" not in words
    assert words[words.index("python3"):words.index("python3") + 4] == ["python3", "-m", "tools.download", "$@"]
    assert not any(word.startswith("/") or "hw1_data" in word for word in words)  # no hard-coded paths
    assert not any(word in ("train", "p1_ssl_pretrain.py", "p1_finetune.py") for word in words)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_download_script_end_to_end(server, blob, tmp_path, repo_root):
    url = server.add("/p2.pth", blob)
    manifest = write_manifest(tmp_path / "m.csv", [("grading", url, sha(blob), "checkpoints/p2_best.pth")])
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    result = subprocess.run(["bash", "hw1_download.sh", "--manifest", manifest, "--root", str(tmp_path)],
                            cwd=str(repo_root), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=60)
    assert result.returncode == 0, result.stdout
    assert (tmp_path / "checkpoints" / "p2_best.pth").read_bytes() == blob
    assert "1 of 1 present and valid" in result.stdout
