"""tools/presubmit.py and scripts/presubmit.sh: a student's repository (this project's files, committed in a
temporary git repository) with two tiny trained models published to a local HTTP server; the check clones it
and runs what the TAs run. Then its failure modes: no link, a too-slow script, an extra PNG, a forbidden
command, uncommitted changes; and the output-contract checks on crafted outputs."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tools import presubmit
from tools import publish
from utils.masks import PALETTE

GIT = ["git", "-c", "user.name=student", "-c", "user.email=student@example.org", "-c", "init.defaultBranch=main"]


def git(repo, *args):
    return subprocess.run(GIT + ["-C", str(repo)] + list(args), check=True, capture_output=True, text=True)


def commit_all(repo, message):
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def tree_files(root):
    """The working tree's files: git's tracked and unignored ones; in a copy that is not a checkout of its own
    (mutmut's, under an ignored folder), every file but bytecode and mutmut's own records."""
    top = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if top.returncode == 0 and os.path.realpath(top.stdout.strip()) == os.path.realpath(str(root)):
        return [n for n in subprocess.run(["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "-z"],
                                          capture_output=True, text=True, check=True).stdout.split("\0") if n]
    return [p.relative_to(root).as_posix() for p in sorted(root.rglob("*")) if p.is_file()
            and "__pycache__" not in p.parts and p.suffix not in (".meta", ".spans")]


@pytest.fixture(scope="module")
def hosted(tiny_submission, tmp_path_factory, repo_root):
    """A committed student repository whose manifest links to the published models on a local server."""
    from conftest import FileServer

    with pytest.MonkeyPatch.context() as mp:
        for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
            mp.delenv(name, raising=False)  # the scripts' downloads go to 127.0.0.1 directly
        server = FileServer()
        root = tmp_path_factory.mktemp("student")
        repo = root / "repo"
        for name in tree_files(repo_root):
            source = repo_root / name
            if source.is_file():
                (repo / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(str(source), str(repo / name))
        for problem in ("1", "2"):  # the README's two steps: write the file, upload it, fill the manifest
            upload = root / "upload" / "p{}_best.pth".format(problem)
            assert publish.main([str(tiny_submission["p" + problem]), "--problem", problem, "--output",
                                 str(upload)]) == 0
            link = server.add("/release/p{}_best.pth".format(problem), upload.read_bytes())
            assert publish.main([str(upload), "--problem", problem, "--output", str(upload), "--link", link,
                                 "--manifest", str(repo / "checkpoints" / "manifest.csv")]) == 0
        git(repo, "init", "-q")
        commit_all(repo, "homework")
        yield {"repo": repo, "data": tiny_submission["data"], "server": server, "submission": tiny_submission}
        server.close()


def variant(hosted, tmp_path, files):
    """A clone of the student repository with ``files`` (path -> text, None deletes) changed and committed."""
    repo = tmp_path / "variant"
    subprocess.run(["git", "clone", "-q", str(hosted["repo"]), str(repo)], check=True)
    for name, text in files.items():
        if text is None:
            (repo / name).unlink()
        else:
            (repo / name).write_text(text)
    if files:
        commit_all(repo, "variant")
    return repo


def check(repo, data, *flags):
    return presubmit.main(["--repo", str(repo), "--data", str(data), "--python", sys.executable] + list(flags))


def rows(stdout):
    """name -> status of the summary table's rows."""
    table = {}
    for line in stdout.splitlines():
        for status in ("PASS", "FAIL", "WARN", "SKIP"):
            marker = " {} ".format(status)
            if line.startswith("  ") and marker in line + " ":
                table[line[2:line.index(marker)].strip()] = status
                break
    return table


def score(stdout, prefix):
    """The value in the scores table's row starting with ``prefix``."""
    (line,) = [line for line in stdout.splitlines() if line.startswith("  " + prefix)]
    return float(line.split(":", 1)[1].split()[1])


def test_presubmit_sh_passes_on_a_published_submission(hosted, repo_root):
    """`bash scripts/presubmit.sh` as the README gives it, in the grading environment's place (--python)."""
    proc = subprocess.run(["bash", str(repo_root / "scripts" / "presubmit.sh"), "--repo", str(hosted["repo"]),
                           "--data", str(hosted["data"]), "--python", sys.executable],
                          capture_output=True, text=True, timeout=600, cwd=str(hosted["data"]))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = rows(proc.stdout)
    for name in ("committed working tree", "git clone", "tracked files <= 50 MB", "rules of hw1_download_ckpt.sh",
                 "rules of hw1_1.sh", "rules of hw1_2.sh", "bash hw1_download_ckpt.sh", "bash hw1_1.sh",
                 "hw1_1.sh output contract", "bash hw1_2.sh", "hw1_2.sh output contract"):
        assert table.get(name) == "PASS", (name, proc.stdout)
    assert table["pushed"] == "WARN"  # no upstream: the student is reminded to push
    assert "Python {}.{}".format(*sys.version_info[:2]) in proc.stdout
    # scored as the grader scores, equal to what the trainers measured on the same validation data
    assert score(proc.stdout, "problem 1") == pytest.approx(hosted["submission"]["p1_result"]["best_val_acc"],
                                                            abs=1e-4)
    assert score(proc.stdout, "problem 2") == pytest.approx(hosted["submission"]["p2_result"]["best_miou"],
                                                            abs=1e-4)
    assert "strong (2024) 0.40" in proc.stdout and "strong (2025, quoted by a student) 0.74" in proc.stdout
    assert "all checks passed" in proc.stdout and "kept:" not in proc.stdout


def test_missing_link_fails_at_the_download(hosted, tmp_path, capsys):
    manifest = (hosted["repo"] / "checkpoints" / "manifest.csv").read_text()
    empty = "\n".join(line if not line.startswith("grading,") else "grading,,," + line.rsplit(",", 1)[1]
                      for line in manifest.splitlines()) + "\n"
    repo = variant(hosted, tmp_path, {"checkpoints/manifest.csv": empty})
    assert check(repo, hosted["data"], "--keep") == 1
    out = capsys.readouterr().out
    table = rows(out)
    assert table["bash hw1_download_ckpt.sh"] == "FAIL" and table["grading scripts"] == "SKIP"
    assert "docs/submitting.md" in out and "checkpoints/manifest.csv" in out
    kept = Path(out.split("kept: ")[1].split(" ")[0])
    assert (kept / "clone" / "hw1_download_ckpt.sh").is_file()
    assert (kept / "logs" / "hw1_download_ckpt.sh.log").is_file()
    shutil.rmtree(str(kept))


def test_local_checkpoints_rehearse_everything_but_the_download_and_say_so(hosted, repo_root, tmp_path):
    """Before the upload (no link in the manifest yet) the check stopped at hw1_download_ckpt.sh. With
    --local-checkpoints (through scripts/presubmit.sh) it copies checkpoints/p1_best.pth and p2_best.pth, which
    tools.publish wrote there and git ignores, into the clone and runs the rest; the download's row is SKIP and the
    title and the last line say that this was not a full rehearsal."""
    manifest = (hosted["repo"] / "checkpoints" / "manifest.csv").read_text()
    unpublished = "\n".join(line if not line.startswith("grading,") else "grading,,," + line.rsplit(",", 1)[1]
                            for line in manifest.splitlines()) + "\n"
    repo = variant(hosted, tmp_path, {"checkpoints/manifest.csv": unpublished})
    for problem in ("1", "2"):
        shutil.copyfile(str(hosted["repo"].parent / "upload" / "p{}_best.pth".format(problem)),
                        str(repo / "checkpoints" / "p{}_best.pth".format(problem)))
    command = ["bash", str(repo_root / "scripts" / "presubmit.sh"), "--repo", str(repo), "--data",
               str(hosted["data"]), "--python", sys.executable]
    proc = subprocess.run(command + ["--local-checkpoints"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = rows(proc.stdout)
    assert table["committed working tree"] == "PASS"  # the .pth files are ignored: the tree is clean
    assert table["bash hw1_download_ckpt.sh"] == "SKIP" and table["local checkpoints"] == "PASS"
    for name in ("bash hw1_1.sh", "hw1_1.sh output contract", "bash hw1_2.sh", "hw1_2.sh output contract"):
        assert table[name] == "PASS", name
    assert "copied p1_best.pth" in proc.stdout and "p2_best.pth" in proc.stdout
    assert score(proc.stdout, "problem 2") == pytest.approx(hosted["submission"]["p2_result"]["best_miou"],
                                                            abs=1e-4)
    lines = proc.stdout.strip().splitlines()
    assert "pre-submission check with LOCAL checkpoints -- NOT a full rehearsal" in proc.stdout
    assert lines[-1] == presubmit.LOCAL_NOTE and "all checks passed:" not in proc.stdout
    # a checkpoint not written yet: named, nothing run; and the same repository without the flag stops at the
    # download, as before
    (repo / "checkpoints" / "p2_best.pth").unlink()
    proc = subprocess.run(command + ["--local-checkpoints"], capture_output=True, text=True, timeout=600)
    table = rows(proc.stdout)
    assert proc.returncode == 1 and table["local checkpoints"] == "FAIL" and table["grading scripts"] == "SKIP"
    assert str(repo / "checkpoints" / "p2_best.pth") in proc.stdout and "tools.publish" in proc.stdout
    assert "bash hw1_1.sh" not in table
    proc = subprocess.run(command + ["--problems", "1"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1 and rows(proc.stdout)["bash hw1_download_ckpt.sh"] == "FAIL"
    assert "LOCAL" not in proc.stdout


def test_a_too_slow_script_is_killed_and_fails(hosted, tmp_path, capsys):
    pid_file = tmp_path / "slow.pid"
    slow = ("#!/usr/bin/env bash\npython3 -c \"import os, time; open('{}', 'w').write(str(os.getpid())); "
            "time.sleep(120)\"\n").format(pid_file)
    repo = variant(hosted, tmp_path, {"hw1_1.sh": slow})
    assert check(repo, hosted["data"], "--problems", "1", "--time-limit", "8") == 1
    out = capsys.readouterr().out
    table = rows(out)
    assert table["bash hw1_download_ckpt.sh"] == "PASS"  # within the same limit
    assert table["bash hw1_1.sh"] == "FAIL" and "over the 8 s limit" in out
    assert table["hw1_1.sh output contract"] == "FAIL"
    assert "bash hw1_2.sh" not in table  # --problems 1
    pid = int(pid_file.read_text())
    status = Path("/proc/{}/status".format(pid))
    assert not status.exists() or "zombie" in status.read_text()  # the script's child was killed too


def test_an_extra_png_in_the_output_folder_fails(hosted, tmp_path, capsys):
    leaky = ("#!/usr/bin/env bash\npython3 p2_inference.py --input-dir \"$1\" --output-dir \"$2\" --checkpoint "
             "checkpoints/p2_best.pth\npython3 -c \"import sys; from PIL import Image; "
             "Image.new('RGB', (64, 64)).save(sys.argv[1] + '/preview.png')\" \"$2\"\n")
    repo = variant(hosted, tmp_path, {"hw1_2.sh": leaky})
    assert check(repo, hosted["data"], "--problems", "2") == 1
    out = capsys.readouterr().out
    table = rows(out)
    assert table["bash hw1_2.sh"] == "PASS" and table["hw1_2.sh output contract"] == "FAIL"
    assert "1 extra file(s) in the output folder" in out and "preview.png" in out
    assert table["rules of hw1_2.sh"] == "PASS"


def test_a_forbidden_command_fails_and_a_dirty_tree_is_refused_unless_allowed(hosted, tmp_path, capsys):
    text = (hosted["repo"] / "hw1_1.sh").read_text()
    repo = variant(hosted, tmp_path, {"hw1_1.sh": text.replace("python3 ", "mkdir -p \"$(dirname \"$3\")\"\n"
                                                                           "python3 ", 1)})
    (repo / "notes.txt").write_text("not committed\n")
    assert check(repo, hosted["data"], "--problems", "1") == 1
    out = capsys.readouterr().out
    assert rows(out) == {"committed working tree": "FAIL"} and "notes.txt" in out and "--allow-dirty" in out
    assert check(repo, hosted["data"], "--problems", "1", "--allow-dirty") == 1
    out = capsys.readouterr().out
    table = rows(out)
    assert table["committed working tree"] == "WARN"
    assert table["rules of hw1_1.sh"] == "FAIL" and "uses mkdir" in out
    assert table["bash hw1_1.sh"] == "PASS" and table["hw1_1.sh output contract"] == "PASS"  # it still runs


def test_missing_data_and_a_large_tracked_file(hosted, tmp_path, capsys):
    assert check(hosted["repo"], tmp_path / "nowhere") == 1
    out = capsys.readouterr().out
    assert rows(out)["data"] == "FAIL" and "hw1_download.sh --data" in out
    repo = variant(hosted, tmp_path, {})
    with open(str(repo / "big.bin"), "wb") as f:
        f.truncate(presubmit.SIZE_LIMIT + 1)  # sparse: no real disk use
    commit_all(repo, "a large file")
    assert presubmit.large_tracked_files(repo) == [("big.bin", presubmit.SIZE_LIMIT + 1)]


# ------------------------------------------------------------------------------- the contract, on crafted outputs

def write(path, text):
    path.write_text(text)
    return path


@pytest.fixture
def given(tmp_path):
    return write(tmp_path / "test.csv", "id,filename,label\n0,a.jpg,None\n1,b.jpg,None\n2,c.jpg,None\n")


@pytest.mark.parametrize("body, problem", [
    ("id,filename,label\n0,a.jpg,3\n1,b.jpg,0\n2,c.jpg,64\n", None),
    ("id,filename,label\n2,c.jpg,1\n0,a.jpg,3\n1,b.jpg,0\n", None),  # another order: still one row per id
    ("filename,label\na.jpg,3\n", "header"),
    ("id,filename,label\n0,a.jpg,3\n1,b.jpg,0\n", "2 row(s) for 3 input row(s)"),
    ("id,filename,label\n0,a.jpg,3\n1,b.jpg,0\n2,val/c.jpg,1\n", "not bare"),
    ("id,filename,label\n0,a.jpg,3\n1,b.jpg,0.0\n2,c.jpg,1\n", "label '0.0' is not an integer"),
    ("id,filename,label\n0,a.jpg,3\n1,b.jpg,-1\n2,c.jpg,1\n", "label '-1'"),
    ("id,filename,label\n0,a.jpg,3\n1,b.jpg,65\n2,c.jpg,1\n", "label '65'"),
    ("id,filename,label\n0,a.jpg,3\n0,a.jpg,0\n2,c.jpg,1\n", "repeated"),
    ("id,filename,label\n0,a.jpg,3\n7,b.jpg,0\n2,c.jpg,1\n", "id '7' is not in the input"),
    ("id,filename,label\n0,a.jpg,3\n1,x.jpg,0\n2,c.jpg,1\n", "filename 'x.jpg'"),
])
def test_p1_contract(tmp_path, given, body, problem):
    problems = presubmit.check_p1_output(write(tmp_path / "pred.csv", body), given)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


def test_unlabeled_csv_keeps_everything_but_the_labels(tmp_path):
    source = write(tmp_path / "val.csv", "\ufeffid,filename,label\n0,3_1.jpg,3\n1,0_2.jpg,0\n")
    assert presubmit.write_unlabeled_csv(source, tmp_path / "test.csv") == 2
    assert (tmp_path / "test.csv").read_text() == "id,filename,label\n0,3_1.jpg,None\n1,0_2.jpg,None\n"


def _mask(path, colours, size=(16, 16), mode="RGB"):
    arr = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    for i, colour in enumerate(colours):
        arr[i] = colour
    Image.fromarray(arr).convert(mode).save(str(path))


@pytest.mark.parametrize("case, problem", [
    ("good", None),
    ("red", "red pixels"),
    ("off palette", "colour(s) outside the palette, e.g. (128, 0, 0)"),
    ("grey", "mode L"),
    ("size", "8x16, expected 16x16"),
    ("missing", "1 mask(s) missing: 0001_mask.png"),
    ("extra", "extra file(s) in the output folder (the grader pairs every .png by sorted name): 0001_mask.png.bak"),
    ("subfolder", "extra file(s)"),
    ("exact 512", "16x16, expected 512x512"),
])
def test_p2_contract(tmp_path, case, problem):
    images, masks = tmp_path / "in", tmp_path / "out"
    images.mkdir()
    masks.mkdir()
    for key in ("0000", "0001"):
        Image.new("RGB", (16, 16)).save(str(images / (key + "_sat.jpg")))
        _mask(masks / (key + "_mask.png"), [tuple(c) for c in PALETTE])
    if case == "red":
        _mask(masks / "0001_mask.png", [(0, 255, 255), (255, 0, 0)])
    elif case == "off palette":
        _mask(masks / "0001_mask.png", [(128, 0, 0)])
    elif case == "grey":
        _mask(masks / "0001_mask.png", [], mode="L")
    elif case == "size":
        _mask(masks / "0001_mask.png", [], size=(8, 16))
    elif case == "missing":
        (masks / "0001_mask.png").unlink()
    elif case == "extra":
        shutil.copy(str(masks / "0001_mask.png"), str(masks / "0001_mask.png.bak"))
    elif case == "subfolder":
        (masks / "debug").mkdir()
    exact = (512, 512) if case == "exact 512" else None
    problems = presubmit.check_p2_output(masks, images, exact)
    if problem is None:
        assert problems == []
    else:
        assert any(problem in p for p in problems), problems


def test_python_flag_accepts_a_venv_folder_or_an_interpreter(tmp_path):
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    os.symlink(sys.executable, str(venv / "bin" / "python3"))
    for given in (str(venv), sys.executable):
        folders = presubmit.python_bin(given, tmp_path / "work")
        env = presubmit.script_env(folders)
        out = subprocess.run(["python3", "-c", "import sys; print(sys.version_info[:2])"], env=env,
                             capture_output=True, text=True, check=True).stdout
        assert out.strip() == str(tuple(sys.version_info[:2]))
        assert "PYTHONPATH" not in env and "HW1_P1_CHECKPOINT" not in env
    with pytest.raises(ValueError, match="not a virtual environment"):
        presubmit.python_bin(str(tmp_path), tmp_path / "work")


def test_p1_contract_for_a_csv_without_ids(tmp_path):
    """p1_inference.py numbers the rows when the csv has no id column; the check expects the same ids."""
    given = write(tmp_path / "test.csv", "filename,label\na.jpg,None\nb.jpg,None\n")
    assert presubmit.check_p1_output(write(tmp_path / "pred.csv", "id,filename,label\n0,a.jpg,1\n1,b.jpg,2\n"),
                                     given) == []


# ------------------------------------------------------------------- signals, val.csv headers, --python (issue 24)

SLOW_HW1_1 = ("#!/usr/bin/env bash\npython3 -c \"import os, time; open('{0}.tmp', 'w').write('{{}} {{}}'.format("
              "os.getppid(), os.getpid())); os.replace('{0}.tmp', '{0}'); time.sleep(300)\"\n")


def _fake_student(tmp_path, hw1_1):
    """A committed repository whose hw1_1.sh is ``hw1_1``, a data root, and a local p1 checkpoint: enough for the
    check to reach hw1_1.sh in seconds (no model is trained or loaded)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    write(repo / "hw1_download_ckpt.sh", "#!/usr/bin/env bash\necho fetched\n")
    write(repo / "hw1_1.sh", hw1_1)
    write(repo / "hw1_2.sh", "#!/usr/bin/env bash\necho masks\n")
    git(repo, "init", "-q")
    commit_all(repo, "homework")
    office = tmp_path / "data" / "p1_data" / "office"
    (office / "val").mkdir(parents=True)
    write(office / "val.csv", "id,filename,label\n0,0_0.jpg,0\n")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "p1_best.pth").write_bytes(b"stand-in")
    return repo, tmp_path / "data"


def _alive(pid):
    status = Path("/proc/{}/status".format(pid))
    return status.exists() and "zombie" not in status.read_text()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_grading_script_and_removes_the_temp_folder(tmp_path, repo_root, sig):
    """Ctrl-C or a kill of the check while hw1_1.sh runs (in its own session, where the terminal's Ctrl-C does
    not reach it): the script's whole process group is stopped, the hw1_presubmit.* folder removed, one line,
    exit 130 / 143, no traceback."""
    pid_file = tmp_path / "script.pid"
    repo, data = _fake_student(tmp_path, SLOW_HW1_1.format(pid_file))
    temp = tmp_path / "tmp"
    temp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "tools.presubmit", "--repo", str(repo), "--data", str(data),
                             "--python", sys.executable, "--problems", "1", "--local-checkpoints",
                             str(tmp_path / "ckpt")], cwd=str(repo_root), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, TMPDIR=str(temp), PYTHONPATH=str(repo_root)))
    try:
        for _ in range(1200):  # the script has started once its pids are written (bounded wait, not a timing)
            if pid_file.exists() or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert pid_file.exists(), proc.communicate(timeout=60)
        shell_pid, python_pid = (int(p) for p in pid_file.read_text().split())
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in (pid_file.read_text().split() if pid_file.exists() else []):
            if _alive(int(pid)):  # a failed stop: do not leave the test's own processes behind
                os.kill(int(pid), signal.SIGKILL)
    assert proc.returncode == 128 + int(sig), out + err
    assert "Traceback" not in out + err
    lines = [line for line in (out + err).splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and "stopped hw1_1.sh" in lines[0] and "removed {}".format(temp) in lines[0], out + err
    assert not list(temp.glob("hw1_presubmit.*"))
    assert not _alive(shell_pid) and not _alive(python_pid)


def test_a_val_csv_with_spaced_capitalised_header_is_read_like_hw1_1_reads_it(tmp_path):
    """val.csv headed ' ID, FileName ,Label' (hw1_1.sh accepts it): the check reads it with the project's reader."""
    source = write(tmp_path / "val.csv", "\ufeff ID, FileName ,Label\n0,3_1.jpg,3\n1,0_2.jpg,0\n")
    assert presubmit.write_unlabeled_csv(source, tmp_path / "test.csv") == 2
    pred = write(tmp_path / "pred.csv", "id,filename,label\n0,3_1.jpg,3\n1,0_2.jpg,0\n")
    assert presubmit.check_p1_output(pred, tmp_path / "test.csv") == []
    assert presubmit.check_p1_output(pred, source) == []


def test_presubmit_sh_python_runs_the_check_itself_too(tmp_path, repo_root):
    """`bash scripts/presubmit.sh --python VENV` when the python3 on PATH lacks the packages: the check itself runs
    with VENV's interpreter (the README's command), in both spellings and for a venv folder."""
    broken = tmp_path / "bin"
    broken.mkdir()
    write(broken / "python3", "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'PIL'\" >&2\nexit 1\n")
    (broken / "python3").chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    os.symlink(sys.executable, str(venv / "bin" / "python3"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    env["PATH"] = str(broken) + os.pathsep + env["PATH"]
    for flags in (["--python", sys.executable], ["--python={}".format(sys.executable)], ["--python", str(venv)]):
        proc = subprocess.run(["bash", str(repo_root / "scripts" / "presubmit.sh")] + flags + ["--help"],
                              capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=120)
        assert proc.returncode == 0 and "usage: python -m tools.presubmit" in proc.stdout, (flags, proc.stderr)
