"""Tests for tools/download.py, hw1_download.sh and hw1_download_ckpt.sh, against a local HTTP server on
127.0.0.1 (no internet; the ``server`` fixture of conftest.py) that also plays Google Drive and Dropbox."""
import hashlib
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

from tools import download as dl
from tools.presubmit import script_violations, shell_words


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
        dl.download(server.add("/torn.pth", torn), str(tmp_path / "x.pth"), sha(data), retries=1, backoff=0)


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
    from conftest import FileServer

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


def test_a_destination_folder_symlinked_outside_the_root_is_refused(server, blob, tmp_path, capsys):
    """Before: checkpoints/ -> /elsewhere made the download write outside the root. Now it is refused, naming the
    entry and where the link leads; nothing is fetched or written there. A symlink inside the root is fine."""
    url = server.add("/p1.pth", blob)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(str(outside), str(root / "checkpoints"))
    rc, _ = run_main(tmp_path, [("grading", url, sha(blob), "checkpoints/p1_best.pth")])
    err = capsys.readouterr().err
    assert rc == 1 and os.listdir(str(outside)) == [] and server.hits["/p1.pth"] == 0
    assert "checkpoints/p1_best.pth: refusing to write outside" in err and str(outside) in err
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
    assert folder_names(root / "data_2025") == ["p1_data", "p2_data"]  # top folder stripped, no __MACOSX
    assert (root / "data_2025/p2_data/validation/0000_mask.png").read_text().startswith("content of")
    assert folder_names(root) == ["data_2025", "data_2025.zip"]
    (root / "data_2025.zip").write_bytes(b"not a zip")  # would fail if used: the skip must not touch it
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 0


def fake_gdown(calls, write):
    """A stand-in for the gdown module: records each call, and ``write(output)`` makes the file."""
    def download(url, output, quiet=False, fuzzy=False):
        calls.append({"url": url, "output": output, "quiet": quiet, "fuzzy": fuzzy})
        write(Path(output))
        return output

    return types.SimpleNamespace(download=download, __version__="fake")


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
    assert [c["url"] for c in calls] == [DRIVE_2025.replace("uc?id=", "uc?export=download&id=")] * 2
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
    assert folder_names(root / "hw1_data") == ["p1_data", "p2_data"]


def test_data_without_gdown_uses_the_builtin_drive_client(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gdown", None)  # import gdown -> ImportError
    monkeypatch.setenv(dl.DRIVE_BASE_ENV, server.base)
    archive = make_zip(tmp_path / "served.zip", DATA_NAMES).read_bytes()
    file_id = "1yt4CP2msqY2HSYCy67mQrWUtTPQRgcBF"
    first = "/uc?export=download&id=" + file_id
    server.add(first, drive_warning_page(server, file_id), content_type="text/html; charset=utf-8")
    server.add("/download?id={}&export=download&confirm=t&uuid=u-1".format(file_id), archive)
    root = tmp_path / "root"
    root.mkdir()
    manifest = write_manifest(tmp_path / "m.csv", [])
    assert dl.main(["--manifest", manifest, "--root", str(root), "--data"]) == 0
    assert folder_names(root / "data_2025") == ["p1_data", "p2_data"]
    # Drive refuses: the error names the link, says what to do by hand, and nothing is left behind
    server.add(first, QUOTA_PAGE, content_type="text/html")
    assert dl.main(["--manifest", manifest, "--root", str(tmp_path / "root2"), "--data"]) == 1
    err = capsys.readouterr().err
    assert DRIVE_2025 in err and "quota" in err and "data_2025.zip" in err and "rerun" in err
    assert folder_names(tmp_path / "root2") == []


# ------------------------------------------------------------------------------------------ link styles

def drive_warning_page(server, file_id):
    """Drive's "can't scan this file for viruses" page for large files: a GET form with hidden inputs."""
    return ("<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>"
            "<p>Google Drive can't scan this file for viruses.</p><a href=\"https://accounts.google.com/"
            "ServiceLogin\">Sign in</a><form id=\"download-form\" action=\"{}/download\" method=\"get\">"
            "<input type=\"submit\" value=\"Download anyway\"/><input type=\"hidden\" name=\"id\" value=\"{}\">"
            "<input type=\"hidden\" name=\"export\" value=\"download\"><input type=\"hidden\" name=\"confirm\" "
            "value=\"t\"><input type=\"hidden\" name=\"uuid\" value=\"u-1\"></form></body></html>"
            .format(server.base, file_id)).encode()


SIGN_IN_PAGE = (b"<!doctype html><html><head><title>Sign in - Google Accounts</title></head>"
                b"<body><form action=\"https://accounts.google.com/signin\"></form></body></html>")
QUOTA_PAGE = (b"<html><head><title>Google Drive - Quota exceeded</title></head><body>Too many users have viewed "
              b"or downloaded this file recently.</body></html>")
FILE_ID = "1AbC-d_EfGh"


@pytest.mark.parametrize("link, kind, fetched", [
    ("https://drive.google.com/file/d/{}/view?usp=sharing".format(FILE_ID), "drive",
     "https://drive.google.com/uc?export=download&id=" + FILE_ID),
    ("https://drive.google.com/file/d/{}/view?usp=drive_link".format(FILE_ID), "drive",
     "https://drive.google.com/uc?export=download&id=" + FILE_ID),
    ("https://drive.google.com/file/u/0/d/{}/edit".format(FILE_ID), "drive",
     "https://drive.google.com/uc?export=download&id=" + FILE_ID),
    ("https://drive.google.com/uc?id=" + FILE_ID, "drive", "https://drive.google.com/uc?export=download&id=" + FILE_ID),
    ("https://drive.google.com/uc?export=download&id=" + FILE_ID, "drive",
     "https://drive.google.com/uc?export=download&id=" + FILE_ID),
    ("https://drive.google.com/open?id=" + FILE_ID, "drive",
     "https://drive.google.com/uc?export=download&id=" + FILE_ID),
    ("https://www.dropbox.com/s/abc123/p1_best.pth?dl=0", "dropbox", "https://www.dropbox.com/s/abc123/p1_best.pth?dl=1"),
    ("https://www.dropbox.com/scl/fi/x7y/p2_best.pth?rlkey=k9&dl=0", "dropbox",
     "https://www.dropbox.com/scl/fi/x7y/p2_best.pth?rlkey=k9&dl=1"),
    ("https://www.dropbox.com/s/abc123/p1_best.pth", "dropbox", "https://www.dropbox.com/s/abc123/p1_best.pth?dl=1"),
    ("https://github.com/me/hw1/releases/download/v1/p1_best.pth", "plain",
     "https://github.com/me/hw1/releases/download/v1/p1_best.pth"),
])
def test_link_styles_resolve(link, kind, fetched, monkeypatch):
    monkeypatch.delenv(dl.DRIVE_BASE_ENV, raising=False)
    monkeypatch.delenv(dl.DROPBOX_BASE_ENV, raising=False)
    resolved = dl.parse_link(link)
    assert (resolved.kind, resolved.url) == (kind, fetched)
    if kind == "drive":
        assert resolved.file_id == FILE_ID


@pytest.mark.parametrize("link, message", [
    ("https://drive.google.com/drive/folders/1xyz?usp=sharing", "folder link"),
    ("https://drive.google.com/file/d//view", "no Google Drive file id"),
    ("https://www.dropbox.com/home/hw1", "not a Dropbox share link"),
    ("ftp://example.org/p1.pth", "not an http"),
])
def test_unusable_links_are_named(link, message):
    with pytest.raises(dl.DownloadError, match=message) as info:
        dl.parse_link(link)
    assert link in str(info.value)


def run_link(tmp_path, link, data, destination="checkpoints/p1_best.pth"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    rc, root = run_main(tmp_path, [("grading", link, sha(data), destination)])
    return rc, root / destination


def test_drive_share_link_without_gdown_follows_the_virus_scan_form(server, blob, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gdown", None)
    monkeypatch.setenv(dl.DRIVE_BASE_ENV, server.base)
    server.add("/uc?export=download&id=" + FILE_ID, drive_warning_page(server, FILE_ID),
               content_type="text/html; charset=utf-8")
    server.add("/download?id={}&export=download&confirm=t&uuid=u-1".format(FILE_ID), blob)
    rc, target = run_link(tmp_path, "https://drive.google.com/file/d/{}/view?usp=sharing".format(FILE_ID), blob)
    assert rc == 0 and target.read_bytes() == blob
    assert server.hits["/uc?export=download&id=" + FILE_ID] == 1
    assert folder_names(target.parent) == ["p1_best.pth"]


def test_drive_older_confirm_link_and_small_files(server, blob, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gdown", None)
    monkeypatch.setenv(dl.DRIVE_BASE_ENV, server.base)
    # the older page: a link carrying confirm=... (with &amp; in the HTML)
    page = ("<html><head><title>Google Drive - Virus scan warning</title></head><body><a id=\"uc-download-link\" "
            "href=\"/uc?export=download&amp;confirm=AbC1&amp;id={}\">Download anyway</a></body></html>").format(FILE_ID)
    server.add("/uc?export=download&id=" + FILE_ID, page.encode(), content_type="text/html")
    server.add("/uc?export=download&confirm=AbC1&id=" + FILE_ID, blob)
    rc, target = run_link(tmp_path / "a", "https://drive.google.com/uc?id=" + FILE_ID, blob)
    assert rc == 0 and target.read_bytes() == blob
    # a small file comes straight away, with no page in between
    server.add("/uc?export=download&id=small", b"small file")
    rc, target = run_link(tmp_path / "b", "https://drive.google.com/uc?export=download&id=small", b"small file")
    assert rc == 0 and target.read_bytes() == b"small file"


@pytest.mark.parametrize("page, message", [
    (SIGN_IN_PAGE, "sign-in page"),
    (QUOTA_PAGE, "quota page"),
    (b"<!DOCTYPE html><html><head><title>Some page</title></head><body>no form</body></html>", "HTML page"),
])
@pytest.mark.parametrize("content_type", ["text/html", "application/octet-stream"])
def test_drive_html_answers_are_errors_naming_the_link(server, tmp_path, monkeypatch, capsys, page, message,
                                                       content_type):
    monkeypatch.setitem(sys.modules, "gdown", None)
    monkeypatch.setenv(dl.DRIVE_BASE_ENV, server.base)
    server.add("/uc?export=download&id=" + FILE_ID, page, content_type=content_type)
    link = "https://drive.google.com/file/d/{}/view?usp=sharing".format(FILE_ID)
    rc, target = run_link(tmp_path, link, b"whatever")
    err = capsys.readouterr().err
    assert rc == 1 and message in err and link in err
    assert "Traceback" not in err
    assert folder_names(target.parent) == []  # never saved as a checkpoint, no temp file


def test_dropbox_link_is_fetched_with_dl_1(server, blob, tmp_path, monkeypatch):
    monkeypatch.setenv(dl.DROPBOX_BASE_ENV, server.base)
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
    assert rc == 1 and "HTML page" in err and link in err
    assert folder_names(target.parent) == []


def test_drive_link_with_gdown_installed(server, blob, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "gdown", fake_gdown(calls, lambda path: path.write_bytes(blob)))
    monkeypatch.delenv(dl.DRIVE_BASE_ENV, raising=False)
    rc, target = run_link(tmp_path, "https://drive.google.com/file/d/{}/view?usp=sharing".format(FILE_ID), blob)
    assert rc == 0 and target.read_bytes() == blob
    assert len(calls) == 1 and calls[0]["fuzzy"] is True
    assert calls[0]["url"] == "https://drive.google.com/uc?export=download&id=" + FILE_ID
    assert Path(calls[0]["output"]).parent != target.parent  # a private folder, gone afterwards
    assert folder_names(target.parent) == ["p1_best.pth"]
    assert sum(server.hits.values()) == 0


@pytest.mark.parametrize("failure", ["raises", "returns None", "saves HTML"])
def test_gdown_failure_falls_back_to_the_builtin_client(server, blob, tmp_path, monkeypatch, capsys, failure):
    def broken(path):
        if failure == "raises":
            raise RuntimeError("Failed to retrieve file url")
        if failure == "saves HTML":
            path.write_bytes(QUOTA_PAGE)

    calls = []
    module = fake_gdown(calls, broken)
    if failure == "returns None":
        module.download = lambda url, output, quiet=False, fuzzy=False: calls.append(url)
    monkeypatch.setitem(sys.modules, "gdown", module)
    monkeypatch.setenv(dl.DRIVE_BASE_ENV, server.base)
    server.add("/uc?export=download&id=" + FILE_ID, blob)
    rc, target = run_link(tmp_path, "https://drive.google.com/uc?id=" + FILE_ID, blob)
    assert rc == 0 and target.read_bytes() == blob and len(calls) == 1
    assert "trying the built-in Drive client" in capsys.readouterr().err
    assert folder_names(target.parent) == ["p1_best.pth"]


# ------------------------------------------------------------------------------ submission (TAs' script)

def test_submission_without_a_link_fails_naming_manifest_and_readme(tmp_path, capsys):
    rows = [("grading", "", "", "checkpoints/p1_best.pth")]
    rc, root = run_main(tmp_path, rows, "--submission")
    err = capsys.readouterr().err
    assert rc == 1
    assert "manifest.csv" in err and "Submitting" in err and "tools.publish" in err
    # a file here that git does not hold is not enough: the TAs' clone will not have it
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "p1_best.pth").write_bytes(b"local only")
    assert run_main(tmp_path, rows, "--submission")[0] == 1
    assert run_main(tmp_path, rows)[0] == 0  # hw1_download.sh, for the student: present is fine


def test_submission_accepts_a_checkpoint_committed_to_git(tmp_path, capsys):
    rows = [("grading", "", "", "checkpoints/p2_best.pth")]
    root = tmp_path / "root"
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "p2_best.pth").write_bytes(b"small model")
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "checkpoints/p2_best.pth"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "model"], check=True)
    assert run_main(tmp_path, rows, "--submission")[0] == 0
    assert "committed to git" in capsys.readouterr().out


def test_submission_refuses_other_downloads(tmp_path):
    with pytest.raises(SystemExit):
        run_main(tmp_path, [], "--submission", "--data")


# ------------------------------------------------------------------------------------------- manifest edits

def test_set_manifest_link_fills_one_row_and_keeps_the_rest(tmp_path):
    path = tmp_path / "manifest.csv"
    path.write_text("# comment kept\ngroup,url,sha256,destination\ngrading,,,checkpoints/p1_best.pth\n"
                    "grading,,,checkpoints/p2_best.pth\n# another comment\n")
    link = "https://www.dropbox.com/scl/fi/x/p2_best.pth?rlkey=a,b&dl=0"  # a comma: the csv quotes it
    dl.set_manifest_link(str(path), "checkpoints/p2_best.pth", link, "AB" * 32)
    lines = path.read_text().splitlines()
    assert lines[0] == "# comment kept" and lines[2] == "grading,,,checkpoints/p1_best.pth"
    assert lines[4] == "# another comment"
    entries = dl.read_manifest(str(path))
    assert (entries[1].url, entries[1].sha256) == (link, "ab" * 32)
    with pytest.raises(dl.ManifestError, match="no 'grading' row for checkpoints/p3.pth"):
        dl.set_manifest_link(str(path), "checkpoints/p3.pth", link, "ab" * 32)
    with pytest.raises(dl.ManifestError, match="64 hex"):
        dl.set_manifest_link(str(path), "checkpoints/p1_best.pth", link, "not a hash")
    assert dl.read_manifest(str(path))[0].url == ""  # the refused edit left the file as it was
    assert folder_names(tmp_path) == ["manifest.csv"]


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
    """A repository holding just hw1_download_ckpt.sh, tools/ and a manifest."""
    (target / "tools").mkdir(parents=True)
    (target / "checkpoints").mkdir()
    for name in ("__init__.py", "download.py"):
        (target / "tools" / name).write_bytes((repo_root / "tools" / name).read_bytes())
    (target / "hw1_download_ckpt.sh").write_bytes((repo_root / "hw1_download_ckpt.sh").read_bytes())
    write_manifest(target / "checkpoints" / "manifest.csv", manifest_rows)


def test_download_ckpt_script_with_no_arguments_from_any_folder(server, blob, tmp_path, repo_root, monkeypatch):
    """`bash hw1_download_ckpt.sh` exactly as the TAs run it (no arguments), started from another folder.

    Drive links are tested in-process above (gdown present and absent); here a release asset and Dropbox."""
    monkeypatch.setenv(dl.DROPBOX_BASE_ENV, server.base)
    asset = server.add("/me/hw1/releases/download/v1/p1_best.pth", blob)
    server.add("/s/k/p2_best.pth?dl=1", blob[::-1])
    repo = tmp_path / "repo"
    copy_download_tool(repo_root, repo, [
        ("grading", asset, sha(blob), "checkpoints/p1_best.pth"),
        ("grading", "https://www.dropbox.com/s/k/p2_best.pth?dl=0", sha(blob[::-1]), "checkpoints/p2_best.pth")])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH="")
    result = subprocess.run(["bash", str(repo / "hw1_download_ckpt.sh")], cwd=str(elsewhere), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    assert result.returncode == 0, result.stdout
    assert (repo / "checkpoints" / "p1_best.pth").read_bytes() == blob
    assert (repo / "checkpoints" / "p2_best.pth").read_bytes() == blob[::-1]
    assert folder_names(elsewhere) == []
    # nothing configured: a loud failure naming the manifest and the README section, even with a file here that
    # git does not hold (the TAs' clone will not have it; hw1_download.sh would accept it)
    (repo / "checkpoints" / "p1_best.pth").write_bytes(b"trained here, never uploaded")
    write_manifest(repo / "checkpoints" / "manifest.csv", [("grading", "", "", "checkpoints/p1_best.pth")])
    result = subprocess.run(["bash", str(repo / "hw1_download_ckpt.sh")], cwd=str(elsewhere), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    assert result.returncode == 1
    assert "checkpoints/manifest.csv" in result.stdout and 'section "Submitting"' in result.stdout
