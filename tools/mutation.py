"""Mutation testing: does the default test suite notice a planted bug? Two sets of mutants, neither in CI.

    python -m tools.mutation semantic                    # the hand-written bugs of tools/mutants/*.patch
    python -m tools.mutation semantic --only p2- --jobs 2    # those whose name starts with p2-, two at a time
    python -m tools.mutation library                     # mutmut's operator mutants (setup.cfg [mutmut]), then the table
    python -m tools.mutation library "utils.knn*"        # only some (mutmut's mutant-name globs)
    python -m tools.mutation table                       # the per-module table of mutmut's last results, no run

``library``: mutmut plants operator, constant and argument mutants in every function of the modules that setup.cfg
names and runs, for each, the default-suite tests that reach that function. This tool only runs it with one thread
per test process (torch's thread pool does not survive mutmut's fork: with more, equivalent mutants hang into
timeouts), and reads its results into a kill rate per module, leaving out the equivalent mutants listed with their
reasons in ``tools/mutants/equivalent.txt`` and those a rule sets apart (``mutant_kind``: text a person reads,
CUDA-only placement).

``semantic``: the bugs a person writes and an operator swap cannot (a setting that loads the wrong backbone, a loss
term dropped, a seed that ignores the sample index). mutmut has no format for hand-written mutants, so each is a
patch, ``tools/mutants/AREA-NAME.patch``: a ``Bug:`` line, a ``Tests:`` line (the pytest ids that must notice it),
a blank line, then ``git diff`` output. Each is applied in a scratch copy of the working tree (never in it), the
named tests run, and the patch is taken back out.
"""
import argparse
import ast
import configparser
import fnmatch
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "tools" / "mutants"
EQUIVALENT = MUTANTS / "equivalent.txt"
# mutmut's statuses: those that count as noticed; 'not checked' and 'skipped' were not run and stay out of the rate
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
NOT_RUN = {"not checked", "skipped", "check was interrupted by user"}


class Patch(NamedTuple):
    name: str
    bug: str
    tests: List[str]
    path: Path


def read_patch(path: Path) -> Patch:
    """The header of one semantic mutant; a patch without ``Bug:``/``Tests:`` or a diff is an error naming it."""
    head = path.read_text(encoding="utf-8").split("\ndiff --git ", 1)
    fields = dict(re.findall(r"^(Bug|Tests):[ \t]*(.*)$", head[0], re.M))
    if len(head) < 2 or not fields.get("Bug") or not fields.get("Tests"):
        raise SystemExit("error: {} needs a 'Bug:' line, a 'Tests:' line and a git diff".format(path))
    return Patch(path.stem, fields["Bug"], fields["Tests"].split(), path)


def semantic_patches(only: Sequence[str] = ()) -> List[Patch]:
    """Every ``tools/mutants/*.patch`` (or those whose name starts with one of ``only``), sorted by name."""
    return [read_patch(p) for p in sorted(MUTANTS.glob("*.patch")) if not only or p.stem.startswith(tuple(only))]


def scratch_copy(dest: Path) -> Path:
    """The working tree's tracked and unignored files, copied to ``dest`` (the patches apply to it as to the tree)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=str(ROOT), check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(str(src), str(dest / name))
    return dest


def git_apply(patch: Path, where: Path, reverse: bool = False) -> None:
    """Apply (or take back out) one patch in ``where``; a patch that no longer applies is an error naming it."""
    proc = subprocess.run(["git", "apply"] + (["-R"] if reverse else []) + [str(patch)], cwd=str(where),
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit("error: {} does not apply to the tree any more: {}".format(patch, proc.stderr.strip()))


def run_semantic(patch: Patch, where: Path, timeout: float) -> str:
    """'killed', 'timeout' or 'survived': the patch's tests run against the tree with the patch applied."""
    git_apply(patch.path, where)
    try:
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"] + patch.tests
        env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
        proc = subprocess.run(cmd, cwd=str(where), env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode in (4, 5):  # usage error, or no test collected: the header names tests that do not exist
            raise SystemExit("error: {}'s tests did not run: {}".format(patch.path, proc.stdout[-500:]))
        return "killed" if proc.returncode else "survived"
    except subprocess.TimeoutExpired:
        return "timeout"
    finally:
        git_apply(patch.path, where, reverse=True)


def semantic(args: argparse.Namespace) -> Dict[str, str]:
    """Run every selected patch (``--jobs`` scratch copies at once); print the table and each survivor."""
    patches = semantic_patches(args.only)
    with tempfile.TemporaryDirectory(prefix="hw1-mutation.") as tmp:
        copies = [scratch_copy(Path(tmp) / str(i)) for i in range(max(1, min(args.jobs, len(patches))))]
        free = list(copies)

        def one(patch: Patch) -> str:
            where = free.pop()
            try:
                status = run_semantic(patch, where, args.timeout)
            finally:
                free.append(where)
            print("{:9} {}".format(status, patch.name), flush=True)
            return status

        with ThreadPoolExecutor(len(copies)) as pool:
            outcome = dict(zip([p.name for p in patches], pool.map(one, patches)))
    by_area = defaultdict(Counter)
    for name, status in outcome.items():
        by_area[name.split("-", 1)[0]][status] += 1
    print_table(by_area)
    for patch in patches:
        if outcome[patch.name] == "survived":
            print("SURVIVED {}: {} (tests: {})".format(patch.name, patch.bug, " ".join(patch.tests)))
    return outcome


# Mutants this tool sets apart by rule, from each mutant's code against the original's (``mutant_kind``), instead of
# listing them one by one: they change no number the report shows.
#   text: only what a person reads (help, descriptions, messages, progress-bar labels), not what is computed;
#   cuda: only where tensors live or what runs on a CUDA device; equivalent on the CPU that runs the suite.
# (`what=` is the noun utils/fileio.py puts in its messages: "cannot write mask ..."; `begin` is Run.begin, which
# prints a run's start-up line; `set_postfix`/`set_description` are a progress bar's label; `default_text` is how
# add_flag's --help words a default)
TEXT_KEYWORDS = {"help", "description", "epilog", "metavar", "desc", "leave", "unit", "postfix", "flush", "what",
                 "formatter_class", "more", "default_text"}
# utils.cli.add_flag(parser, name, default, more): its 4th argument is help text too; a group's title and
# description are --help's headings
TEXT_ARGUMENTS = {"add_flag": 3, "add_argument_group": 0}
CUDA_KEYWORDS = {"device", "non_blocking", "memory_format", "pin_memory", "map_location"}
MESSAGE_CALL = re.compile(r"^(print|warn|error|exit|begin|.*Exit|.*Error|.*Exception|.*Warning)$")
DISPLAY_CALL = {"set_postfix", "set_postfix_str", "set_description"}


def ast_diff(a, b, parents: tuple = ()):
    """``(a_node, b_node, a_node's ancestors)``: the deepest pair of nodes holding every difference between the ASTs
    ``a`` and ``b`` (a node whose child lists differ in length is itself the pair); None when they are equal."""
    if type(a) is not type(b):
        return a, b, parents
    changed = []
    for field in a._fields:
        x, y = getattr(a, field, None), getattr(b, field, None)
        if isinstance(x, list) and (not isinstance(y, list) or len(x) != len(y)):
            return a, b, parents
        for u, v in zip(x, y) if isinstance(x, list) else [(x, y)]:
            if isinstance(u, ast.AST) and isinstance(v, ast.AST):
                if ast.dump(u) != ast.dump(v):
                    changed.append((u, v))
            elif u != v:
                return a, b, parents
    if not changed:
        return None
    return ast_diff(changed[0][0], changed[0][1], parents + (a,)) if len(changed) == 1 else (a, b, parents)


def _callee(node: ast.AST) -> str:
    func = node.func if isinstance(node, ast.Call) else None
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def mutant_kind(original: ast.AST, mutant: ast.AST) -> Optional[str]:
    """'text', 'cuda' (see TEXT_KEYWORDS) or None (a change to what is computed) for one mutant's function."""
    found = ast_diff(original, mutant)
    if found is None:
        return None
    a, b, parents = found
    chain = parents + (a,)
    def about_cuda(test: ast.AST) -> bool:
        return any(isinstance(c, ast.Constant) and c.value == "cuda" or
                   isinstance(c, ast.Attribute) and c.attr in ("is_cuda", "device") for c in ast.walk(test))

    if any(isinstance(n, ast.If) and about_cuda(n.test) for n in chain):
        return "cuda"  # inside (or the test of) an `if device.type == "cuda":` or `if x.device != y.device:`
    if any(isinstance(n, ast.IfExp) and about_cuda(n.test) and (chain[i + 1] is n.body or a is n.test.comparators[0]
                                                                if isinstance(n.test, ast.Compare) else False)
           for i, n in enumerate(chain[:-1])):
        return "cuda"  # the GPU value of `X if device.type == "cuda" else Y`, or the "cuda" it compares with
    if isinstance(a, ast.Call) and isinstance(b, ast.Call) and len(a.keywords) != len(b.keywords):
        gone = {k.arg for k in a.keywords} ^ {k.arg for k in b.keywords}
        return None if not gone else "text" if gone <= TEXT_KEYWORDS else "cuda" if gone <= CUDA_KEYWORDS else None
    if isinstance(a, ast.Call) and isinstance(b, ast.Call) and _callee(a) == "to" and len(a.args) == 1 > len(b.args):
        a, parents = a.args[0], chain  # `.to(device)` -> `.to()`: as if the device were changed
    keyword = next((n.arg for n in reversed(parents) if isinstance(n, ast.keyword)), None)
    if keyword in CUDA_KEYWORDS or (isinstance(a, ast.Name) and a.id == "device" or
                                    isinstance(a, ast.Attribute) and a.attr == "device") and \
            parents and _callee(parents[-1]) == "to":
        return "cuda"
    is_text = (isinstance(a, ast.JoinedStr) or isinstance(a, ast.Constant) and isinstance(a.value, str) or
               any(isinstance(n, ast.JoinedStr) for n in parents)) and not any(isinstance(n, ast.Dict) for n in parents)
    if any(isinstance(n, ast.Call) and _callee(n) in TEXT_ARGUMENTS and chain[i + 1] in n.args[TEXT_ARGUMENTS[
            _callee(n)]:] for i, n in enumerate(chain[:-1])):
        return "text"  # add_flag's help text, given positionally
    if keyword in TEXT_KEYWORDS or any(isinstance(n, ast.Call) and _callee(n) in DISPLAY_CALL for n in parents):
        return "text"  # anything inside help=..., desc=..., bar.set_postfix(...): what is shown, not computed
    if is_text and any(isinstance(n, ast.Call) and MESSAGE_CALL.match(_callee(n)) for n in parents):
        return "text"
    return None


def mutant_kinds(names: Sequence[str], where: Path) -> Dict[str, str]:
    """``{mutant name: 'text' | 'cuda'}`` for those of ``names`` that a rule sets apart, read from mutmut's mutated
    copies under ``where/mutants``."""
    functions: Dict[str, Dict[str, ast.AST]] = {}
    kinds = {}
    for name in names:
        module = module_of(name)
        func = name[len(module) + 2:]  # after "MODULE.x"
        if module not in functions:
            path = where / "mutants" / (module.replace(".", "/") + ".py")
            tree = ast.parse(path.read_text(encoding="utf-8")) if path.is_file() else ast.Module(body=[])
            functions[module] = {n.name: n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
        defs = functions[module]
        mutant, original = defs.get("x" + func), defs.get("x" + func.rsplit("__mutmut_", 1)[0] + "__mutmut_orig")
        if mutant is not None and original is not None:
            mutant.name = original.name
            kind = mutant_kind(original, mutant)
            if kind:
                kinds[name] = kind
    return kinds


def equivalents() -> Dict[str, str]:
    """mutmut names listed as equivalent: ``NAME  # reason`` lines of tools/mutants/equivalent.txt."""
    out = {}
    for line in EQUIVALENT.read_text(encoding="utf-8").splitlines() if EQUIVALENT.exists() else []:
        name, _, reason = line.partition("#")
        if name.strip():
            out[name.strip()] = reason.strip()
    return out


def module_of(mutant: str) -> str:
    """``utils.knn.x_knn_classify__mutmut_3`` / ``utils.dino.xǁDINOLossǁforward__mutmut_1`` -> ``utils.knn``."""
    return re.split(r"\.x[_ǁ]", mutant, 1)[0]


def library_table(results: str, where: Path = ROOT) -> Dict[str, Counter]:
    """Per-module counts from the lines of ``mutmut results --all true`` run in ``where``; print the table and the
    survivors that change what is computed."""
    known = equivalents()
    statuses = re.findall(r"^\s*(\S+): (.+?)\s*$", results, re.M)
    kinds = mutant_kinds([name for name, _ in statuses], where)
    by_module = defaultdict(Counter)
    survivors = []
    for name, status in statuses:
        status = "killed" if status in KILLED else status
        status = kinds.get(name) or ("equivalent" if name in known else status)
        if status not in NOT_RUN:
            by_module[module_of(name)][status] += 1
        if status in ("survived", "no tests", "suspicious"):
            survivors.append("{}: {}".format(name, status))
    print_table(by_module)
    print("\n".join(["", "Not killed (`mutmut show NAME` shows the diff):"] + survivors if survivors else []))
    return by_module


def print_table(rows: Dict[str, Counter]) -> None:
    """One line per group: counts and kill rate = killed / (all - equivalent - text - cuda)."""
    head = ("all", "killed", "survived", "equivalent", "text", "cuda", "rate")
    print("\n{:28} {:>6} {:>7} {:>9} {:>11} {:>5} {:>5} {:>7}".format("", *head))
    for group in sorted(rows):
        c = rows[group]
        total = sum(c.values())
        killed = c["killed"] + c["timeout"]
        counted = total - c["equivalent"] - c["text"] - c["cuda"]
        rate = "{:.1%}".format(killed / counted) if counted else "-"
        print("{:28} {:>6} {:>7} {:>9} {:>11} {:>5} {:>5} {:>7}".format(
            group, total, killed, counted - killed, c["equivalent"], c["text"], c["cuda"], rate))


def sample_names(results: str, per_module: int, seed: int) -> List[str]:
    """A seeded random sample of ``per_module`` mutant names of each module, from ``mutmut results --all true``."""
    by_module = defaultdict(list)
    for name in re.findall(r"^\s*(\S+): ", results, re.M):
        by_module[module_of(name)].append(name)
    rng = random.Random(seed)
    return sorted(n for names in by_module.values() for n in rng.sample(sorted(names), min(per_module, len(names))))


def focused_copy(dest: Path, source: Sequence[str], tests: Sequence[str]) -> Path:
    """A scratch copy of the tree whose setup.cfg mutates only ``source`` and maps only ``tests`` (either may be
    empty: setup.cfg's value stays)."""
    scratch_copy(dest)
    cfg = configparser.ConfigParser()
    cfg.read(str(dest / "setup.cfg"))
    section = cfg["mutmut"]
    section["also_copy"] = section["also_copy"] + section["source_paths"]  # the modules left unmutated still run
    for key, values in (("source_paths", source), ("pytest_add_cli_args_test_selection", tests)):
        if values:
            section[key] = "\n" + "\n".join(values)
    with open(str(dest / "setup.cfg"), "w") as f:
        cfg.write(f)
    return dest


def library(args: argparse.Namespace) -> None:
    """``mutmut run`` (one thread per test process), then the per-module table of all its results. With
    ``--sample N``: mutmut first generates the mutants and maps the tests (a run that matches no mutant name), then
    runs N mutants of each module drawn with ``--seed`` (not those a rule or equivalent.txt sets apart: they stay
    out of the rate, run or not). With ``--source``/``--tests``: all of it in a scratch copy
    that mutates only those modules and runs only those tests (a lower bound of the default suite's kill rate, in
    minutes rather than hours); the survivors' diffs are printed, since the copy goes."""
    if shutil.which("mutmut") is None:
        raise SystemExit("error: mutmut is not installed: pip install -r requirements-dev.txt")
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    focused = args.source or args.tests
    if args.workdir and focused and args.workdir.exists() and any(args.workdir.iterdir()):
        raise SystemExit("error: --workdir {} is not empty: give a new folder".format(args.workdir))
    with tempfile.TemporaryDirectory(prefix="hw1-mutmut.") as tmp:
        where = args.workdir or Path(tmp)
        if focused:
            focused_copy(where, args.source, args.tests)
        elif not args.workdir:
            where = ROOT

        def mutmut(*words: str, check: bool = True, **kwargs) -> str:
            proc = subprocess.run(["mutmut"] + list(words), cwd=str(where), env=env, check=check, **kwargs)
            return proc.stdout or ""

        names = list(args.names)
        if args.sample:
            # generates the mutants and maps the tests, then stops: no mutant matches (mutmut says so and exits 1)
            mutmut("run", "--max-children", str(args.jobs), "no-mutant-has-this-name", check=False)
            results = mutmut("results", "--all", "true", capture_output=True, text=True)
            names = sample_names(results, args.sample, args.seed)
            names = [n for n in names if not args.names or any(fnmatch.fnmatch(n, g) for g in args.names)]
        # what a rule sets apart or equivalent.txt lists is left out of the rate: a sample need not run it
        skip = set(mutant_kinds(names, where)) | set(equivalents()) if args.sample else set()
        run = [n for n in names if n not in skip]
        if not args.table_only and (run or not args.sample):  # (no names at all would run every mutant)
            mutmut("run", "--max-children", str(args.jobs), *run)
        results = mutmut("results", "--all", "true", capture_output=True, text=True)
        if args.sample:  # the table of the sample alone
            wanted = set(names)
            results = "\n".join(line for line in results.splitlines() if line.strip().split(":")[0] in wanted)
        library_table(results, where)
        if focused and not args.workdir:  # the copy goes: print what a test still has to notice
            left = re.findall(r"^\s*(\S+): (?:survived|no tests)\s*$", results, re.M)
            kinds, known = mutant_kinds(left, where), equivalents()
            for name in left:
                if name not in known and name not in kinds:
                    print(mutmut("show", name, capture_output=True, text=True))


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Mutation testing: do the default tests notice a planted bug? "
                                     "(docs/development.md)", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sem = sub.add_parser("semantic", help="run the hand-written mutants of tools/mutants/*.patch")
    sem.add_argument("--only", nargs="*", default=[], help="only patches whose name starts with one of these")
    sem.add_argument("--jobs", type=int, default=1, help="patches run at once, each in its own scratch copy")
    sem.add_argument("--timeout", type=float, default=900.0, help="seconds per patch; a timeout counts as killed")
    lib = sub.add_parser("library", help="run mutmut over setup.cfg's modules, then print the per-module table")
    lib.add_argument("names", nargs="*", help="mutmut mutant-name globs, e.g. 'utils.knn*' (default: all)")
    lib.add_argument("--jobs", type=int, default=2, help="mutmut's --max-children")
    lib.add_argument("--sample", type=int, default=0, help="run only this many mutants of each module, drawn at "
                     "random (mutmut makes ~18,000 over setup.cfg's modules: all of them take days on 2 cores)")
    lib.add_argument("--seed", type=int, default=0, help="the seed of --sample's draw")
    lib.add_argument("--source", nargs="*", default=[], help="mutate only these modules (in a scratch copy)")
    lib.add_argument("--tests", nargs="*", default=[], help="run only these tests (in a scratch copy): a lower bound "
                     "of the default suite's kill rate, without mapping the whole suite first")
    lib.add_argument("--workdir", type=Path, help="with --source/--tests: make the scratch copy here and keep it, "
                     "for `mutmut show` and `table --workdir` afterwards (default: a temporary folder)")
    table = sub.add_parser("table", help="the per-module table of mutmut's last results (no run)")
    table.add_argument("--workdir", type=Path, help="a folder kept by `library --workdir` (default: the tree)")
    table.set_defaults(names=[], jobs=2, sample=0, seed=0, source=[], tests=[], table_only=True)
    lib.set_defaults(table_only=False)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    if args.command == "semantic":
        outcome = semantic(args)
        return 1 if "survived" in outcome.values() else 0
    library(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
