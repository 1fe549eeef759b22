"""Tests for tools/download.py, hw1_download.sh and hw1_download_ckpt.sh. Plain links go through the real gdown to a
local HTTP server on 127.0.0.1 (no internet; the ``server`` fixture of conftest.py); Google Drive's and Dropbox's
hosts are sent there too (``hosts_to``), or gdown's function is replaced by one that writes what Drive would."""
import hashlib
import http.server
import inspect
import os
import subprocess
import sys
import threading
import types
import urllib.parse
import zipfile
from pathlib import Path

import pytest

from tools import download as dl
from tools.presubmit import script_violations, shell_words


@pytest.fixture
def blob():
    return os.urandom(300_000)  # a fake checkpoint


@pytest.fixture(autouse=True)
def no_waits(monkeypatch):
    monkeypatch.setattr(dl, "RETRY_WAITS", (0.0, 0.0))


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
    return dl.main(["--manifest", manifest, "--root", str(root), *flags]), root


def folder_names(folder):
    return sorted(os.listdir(str(folder)))


def hosts_to(monkeypatch, base, hosts):
    """Send requests' GETs for ``hosts`` (what gdown asks Drive or Dropbox) to ``base``, path and query kept."""
    import requests

    real_get = requests.Session.get

    def get(self, url, **kwargs):
        parts = urllib.parse.urlsplit(url)
        if parts.hostname in hosts:
            url = base + urllib.parse.urlunsplit(("", "", parts.path, parts.query, ""))
        return real_get(self, url, **kwargs)

    monkeypatch.setattr(requests.Session, "get", get)


def fake_gdown(calls, write, signature="def download(url=None, output=None, quiet=False, proxy=None, speed=None, "
               "use_cookies=True, verify=True, id=None, fuzzy=False, resume=False, format=None, user_agent=None, "
               "log_messages=None): pass"):
    """A stand-in for the gdown module (by default with gdown 5.2's signature): records each call's arguments, and
    ``write(output)`` makes what Drive would have sent (a file, a web page) or raises what gdown would."""
    namespace = {}
    exec(signature, namespace)
    expected = inspect.signature(namespace["download"])

    def download(*args, **kwargs):
        call = expected.bind(*args, **kwargs)  # TypeError for an argument this gdown does not know
        calls.append(dict(call.arguments))
        write(Path(call.arguments["output"]))
        return call.arguments["output"]

    download.__signature__ = expected
    return types.SimpleNamespace(download=download, __version__="fake")


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
        dl.download(url, str(destination), sha(b"other"))
    assert folder_names(tmp_path / "sub") == []
    weights = torch_like(blob)  # without a sha256 only a whole torch file is installed
    assert dl.download(server.add("/w.pth", weights), str(destination), "") == sha(weights)
    assert dl.sha256_of(str(destination)) == sha(weights)


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


def test_a_present_file_is_judged_by_the_sha256_of_all_its_reads(server, tmp_path, monkeypatch):
    """The sha256 covers the whole file, not the first read: a valid multi-read checkpoint is kept, one whose tail
    differs from the pinned hash (a torn copy) is replaced, and a download whose tail differs is refused."""
    monkeypatch.setattr(dl, "CHUNK_SIZE", 1024)  # several reads for a small file
    data = os.urandom(5000)
    torn = data[:-1] + bytes([data[-1] ^ 1])
    url = server.add("/p1.pth", data)
    target = tmp_path / "root" / "checkpoints" / "p1_best.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(data)  # whole and valid: kept, nothing fetched
    rows = [("grading", url, sha(data), "checkpoints/p1_best.pth")]
    assert run_main(tmp_path, rows)[0] == 0 and server.hits["/p1.pth"] == 0
    target.write_bytes(torn)
    assert run_main(tmp_path, rows)[0] == 0
    assert target.read_bytes() == data and server.hits["/p1.pth"] == 1
    with pytest.raises(dl.DownloadError, match="sha256 mismatch"):
        dl.download(server.add("/torn.pth", torn), str(tmp_path / "x.pth"), sha(data))


def test_failed_redownload_keeps_existing_file(server, tmp_path, capsys):
    url = server.add("/gone.pth", None)  # 404
    target = tmp_path / "root" / "checkpoints" / "p1_best.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"good file")  # not what the row pins: fetched again, and the fetch fails
    rc, _ = run_main(tmp_path, [("grading", url, sha(b"published"), "checkpoints/p1_best.pth")])
    assert rc == 1
    assert target.read_bytes() == b"good file"
    assert folder_names(target.parent) == ["p1_best.pth"]
    assert "left untouched" in capsys.readouterr().out


def test_network_errors_are_retried_twice(server, blob, tmp_path, monkeypatch, capsys):
    """A transfer cut short (requests raises) is tried again after RETRY_WAITS; the third failure is final."""
    monkeypatch.setattr(dl, "RETRY_WAITS", (1.0, 2.0))
    waits = []
    monkeypatch.setattr(dl.time, "sleep", waits.append)
    url = server.add("/flaky.pth", blob, plan=["truncate", "truncate"])
    destination = tmp_path / "flaky.pth"
    assert dl.download(url, str(destination), sha(blob)) == sha(blob)
    assert server.hits["/flaky.pth"] == 3 and waits == [1.0, 2.0]
    assert destination.read_bytes() == blob and folder_names(tmp_path) == ["flaky.pth"]
    url = server.add("/down.pth", blob, plan=["truncate"] * 4)
    rc, root = run_main(tmp_path, [("grading", url, sha(blob), "checkpoints/p1_best.pth")])
    assert rc == 1 and server.hits["/down.pth"] == 3
    assert "(attempt 3)" in capsys.readouterr().err
    assert folder_names(root / "checkpoints") == []


def test_an_http_error_page_is_refused_not_retried(server, tmp_path, capsys):
    """gdown saves whatever the server answers: a 404 or 500 error page is refused as an HTML page (replaces the
    former status-code check), at once, and nothing is saved."""
    for path, plan in (("/missing.pth", []), ("/broken.pth", [500])):
        url = server.add(path, None if not plan else b"never sent", plan=plan)
        rc, root = run_main(tmp_path, [("grading", url, "ab" * 32, "checkpoints/p1_best.pth")])
        err = capsys.readouterr().err
        assert rc == 1 and server.hits[path] == 1
        assert "returned an HTML page ('Error response')" in err and url in err and "checkpoints/p1_best.pth" in err
        assert folder_names(root / "checkpoints") == []


def test_network_error_is_reported(tmp_path, monkeypatch, capsys):
    from conftest import FileServer

    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    srv = FileServer()
    url = srv.url("/p1.pth")
    srv.close()  # nothing listens on that port any more: connection refused
    rc, root = run_main(tmp_path, [("grading", url, "ab" * 32, "checkpoints/p1_best.pth")])
    err = capsys.readouterr().err
    assert rc == 1 and "(attempt 3): ConnectionError" in err and url in err
    assert folder_names(root / "checkpoints") == []


def test_empty_url_explains_what_to_do(tmp_path, capsys):
    rows = [("grading", "", "", "checkpoints/p1_best.pth")]
    rc, root = run_main(tmp_path, rows)
    err = capsys.readouterr().err
    assert rc == 1
    assert "no URL" in err and "copy its best.pth to checkpoints/p1_best.pth" in err
    assert "GitHub release" in err and "sha256" in err and "tools.publish" in err
    (root / "checkpoints" / "p1_best.pth").parent.mkdir(parents=True, exist_ok=True)
    (root / "checkpoints" / "p1_best.pth").write_bytes(b"trained here")
    assert run_main(tmp_path, rows)[0] == 0  # present (the user's own model): nothing missing


def test_dino_group_only_on_request(server, blob, tmp_path):
    grading = server.add("/p1.pth", blob)
    dino = server.add("/dino.pth", torch_like(b"dino weights"))
    rows = [("grading", grading, sha(blob), "checkpoints/p1_best.pth"),
            ("dino-official", dino, "", "checkpoints/dino.pth")]
    rc, root = run_main(tmp_path, rows)
    assert rc == 0 and server.hits["/dino.pth"] == 0 and not (root / "checkpoints" / "dino.pth").exists()
    assert run_main(tmp_path, rows, "--dino-official")[0] == 0
    assert (root / "checkpoints" / "dino.pth").read_bytes() == torch_like(b"dino weights")


def test_dino_official_lands_where_settings_b_and_d_read_and_never_replaces_a_file(server, tmp_path, capsys):
    """Before: --dino-official wrote checkpoints/dino_resnet50_pretrain.pth, a name settings B/D never read. Now the
    shipped row installs DINO's public ResNet-50 at p1_finetune.TA_BACKBONE; a file already there (the TAs') is
    kept as it is, even when it differs from a pinned sha256 and even with --force."""
    import p1_finetune

    (row,) = [e for e in dl.read_manifest(dl.DEFAULT_MANIFEST) if e.group == dl.DINO_GROUP]
    assert row.destination == p1_finetune.TA_BACKBONE == "checkpoints/official_dino_model.pth"
    assert row.url == "https://dl.fbaipublicfiles.com/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth"
    assert "`bash hw1_download.sh --dino-official`" in p1_finetune.MISSING["tas"]  # what B/D say when it is missing
    weights = b"DINO's public ResNet-50"
    rows = [("dino-official", server.add("/dino.pth", weights), sha(weights), row.destination)]
    rc, root = run_main(tmp_path, rows, "--dino-official")
    assert rc == 0 and (root / row.destination).read_bytes() == weights
    (root / row.destination).write_bytes(b"the TAs' official_dino_model.pth")
    for flags in ((), ("--force",)):
        assert run_main(tmp_path, rows, "--dino-official", *flags)[0] == 0
        assert (root / row.destination).read_bytes() == b"the TAs' official_dino_model.pth"
        assert "kept as it is" in capsys.readouterr().out
    assert server.hits["/dino.pth"] == 1


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
    ("grading,,,checkpoints/", "destination"),
    ("grading,,xyz,checkpoints/a.pth", "64 hex"),
    ("grading,ftp://host/a.pth,,checkpoints/a.pth", "https://"),
    ("grading,,checkpoints/a.pth", "3 fields"),
    (",,,checkpoints/a.pth", "empty group"),
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
    (tmp_path / "empty.csv").write_text("# only a comment\n")
    assert dl.main(["--manifest", str(tmp_path / "empty.csv"), "--root", str(tmp_path)]) == 1
    assert "empty manifest" in capsys.readouterr().err


def test_shipped_manifest_covers_the_grading_scripts(repo_root):
    entries = dl.read_manifest(str(repo_root / "checkpoints" / "manifest.csv"))
    grading = {e.destination for e in entries if e.group == "grading"}
    assert grading == {"checkpoints/p1_best.pth", "checkpoints/p2_best.pth"}
    for script, checkpoint in (("hw1_1.sh", "checkpoints/p1_best.pth"), ("hw1_2.sh", "checkpoints/p2_best.pth")):
        assert checkpoint in (repo_root / script).read_text()


def test_a_destination_folder_symlinked_outside_the_root_is_refused(server, blob, tmp_path, capsys):
    """checkpoints/ -> /elsewhere would make the download write outside the root: refused, naming the entry and
    where the link leads; nothing is fetched or written there. A symlink inside the root is fine."""
    url = server.add("/p1.pth", blob)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(str(outside), str(root / "checkpoints"))
    rc, _ = run_main(tmp_path, [("grading", url, sha(blob), "checkpoints/p1_best.pth")])
    out = capsys.readouterr().out
    assert rc == 1 and os.listdir(str(outside)) == [] and server.hits["/p1.pth"] == 0
    assert "checkpoints/p1_best.pth: REFUSED: its folder leads to {}, outside".format(outside) in out
    (root / "checkpoints").unlink()
    (root / "real").mkdir()
    os.symlink("real", str(root / "checkpoints"))  # stays inside the root
    rc, _ = run_main(tmp_path, [("grading", url, sha(blob), "checkpoints/p1_best.pth")])
    assert rc == 0 and (root / "real" / "p1_best.pth").read_bytes() == blob


# -------------------------------------------------------------------------------------------------- data

def make_zip(path, names):
    with zipfile.ZipFile(str(path), "w") as zf:
        for name in names:
            zf.writestr(name, "content of " + name)
    return path


DATA_NAMES = ["data_2025/p1_data/office/train.csv", "data_2025/p1_data/mini/train/0.jpg",
              "data_2025/p2_data/train/0000_sat.jpg", "data_2025/p2_data/validation/0000_mask.png"]
DRIVE_2025 = "https://drive.google.com/uc?id=1yt4CP2msqY2HSYCy67mQrWUtTPQRgcBF"


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


def test_unpacking_only_goes_into_a_new_folder(tmp_path):
    """No symlink can lead out of the target (replaces the former realpath check per entry): unpack_archive only
    creates a new folder, and zipfile writes every entry, a symlink one included, as a plain file."""
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    os.symlink(str(outside), str(target / "link"))
    archive = make_zip(tmp_path / "a.zip", ["link/evil.txt", "p1_data/x"])
    with pytest.raises(FileExistsError):
        dl.unpack_archive(str(archive), str(target))
    assert folder_names(outside) == []
    with zipfile.ZipFile(str(archive), "a") as zf:
        info = zipfile.ZipInfo("p2_data/escape")
        info.external_attr = 0o120777 << 16  # a symlink entry pointing outside
        zf.writestr(info, str(outside))
    assert dl.unpack_archive(str(archive), str(tmp_path / "new")) == 3
    assert not os.path.islink(str(tmp_path / "new" / "p2_data" / "escape")) and folder_names(outside) == []


def test_data_zip_slip_via_main(tmp_path, capsys):
    root = tmp_path / "root"
    root.mkdir()
    make_zip(root / "data_2025.zip", DATA_NAMES + ["data_2025/../../evil.txt"])
    manifest = write_manifest(tmp_path / "m.csv", [])
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 1
    assert "outside" in capsys.readouterr().err
    assert not (tmp_path / "evil.txt").exists()
    assert folder_names(root) == ["data_2025.zip"]  # no data_2025/, no staging folder left


def test_data_unpacks_existing_archive_and_then_skips(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gdown", None)  # not needed when the archive is already there
    root = tmp_path / "root"
    root.mkdir()
    make_zip(root / "data_2025.zip", DATA_NAMES + ["__MACOSX/._junk"])
    manifest = write_manifest(tmp_path / "m.csv", [])
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 0
    assert folder_names(root / "data_2025") == ["UNPACKED_BY_HW1_DOWNLOAD.txt", "p1_data", "p2_data"]  # top folder
    # stripped, no __MACOSX
    assert (root / "data_2025/p2_data/validation/0000_mask.png").read_text().startswith("content of")
    assert folder_names(root) == ["data_2025", "data_2025.zip"]
    (root / "data_2025.zip").write_bytes(b"not a zip")  # would fail if used: the skip must not touch it
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 0


def test_data_never_unpacks_over_a_folder_already_there(tmp_path, monkeypatch, capsys):
    """A data_2025/ already there is never unpacked over nor downloaded for: without its completeness record (made
    by hand) it is an error saying what to do; --force on a complete one says to move it away first."""
    calls = []
    monkeypatch.setitem(sys.modules, "gdown", fake_gdown(calls, lambda path: make_zip(path, DATA_NAMES)))
    root = tmp_path / "root"
    (root / "data_2025" / "p1_data").mkdir(parents=True)
    manifest = write_manifest(tmp_path / "m.csv", [])
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 1
    assert "no completeness record" in capsys.readouterr().err and calls == []
    (root / "data_2025").rename(root / "by_hand")
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 0  # downloaded, unpacked, recorded
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 0 and len(calls) == 1
    assert "ok (already present" in capsys.readouterr().out
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data", "--force"]) == 1
    assert "move it away" in capsys.readouterr().err and len(calls) == 1
    assert folder_names(root / "data_2025") == ["UNPACKED_BY_HW1_DOWNLOAD.txt", "p1_data", "p2_data"]


def test_data_downloads_the_2025_archive_with_gdown_and_checks_layout(tmp_path, monkeypatch):
    calls = []
    names = ["data_2025/readme.txt", "data_2025/p1_data/x"]  # no p2_data: refused
    monkeypatch.setitem(sys.modules, "gdown", fake_gdown(calls, lambda path: make_zip(path, names)))
    root = tmp_path / "root"
    root.mkdir()
    manifest = write_manifest(tmp_path / "m.csv", [])
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 1
    assert not (root / "data_2025").exists()
    names[:] = DATA_NAMES
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data", "--force"]) == 0
    assert [c["url"] for c in calls] == [DRIVE_2025] * 2
    assert all(c["fuzzy"] for c in calls)
    assert (root / "data_2025" / "p2_data" / "validation").is_dir()
    assert folder_names(root) == ["data_2025", "data_2025.zip"]


def test_data_2024_only_behind_its_flag(tmp_path, monkeypatch):
    calls = []
    names = [n.replace("data_2025/", "hw1_data/") for n in DATA_NAMES]
    monkeypatch.setitem(sys.modules, "gdown", fake_gdown(calls, lambda path: make_zip(path, names)))
    root = tmp_path / "root"
    root.mkdir()
    manifest = write_manifest(tmp_path / "m.csv", [])
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data-2024"]) == 0
    assert [c["url"].rsplit("=", 1)[1] for c in calls] == ["1x77fyA9BONMHnQXhvxP-87hFTCFwGm9a"]
    assert folder_names(root) == ["hw1_data", "hw1_data.zip"]
    assert folder_names(root / "hw1_data") == ["UNPACKED_BY_HW1_DOWNLOAD.txt", "p1_data", "p2_data"]


def test_data_refused_by_drive_says_how_to_get_it_by_hand(tmp_path, monkeypatch, capsys):
    """Drive's quota page for the course archive: gdown raises; the error names the link, says what to do by hand,
    and nothing is left behind. Without gdown the error says how to install it."""
    def quota(path):
        raise FileURLRetrievalError("Failed to retrieve file url:\n\n\tToo many users have viewed or downloaded "
                                    "this file recently.\n\nYou may still be able to access the file from the browser")

    FileURLRetrievalError = type("FileURLRetrievalError", (Exception,), {"__module__": "gdown.exceptions"})
    monkeypatch.setitem(sys.modules, "gdown", fake_gdown([], quota))
    manifest = write_manifest(tmp_path / "m.csv", [])
    (tmp_path / "root").mkdir()
    assert dl.main(["--manifest", manifest, "--root", str(tmp_path / "root"), "--data"]) == 1
    err = capsys.readouterr().err
    assert DRIVE_2025 in err and "Too many users" in err and "data_2025.zip" in err and "rerun" in err
    assert "in a browser" in err and folder_names(tmp_path / "root") == []
    monkeypatch.setitem(sys.modules, "gdown", None)  # import gdown -> ImportError
    assert dl.main(["--manifest", manifest, "--root", str(tmp_path / "root"), "--data"]) == 1
    assert "gdown is not installed: `pip install -r requirements.txt`" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ link styles

FILE_ID = "1AbC-d_EfGh"
SHARE_LINK = "https://drive.google.com/file/d/{}/view?usp=sharing".format(FILE_ID)


@pytest.mark.parametrize("link, fetched", [
    (SHARE_LINK, SHARE_LINK),  # gdown's fuzzy file id handles every Drive form
    ("https://drive.google.com/uc?export=download&id=" + FILE_ID, "https://drive.google.com/uc?export=download&id="
     + FILE_ID),
    ("https://www.dropbox.com/s/abc123/p1_best.pth?dl=0", "https://www.dropbox.com/s/abc123/p1_best.pth?dl=1"),
    ("https://www.dropbox.com/scl/fi/x7y/p2_best.pth?rlkey=k9&dl=0",
     "https://www.dropbox.com/scl/fi/x7y/p2_best.pth?rlkey=k9&dl=1"),
    ("https://www.dropbox.com/s/abc123/p1_best.pth", "https://www.dropbox.com/s/abc123/p1_best.pth?dl=1"),
    ("https://github.com/me/hw1/releases/download/v1/p1_best.pth",
     "https://github.com/me/hw1/releases/download/v1/p1_best.pth"),
])
def test_link_styles_resolve(link, fetched):
    assert dl.resolve_link(link) == fetched


@pytest.mark.parametrize("link, message", [
    ("https://drive.google.com/drive/folders/1xyz?usp=sharing", "folder link"),
    ("https://www.dropbox.com/home/hw1", "not a Dropbox share link"),
    ("ftp://example.org/p1.pth", "not an http"),
])
def test_unusable_links_are_named(link, message):
    with pytest.raises(dl.DownloadError, match=message) as info:
        dl.resolve_link(link)
    assert link in str(info.value)


def run_link(tmp_path, link, data, destination="checkpoints/p1_best.pth"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    rc, root = run_main(tmp_path, [("grading", link, sha(data), destination)])
    return rc, root / destination


class DriveServer:
    """Plays Google Drive for the real gdown (``hosts_to`` sends Drive's hosts here): /uc?id=ID answers the virus-scan
    page of a large file, whose download form leads to /download?...confirm=t, which sends the file with the
    Content-Disposition that tells gdown it is the file."""

    def __init__(self, blob):
        pages = {"/uc?id=" + FILE_ID: (
            "text/html; charset=utf-8", "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>"
            "</head><body><form id=\"download-form\" action=\"https://drive.usercontent.google.com/download\" "
            "method=\"get\"><input type=\"submit\" value=\"Download anyway\"/><input type=\"hidden\" name=\"id\" "
            "value=\"{}\"><input type=\"hidden\" name=\"export\" value=\"download\"><input type=\"hidden\" "
            "name=\"confirm\" value=\"t\"></form></body></html>".format(FILE_ID).encode())}
        self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(handler):
                self.hits.append(handler.path)
                path = urllib.parse.urlsplit(handler.path)
                if path.path == "/download" and "confirm=t" in path.query:
                    kind, body = "application/octet-stream", blob
                elif handler.path in pages:
                    kind, body = pages[handler.path]
                else:
                    return handler.send_error(404)
                handler.send_response(200)
                handler.send_header("Content-Type", kind)
                handler.send_header("Content-Length", str(len(body)))
                if kind.startswith("application/"):
                    handler.send_header("Content-Disposition", "attachment; filename=\"p1_best.pth\"")
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True).start()
        self.base = "http://127.0.0.1:{}".format(self.httpd.server_address[1])


def test_drive_share_link_through_the_real_gdown_and_its_virus_scan_page(blob, tmp_path, monkeypatch):
    pytest.importorskip("gdown")
    drive = DriveServer(blob)
    try:
        hosts_to(monkeypatch, drive.base, dl.DRIVE_HOSTS)
        rc, target = run_link(tmp_path, SHARE_LINK, blob)
    finally:
        drive.httpd.shutdown()
    assert rc == 0 and target.read_bytes() == blob
    assert drive.hits[0] == "/uc?id=" + FILE_ID and drive.hits[-1].startswith("/download?")
    assert folder_names(target.parent) == ["p1_best.pth"]


def test_the_gdown_call_fits_gdown_4_7_3_to_5(blob, tmp_path, monkeypatch):
    """Only the keyword arguments a gdown knows are passed (4.7.3 and 5.0 have no log_messages: the TAs' gdown is
    not pinned, and small Drive files work with any; requirements.txt asks 5.1); a Drive link goes as
    published, with fuzzy=True and gdown's own user agent, into a private folder beside the destination."""
    old = ("def download(url=None, output=None, quiet=False, proxy=None, speed=None, use_cookies=True, verify=True, "
           "id=None, fuzzy=False, resume=False, format=None, user_agent=None): pass")
    for index, signature in enumerate((old, None)):
        calls = []
        module = fake_gdown(calls, lambda path: path.write_bytes(blob), *([signature] if signature else []))
        monkeypatch.setitem(sys.modules, "gdown", module)
        rc, target = run_link(tmp_path / str(index), SHARE_LINK, blob)
        assert rc == 0 and target.read_bytes() == blob and len(calls) == 1
        assert calls[0]["url"] == SHARE_LINK and calls[0]["fuzzy"] is True and calls[0]["use_cookies"] is False
        assert calls[0]["user_agent"] is None  # Drive: gdown's own (a browser's) user agent
        assert ("log_messages" in calls[0]) == (signature is None)
        assert Path(calls[0]["output"]).parent != target.parent  # a private folder, gone afterwards
        assert folder_names(target.parent) == ["p1_best.pth"]


def test_the_installed_gdown_takes_our_arguments():
    gdown = pytest.importorskip("gdown")
    for name in ("quiet", "fuzzy", "use_cookies", "user_agent"):
        assert name in inspect.signature(gdown.download).parameters


@pytest.mark.parametrize("failure, message", [
    ("raises", "gdown could not fetch it (attempt 1): FileURLRetrievalError: Failed to retrieve file url: Cannot "
               "retrieve the public link"),
    ("returns None", "gdown fetched nothing (is it shared with 'Anyone with the link'?"),
    ("saves a sign-in page", "returned an HTML page ('Sign in - Google Accounts')"),
    ("saves a quota page", "returned an HTML page ('Google Drive - Quota exceeded')"),
])
def test_drive_failures_are_errors_naming_the_link(tmp_path, monkeypatch, capsys, failure, message):
    """What gdown does when Drive refuses (gdown 5 raises, 4.x returns None, a page may be saved): an error that
    names the file and the link, says what to check, and saves nothing. Never retried."""
    pages = {"saves a sign-in page": b"<!doctype html><html><head><title>Sign in - Google Accounts</title></head>",
             "saves a quota page": b"<html><head><title>Google Drive - Quota exceeded</title></head><body>Too many "
                                   b"users have viewed or downloaded this file recently.</body></html>"}

    def drive(path):
        if failure == "raises":
            raise type("FileURLRetrievalError", (Exception,), {})(
                "Failed to retrieve file url:\n\n\tCannot retrieve the public link of the file. You may need to "
                "change the permission to 'Anyone with the link', or have had many accesses.")
        if failure in pages:
            path.write_bytes(pages[failure])

    calls = []
    module = fake_gdown(calls, drive)
    if failure == "returns None":
        module.download = lambda *args, **kwargs: calls.append(kwargs)
    monkeypatch.setitem(sys.modules, "gdown", module)
    rc, target = run_link(tmp_path, SHARE_LINK, b"whatever")
    err = capsys.readouterr().err
    assert rc == 1 and message in err and SHARE_LINK in err and "checkpoints/p1_best.pth" in err
    assert "Traceback" not in err and len(calls) == 1
    assert folder_names(target.parent) == []  # never saved as a checkpoint, no temp file


def test_dropbox_link_is_fetched_with_dl_1(server, blob, tmp_path, monkeypatch):
    pytest.importorskip("gdown")
    hosts_to(monkeypatch, server.base, ("www.dropbox.com",))
    server.add("/s/abc123/p2_best.pth?dl=0", b"<html>Dropbox preview page</html>", content_type="text/html")
    server.add("/s/abc123/p2_best.pth?dl=1", blob)
    rc, target = run_link(tmp_path, "https://www.dropbox.com/s/abc123/p2_best.pth?dl=0", blob,
                          "checkpoints/p2_best.pth")
    assert rc == 0 and target.read_bytes() == blob
    assert server.hits["/s/abc123/p2_best.pth?dl=0"] == 0


def test_plain_link_answering_a_web_page_is_refused(server, tmp_path, capsys):
    # e.g. a GitHub "blob" page instead of the release asset's download link
    link = server.add("/me/hw1/blob/main/p1_best.pth", b"<!DOCTYPE html><html><title>GitHub</title></html>",
                      content_type="text/html; charset=utf-8")
    rc, target = run_link(tmp_path, link, b"whatever")
    err = capsys.readouterr().err
    assert rc == 1 and "HTML page ('GitHub')" in err and link in err
    assert folder_names(target.parent) == []


# ------------------------------------------------------------------------------ submission (TAs' script)

def test_submission_without_a_link_fails_naming_manifest_and_the_guide(tmp_path, capsys):
    rows = [("grading", "", "", "checkpoints/p1_best.pth"), ("grading", "", "", "checkpoints/p2_best.pth")]
    (tmp_path / "root" / "checkpoints").mkdir(parents=True)
    (tmp_path / "root" / "checkpoints" / "p2_best.pth").write_bytes(b"committed to git")
    rc, root = run_main(tmp_path, rows, "--submission")
    captured = capsys.readouterr()
    assert rc == 1
    assert "manifest.csv" in captured.err and "docs/submitting.md" in captured.err and "tools.publish" in captured.err
    assert 'manifest.csv; see docs/submitting.md)' in captured.out and "MISSING (no URL in" in captured.out
    # a file here passes: in the TAs' clone it is one git holds (presubmit's fresh clone checks a student's)
    (root / "checkpoints" / "p1_best.pth").write_bytes(b"committed to git")
    assert run_main(tmp_path, rows, "--submission")[0] == 0
    assert run_main(tmp_path, rows)[0] == 0


def test_submission_with_no_grading_rows_fails(tmp_path, capsys):
    assert run_main(tmp_path, [("dino-official", "https://example.org/d.pth", "", "checkpoints/d.pth")],
                    "--submission")[0] == 1
    assert "no 'grading' rows" in capsys.readouterr().out


def test_submission_refuses_other_downloads(tmp_path):
    with pytest.raises(SystemExit):
        run_main(tmp_path, [], "--submission", "--data")


# ------------------------------------------------------------------------------------------------ script

@pytest.mark.parametrize("line, bad", [
    ("python3 -m tools.download \"$@\" | rm -rf x", ["rm"]),
    ("true && mkdir -p out; cd out", ["cd", "mkdir"]),
    ("echo $(cp a b)", ["cp"]),
    ("CUDA_VISIBLE_DEVICES=0 python3 a.py", ["CUDA_VISIBLE_DEVICES"]),
    ("/usr/bin/sudo pip install gdown", ["pip", "sudo"]),
    ("python a.py", ["python"]),
    ("python3 a.py  # rm, mv and cd in a comment are fine", []),
])
def test_rule_checker_itself(line, bad):
    assert script_violations(line) == bad


@pytest.mark.parametrize("script", ["hw1_download.sh", "hw1_download_ckpt.sh"])
def test_download_scripts_obey_the_rules(repo_root, script):
    text = (repo_root / script).read_text()
    assert script_violations(text) == []
    words = shell_words(text)
    assert "python3" in words
    assert words[words.index("python3"):words.index("python3") + 3] == ["python3", "-m", "tools.download"]
    assert not any(word.startswith("/") or "hw1_data" in word or "data_2025" in word for word in words)
    assert not any(word in ("train", "p1_ssl_pretrain.py", "p1_finetune.py") for word in words)


def test_download_script_end_to_end(server, blob, tmp_path, repo_root):
    url = server.add("/p2.pth", blob)
    manifest = write_manifest(tmp_path / "m.csv", [("grading", url, sha(blob), "checkpoints/p2_best.pth")])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(["bash", str(repo_root / "hw1_download.sh"), "--manifest", manifest, "--root",
                             str(tmp_path)], cwd=str(elsewhere), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
    assert result.returncode == 0, result.stdout
    assert (tmp_path / "checkpoints" / "p2_best.pth").read_bytes() == blob
    assert "1 of 1 present and valid" in result.stdout


def copy_download_tool(repo_root, target, manifest_rows):
    """A repository holding just hw1_download_ckpt.sh, the downloader with the one module of utils/ it imports
    (utils.signals, standard library only) and a manifest."""
    (target / "tools").mkdir(parents=True)
    (target / "utils").mkdir()
    (target / "checkpoints").mkdir()
    for name in ("tools/__init__.py", "tools/download.py", "utils/__init__.py", "utils/signals.py"):
        (target / name).write_bytes((repo_root / name).read_bytes())
    (target / "hw1_download_ckpt.sh").write_bytes((repo_root / "hw1_download_ckpt.sh").read_bytes())
    write_manifest(target / "checkpoints" / "manifest.csv", manifest_rows)


def test_download_ckpt_script_with_no_arguments_from_any_folder(server, blob, tmp_path, repo_root):
    """`bash hw1_download_ckpt.sh` exactly as the TAs run it (no arguments), started from another folder, with the
    real gdown. Drive and Dropbox links are tested in-process above; here two release assets."""
    pytest.importorskip("gdown")
    asset = server.add("/me/hw1/releases/download/v1/p1_best.pth", blob)
    other = server.add("/me/hw1/releases/download/v1/p2_best.pth", blob[::-1])
    repo = tmp_path / "repo"
    copy_download_tool(repo_root, repo, [("grading", asset, sha(blob), "checkpoints/p1_best.pth"),
                                         ("grading", other, sha(blob[::-1]), "checkpoints/p2_best.pth")])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH="")
    result = subprocess.run(["bash", str(repo / "hw1_download_ckpt.sh")], cwd=str(elsewhere), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    assert result.returncode == 0, result.stdout
    assert (repo / "checkpoints" / "p1_best.pth").read_bytes() == blob
    assert (repo / "checkpoints" / "p2_best.pth").read_bytes() == blob[::-1]
    assert folder_names(elsewhere) == []
    # nothing configured and no file: a loud failure naming the manifest and the guide to submitting
    (repo / "checkpoints" / "p1_best.pth").unlink()
    write_manifest(repo / "checkpoints" / "manifest.csv", [("grading", "", "", "checkpoints/p1_best.pth")])
    result = subprocess.run(["bash", str(repo / "hw1_download_ckpt.sh")], cwd=str(elsewhere), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    assert result.returncode == 1
    assert "checkpoints/manifest.csv" in result.stdout and "docs/submitting.md" in result.stdout
    # a manifest with no grading row (here mistyped) is a failure too, not "0 of 0 present"
    write_manifest(repo / "checkpoints" / "manifest.csv", [("gradng", asset, sha(blob), "checkpoints/p1_best.pth")])
    result = subprocess.run(["bash", str(repo / "hw1_download_ckpt.sh")], cwd=str(elsewhere), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    assert result.returncode == 1 and "no 'grading' rows" in result.stdout, result.stdout


# ------------------------------------------------------------- issue 24: a download is proven before it is installed

def torch_like(payload=b"weights"):
    """The bytes of a torch.save file (a zip holding NAME/data.pkl), without importing torch."""
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00." + payload)
        zf.writestr("archive/version", b"3\n")
    return buffer.getvalue()


class RawServer:
    """127.0.0.1, one answer per path, written by hand: ``answers[path](handler)`` (no Content-Length, a drip, a
    redirect: what FileServer cannot send)."""

    def __init__(self, answers):
        self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(handler):
                self.hits.append(handler.path)
                answers[handler.path](handler)

            def log_message(handler, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.handle_error = lambda request, address: None
        threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True).start()
        self.base = "http://127.0.0.1:{}".format(self.httpd.server_address[1])

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def answer(body, content_type="application/octet-stream", length=True):
    def send(handler):
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        if length:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    return send


def drip(handler):
    """A server that sends one byte now and then, forever: no read ever times out."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/octet-stream")
    handler.send_header("Content-Length", "1000000")
    handler.end_headers()
    for _ in range(200):
        try:
            handler.wfile.write(b"x")
            handler.wfile.flush()
        except OSError:
            return
        threading.Event().wait(0.1)


@pytest.fixture
def raw(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    servers = []

    def start(answers):
        servers.append(RawServer(answers))
        return servers[-1]

    yield start
    for srv in servers:
        srv.close()


def test_an_unpinned_grading_row_is_refused_before_any_fetch(server, blob, tmp_path, capsys):
    """A grading row with a link but no sha256 could install anything: refused, naming the line and the command that
    pins it, before anything is fetched; a file already there is left as it is."""
    url = server.add("/p1.pth", blob)
    rc, root = run_main(tmp_path, [("grading", url, "", "checkpoints/p1_best.pth")])
    err = capsys.readouterr().err
    assert rc == 1 and server.hits["/p1.pth"] == 0 and not (root / "checkpoints" / "p1_best.pth").exists()
    assert "line 3" in err and "no sha256" in err
    assert "python -m tools.publish RUN/best.pth --problem 1 --link URL" in err
    (root / "checkpoints").mkdir(exist_ok=True)
    (root / "checkpoints" / "p1_best.pth").write_bytes(b"a good file")
    assert run_main(tmp_path, [("grading", url, "", "checkpoints/p1_best.pth")], "--force")[0] == 1
    assert (root / "checkpoints" / "p1_best.pth").read_bytes() == b"a good file" and server.hits["/p1.pth"] == 0


@pytest.mark.parametrize("case", ["empty 200", "cut without Content-Length", "json error", "meta page", "html page",
                                  "not a checkpoint"])
def test_an_unpinned_download_must_be_a_whole_torch_checkpoint(raw, tmp_path, capsys, case):
    """With no sha256 (DINO's public ResNet-50) the body must at least be a whole torch file: an empty answer, a body
    cut without Content-Length, a JSON or HTML error page is refused, nothing installed; a whole one is."""
    good = torch_like(os.urandom(5000))
    bodies = {"empty 200": answer(b""), "cut without Content-Length": answer(good[:len(good) // 2], length=False),
              "json error": answer(b'{"error": {"code": 403, "message": "rate limited"}}', "application/json"),
              "meta page": answer(b'<meta http-equiv="refresh" content="0; url=/login">', "text/html"),
              "html page": answer(b"<html><body>Sign in</body></html>", "text/html"),
              "not a checkpoint": answer(b"PK\x03\x04 truncated zip")}
    srv = raw({"/bad.pth": bodies[case], "/good.pth": answer(good, length=False)})
    rows = [("dino-official", srv.base + "/bad.pth", "", "checkpoints/dino.pth")]
    rc, root = run_main(tmp_path, rows, "--dino-official")
    err = capsys.readouterr().err
    assert rc == 1 and folder_names(root / "checkpoints") == []
    assert "checkpoints/dino.pth" in err and srv.base + "/bad.pth" in err and "Traceback" not in err
    rows = [("dino-official", srv.base + "/good.pth", "", "checkpoints/dino.pth")]
    assert run_main(tmp_path, rows, "--dino-official")[0] == 0
    assert (root / "checkpoints" / "dino.pth").read_bytes() == good


def test_force_never_replaces_a_good_archive_with_a_cut_one(tmp_path, monkeypatch, capsys):
    """--force downloads the data archive again into a temp file; a cut one (no Content-Length: gdown cannot tell)
    is refused and the archive already there is kept byte for byte."""
    root = tmp_path / "root"
    root.mkdir()
    good = make_zip(tmp_path / "good.zip", DATA_NAMES).read_bytes()
    (root / "data_2025.zip").write_bytes(good)
    monkeypatch.setitem(sys.modules, "gdown", fake_gdown([], lambda path: path.write_bytes(good[:len(good) // 2])))
    manifest = write_manifest(tmp_path / "m.csv", [])
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data", "--force"]) == 1
    assert (root / "data_2025.zip").read_bytes() == good and folder_names(root) == ["data_2025.zip"]
    assert "data_2025.zip" in capsys.readouterr().err


def test_a_stalled_transfer_ends_at_the_deadline(raw, tmp_path, capsys):
    """A server sending a byte now and then never trips a read timeout: --deadline bounds the whole file."""
    srv = raw({"/slow.pth": drip})
    url = srv.base + "/slow.pth"
    rc, root = run_main(tmp_path, [("grading", url, "ab" * 32, "checkpoints/p1_best.pth")], "--deadline", "1")
    err = capsys.readouterr().err
    assert rc == 1 and "timed out after 1 s" in err and url in err and "checkpoints/p1_best.pth" in err
    assert folder_names(root / "checkpoints") == [] and len(srv.hits) == 1


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_a_deadline_that_is_not_a_positive_number_is_a_usage_error(tmp_path, value, capsys):
    with pytest.raises(SystemExit) as info:
        run_main(tmp_path, [], "--deadline", value)
    assert info.value.code == 2 and "--deadline" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/p1.pth", "http://[::1/p1.pth", "http://[zz::1]/p1.pth"])
def test_a_malformed_url_is_a_one_line_error_naming_the_line(tmp_path, capsys, url):
    rc, root = run_main(tmp_path, [("grading", url, "ab" * 32, "checkpoints/p1_best.pth")])
    err = capsys.readouterr().err
    assert rc == 1 and "line 3" in err and "manifest.csv" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_redirect_to_ftp_is_one_line_naming_the_row_and_not_retried(raw, tmp_path, capsys):
    def redirect(handler):
        handler.send_response(302)
        handler.send_header("Location", "ftp://example.org/p1.pth")
        handler.end_headers()

    srv = raw({"/p1.pth": redirect})
    url = srv.base + "/p1.pth"
    rc, root = run_main(tmp_path, [("grading", url, "ab" * 32, "checkpoints/p1_best.pth")])
    err = capsys.readouterr().err
    assert rc == 1 and len(srv.hits) == 1 and "Traceback" not in err
    assert "ftp://example.org/p1.pth" in err and "line 3" in err and url in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1


def test_ctrl_c_during_a_download_or_an_unpack_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    def interrupted(path):
        path.write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "gdown", fake_gdown([], interrupted))
    rc, root = run_main(tmp_path, [("grading", SHARE_LINK, "ab" * 32, "checkpoints/p1_best.pth")])
    err = capsys.readouterr().err
    assert rc == 130 and err.strip().splitlines()[-1].startswith("interrupted") and "Traceback" not in err
    assert folder_names(root / "checkpoints") == []
    make_zip(root / "data_2025.zip", DATA_NAMES)

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(zipfile.ZipFile, "extractall", killed)
    monkeypatch.setattr(zipfile.ZipFile, "extract", killed)
    assert dl.main(["--manifest", write_manifest(tmp_path / "m.csv", []), "--root", str(root), "--data"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert folder_names(root) == ["checkpoints", "data_2025.zip"]


@pytest.mark.parametrize("content, message", [
    (b"group,url,sha256,destination\ngrading,,,checkpoints/caf\xe9.pth\n", "not UTF-8"),
    (b"group,url,sha256,destination\ngrading,,\x00,checkpoints/p1_best.pth\n", "NUL"),
    (b"group,url,sha256,destination\ngrading,https://example.org/" + b"a" * 200000 + b",,checkpoints/p1_best.pth\n",
     "characters"),
], ids=["latin-1 byte", "NUL", "200,000-character field"])
def test_a_manifest_that_cannot_be_read_is_one_line_naming_file_and_line(tmp_path, capsys, content, message):
    path = tmp_path / "manifest.csv"
    path.write_bytes(content)
    with pytest.raises(dl.ManifestError, match=message) as info:
        dl.read_manifest(str(path))
    assert "{}, line 2".format(path) in str(info.value) and "\n" not in str(info.value)
    assert len(str(info.value)) < 400
    assert dl.main(["--manifest", str(path), "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_manifest_with_a_bom_is_read(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_bytes(b"\xef\xbb\xbfgroup,url,sha256,destination\ngrading,,,checkpoints/p1_best.pth\n")
    assert [e.destination for e in dl.read_manifest(str(path))] == ["checkpoints/p1_best.pth"]


@pytest.mark.parametrize("rows, message", [
    ([("grading", "{p1}", "{s1}", "checkpoints/p1_best.pth")],
     "no 'grading' row for checkpoints/p2_best.pth"),
    ([("grading", "{p1}", "{s1}", "checkpoints/p1_best.pth"), ("gradng", "{p2}", "{s2}", "checkpoints/p2_best.pth")],
     "line 4 has group 'gradng', not 'grading': a typo?"),
    ([("grading", "{p1}", "{s1}", "checkpoints/p1_best.pth"), ("grading", "{p2}", "{s2}", "checkpoints/p2_best.pth"),
      ("grading", "{p2}", "{s2}", "checkpoints/p2_best.pth")],
     "checkpoints/p2_best.pth has 2 'grading' rows (lines 4, 5)"),
])
def test_submission_needs_exactly_one_row_per_graded_checkpoint(server, blob, tmp_path, capsys, rows, message):
    """What hw1_download_ckpt.sh runs: each graded checkpoint (p1_best.pth, p2_best.pth) needs exactly one grading
    row; a missing, mistyped or duplicated row fails naming the manifest line, even when the rest downloads."""
    links = {"p1": server.add("/p1.pth", blob), "p2": server.add("/p2.pth", blob[::-1]), "s1": sha(blob),
             "s2": sha(blob[::-1])}
    rows = [tuple(cell.format(**links) for cell in row) for row in rows]
    rc, root = run_main(tmp_path, rows, "--submission")
    out = capsys.readouterr().out
    assert rc == 1 and message in out and "manifest.csv" in out


def test_stale_staging_folders_of_a_killed_run_are_removed(server, blob, tmp_path, monkeypatch):
    """A killed download or unpack leaves its private folder (.NAME.*.partial); the next run removes it."""
    url = server.add("/p1.pth", blob)
    root = tmp_path / "root"
    for name in ("checkpoints/.p1_best.pth.abc123.partial", "checkpoints/.p1_best.pth.99999999.x.partial",
                 ".data_2025.zip.k1ll3d.partial", ".data_2025.42z.partial", "data_2025.partial"):
        (root / name).mkdir(parents=True)
        (root / name / "junk").write_bytes(b"half")
    (root / "checkpoints" / ".p1_best.pth.notours").write_bytes(b"a file of someone else")
    assert run_main(tmp_path, [("grading", url, sha(blob), "checkpoints/p1_best.pth")])[0] == 0
    assert folder_names(root / "checkpoints") == [".p1_best.pth.notours", "p1_best.pth"]
    make_zip(root / "data_2025.zip", DATA_NAMES)
    monkeypatch.setitem(sys.modules, "gdown", None)
    assert dl.main(["--manifest", write_manifest(tmp_path / "m.csv", []), "--root", str(root), "--data"]) == 0
    assert folder_names(root) == ["checkpoints", "data_2025", "data_2025.zip"]


def test_an_unpack_records_what_it_wrote_and_a_damaged_folder_is_not_present(tmp_path, monkeypatch, capsys):
    """'ok (already present)' only when the record written last by the unpack is there and every file it lists has
    its size: a folder left by a disk-full or a kill (a 0-byte image, p2_data/train missing) fails naming what is
    wrong, and is kept."""
    monkeypatch.setitem(sys.modules, "gdown", None)
    root = tmp_path / "root"
    root.mkdir()
    make_zip(root / "data_2025.zip", DATA_NAMES)
    manifest = write_manifest(tmp_path / "m.csv", [])
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 0
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 0
    assert "ok (already present" in capsys.readouterr().out
    image = root / "data_2025" / "p2_data" / "train" / "0000_sat.jpg"
    image.write_bytes(b"")
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 1
    captured = capsys.readouterr()
    assert "ok (already present" not in captured.out and "p2_data/train/0000_sat.jpg" in captured.err
    image.unlink()
    image.parent.rmdir()
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 1
    assert "p2_data/train/0000_sat.jpg" in capsys.readouterr().err
    assert (root / "data_2025" / "p1_data" / "office" / "train.csv").is_file()  # kept


def test_a_folder_unpacked_by_hand_is_kept_and_checked_against_the_archive(tmp_path, monkeypatch, capsys):
    """A data_2025/ without the record (unpacked by hand, or by an older version) is never deleted: with the archive
    beside it, it is compared with it (and recorded when whole); without, the error says what to do."""
    monkeypatch.setitem(sys.modules, "gdown", None)
    root = tmp_path / "root"
    for name in DATA_NAMES[:-1]:  # p2_data/validation's mask missing
        (root / name.replace("data_2025/", "data_2025/", 1)).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("content of " + name)
    (root / "data_2025" / "p2_data" / "validation").mkdir()
    manifest = write_manifest(tmp_path / "m.csv", [])
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 1
    err = capsys.readouterr().err
    assert "data_2025" in err and "move it away" in err and "kept" in err
    make_zip(root / "data_2025.zip", DATA_NAMES)
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 1
    assert "p2_data/validation/0000_mask.png" in capsys.readouterr().err
    (root / DATA_NAMES[-1]).write_text("content of " + DATA_NAMES[-1])
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 0
    assert "checked against data_2025.zip and recorded" in capsys.readouterr().out
    (root / "data_2025.zip").unlink()
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 0  # the record now says
    assert "ok (already present" in capsys.readouterr().out


def test_a_full_disk_during_the_unpack_names_the_path_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gdown", None)
    root = tmp_path / "root"
    root.mkdir()
    make_zip(root / "data_2025.zip", DATA_NAMES)

    def full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "extractall", full)
    monkeypatch.setattr(zipfile.ZipFile, "extract", full)
    assert dl.main(["--manifest", write_manifest(tmp_path / "m.csv", []), "--root", str(root), "--data"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and str(root) in err
    assert folder_names(root) == ["data_2025.zip"]


def test_sigterm_during_a_download_is_one_line_exit_143_and_nothing_half_fetched_stays(tmp_path, monkeypatch, capsys):
    """Before: SIGTERM (a `kill`, a scheduler) ended the downloader at once: no line, and the staging file of the
    half-fetched checkpoint stayed beside the destination. Now it ends like Ctrl-C: one line, exit 143, nothing
    half-fetched left."""
    import os
    import signal

    def terminated(path):
        path.write_bytes(b"half a file")
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setitem(sys.modules, "gdown", fake_gdown([], terminated))
    rc, root = run_main(tmp_path, [("grading", SHARE_LINK, "ab" * 32, "checkpoints/p1_best.pth")])
    err = capsys.readouterr().err
    assert rc == 143 and err.strip().splitlines()[-1].startswith("interrupted by SIGTERM") and "Traceback" not in err
    assert folder_names(root / "checkpoints") == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is the downloader's only while it runs
