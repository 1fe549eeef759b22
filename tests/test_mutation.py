"""tools/mutation.py: the semantic mutants stay applicable and name real tests; the runner tells a killed mutant from
a survivor; mutmut's results become the right per-module counts."""
import ast
import subprocess
import sys

import pytest

from tools import mutation


def test_every_semantic_mutant_applies_to_the_tree_and_names_existing_tests(repo_root):
    patches = mutation.semantic_patches()
    assert len(patches) >= 3, "tools/mutants/*.patch: the semantic set is missing"
    for patch in patches:
        proc = subprocess.run(["git", "apply", "--check", str(patch.path)], cwd=str(repo_root), capture_output=True,
                              text=True)
        assert proc.returncode == 0, "{} no longer applies: {}".format(patch.name, proc.stderr)
        for test in patch.tests:
            path, _, name = test.partition("::")
            assert (repo_root / path).is_file(), "{} names {}, which does not exist".format(patch.name, path)
            if name:
                tree = ast.parse((repo_root / path).read_text(encoding="utf-8"))
                defined = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
                assert name.split("[")[0].split("::")[0] in defined, "{} names {}".format(patch.name, test)
            text = (repo_root / path).read_text(encoding="utf-8")
            assert "pytest.mark.slow" not in text or name, "{}: a slow file cannot be the default suite".format(test)


MODULE = "def absolute(n):\n    if n < 0:\n        return -n\n    return n\n"
TEST = "from mymod import absolute\n\n\ndef test_absolute():\n    assert absolute(-3) == 3\n"


def _patch(root, name, new_module, tests="test_mymod.py"):
    """A semantic-mutant file for ``mymod.py`` made by git itself, then the module restored."""
    (root / "mymod.py").write_text(new_module)
    diff = subprocess.run(["git", "diff", "--", "mymod.py"], cwd=str(root), capture_output=True, text=True).stdout
    subprocess.run(["git", "checkout", "--", "mymod.py"], cwd=str(root), check=True)
    path = root / (name + ".patch")
    path.write_text("Bug: {}\nTests: {}\n\n{}".format(name, tests, diff))
    return mutation.read_patch(path)


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    (root / "mymod.py").write_text(MODULE)
    (root / "test_mymod.py").write_text(TEST)
    for cmd in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git"] + cmd, cwd=str(root), check=True)
    return root


def test_a_real_bug_is_killed_an_equivalent_survives_and_the_tree_is_restored(project):
    killed = _patch(project, "negation-dropped", MODULE.replace("return -n", "return n"))
    equivalent = _patch(project, "same-code", MODULE.replace("n < 0", "0 > n"))
    assert killed.bug == "negation-dropped" and killed.tests == ["test_mymod.py"]
    assert mutation.run_semantic(killed, project, timeout=120) == "killed"
    assert (project / "mymod.py").read_text() == MODULE
    assert mutation.run_semantic(equivalent, project, timeout=120) == "survived"
    assert (project / "mymod.py").read_text() == MODULE


def test_a_patch_naming_no_test_or_no_longer_applying_is_an_error_naming_it(project):
    typo = _patch(project, "typo", MODULE.replace("return -n", "return n"), tests="test_mymod.py::test_absolut")
    with pytest.raises(SystemExit, match="typo.patch's tests did not run"):
        mutation.run_semantic(typo, project, timeout=120)
    (project / "mymod.py").write_text("def absolute(n):\n    return abs(n)\n")
    with pytest.raises(SystemExit, match="does not apply"):
        mutation.run_semantic(typo, project, timeout=120)
    (project / "bad.patch").write_text("Tests: x\n\ndiff --git a/x b/x\n")
    with pytest.raises(SystemExit, match="needs a 'Bug:' line"):
        mutation.read_patch(project / "bad.patch")


def test_library_table_counts_per_module_with_equivalents_left_out(monkeypatch, capsys):
    monkeypatch.setattr(mutation, "equivalents", lambda: {"utils.knn.x_f__mutmut_3": "device move"})
    results = "\n".join([
        "    utils.knn.x_f__mutmut_1: killed",
        "    utils.knn.x_f__mutmut_2: survived",
        "    utils.knn.x_f__mutmut_3: survived",
        "    utils.knn.x_f__mutmut_4: timeout",
        "    utils.dino.xǁDINOLossǁforward__mutmut_1: no tests",
        "    utils.dino.xǁDINOLossǁforward__mutmut_2: segfault",
        "    utils.dino.x_ema_update__mutmut_1: not checked",
    ])
    rows = mutation.library_table(results)
    assert dict(rows["utils.knn"]) == {"killed": 2, "survived": 1, "equivalent": 1}
    assert dict(rows["utils.dino"]) == {"no tests": 1, "killed": 1}
    out = capsys.readouterr().out
    assert "66.7%" in out and "50.0%" in out  # knn: 2 of 3 counted; dino: 1 of 2 (not checked is not counted)
    assert "utils.knn.x_f__mutmut_2: survived" in out and "mutmut_3: survived" not in out


def test_every_module_setup_cfg_names_exists(repo_root):
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(str(repo_root / "setup.cfg"))
    paths = cfg["mutmut"]["source_paths"].split()
    assert {"utils/", "p1_ssl_pretrain.py", "p1_finetune.py", "p1_tsne.py", "p2_unet.py", "p2_deeplab.py",
            "p2_inference.py", "p1_inference.py"} <= set(paths)
    for path in paths + cfg["mutmut"]["also_copy"].split():
        assert (repo_root / path).exists(), path


def test_cli_help():
    proc = subprocess.run([sys.executable, "-m", "tools.mutation", "semantic", "--help"], capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "--only" in proc.stdout


def test_the_sample_draws_n_of_each_module_and_the_seed_repeats_it():
    results = "\n".join(["    utils.knn.x_f__mutmut_{}: not checked".format(i) for i in range(1, 30)]
                        + ["    utils.dino.x_g__mutmut_{}: not checked".format(i) for i in range(1, 4)])
    first = mutation.sample_names(results, 5, seed=1)
    assert first == mutation.sample_names(results, 5, seed=1) != mutation.sample_names(results, 5, seed=2)
    assert sum(n.startswith("utils.knn.") for n in first) == 5
    assert sum(n.startswith("utils.dino.") for n in first) == 3  # all there are
