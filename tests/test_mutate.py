"""tools/mutate.py, the mutation-testing harness, on a throwaway module and test written to a temporary folder."""
import hashlib
import io
import json

import pytest

from tools import mutate

MODULE = '''"""A throwaway module."""


def absolute(n):
    if n < 0:
        return -n
    return n


def clamp(x, low, high):
    return min(max(x, low), high)  # pragma: no mutate
'''

TESTS = '''from mymod import absolute


def test_absolute():
    assert absolute(-3) == 3 and absolute(4) == 4
'''


def _tree(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    (root / "mymod.py").write_text(MODULE)
    (root / "test_mymod.py").write_text(TESTS)
    return root


def test_mutants_are_small_compilable_edits(project):
    mutants = mutate.generate(project / "mymod.py", project)
    edits = {(m.before, m.after) for m in mutants}
    assert ("n < 0", "n <= 0") in edits  # comparison boundary
    assert ("-n", "n") in edits  # unary minus dropped
    assert ("return -n", "return None") in edits  # return dropped
    assert ("n < 0", "not (n < 0)") in edits  # negated condition
    assert ("n < 0", "n < 1") in edits  # constant tweak
    assert all(m.qualname == "absolute" for m in mutants)  # the docstring and the pragma line are left alone
    assert len({m.key for m in mutants}) == len(mutants)
    source = (project / "mymod.py").read_bytes()
    for m in mutants:
        compile(mutate.apply(source, m), "mymod.py", "exec")
        changed = [line for line in mutate.diff(source, m).splitlines()[2:] if line[:1] in "+-"]
        assert len(changed) == 2, changed  # one line changed


def test_obvious_bug_killed_equivalent_survives_tree_unchanged(project, tmp_path):
    before = _tree(project)
    mutants = {m.after: m.key for m in mutate.generate(project / "mymod.py", project) if m.before == "n < 0"}
    listed = tmp_path / "equivalent.txt"
    listed.write_text("# known\nmutant: {}\nreason: integer inputs only\n".format(mutants["n < 1"]))
    assert mutate.read_equivalents(listed) == {mutants["n < 1"]: "integer inputs only"}
    out = io.StringIO()
    argv = ["--json", str(tmp_path / "result.json"), "--equivalents", str(listed), "--warm", "pytest"]
    summary, = mutate.main(argv, {"mymod.py": ["test_mymod.py"]}, project, out)
    outcomes = {(r["key"].split("::")[2]): r["outcome"] for r in summary["results"]}
    assert outcomes["return -n -> return None"] == "killed"
    assert outcomes["-n -> n"] == "killed"
    assert outcomes["n < 0 -> n <= 0"] == "survived"  # -0 == 0: no test can tell it from n < 0
    assert outcomes["n < 0 -> n < 1"] == "equivalent"
    assert summary["killed"] >= 3 and summary["timeout"] == summary["error"] == 0
    assert summary["survived"] == 1 and summary["equivalent"] == 1
    assert summary["kill_rate"] == pytest.approx(summary["killed"] / (summary["generated"] - 1))
    assert "SURVIVED mymod.py:5:" in out.getvalue() and "+    if n <= 0:" in out.getvalue()
    assert json.loads((tmp_path / "result.json").read_text())["modules"][0]["module"] == "mymod.py"
    assert _tree(project) == before  # no mutant left behind, nothing written into the tree


def test_one_process_per_mutant_and_a_sample(project, tmp_path):
    before = _tree(project)
    summary, = mutate.main(["--no-fork", "--max-mutants", "1", "--seed", "3", "--equivalents", str(tmp_path / "no")],
                           {"mymod.py": ["test_mymod.py"]}, project, io.StringIO())
    assert summary["generated"] == 1 and summary["killed"] + summary["survived"] == 1
    assert _tree(project) == before
    listed = tmp_path / "broken.txt"
    listed.write_text("mutant: mymod.py::absolute::n < 0 -> n <= 0\n")
    with pytest.raises(ValueError, match="has no reason"):
        mutate.read_equivalents(listed)


def test_the_repository_map_names_existing_modules_and_tests(repo_root):
    for module, tests in mutate.MODULE_TESTS.items():
        assert (repo_root / module).is_file(), module
        for i, test in enumerate(tests):
            if not (test.startswith("-") or tests[i - 1] == "-k"):
                assert (repo_root / test.split("::")[0]).is_file(), test
    assert mutate.read_equivalents(mutate.EQUIVALENTS)  # the repository's file parses
