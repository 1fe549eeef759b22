"""Mutation testing: plant one small bug at a time in the modules that decide correctness, and check that the tests
covering each module notice it.

    python -m tools.mutate                                   # every module of MODULE_TESTS, every mutant
    python -m tools.mutate --module knn --module optim       # some modules (path or file stem)
    python -m tools.mutate --max-mutants 40 --seed 0 --jobs 2    # a seeded random sample per module, 2 workers
    python -m tools.mutate --module metrics --list           # the mutants, without running anything
    python -m tools.mutate --json out.json; python -m tools.mutate --rerun out.json   # survivors again, after a fix

Mutants are AST-guided edits of the source text (the rest of the file keeps its bytes): arithmetic, comparison and
boolean operator swaps (``+``/``-``, ``*``/``/``, ``<``/``<=``, ``==``/``!=``, ``and``/``or``, ...), constant tweaks
(0 <-> 1, n -> n + 1, x -> x + 1.0, True <-> False), negated conditions, dropped ``not`` and unary minus, dropped
statements (calls, stores to attributes/items, re-assignments, ``raise``, ``break``/``continue``) and returns
(``return None``), ``min`` <-> ``max``, and the first two positional arguments of a call swapped. Docstrings, strings,
f-strings, type annotations, ``if __name__ == "__main__":`` blocks and lines marked ``# pragma: no mutate`` are left
alone.

Each mutant is written into a private copy of the repository (git's tracked and unignored files, copied once per
worker into a temporary folder that is deleted at the end), never into the working tree; there the module's tests
(MODULE_TESTS below: only the tests that cover it) run with ``-x`` under a per-mutant timeout (3 x the unmutated run
+ 30 s unless ``--timeout``), and the file is restored before the next mutant. With ``--fork`` (the default on
POSIX) a worker imports torch/torchvision/numpy/pytest once and forks a fresh child per mutant, which saves the
imports' seconds on every mutant; ``--no-fork`` starts ``python -m pytest`` each time.

Outcome of a mutant: killed (the tests failed or did not even import it), timeout (counted as killed in the rate),
survived, or equivalent (listed in ``tools/mutants_equivalent.txt`` with the reason it cannot change behaviour; not
run, and left out of the rate). The report gives, per module, generated / killed / survived / timeout / equivalent
and the kill rate ``(killed + timeout) / (generated - equivalent)``, then every survivor's location, key and diff.
Copy a survivor's key into the equivalents file (``mutant:`` line, then a ``reason:`` line) only when no test could
tell the difference; otherwise write the missing test. This is a development tool, not part of the default CI run.
"""
import argparse
import ast
import difflib
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]

# module -> the tests that cover it (paths or pytest node ids relative to the repository root, or pytest options such
# as -k EXPR). Only these run against the module's mutants: keep them fast and focused.
MODULE_TESTS = {
    "utils/metrics.py": ["tests/test_metrics.py"],
    "utils/masks.py": ["tests/test_metrics.py", "-k", "not cli"],  # the CLI tests are utils.metrics' (13 s)
    "utils/transforms.py": ["tests/test_transforms.py"],
    "utils/multicrop.py": ["tests/test_multicrop.py"],
    "utils/gpu_multicrop.py": ["tests/test_gpu_multicrop.py"],
    "utils/dino.py": ["tests/test_p1_dino_parts.py",
                      "tests/test_p1_dino_run.py::test_the_optimizer_uses_the_batch_scaled_lr",
                      "tests/test_p1_dino_run.py::test_prototypes_frozen_for_exactly_the_first_epoch"],
    "utils/optim.py": ["tests/test_optim.py", "tests/test_p1_dino_parts.py"],
    "utils/checkpoint.py": ["tests/test_checkpoint.py",
                            "tests/test_lifecycle.py::test_degenerate_classifier_checkpoints_are_refused",
                            "tests/test_lifecycle.py::test_non_finite_weights_are_refused",
                            "tests/test_lifecycle.py::test_a_config_that_does_not_fit_its_weights_fails_before_building_the_model",
                            "tests/test_lifecycle.py::test_full_disk_while_saving_a_checkpoint_is_one_line"],
    "utils/predict.py": ["tests/test_predict.py",
                         "tests/test_p2_inference.py::test_multiscale_output_is_the_average_of_the_per_scale_outputs",
                         "tests/test_p2_inference.py::test_flip_tta_is_undone_before_averaging",
                         "tests/test_p2_inference.py::test_ensemble_averages_members_and_plain_tta_flag_is_flip",
                         "tests/test_models.py::test_checkpoint_from_before_output_stride_rebuilds_os16",
                         "tests/test_p2_inference.py::test_tile_starts_cover_the_length_with_the_overlap",
                         "tests/test_p2_inference.py::test_tiled_prediction_averages_the_windows_and_one_window_is_the_whole_image",
                         "tests/test_p2_inference.py::test_p2_inference_tiles_large_images_to_their_exact_size",
                         "tests/test_p2_inference.py::test_tiled_prediction_holds_one_band_of_window_rows_at_a_time"],
    "utils/knn.py": ["tests/test_knn.py"],
    "tools/report.py": ["tests/test_report.py"],
}
# modules run when no --module is given (gpu_multicrop is optional: its statistical tests take ~30 s per mutant)
DEFAULT_MODULES = [m for m in MODULE_TESTS if m != "utils/gpu_multicrop.py"]
EQUIVALENTS = ROOT / "tools" / "mutants_equivalent.txt"
# imported once per worker with --fork (whatever of them is installed)
WARM_IMPORTS = ("numpy", "torch", "torchvision", "torchvision.transforms.v2", "PIL.Image", "pytest")


class Mutant(NamedTuple):
    """One edit of one module: bytes [start, end) of the source become ``replacement``."""
    path: str  # relative to the root, "/"-separated
    line: int
    col: int
    qualname: str
    start: int
    end: int
    replacement: bytes
    before: str  # the enclosing expression or statement (a window of it), one line
    after: str
    key: str  # stable across edits elsewhere in the file: path::qualname::before -> after[ #n]


# ------------------------------------------------------------------------------------------------ generation
_BINOPS = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "/"), ast.Div: ("/", "*"),
           ast.FloorDiv: ("//", "/"), ast.Mod: ("%", "//"), ast.Pow: ("**", "*"), ast.BitAnd: ("&", "|"),
           ast.BitOr: ("|", "&"), ast.BitXor: ("^", "&"), ast.LShift: ("<<", ">>"), ast.RShift: (">>", "<<")}
_COMPARES = {ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"), ast.Gt: (">", ">="), ast.GtE: (">=", ">"),
             ast.Eq: ("==", "!="), ast.NotEq: ("!=", "=="), ast.Is: ("is", "is not"), ast.IsNot: ("is not", "is"),
             ast.In: ("in", "not in"), ast.NotIn: ("not in", "in")}
_BOOLOPS = {ast.And: ("and", "or"), ast.Or: ("or", "and")}
# calls whose first two arguments are not worth swapping (symmetric, messages, type checks, containers)
_NO_SWAP = {"min", "max", "minimum", "maximum", "print", "isinstance", "issubclass", "getattr", "setattr", "hasattr", "format", "join",
            "warn", "append", "extend", "get", "setdefault", "pop", "add_argument", "add_flag", "replace", "split",
            "startswith", "endswith", "write", "zip", "dict", "tuple", "list", "set", "ValueError", "TypeError",
            "RuntimeError", "KeyError", "FileNotFoundError", "SystemExit", "OSError", "Path"}


def _one_line(text: str, limit: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _Sites(ast.NodeVisitor):
    """Walks a module and collects (node for the key, start, end, replacement) edits."""

    def __init__(self, source: bytes) -> None:
        self.src = source
        self.line_starts = [0]
        for line in source.splitlines(keepends=True):
            self.line_starts.append(self.line_starts[-1] + len(line))
        self.edits = []  # type: List[Tuple[ast.AST, str, int, int, bytes]]
        self.scope = []  # type: List[str]
        self.parents = []  # type: List[ast.AST]
        self.bound = []  # type: List[set]
        self.skip_lines = {i + 1 for i, line in enumerate(source.splitlines())
                           if b"pragma: no mutate" in line}

    # positions ------------------------------------------------------------------------------------------
    def pos(self, line: int, col: int) -> int:
        return self.line_starts[line - 1] + col

    def span(self, node: ast.AST) -> Tuple[int, int]:
        return self.pos(node.lineno, node.col_offset), self.pos(node.end_lineno, node.end_col_offset)

    def text(self, node: ast.AST) -> bytes:
        start, end = self.span(node)
        return self.src[start:end]

    def add(self, context: ast.AST, start: int, end: int, replacement: bytes) -> None:
        if getattr(context, "lineno", 0) in self.skip_lines:
            return
        self.edits.append((context, ".".join(self.scope) or "<module>", start, end, replacement))

    def operator_between(self, a: ast.AST, b: ast.AST, words: str) -> Optional[Tuple[int, int]]:
        """Span of the operator ``words`` in the source between nodes a and b (skipping parens and comments)."""
        lo, hi = self.span(a)[1], self.span(b)[0]
        gap = self.src[lo:hi]
        i = 0
        pattern = words.split()
        while i < len(gap):
            c = gap[i:i + 1]
            if c == b"#":
                i = gap.find(b"\n", i)
                if i < 0:
                    return None
                continue
            if gap.startswith(pattern[0].encode(), i):
                j = i + len(pattern[0])
                for word in pattern[1:]:  # "not in", "is not": any whitespace between the words
                    while gap[j:j + 1] in (b" ", b"\t", b"\\", b"\n", b"\r"):
                        j += 1
                    if not gap.startswith(word.encode(), j):
                        return None
                    j += len(word)
                return lo + i, lo + j
            i += 1
        return None

    # scopes ---------------------------------------------------------------------------------------------
    def visit(self, node: ast.AST) -> None:
        self.parents.append(node)
        try:
            super().visit(node)
        finally:
            self.parents.pop()

    def context(self) -> ast.AST:
        """The innermost expression around the node being visited that says more than a sign, slice or tuple
        would (the node itself when there is none)."""
        return next((p for p in reversed(self.parents[:-1]) if isinstance(p, ast.expr)
                     and not isinstance(p, (ast.UnaryOp, ast.Slice, ast.Tuple))), self.parents[-1])

    def _function(self, node: Any) -> None:
        self.scope.append(node.name)
        for deco in node.decorator_list:
            self.visit(deco)
        for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(default)
        args = node.args
        self.bound.append({a.arg for a in args.posonlyargs + args.args + args.kwonlyargs})
        self.body(node.body, docstring=True)
        self.bound.pop()
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.append(node.name)
        for deco in node.decorator_list:
            self.visit(deco)
        self.body(node.body, docstring=True)
        self.scope.pop()

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit(node.body)

    # things left alone ----------------------------------------------------------------------------------
    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:  # f-strings: positions inside are unreliable
        pass

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_arg(self, node: ast.arg) -> None:
        pass

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if isinstance(test, ast.Compare) and isinstance(test.left, ast.Name) and test.left.id == "__name__":
            return  # the command-line entry point
        self.negate(test)
        self.generic_visit(node)

    def visit_While(self, node: ast.While) -> None:
        self.negate(node.test)
        self.generic_visit(node)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self.negate(node.test)
        self.generic_visit(node)

    def visit_Assert(self, node: ast.Assert) -> None:
        self.drop(node)
        self.visit(node.test)

    def negate(self, test: ast.AST) -> None:
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return  # dropping the `not` is the same mutant
        start, end = self.span(test)
        self.add(test, start, end, b"not (" + self.text(test) + b")")

    # statements -----------------------------------------------------------------------------------------
    def drop(self, stmt: ast.stmt, replacement: bytes = b"pass") -> None:
        start, end = self.span(stmt)
        self.add(stmt, start, end, replacement)

    def body(self, stmts: Sequence[ast.stmt], docstring: bool = False) -> None:
        for i, stmt in enumerate(stmts):
            if docstring and i == 0 and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
                    and isinstance(stmt.value.value, str):
                continue
            self.statement(stmt)
            self.visit(stmt)

    def generic_visit(self, node: ast.AST) -> None:
        for field, value in ast.iter_fields(node):
            if field in ("body", "orelse", "finalbody") and isinstance(value, list):
                self.body(value)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.AST):
                        self.visit(item)
            elif isinstance(value, ast.AST):
                self.visit(value)

    def visit_Module(self, node: ast.Module) -> None:
        self.body(node.body, docstring=True)

    def statement(self, stmt: ast.stmt) -> None:
        """Dropped statements: calls, stores into objects, re-assignments, raise/break/continue; returns -> None."""
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
            self.drop(stmt)
        elif isinstance(stmt, (ast.AugAssign, ast.Raise, ast.Break, ast.Continue, ast.Delete)):
            self.drop(stmt)
        elif isinstance(stmt, ast.Assign):
            targets = stmt.targets
            if all(isinstance(t, (ast.Attribute, ast.Subscript)) for t in targets):
                self.drop(stmt)
            elif self.bound and len(targets) == 1 and isinstance(targets[0], ast.Name) \
                    and targets[0].id in self.bound[-1]:
                self.drop(stmt)  # a re-assignment: the old value flows on
        elif isinstance(stmt, ast.Return) and stmt.value is not None \
                and not (isinstance(stmt.value, ast.Constant) and stmt.value.value is None):
            self.drop(stmt, b"return None")
        if self.bound:
            for node in ast.walk(stmt):
                if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                    self.bound[-1].add(node.id)

    # expressions ----------------------------------------------------------------------------------------
    def visit_BinOp(self, node: ast.BinOp) -> None:
        swap = _BINOPS.get(type(node.op))
        strings = any(isinstance(x, ast.JoinedStr) or isinstance(x, ast.Constant) and isinstance(x.value, str)
                      for x in (node.left, node.right))
        if swap and not strings:
            span = self.operator_between(node.left, node.right, swap[0])
            if span:
                self.add(node, span[0], span[1], swap[1].encode())
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        swap = _BINOPS.get(type(node.op))
        if swap:
            span = self.operator_between(node.target, node.value, swap[0] + "=")
            if span:
                self.add(node, span[0], span[1], (swap[1] + "=").encode())
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        left = node.left
        for op, right in zip(node.ops, node.comparators):
            swap = _COMPARES[type(op)]
            span = self.operator_between(left, right, swap[0])
            if span:
                self.add(node, span[0], span[1], swap[1].encode())
            left = right
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        swap = _BOOLOPS[type(node.op)]
        for a, b in zip(node.values, node.values[1:]):
            span = self.operator_between(a, b, swap[0])
            if span:
                self.add(node, span[0], span[1], swap[1].encode())
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, (ast.Not, ast.USub)):
            start = self.span(node)[0]
            self.add(self.context(), start, self.span(node.operand)[0], b"")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool):
            new = repr(not value)
        elif isinstance(value, int):
            new = repr({0: 1, 1: 0}.get(value, value + 1))
        elif isinstance(value, float):
            new = repr({0.0: 1.0, 1.0: 0.0}.get(value, value + 1.0))
        else:
            return
        start, end = self.span(node)
        self.add(self.context(), start, end, new.encode())

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if isinstance(func, ast.Name) and name in ("min", "max"):
            start, end = self.span(func)
            self.add(node, start, end, b"max" if name == "min" else b"min")
        args = node.args
        if len(args) >= 2 and name not in _NO_SWAP and not any(isinstance(a, ast.Starred) for a in args[:2]) \
                and self.text(args[0]) != self.text(args[1]):
            start, end = self.span(args[0])[0], self.span(args[1])[1]
            middle = self.src[self.span(args[0])[1]:self.span(args[1])[0]]
            self.add(node, start, end, self.text(args[1]) + middle + self.text(args[0]))
        self.generic_visit(node)


def _snippets(source: bytes, context: Tuple[int, int], start: int, end: int, replacement: bytes,
              width: int = 45) -> Tuple[str, str]:
    """The context expression or statement before and after the edit, on one line; a long one is cut to a window
    of ``width`` bytes either side of the edit."""
    c_start, c_end = min(context[0], start), max(context[1], end)
    lo, hi = max(c_start, start - width), min(c_end, end + width)
    head, tail = (b"..." if lo > c_start else b""), (b"..." if hi < c_end else b"")
    before = head + source[lo:hi] + tail
    after = head + source[lo:start] + replacement + source[end:hi] + tail
    return (" ".join(before.decode("utf-8", "replace").split()), " ".join(after.decode("utf-8", "replace").split()))


def generate(path: Path, root: Path = ROOT) -> List[Mutant]:
    """Every mutant of one module, in source order; each compiles and differs from the original's AST."""
    source = path.read_bytes()
    original = ast.dump(ast.parse(source))
    sites = _Sites(source)
    sites.visit(ast.parse(source))
    rel = path.resolve().relative_to(root.resolve()).as_posix()
    mutants, seen = [], {}  # type: List[Mutant], Dict[str, int]
    for context, qualname, start, end, replacement in sorted(sites.edits, key=lambda e: (e[2], e[3], e[4])):
        mutated = source[:start] + replacement + source[end:]
        try:
            if ast.dump(ast.parse(mutated)) == original:
                continue
        except SyntaxError:
            continue
        before, after = _snippets(source, sites.span(context), start, end, replacement)
        key = "{}::{}::{} -> {}".format(rel, qualname, before, after)
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            key += " #{}".format(seen[key])
        line = source.count(b"\n", 0, start) + 1
        col = start - (source.rfind(b"\n", 0, start) + 1)
        mutants.append(Mutant(rel, line, col, qualname, start, end, replacement, before, after, key))
    return mutants


def apply(source: bytes, mutant: Mutant) -> bytes:
    return source[:mutant.start] + mutant.replacement + source[mutant.end:]


def diff(source: bytes, mutant: Mutant) -> str:
    a = source.decode("utf-8", "replace").splitlines()
    b = apply(source, mutant).decode("utf-8", "replace").splitlines()
    return "\n".join(difflib.unified_diff(a, b, mutant.path, mutant.path + " (mutant)", n=1, lineterm=""))


def read_equivalents(path: Path) -> Dict[str, str]:
    """{key: reason} from a file of ``mutant: KEY`` lines, each followed by a ``reason: TEXT`` line."""
    result = {}  # type: Dict[str, str]
    if not Path(path).is_file():
        return result
    key = None
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if line.startswith("mutant:"):
            key = line[len("mutant:"):].strip()
        elif line.startswith("reason:"):
            if key is None:
                raise ValueError("{}:{}: a reason without its mutant line".format(path, number))
            result[key] = line[len("reason:"):].strip()
            key = None
        elif line and not line.startswith("#"):
            raise ValueError("{}:{}: expected 'mutant: KEY', 'reason: TEXT' or a # comment".format(path, number))
    if key is not None:
        raise ValueError("{}: the mutant {!r} has no reason".format(path, key))
    return result


# -------------------------------------------------------------------------------------------------- running
def copy_tree(root: Path, dest: Path) -> None:
    """The files git tracks or would track (the whole tree, minus caches, outside a git checkout) into ``dest``."""
    try:
        listing = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=str(root),
                                 capture_output=True, check=True).stdout
        files = [f for f in listing.decode("utf-8", "surrogateescape").split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = [str(p.relative_to(root)) for p in root.rglob("*")
                 if p.is_file() and not {".git", "__pycache__", ".pytest_cache"} & set(p.relative_to(root).parts)]
    for name in files:
        source = root / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(str(source), str(target))


_FORK_WORKER = r"""
import importlib, json, os, signal, sys, time
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception:
        pass
for line in sys.stdin:
    task = json.loads(line)
    t0 = time.time()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        fd = os.open(task["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        import pytest
        code = 3
        try:
            code = int(pytest.main(task["args"]))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    status = None
    while status is None:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = os.waitstatus_to_exitcode(raw) if hasattr(os, "waitstatus_to_exitcode") else raw >> 8
        elif time.time() - t0 > task["timeout"]:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            os.waitpid(pid, 0)
            status = "timeout"
        else:
            time.sleep(0.05)
    print(json.dumps({"status": status, "seconds": time.time() - t0}), flush=True)
"""


class Worker:
    """A private copy of the tree where mutants are written and tests run, one at a time."""

    def __init__(self, root: Path, fork: bool, warm: Sequence[str] = WARM_IMPORTS,
                 python: str = sys.executable) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mutate-"))
        copy_tree(root, self.dir)
        self.env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1", TQDM_DISABLE="1",
                        PYTHONHASHSEED="0")
        self.env.pop("PYTHONPATH", None)
        self.python = python
        self.log = self.dir / ".mutant.log"
        self.proc = None  # type: Optional[subprocess.Popen]
        if fork and hasattr(os, "fork"):
            self.proc = subprocess.Popen([python, "-c", _FORK_WORKER] + list(warm), cwd=str(self.dir),
                                         env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         universal_newlines=True)

    def pytest(self, tests: Sequence[str], timeout: float) -> Tuple[Any, float]:
        """(pytest's exit code or "timeout", seconds) for ``tests`` in this copy."""
        args = ["-q", "-x", "-p", "no:cacheprovider", "--basetemp", str(self.dir / ".pytest-tmp")] + list(tests)
        if self.proc is not None:
            self.proc.stdin.write(json.dumps({"args": args, "timeout": timeout, "log": str(self.log)}) + "\n")
            self.proc.stdin.flush()
            reply = self.proc.stdout.readline()
            if not reply:
                raise RuntimeError("the fork worker died (see {})".format(self.log))
            result = json.loads(reply)
            return result["status"], result["seconds"]
        t0 = time.time()
        with open(str(self.log), "w") as log:
            proc = subprocess.Popen([self.python, "-m", "pytest"] + args, cwd=str(self.dir), env=self.env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                return proc.wait(timeout=timeout), time.time() - t0
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return "timeout", time.time() - t0

    def run(self, mutant: Optional[Mutant], tests: Sequence[str], timeout: float) -> Tuple[Any, float]:
        """Tests against one mutant (None: the unmutated module); the copy's file is restored afterwards."""
        if mutant is None:
            return self.pytest(tests, timeout)
        target = self.dir / mutant.path
        original = target.read_bytes()
        try:
            target.write_bytes(apply(original, mutant))
            return self.pytest(tests, timeout)
        finally:
            target.write_bytes(original)

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait()
        shutil.rmtree(str(self.dir), ignore_errors=True)


def outcome(status: Any) -> str:
    """pytest's exit code -> killed / survived / timeout / error (5: no test ran, 4: bad usage)."""
    if status == "timeout":
        return "timeout"
    return {0: "survived", 1: "killed", 2: "killed", 3: "killed"}.get(status, "error")


def run_module(module: str, tests: Sequence[str], mutants: Sequence[Mutant], workers: "queue.Queue[Worker]",
               jobs: int, equivalents: Dict[str, str], timeout: Optional[float], root: Path,
               out=sys.stdout) -> Dict[str, Any]:
    """Run one module's mutants; returns its counts and per-mutant results."""
    source = (root / module).read_bytes()
    worker = workers.get()
    try:
        status, seconds = worker.run(None, tests, timeout=3600)
        if status != 0:
            raise RuntimeError("the tests of {} fail without any mutant (exit {}):\n{}".format(
                module, status, worker.tail()))
    finally:
        workers.put(worker)
    limit = timeout if timeout is not None else 3 * seconds + 30
    print("{}: {} mutant(s), tests {} ({:.0f} s unmutated, timeout {:.0f} s)".format(
        module, len(mutants), " ".join(tests), seconds, limit), file=out, flush=True)
    results = []  # type: List[Dict[str, Any]]
    lock = threading.Lock()

    def one(index_mutant: Tuple[int, Mutant]) -> None:
        index, mutant = index_mutant
        if mutant.key in equivalents:
            result = {"outcome": "equivalent", "seconds": 0.0, "reason": equivalents[mutant.key]}
        else:
            w = workers.get()
            try:
                status, secs = w.run(mutant, tests, limit)
                result = {"outcome": outcome(status), "seconds": secs, "exit": status}
                if result["outcome"] == "error":
                    result["log"] = w.tail()
            finally:
                workers.put(w)
        result.update({"key": mutant.key, "line": mutant.line, "col": mutant.col, "diff": diff(source, mutant)})
        with lock:
            results.append(result)
            print("  [{}/{}] {:<10} {}:{} {} -> {}".format(index + 1, len(mutants), result["outcome"], mutant.path,
                                                           mutant.line, _one_line(mutant.before, 50),
                                                           _one_line(mutant.after, 50)), file=out, flush=True)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(one, enumerate(mutants)))
    results.sort(key=lambda r: (r["line"], r["col"], r["key"]))
    counts = {name: sum(r["outcome"] == name for r in results)
              for name in ("killed", "survived", "timeout", "equivalent", "error")}
    counted = len(results) - counts["equivalent"] - counts["error"]
    rate = (counts["killed"] + counts["timeout"]) / counted if counted else None
    return dict(counts, module=module, tests=list(tests), generated=len(results), kill_rate=rate, results=results)


def select(modules: Sequence[str], available: Sequence[str]) -> List[str]:
    """Module arguments (a path like utils/knn.py or a stem like knn) -> module paths."""
    chosen = []
    for name in modules:
        matches = [m for m in available if m == name or Path(m).stem == name]
        if not matches:
            raise SystemExit("error: unknown module {!r}; known: {}".format(name, ", ".join(available)))
        chosen += [m for m in matches if m not in chosen]
    return chosen


def sample(mutants: List[Mutant], max_mutants: Optional[int], seed: int, module: str) -> List[Mutant]:
    if max_mutants is None or len(mutants) <= max_mutants:
        return mutants
    picked = random.Random("{}:{}".format(seed, module)).sample(range(len(mutants)), max_mutants)
    return [mutants[i] for i in sorted(picked)]


def report(summaries: Sequence[Dict[str, Any]], out=sys.stdout) -> None:
    print("\n{:<24} {:>9} {:>7} {:>9} {:>8} {:>11} {:>6} {:>10}".format(
        "module", "generated", "killed", "survived", "timeout", "equivalent", "error", "kill rate"), file=out)
    total = {k: 0 for k in ("generated", "killed", "survived", "timeout", "equivalent", "error")}
    for s in summaries:
        for k in total:
            total[k] += s[k]
        print("{:<24} {:>9} {:>7} {:>9} {:>8} {:>11} {:>6} {:>10}".format(
            s["module"], s["generated"], s["killed"], s["survived"], s["timeout"], s["equivalent"], s["error"],
            "-" if s["kill_rate"] is None else "{:.1%}".format(s["kill_rate"])), file=out)
    counted = total["generated"] - total["equivalent"] - total["error"]
    print("{:<24} {:>9} {:>7} {:>9} {:>8} {:>11} {:>6} {:>10}".format(
        "total", total["generated"], total["killed"], total["survived"], total["timeout"], total["equivalent"],
        total["error"], "{:.1%}".format((total["killed"] + total["timeout"]) / counted) if counted else "-"),
        file=out)
    for s in summaries:
        for r in s["results"]:
            if r["outcome"] in ("survived", "error"):
                print("\n{} {}:{}:{}\n  key: {}\n{}".format(r["outcome"].upper(), s["module"], r["line"], r["col"],
                                                             r["key"], r["diff"]), file=out)
                if r.get("log"):
                    print(r["log"], file=out)


def main(argv: Optional[Sequence[str]] = None, module_tests: Optional[Dict[str, List[str]]] = None,
         root: Path = ROOT, out=sys.stdout) -> List[Dict[str, Any]]:
    module_tests = MODULE_TESTS if module_tests is None else module_tests
    parser = argparse.ArgumentParser(prog="python -m tools.mutate", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--module", action="append", default=[],
                        help="a module to mutate (path or stem; repeatable); default: all but gpu_multicrop")
    parser.add_argument("--max-mutants", type=int, default=None,
                        help="at most N mutants per module, a random sample (seeded by --seed)")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run in parallel, each in its own copy")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds per mutant (default: 3 x the unmutated test run + 30)")
    parser.add_argument("--equivalents", type=Path, default=EQUIVALENTS,
                        help="known-equivalent mutants (mutant: KEY / reason: TEXT), left out of the rate")
    parser.add_argument("--no-fork", dest="fork", action="store_false",
                        help="start a fresh `python -m pytest` per mutant instead of forking a warm worker")
    parser.add_argument("--warm", default=",".join(WARM_IMPORTS),
                        help="with fork: modules a worker imports once, comma-separated")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--json", type=Path, default=None, help="also write every result to this file")
    parser.add_argument("--rerun", type=Path, default=None,
                        help="only the mutants that survived (or timed out, or errored) in this --json file: check "
                             "that new tests kill them")
    args = parser.parse_args(argv)
    defaults = [m for m in DEFAULT_MODULES if m in module_tests] if module_tests is MODULE_TESTS \
        else list(module_tests)
    modules = select(args.module, list(module_tests)) if args.module else defaults
    equivalents = read_equivalents(args.equivalents)
    plan = [(m, sample(generate(root / m, root), args.max_mutants, args.seed, m)) for m in modules]
    if args.rerun is not None:  # matched by their diff: the same edit of the same source
        earlier = json.loads(args.rerun.read_text())["modules"]
        again = {(s["module"], r["diff"]) for s in earlier for r in s["results"]
                 if r["outcome"] in ("survived", "timeout", "error")}
        plan = [(m, [x for x in mutants if (m, diff((root / m).read_bytes(), x)) in again]) for m, mutants in plan
                if m in {s["module"] for s in earlier}]
    if args.list:
        for module, mutants in plan:
            for mutant in mutants:
                mark = "  (equivalent)" if mutant.key in equivalents else ""
                print("{}:{}:{}  {}{}".format(module, mutant.line, mutant.col, mutant.key, mark), file=out)
        return []
    t0 = time.time()
    workers = queue.Queue()  # type: queue.Queue[Worker]
    pool = [Worker(root, args.fork, [m for m in args.warm.split(",") if m]) for _ in range(max(1, args.jobs))]
    for w in pool:
        workers.put(w)
    summaries = []
    try:
        for module, mutants in plan:
            summaries.append(run_module(module, module_tests[module], mutants, workers, max(1, args.jobs),
                                        equivalents, args.timeout, root, out))
    finally:
        for w in pool:
            w.close()
    report(summaries, out)
    known = {m.key for _, mutants in plan for m in mutants}
    stale = [k for k in equivalents if k.split("::")[0] in modules and k not in known and args.max_mutants is None
             and args.rerun is None]  # a sample or a rerun does not generate every mutant
    for key in stale:
        print("note: equivalents file names a mutant that no longer exists: {}".format(key), file=out)
    print("\n{} module(s) in {:.0f} s{}".format(len(summaries), time.time() - t0,
                                                 "" if args.max_mutants is None
                                                 else " (sampled: at most {} per module, seed {})".format(
                                                     args.max_mutants, args.seed)), file=out)
    if args.json is not None:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "max_mutants": args.max_mutants,
                                         "seed": args.seed, "modules": summaries}, indent=1) + "\n")
    return summaries


if __name__ == "__main__":
    main()
