"""Pre-submission check: run exactly what the TAs run, in a fresh clone of your repository, and check it.

    bash scripts/presubmit.sh                               # the course data in data_2025/, this repository
    bash scripts/presubmit.sh --python /tmp/venv38          # the scripts' python3 from a venv (or an interpreter)
    python -m tools.presubmit --data toy --problems 2 --keep
    bash scripts/presubmit.sh --local-checkpoints            # before uploading: checkpoints/*.pth, no download

What it does, in order (docs/submitting.md):

1. refuses a working tree with uncommitted changes (a clone would not see them; ``--allow-dirty`` only warns)
   and warns about commits not pushed;
2. ``git clone`` of the repository into a temporary folder; every tracked file over 50 MB (GitHub refuses them)
   and every forbidden command (rm, cp, mv, mkdir, cd, pip, sudo, CUDA_VISIBLE_DEVICES; python instead of
   python3) in hw1_download_ckpt.sh, hw1_1.sh and hw1_2.sh is listed;
3. in the clone: ``bash hw1_download_ckpt.sh``, then ``bash hw1_1.sh`` on the office val csv with its label
   column replaced by the string ``None`` (as the hidden csv has it), then ``bash hw1_2.sh`` on the validation
   tiles (a folder holding only the ``*_sat.jpg`` images), with absolute paths, each timed against the course's
   10-minute limit (``--time-limit``) and killed when over it;
4. checks every output against the contract (csv: header ``id,filename,label``, one row per input row, the same
   ids, bare filenames, integer labels 0..64; masks: exactly one ``<id>_mask.png`` per ``<id>_sat.jpg`` and
   nothing else, RGB, 512x512 (generated data: the input's size), only the seven class colours, never red);
5. scores them as the grader does (accuracy against the true val labels; mIoU as ``mean_iou_evaluate.py``) and
   prints them beside the course's baselines.

One summary table; the exit status is 1 when any check fails, else 0.

``--local-checkpoints [DIR]`` rehearses the rest before the checkpoints are uploaded: instead of step 3's
``bash hw1_download_ckpt.sh`` it copies ``p1_best.pth`` / ``p2_best.pth`` from DIR (default: the repository's
``checkpoints/``, where ``python -m tools.publish`` writes them) into the clone. The summary then says, in its
title and its last line, that the download was not rehearsed: run it once more without the flag after uploading.
"""
import argparse
import csv
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from utils.signals import Interrupted, interruptible, stop_group

GRADED_SCRIPTS = ("hw1_download_ckpt.sh", "hw1_1.sh", "hw1_2.sh")
FORBIDDEN_COMMANDS = ("rm", "cp", "mv", "mkdir", "cd", "pip", "pip3", "sudo", "CUDA_VISIBLE_DEVICES")
TIME_LIMIT = 600  # seconds: each grading script must finish within 10 minutes (2024 rule)
SIZE_LIMIT = 50 * 1024 * 1024  # GitHub refuses files over 50 MB
NUM_P1_CLASSES = 65
MASK_SIZE = (512, 512)
# (label, value): validation baselines of the course
BASELINES = {
    "p1": [("simple (2024)", 0.36), ("strong (2024)", 0.40)],
    "p2": [("simple (2024)", 0.69), ("strong (2024)", 0.73), ("strong (2025, quoted by a student)", 0.74)],
}
CHECKPOINT_OVERRIDES = ("HW1_P1_CHECKPOINT", "HW1_P2_CHECKPOINT")  # the TAs set none of these


class Check(NamedTuple):
    """One row of the summary: ``status`` is PASS, FAIL, WARN or SKIP."""

    name: str
    status: str
    detail: str = ""
    seconds: Optional[float] = None


class Run(NamedTuple):
    """What one timed script did."""

    returncode: Optional[int]  # None: killed at the time limit
    seconds: float
    output: str


# ---------------------------------------------------------------------------------------------- script rules

def shell_words(text: str) -> List[str]:
    """The shell words of ``text`` outside comments, split at pipes, ``;``, ``&&`` and ``$( )``."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def script_violations(text: str) -> List[str]:
    """Forbidden commands among a script's words (also inside ``VAR=value`` and ``/usr/bin/cmd``), and a bare
    ``python`` (the scripts must call ``python3``); comments do not count."""
    parts = {part for word in shell_words(text) for piece in word.split("=") for part in piece.split("/")}
    return sorted(set(FORBIDDEN_COMMANDS) & parts) + (["python"] if "python" in parts else [])


# ------------------------------------------------------------------------------------------------------ git

def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo)] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=300)


def uncommitted_changes(repo: Path) -> List[str]:
    """``git status --porcelain`` lines: changes and untracked files a clone would not see."""
    return [line for line in _git(repo, "status", "--porcelain").stdout.splitlines() if line.strip()]


def unpushed_note(repo: Path) -> Optional[str]:
    """A warning when HEAD has commits its upstream branch lacks, or there is no upstream; None when pushed."""
    ahead = _git(repo, "rev-list", "--count", "@{upstream}..HEAD")
    if ahead.returncode != 0:
        return "no upstream branch: the TAs clone what GitHub holds, so push your commits"
    count = int(ahead.stdout.strip() or 0)
    return "{} commit(s) not pushed: the TAs clone what GitHub holds".format(count) if count else None


def large_tracked_files(clone: Path, limit: int = SIZE_LIMIT) -> List[Tuple[str, int]]:
    """Tracked files over ``limit`` bytes, largest first."""
    names = [n for n in _git(clone, "ls-files", "-z").stdout.split("\0") if n]
    sizes = [(name, (clone / name).stat().st_size) for name in names if (clone / name).is_file()]
    return sorted([(n, s) for n, s in sizes if s > limit], key=lambda item: -item[1])


# ------------------------------------------------------------------------------------------------ running

def python_bin(python: str, workdir: Path) -> List[Path]:
    """Folders to put first on PATH so that ``python3`` runs ``python`` (an interpreter, or a venv folder): one
    holding a ``python3`` wrapper, then the interpreter's own folder (its other tools)."""
    path = Path(python).expanduser().absolute()
    if path.is_dir():
        candidates = [path / "bin" / "python3", path / "bin" / "python"]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise ValueError("--python {}: a folder without bin/python3 (not a virtual environment)".format(python))
        path = found[0]
    elif not path.is_file():
        found_on_path = shutil.which(python)
        if found_on_path is None:
            raise ValueError("--python {}: no such interpreter".format(python))
        path = Path(found_on_path).absolute()
    folder = workdir / "python_bin"
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "python3"
    # exec through the path as given, not a symlink target: a venv's python finds its pyvenv.cfg that way
    wrapper.write_text("#!/bin/sh\nexec {} \"$@\"\n".format(shlex.quote(str(path))))
    wrapper.chmod(0o755)
    return [folder, path.parent]


def script_env(bin_dirs: Sequence[Path]) -> Dict[str, str]:
    """The environment the scripts see: ours, minus the checkpoint overrides and PYTHONPATH (the TAs have
    neither), with ``bin_dirs`` first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in CHECKPOINT_OVERRIDES + ("PYTHONPATH",)}
    env["PATH"] = os.pathsep.join([str(d) for d in bin_dirs] + [env.get("PATH", "")])
    return env


def run_timed(command: List[str], cwd: Path, env: Dict[str, str], limit: float, log: Path) -> Run:
    """Run ``command`` with its output in ``log``, in its own session; kill its whole process group when it passes
    ``limit`` s, and stop it (``stop_group``) when the check is interrupted (``Interrupted``, re-raised)."""
    t0 = time.time()
    with open(str(log), "wb") as out:
        proc = None  # type: Optional[subprocess.Popen]
        try:
            proc = subprocess.Popen(command, cwd=str(cwd), env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            returncode = proc.wait(timeout=limit)  # type: Optional[int]
        except subprocess.TimeoutExpired:
            stop_group(proc, grace=0)  # the script and everything it started
            returncode = None
        except Interrupted as exc:
            if proc is not None:
                stop_group(proc)
                exc.stopped = command[1] if len(command) > 1 else command[0]
            raise
    return Run(returncode, time.time() - t0, log.read_text(errors="replace"))


def _tail(text: str, lines: int = 8) -> str:
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join("      | " + line for line in kept)


# ------------------------------------------------------------------------------------------- problem 1 io

def _read_given(path: Path) -> list:
    """The rows of an images csv as hw1_1.sh reads them (``utils.datasets.read_image_csv``: any case, spaces, BOM)."""
    from utils.datasets import read_image_csv

    return read_image_csv(path, duplicates="warn", bad_labels="warn")


def write_unlabeled_csv(labeled: Path, target: Path) -> int:
    """An images csv as ``id,filename,label`` with every label the string ``None`` (the hidden csv); the row count."""
    rows = _read_given(labeled)
    with open(str(target), "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([["id", "filename", "label"]] + [
            [r.id, r.path, "None"] for r in rows])
    return len(rows)


def check_p1_output(pred: Path, given: Path) -> List[str]:
    """Contract problems of a predicted csv against the csv the script was given (empty list: it complies)."""
    if not pred.is_file():
        return ["no output csv at {}".format(pred)]
    wanted = {r.id: r.filename for r in _read_given(given)}
    with open(str(pred), newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    problems = []
    if not rows or rows[0] != ["id", "filename", "label"]:
        return ["header is {!r}, expected 'id,filename,label'".format(",".join(rows[0]) if rows else "")]
    body = rows[1:]
    if len(body) != len(wanted):
        problems.append("{} row(s) for {} input row(s)".format(len(body), len(wanted)))
    seen = set()
    for number, row in enumerate(body, start=2):
        if len(row) != 3:
            problems.append("line {}: {} field(s)".format(number, len(row)))
            continue
        id_, filename, label = row
        if id_ not in wanted:
            problems.append("line {}: id {!r} is not in the input".format(number, id_))
        elif id_ in seen:
            problems.append("line {}: id {!r} repeated".format(number, id_))
        elif filename != wanted[id_]:
            problems.append("line {}: filename {!r}, the input has {!r} for id {}".format(
                number, filename, wanted[id_], id_))
        seen.add(id_)
        if "/" in filename or "\\" in filename:
            problems.append("line {}: filename {!r} is not bare".format(number, filename))
        if not (label.isdigit() and int(label) < NUM_P1_CLASSES):
            problems.append("line {}: label {!r} is not an integer in 0..{}".format(number, label, NUM_P1_CLASSES - 1))
    missing = sorted(set(wanted) - seen)
    if missing:
        problems.append("no row for id(s) {}".format(", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")))
    return problems


# ------------------------------------------------------------------------------------------- problem 2 io

def check_p2_output(out_dir: Path, in_dir: Path, exact_size: Optional[Tuple[int, int]]) -> List[str]:
    """Contract problems of a mask folder: one ``<id>_mask.png`` per ``<id>_sat.jpg`` and nothing else, RGB,
    the input's size (and ``exact_size`` when given), palette colours only, never red."""
    import numpy as np
    from PIL import Image

    from utils.masks import PALETTE

    if not out_dir.is_dir():
        return ["no output folder {}".format(out_dir)]
    inputs = {p.name[:-len("_sat.jpg")]: p for p in in_dir.glob("*_sat.jpg")}
    expected = {key + "_mask.png": path for key, path in inputs.items()}
    present = sorted(os.listdir(str(out_dir)))
    problems = []
    extra = [name for name in present if name not in expected]
    missing = sorted(set(expected) - set(present))
    if extra:
        problems.append("{} extra file(s) in the output folder (the grader pairs every .png by sorted name): "
                        "{}".format(len(extra), ", ".join(extra[:5])))
    if missing:
        problems.append("{} mask(s) missing: {}".format(len(missing), ", ".join(missing[:5])))
    allowed = {int(r) << 16 | int(g) << 8 | int(b) for r, g, b in PALETTE}
    for name in sorted(set(expected) & set(present)):
        try:
            with Image.open(str(out_dir / name)) as img:
                img.load()
                mode, size, pixels = img.mode, img.size, np.asarray(img)
            with Image.open(str(expected[name])) as src:
                want = src.size
        except Exception as exc:  # a damaged file: PIL raises several types
            problems.append("{}: unreadable ({})".format(name, exc))
            continue
        if mode != "RGB":
            problems.append("{}: mode {}, expected RGB".format(name, mode))
            continue
        if size != want or (exact_size is not None and size != exact_size):
            problems.append("{}: {}x{}, expected {}x{}".format(name, size[0], size[1], *(exact_size or want)))
        flat = pixels.reshape(-1, 3).astype(np.int32)
        codes = set(np.unique(flat[:, 0] << 16 | flat[:, 1] << 8 | flat[:, 2]).tolist())
        if (255 << 16) in codes:
            problems.append("{}: red pixels (255,0,0): not a class".format(name))
        others = codes - allowed - {255 << 16}
        if others:
            problems.append("{}: {} colour(s) outside the palette, e.g. {}".format(
                name, len(others), tuple((min(others) >> s) & 255 for s in (16, 8, 0))))
    return problems


# --------------------------------------------------------------------------------------------------- main

def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.presubmit",
        description="Run what the TAs run (hw1_download_ckpt.sh, hw1_1.sh, hw1_2.sh) in a fresh clone of the "
                    "repository, check the outputs against the grading contract, score them and compare with "
                    "the course's baselines. Exit status 1 when any check fails.")
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the repository to clone (default: the one holding this tool)")
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset root holding p1_data/office/val.csv, p1_data/office/val/ and "
                             "p2_data/validation/ (default: data_2025 in the repository)")
    parser.add_argument("--python", default=None,
                        help="the scripts' python3: an interpreter or a virtual environment folder (e.g. the "
                             "grading environment of .ci/grading_env.sh); it goes first on PATH (default: the "
                             "python3 already on PATH)")
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT,
                        help="seconds each script may take; a slower one is killed and fails (the course: 600 "
                             "on one GPU; a CPU is far slower on the real data)")
    parser.add_argument("--problems", nargs="+", choices=["1", "2"], default=["1", "2"],
                        help="which grading scripts to run after hw1_download_ckpt.sh")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="run even with uncommitted changes (a warning instead of a refusal; the clone "
                             "still holds only what is committed)")
    parser.add_argument("--local-checkpoints", nargs="?", const="", default=None, metavar="DIR",
                        help="do not run hw1_download_ckpt.sh: copy p1_best.pth / p2_best.pth from DIR (default: "
                             "the repository's checkpoints/) into the clone, to rehearse everything else before "
                             "the checkpoints are uploaded. NOT a full rehearsal: the download is not tried")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary folder (clone, inputs, outputs, logs) and print its path")
    return parser


def _data_checks(data: Path, problems: Sequence[str]) -> List[Check]:
    needed = []
    if "1" in problems:
        needed += [data / "p1_data" / "office" / "val.csv", data / "p1_data" / "office" / "val"]
    if "2" in problems:
        needed.append(data / "p2_data" / "validation")
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        return [Check("data", "FAIL", "missing {} (bash hw1_download.sh --data fetches data_2025/; --data "
                                      "names another root)".format(", ".join(missing)))]
    return [Check("data", "PASS", str(data))]


def _verdict(value: Optional[float], baselines: Sequence[Tuple[str, float]]) -> str:
    if value is None:
        return "not scored"
    passed = [name for name, bar in baselines if value >= bar]
    return "above {}".format(passed[-1]) if passed else "below every baseline"


def _repo_checks(args: argparse.Namespace, repo: Path) -> Tuple[List[Check], bool]:
    """A git repository whose work is committed (and pushed): the checks, and whether to go on."""
    if _git(repo, "rev-parse", "--is-inside-work-tree").returncode != 0:
        return [Check("git repository", "FAIL", "{} is not a git repository".format(repo))], False
    checks = []  # type: List[Check]
    changes = uncommitted_changes(repo)
    if changes:
        detail = "{} uncommitted change(s) a clone would not see: {}".format(
            len(changes), "; ".join(c.strip() for c in changes[:4]) + (" ..." if len(changes) > 4 else ""))
        if not args.allow_dirty:
            return [Check("committed working tree", "FAIL", detail + " (commit them, or --allow-dirty)")], False
        checks.append(Check("committed working tree", "WARN", detail))
    else:
        checks.append(Check("committed working tree", "PASS"))
    note = unpushed_note(repo)
    checks.append(Check("pushed", "WARN", note) if note else Check("pushed", "PASS"))
    return checks, True


def _clone_checks(repo: Path, clone: Path) -> Tuple[List[Check], bool]:
    """Clone the repository; no tracked file over 50 MB; the graded scripts obey the script rules."""
    t0 = time.time()
    cloned = subprocess.run(["git", "clone", "--quiet", str(repo), str(clone)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True, timeout=600)
    if cloned.returncode != 0:
        return [Check("git clone", "FAIL", cloned.stdout.strip()[-300:])], False
    checks = [Check("git clone", "PASS", str(clone), time.time() - t0)]
    large = large_tracked_files(clone)
    checks.append(Check("tracked files <= 50 MB", "FAIL" if large else "PASS", "; ".join(
        "{} ({:.1f} MB): upload it and list it in checkpoints/manifest.csv instead".format(n, s / 2 ** 20)
        for n, s in large)))
    for script in GRADED_SCRIPTS:
        path = clone / script
        if not path.is_file():
            checks.append(Check("rules of " + script, "FAIL", "missing from the repository"))
            continue
        bad = script_violations(path.read_text())
        checks.append(Check("rules of " + script, "FAIL" if bad else "PASS",
                            "uses {}".format(", ".join(bad)) if bad else "no forbidden command"))
    return checks, True


class _TimedRunner:
    """Runs a graded script of the clone under the time limit and appends its check."""

    def __init__(self, clone: Path, env: Dict[str, str], time_limit: float, logs: Path, checks: List[Check]):
        self.clone, self.env, self.time_limit, self.logs, self.checks = clone, env, time_limit, logs, checks

    def __call__(self, name: str, command: List[str]) -> Optional[Run]:
        if not (self.clone / command[1]).is_file():
            return None
        run = run_timed(command, self.clone, self.env, self.time_limit, self.logs / (command[1] + ".log"))
        if run.returncode is None:
            self.checks.append(Check(name, "FAIL", "killed after {:.0f} s: over the {:g} s limit".format(
                run.seconds, self.time_limit) + "\n" + _tail(run.output), run.seconds))
        elif run.returncode != 0:
            self.checks.append(Check(name, "FAIL", "exit status {}\n{}".format(run.returncode, _tail(run.output)),
                                     run.seconds))
        else:
            self.checks.append(Check(name, "PASS", "within the {:g} s limit".format(self.time_limit), run.seconds))
        return run


def _grade_p1(timed: _TimedRunner, data: Path, work: Path, checks: List[Check]) -> Optional[float]:
    """hw1_1.sh on the office val csv with its labels replaced by None; its output checked and scored."""
    from tools.report import grade_p1

    office = data / "p1_data" / "office"
    test_csv = work / "inputs" / "p1_test.csv"
    rows = write_unlabeled_csv(office / "val.csv", test_csv)
    pred = work / "outputs" / "p1_pred.csv"
    run = timed("bash hw1_1.sh", ["bash", "hw1_1.sh", str(test_csv), str(office / "val"), str(pred)])
    problems = check_p1_output(pred, test_csv)
    checks.append(Check("hw1_1.sh output contract", "FAIL" if problems else "PASS",
                        "; ".join(problems[:5]) if problems else "{} rows, id,filename,label".format(rows)))
    return grade_p1(pred, office / "val.csv")["accuracy"] if not problems and run is not None else None


def _grade_p2(timed: _TimedRunner, data: Path, work: Path, checks: List[Check], generated: bool) -> Optional[float]:
    """hw1_2.sh on a folder of the validation tiles alone; its masks checked against the contract and scored."""
    from tools.report import grade_p2

    validation = data / "p2_data" / "validation"
    tiles = work / "inputs" / "p2_tiles"
    tiles.mkdir()
    for image in sorted(validation.glob("*_sat.jpg")):  # the hidden folder holds only the images
        shutil.copyfile(str(image), str(tiles / image.name))
    masks = work / "outputs" / "p2_masks"
    run = timed("bash hw1_2.sh", ["bash", "hw1_2.sh", str(tiles), str(masks)])
    exact = None if generated else MASK_SIZE
    problems = check_p2_output(masks, tiles, exact)
    checks.append(Check("hw1_2.sh output contract", "FAIL" if problems else "PASS",
                        "; ".join(problems[:5]) if problems else "{} masks, RGB, {}, palette only".format(
                            len(list(tiles.iterdir())), "512x512" if exact else "the inputs' sizes")))
    return grade_p2(masks, validation)["miou"] if not problems and run is not None else None


LOCAL_NOTE = ("NOT a full rehearsal: hw1_download_ckpt.sh was not run (--local-checkpoints); run the check again "
              "without the flag once the checkpoints are uploaded")


def _local_checkpoints(args: argparse.Namespace, repo: Path, clone: Path, checks: List[Check]) -> bool:
    """--local-checkpoints: the graded checkpoints copied from DIR into the clone, where the scripts read them;
    False (and a FAIL naming the file) when one is missing."""
    source = Path(args.local_checkpoints).resolve() if args.local_checkpoints else repo / "checkpoints"
    checks.append(Check("bash hw1_download_ckpt.sh", "SKIP", "not run (--local-checkpoints): the download the TAs "
                                                             "run first, and its sha256 check, are not rehearsed"))
    names = ["p{}_best.pth".format(problem) for problem in sorted(args.problems)]
    missing = [name for name in names if not (source / name).is_file()]
    if missing:
        checks.append(Check("local checkpoints", "FAIL", "no {} (python -m tools.publish RUN/best.pth --problem N "
                                                         "writes it there)".format(", ".join(
                                                             str(source / name) for name in missing))))
        return False
    (clone / "checkpoints").mkdir(exist_ok=True)
    for name in names:
        shutil.copyfile(str(source / name), str(clone / "checkpoints" / name))
    checks.append(Check("local checkpoints", "PASS", "copied {} from {} into the clone".format(
        ", ".join("{} ({:.1f} MB)".format(n, (source / n).stat().st_size / 2 ** 20) for n in names), source)))
    return True


def presubmit(args: argparse.Namespace, work: Path) -> Tuple[List[Check], Dict[str, Any]]:
    """Every check in order; returns the summary rows and the scores (None where not scored)."""
    from tools.toydata import is_generated

    repo = args.repo.resolve()
    data = (args.data if args.data is not None else repo / "data_2025").resolve()
    scores = {"p1": None, "p2": None, "generated": is_generated(data)}  # type: Dict[str, Any]
    checks, go_on = _repo_checks(args, repo)
    if not go_on:
        return checks, scores
    checks += _data_checks(data, args.problems)
    if checks[-1].status == "FAIL":
        return checks, scores
    clone = work / "clone"
    more, go_on = _clone_checks(repo, clone)
    checks += more
    if not go_on:
        return checks, scores

    env = script_env(python_bin(args.python, work) if args.python else [])
    version = subprocess.run(["python3", "-c", "import sys; print('Python', sys.version.split()[0], sys.executable)"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    checks.append(Check("python3 of the scripts", "PASS" if version.returncode == 0 else "FAIL",
                        version.stdout.strip()[-300:]))
    (work / "logs").mkdir()
    timed = _TimedRunner(clone, env, args.time_limit, work / "logs", checks)
    if args.local_checkpoints is not None:
        if not _local_checkpoints(args, repo, clone, checks):
            checks.append(Check("grading scripts", "SKIP", "no checkpoints: a local checkpoint is missing"))
            return checks, scores
    else:
        fetched = timed("bash hw1_download_ckpt.sh", ["bash", "hw1_download_ckpt.sh"])
        if fetched is None or fetched.returncode != 0:
            checks.append(Check("grading scripts", "SKIP", "no checkpoints: hw1_download_ckpt.sh failed"))
            return checks, scores
    (work / "inputs").mkdir()
    (work / "outputs").mkdir()
    if "1" in args.problems:
        scores["p1"] = _grade_p1(timed, data, work, checks)
    if "2" in args.problems:
        scores["p2"] = _grade_p2(timed, data, work, checks, scores["generated"])
    return checks, scores


def print_summary(checks: Sequence[Check], scores: Dict[str, Any], local: bool = False) -> None:
    print("\npre-submission check" + (" with LOCAL checkpoints -- " + LOCAL_NOTE if local else ""))
    width = max(len(c.name) for c in checks) + 2
    for c in checks:
        seconds = "{:7.1f} s".format(c.seconds) if c.seconds is not None else " " * 9
        lines = c.detail.splitlines() or [""]
        print("  {:<{w}} {:<5} {}  {}".format(c.name, c.status, seconds, lines[0], w=width))
        for line in lines[1:]:
            print("  " + line)
    rows = [("problem 1 (setting C): accuracy", "p1"), ("problem 2: mIoU", "p2")]
    print("\nscores on the validation data, beside the course's baselines")
    for title, key in rows:
        value = scores[key]
        bars = ", ".join("{} {:.2f}".format(name, bar) for name, bar in BASELINES[key])
        shown = "{:.4f}".format(value) if value is not None else "-"
        print("  {:<33} {:>7}   {}   [{}]".format(title, shown, _verdict(value, BASELINES[key]), bars))
    if scores.get("generated"):
        print("  (generated data (tools.toydata): the scores check the pipeline, they are not comparable with the "
              "baselines)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    work = None  # type: Optional[Path]
    try:
        with interruptible():
            work = Path(tempfile.mkdtemp(prefix="hw1_presubmit."))
            checks, scores = presubmit(args, work)
    except (OSError, ValueError) as exc:
        checks, scores = [Check("pre-submission check", "FAIL", "error: {}".format(exc))], {"p1": None, "p2": None}
    except Interrupted as exc:
        if work is not None and not args.keep:
            shutil.rmtree(str(work), ignore_errors=True)
        print("interrupted by {}: {}{} {}".format(exc.name, "stopped {}, ".format(exc.stopped) if exc.stopped else "",
                                                  "kept" if args.keep else "removed", work), file=sys.stderr)
        return exc.exit_code
    finally:
        if work is not None and not args.keep:
            shutil.rmtree(str(work), ignore_errors=True)
    local = args.local_checkpoints is not None
    print_summary(checks, scores, local)
    failed = [c.name for c in checks if c.status == "FAIL"]
    if args.keep:
        print("\nkept: {} (clone, inputs, outputs, logs)".format(work))
    if failed:
        print("\nFAILED: " + ", ".join(failed))
    elif local:
        print("\nall other checks passed: hw1_1.sh / hw1_2.sh run on the local checkpoints and their outputs follow "
              "the contract")
    else:
        print("\nall checks passed: the TAs' commands run and their outputs follow the contract")
    if local:
        print(LOCAL_NOTE)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
