"""tools/mutation.py: the semantic mutants stay applicable and name real tests; the runner tells a killed mutant from
a survivor; mutmut's results become the right per-module counts."""
import ast
import re
import os
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
    monkeypatch.setattr(mutation, "mutant_kinds", lambda names, where: {"utils.knn.x_f__mutmut_5": "text"})
    results += "\n    utils.knn.x_f__mutmut_5: survived"
    rows = mutation.library_table(results)
    assert dict(rows["utils.knn"]) == {"killed": 2, "survived": 1, "equivalent": 1, "text": 1}
    assert dict(rows["utils.dino"]) == {"no tests": 1, "killed": 1}
    out = capsys.readouterr().out
    assert "66.7%" in out and "50.0%" in out  # knn: 2 of 3 counted; dino: 1 of 2 (not checked is not counted)
    assert "utils.knn.x_f__mutmut_2: survived" in out and "mutmut_3: survived" not in out
    assert "mutmut_5" not in out


ORIGINAL = """
def f(parser, loader, x, device, path):
    parser.add_argument("--lr", type=float, default=0.1, help="the learning rate")
    add_flag(parser, "--encoder", "none", "the classic U-Net", choices=("none", "resnet34"), default_text="no encoder")
    group = parser.add_argument_group("common training flags")
    parser2 = argparse.ArgumentParser(description="Train", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for batch in progress(loader, desc="epoch {}".format(len(loader)), leave=False):
        x = x.to(device, non_blocking=True)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    votes = torch.zeros(3, device=x.device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if votes.device != x.device:
        votes = votes.to(x.device)
    if x.sum() < 0:
        raise SystemExit("error: {} is not an image".format(path))
    print(f"loss {x.mean():.3f}", file=sys.stderr)
    log.write(json.dumps({"loss": 1}))
    state = torch.load(path, map_location="cpu", weights_only=True)
    print({"epoch": 1})
    bar.set_postfix(loss="{:.4f}".format(x.item()))
    run.begin("{} images, lr {:g}".format(len(loader), 0.1))
    return x * 2 + votes
"""


@pytest.mark.parametrize("before, after, kind", [
    ('help="the learning rate"', 'help="XXthe learning rateXX"', "text"),
    ('help="the learning rate"', "help=None", "text"),
    (', help="the learning rate"', "", "text"),
    ("leave=False", "leave=True", "text"),
    ("format(len(loader))", "format(None)", "text"),  # a value shown in a progress label
    ('"error: {} is not an image"', '"XXerror: {} is not an imageXX"', "text"),
    ('f"loss {x.mean():.3f}"', 'f"XXloss {x.mean():.3f}XX"', "text"),
    ('"{:.4f}"', '"XX{:.4f}XX"', "text"),  # a progress bar's label
    ('"the classic U-Net"', '"THE CLASSIC U-NET"', "text"),  # add_flag's positional help
    ('"common training flags"', "None", "text"),  # a --help heading
    ('default_text="no encoder"', 'default_text="XXno encoderXX"', "text"),  # how --help words a default
    ('group = parser.add_argument_group(', 'group = parser.add_mutually_exclusive_group(', None),
    ('choices=("none", "resnet34")', 'choices=("none", "XXresnet34XX")', None),  # its choices are measured
    ('"--encoder", "none"', '"--encoder", "XXnoneXX"', None),  # and its default
    (", formatter_class=argparse.ArgumentDefaultsHelpFormatter", "", "text"),  # only how --help looks
    ('"{} images, lr {:g}"', '"XX{} images, lr {:g}XX"', "text"),  # a run's start-up line
    ("x.to(device, non_blocking=True)", "x.to(None, non_blocking=True)", "cuda"),
    ("x.to(device, non_blocking=True)", "x.to(device, non_blocking=False)", "cuda"),
    ("x.to(device, non_blocking=True)", "x.to(device, )", "cuda"),
    ('if device.type == "cuda":', 'if device.type != "cuda":', "cuda"),
    ("memory_format=torch.channels_last", "memory_format=None", "cuda"),
    ('map_location="cpu", ', "", "cuda"),  # where a saved tensor is put: the CPU, there
    (", weights_only=True", "", None),  # what a load accepts is measured
    ("torch.zeros(3, device=x.device)", "torch.zeros(3, )", "cuda"),
    ("votes.device != x.device", "votes.device == x.device", "cuda"),
    ("votes = votes.to(x.device)", "votes = None", "cuda"),
    ('"nccl" if', '"XXncclXX" if', "cuda"),  # the GPU branch of a conditional expression
    ('if device.type == "cuda" else', 'if device.type == "CUDA" else', "cuda"),
    ('else "gloo"', 'else "XXglooXX"', None),  # its CPU branch is measured
    ('"nccl" if device.type == "cuda" else', '"nccl" if device.type == "cuda" or True else', None),
    # what is computed: a rule must not hide these
    ("default=0.1", "default=1.1", None),
    ("type=float, ", "", None),
    ("x * 2", "x * 3", None),
    ("x.sum() < 0", "x.sum() <= 0", None),
    ("raise SystemExit(", "raise ValueError(", None),
    ("torch.zeros(3,", "torch.zeros(4,", None),
    ("file=sys.stderr", "file=None", None),  # a message moved from stderr to stdout is seen
    ("file=sys.stderr", "", None),
    ("x.to(device, non_blocking=True)", "x.to(device, non_blocking=True, copy=True)", None),  # a keyword added
    ("return x * 2 + votes", "return None", None),
    ('{"loss": 1}', '{"XXlossXX": 1}', None),  # data written, not text
    ('{"epoch": 1}', '{"XXepochXX": 1}', None),
    ("format(x.item())", "format(None)", "text"),  # a value shown in a progress label
    ("format(len(loader), 0.1)", "format(len(loader), 1.1)", None),  # the start-up line's numbers are measured
])
def test_a_mutant_is_set_apart_as_text_or_cuda_only_when_that_is_all_it_changes(before, after, kind):
    assert ORIGINAL.count(before) == 1
    original, mutant = (ast.parse(src).body[0] for src in (ORIGINAL, ORIGINAL.replace(before, after)))
    assert mutation.mutant_kind(original, mutant) == kind
    assert mutation.mutant_kind(original, original) is None


def test_mutant_kinds_reads_mutmuts_copies(tmp_path):
    (tmp_path / "mutants" / "utils").mkdir(parents=True)
    body = ORIGINAL.replace("def f(", "def x_f__mutmut_orig(")
    mutants = [body.replace("x_f__mutmut_orig", "x_f__mutmut_1").replace('"epoch {}"', '"XXepoch {}XX"'),
               body.replace("x_f__mutmut_orig", "x_f__mutmut_2").replace("x * 2", "x * 3"),
               "class Loss:" + "\n    ".join(body.replace("x_f__mutmut_orig", "xǁLossǁf__mutmut_orig").split("\n"))
               + "\n    ".join(body.replace("x_f__mutmut_orig", "xǁLossǁf__mutmut_1").split("\n")).replace(
                   "device.type", "device.kind", 1)]
    (tmp_path / "mutants" / "utils" / "m.py").write_text(body + "".join(mutants))
    names = ["utils.m.x_f__mutmut_1", "utils.m.x_f__mutmut_2", "utils.m.xǁLossǁf__mutmut_1", "utils.gone.x_g__mutmut_1"]
    assert mutation.mutant_kinds(names, tmp_path) == {"utils.m.x_f__mutmut_1": "text",
                                                      "utils.m.xǁLossǁf__mutmut_1": "cuda"}


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


def test_a_sample_runs_only_the_mutants_that_count_and_tables_all_it_drew(monkeypatch, capsys):
    """Text, CUDA-only and listed-equivalent mutants stay out of the rate, so a sample does not spend hours running
    them; they still appear in the sample's table. A sample made only of those runs nothing (mutmut given no name
    would run every mutant)."""
    drawn = ["utils.knn.x_f__mutmut_{}".format(i) for i in range(1, 5)]
    calls = []

    def fake_run(cmd, cwd=None, env=None, check=True, capture_output=False, text=False):
        calls.append(cmd[1:])
        status = {"utils.knn.x_f__mutmut_1": "killed", "utils.knn.x_f__mutmut_2": "survived"}
        out = "\n".join("    {}: {}".format(n, status.get(n, "not checked")) for n in drawn)
        return subprocess.CompletedProcess(cmd, 0, stdout=out if capture_output else None)

    monkeypatch.setattr(mutation.shutil, "which", lambda name: "/bin/" + name)
    monkeypatch.setattr(mutation.subprocess, "run", fake_run)
    monkeypatch.setattr(mutation, "sample_names", lambda results, n, seed: list(drawn))
    text, same = drawn[2], drawn[3]
    monkeypatch.setattr(mutation, "mutant_kinds", lambda names, where: {text: "text"})
    monkeypatch.setattr(mutation, "equivalents", lambda: {same: "same values"})
    mutation.library(mutation.get_args_parser().parse_args(["library", "--sample", "4"]))
    runs = [c for c in calls if c[0] == "run"]
    assert runs[1] == ["run", "--max-children", "2"] + drawn[:2]
    rows = capsys.readouterr().out
    assert re.search(r"utils\.knn\s+4\s+1\s+1\s+1\s+1\s+0\s+50\.0%", rows)
    calls.clear()
    drawn[:2] = []
    mutation.library(mutation.get_args_parser().parse_args(["library", "--sample", "4"]))
    assert [c for c in calls if c[0] == "run"] == [["run", "--max-children", "2", "no-mutant-has-this-name"]]


def test_the_hook_runs_a_scripts_mutant_in_the_script_and_reports_what_it_reached(tmp_path, repo_root):
    """utils/__init__.py under mutmut: a script run by a test activates the mutant named after its module (mutmut
    names it `p9.x_...`, the script runs as `__main__`) and, while tests are mapped, writes the functions it reached
    under the script's name."""
    pytest.importorskip("mutmut")
    script = tmp_path / "p9.py"
    script.write_text("import os\nimport utils\nfrom mutmut.mutation import trampoline\nfrom mutmut.state import state\n"
                      "state()._stats.update({'__main__.x_main', 'utils.knn.x_f'})\n"
                      "print(trampoline._mutant_under_test, os.environ.get('MUTANT_UNDER_TEST'))\n")
    env = dict(os.environ, PYTHONPATH=str(repo_root), MUTANT_UNDER_TEST="p9.x_main__mutmut_3")
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["__main__.x_main__mutmut_3", "None"]  # active here, not passed on to what it starts
    env["MUTANT_UNDER_TEST"] = "utils.knn.x_f__mutmut_1"  # another module's mutant: left to mutmut
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["None", "utils.knn.x_f__mutmut_1"]
    hits = tmp_path / "hits"
    env.update(MUTANT_UNDER_TEST="stats", HW1_MUTMUT_HITS=str(hits))
    subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, check=True)
    assert sorted(hits.read_text().split()) == ["p9.x_main", "utils.knn.x_f"]
    # a script started from another folder (hw1_2.sh from anywhere): mutmut's setup.cfg is still the tree's, and the
    # script's own working folder is left as it was
    (tmp_path / "elsewhere").mkdir()
    script.write_text("import os\nimport utils\nfrom mutmut.configuration import config\n"
                      "print(os.getcwd(), 'utils' in [str(p) for p in config().source_paths])\n")
    out = subprocess.run([sys.executable, str(script)], env=env, cwd=str(tmp_path / "elsewhere"), capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == [str(tmp_path / "elsewhere"), "True"]
