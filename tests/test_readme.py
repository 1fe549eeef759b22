"""README.md and docs/ stay true: every command they show is run by a test or by the demo, its flags exist, and
every relative link leads to a file and a heading.

Each command in a ```bash block, and each inline `python ...` / `bash ...` / `torchrun ...` / `pip ...`, must match
one entry of COVERAGE, which names the file that runs it and a string that file must contain (a test function, the
script call in demo.sh, the line in .ci/run). A new command in README.md or docs/*.md without an entry fails here.
Commands that call one of our Python scripts are also parsed by that script's own argparse parser, so a renamed or
removed flag fails.
"""
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STARTS = ("python ", "python3 ", "bash ", "torchrun ", "pip ", "NGPUS=", "for ")

# (regex on the command, file that runs it, a string that file must contain)
COVERAGE = [
    (r"^bash demo\.sh$", "tests/test_demo.py", "def test_reduced_demo_writes_the_report"),
    (r"^bash demo\.sh --help$", "tests/test_demo.py", "def test_help_says_what_the_demo_does_where_and_how_long"),
    # the runs are demo.sh's (the line above); the test runs what the tool adds: reading them (--collect)
    (r"^python -m tools\.demo_spread --seeds [\d ]+ --threads [\d ]+( --collect)?$", "tests/test_demo.py",
     "def test_demo_spread_reads_each_demos_numbers_and_gives_min_median_max"),
    (r"^pip install -r requirements\.txt -r requirements-dev\.txt && python -m pytest$", ".ci/run",
     "pip install -q -r requirements.txt -r requirements-dev.txt"),
    (r"^python -m pytest$", ".ci/run", "python3 -m pytest -q\n"),
    (r"^pip install -r requirements-dev\.txt$", ".ci/run", "pip install -q -r requirements.txt -r requirements-dev.txt"),
    (r"^python -m pytest -m slow$", ".ci/run", "pytest -q -m slow"),
    (r"^vermin -t=3\.8- --violations \.$", ".ci/run", "vermin -q --no-tips -t=3.8- --violations"),
    (r"^python -m tools\.toydata --p1-kind shapes$", "tests/test_toydata.py", "def test_p1_shapes_kind_from_the_cli"),
    (r"^bash \.ci/grading_env\.sh$", ".ci/run", "OPTIONAL=1 bash .ci/grading_env.sh"),
    (r"^pip install -r requirements-sam\.txt$", "requirements-dev.txt", "-r requirements-sam.txt"),  # CI installs it
    (r"^(NGPUS=\d+ )?bash scripts/(p1_dino|p1_settings|p1_tsne|p2_unet|p2_deeplab|report)\.sh( --epochs \d+)?$",
     "tests/test_scripts.py", "def pipeline"),
    (r"^bash scripts/p2_sam\.sh$", "tests/test_scripts.py", "def test_sam_script"),
    (r"^bash scripts/gpu_check\.sh$", "tests/test_scripts.py", "def test_gpu_check_script_runs_end_to_end"),
    (r"^bash scripts/all\.sh$", "tests/test_scripts.py", "def test_all_sh_runs_every_step_in_order"),
    (r"^python -m utils\.metrics -g \S+ -p \S+$", "demo.sh", "-m utils.metrics -g"),
    (r"^python p1_ssl_pretrain\.py --data-dir .* --knn-train-csv", "tests/test_scripts.py", "\"p1_dino.sh\""),
    (r"^torchrun (--nproc_per_node=\d+|--nnodes=\d+ .*) p1_ssl_pretrain\.py", "tests/test_p1_dino_run.py",
     "--rdzv_backend=c10d"),
    (r"^python p1_ssl_pretrain\.py --output-dir \S+ --export-only$", "tests/test_p1_dino_run.py", "--export-only"),
    (r"^for s in A B C D E; do python p1_finetune\.py --setting \$s", "demo.sh", "for s in A B C D E"),
    (r"^python p1_finetune\.py --setting C --output-dir \S+ --linear-probe-epochs \d+$", "tests/test_p1_finetune.py",
     "def test_linear_probe_then_fine_tune_unfreezes_at_the_right_epoch"),
    (r"^python p1_ssl_pretrain\.py --preset mini84 ", "tests/test_p1_dino_parts.py", "def test_no_flags_is_the_reports_recipe"),
    (r"^python -m tools\.report( runs| RUNS \[-o REPORT_DIR\] \[--note TEXT\])?$", "demo.sh", "-m tools.report \"$out/runs\""),
    (r"^python -m tools\.report grade-p1 ", "demo.sh", "tools.report grade-p1"),
    (r"^python p1_tsne\.py ", "tests/test_p1_tsne.py", "def test_random_vs_trained_outputs_and_separability"),
    (r"^python p1_inference\.py ", "tests/test_p1_inference.py", "def test_accuracy_equals_an_independent"),
    (r"^bash hw1_1\.sh ", "tests/test_p1_inference.py", "def test_hw1_1_unlabeled_shuffled_csv"),
    (r"^python p2_unet\.py --data-dir \S+ --output-dir \S+ --encoder resnet34 .*--drop-skip \d$",
     "tests/test_p2_train.py", "def test_resnet34_unet_one_skip_ablation_learns"),
    (r"^python p2_unet\.py --data-dir \S+ --output-dir \S+ --encoder resnet34", "tests/test_p2_train.py",
     "def test_resnet34_unet_learns"),
    (r"^python p2_deeplab\.py --data-dir \S+ --output-dir \S+ --arch deeplabv3plus", "tests/test_p2_train.py",
     "def test_deeplabv3plus_learns"),
    (r"^python p2_deeplab\.py --data-dir \S+ --output-dir \S+$", "tests/test_p2_train.py",
     "def test_model_b_with_no_flags_trains_from_the_coco_cache"),
    (r"^python p2_inference\.py .*--tta flip,scale --checkpoint \S+ \S+", "tests/test_p2_inference.py",
     "def test_tta_flip_scale_with_two_checkpoints_writes_contract_valid_masks"),
    (r"^python p2_unet\.py +--data-dir", "tests/test_p2_train.py", "def test_snapshots_grid_and_ablation"),
    (r"^python p2_deeplab\.py --data-dir", "tests/test_p2_train.py", "def test_deeplab_trains_two_epochs"),
    (r"^torchrun --nproc_per_node=\d+ p2_deeplab\.py", "tests/test_p2_ddp.py", "torch.distributed.run"),
    (r"^python p2_inference\.py ", "tests/test_p2_inference.py", "def test_mixed_sizes_modes_and_a_corrupt_file"),
    (r"^bash hw1_2\.sh ", "tests/test_p2_inference.py", "def test_hw1_2_masks_score_as_the_trainer_reports"),
    (r"^python p2_sam\.py ", "tests/test_sam.py", "def test_cli_real_vit_b_random_init"),
    (r"^bash hw1_download\.sh$", "tests/test_download.py", "def test_download_script_end_to_end"),
    (r"^bash hw1_download\.sh --data$", "tests/test_download.py",
     "def test_data_downloads_the_2025_archive_with_gdown_and_checks_layout"),
    (r"^bash hw1_download\.sh --data-2024$", "tests/test_download.py", "def test_data_2024_only_behind_its_flag"),
    (r"^bash hw1_download\.sh --dino-official$", "tests/test_download.py", "def test_dino_group_only_on_request"),
    (r"^bash hw1_download_ckpt\.sh$", "tests/test_download.py",
     "def test_download_ckpt_script_with_no_arguments_from_any_folder"),
    (r"^python -m tools\.publish \S+ --problem [12]( --link \S+)?$", "tests/test_publish.py",
     "def test_cli_as_documented"),
    (r"^bash scripts/presubmit\.sh( --python \S+)?$", "tests/test_presubmit.py",
     "def test_presubmit_sh_passes_on_a_published_submission"),
    (r"^bash scripts/presubmit\.sh --local-checkpoints$", "tests/test_presubmit.py",
     "def test_local_checkpoints_rehearse_everything_but_the_download_and_say_so"),
    (r"^python -m tools\.presubmit --help$", "tests/test_readme.py", "\"tools.presubmit\""),
    (r"^python -m tools\.toydata --out \S+$", "tests/test_toydata.py", "def test_p1_cli_subprocess_writes_layout"),
    (r"^python -m tools\.benchmark( |$)", "tests/test_benchmark.py", "tools.benchmark"),
    (r"^python -m tools\.mutation (semantic|library|table)( |$)", "tests/test_mutation.py",
     "def test_a_real_bug_is_killed_an_equivalent_survives"),
    (r"^python \S+\.py --help$", "tests/test_readme.py", "def test_every_script_explains_its_flags"),
    (r"^python -m tools\.X --help$", "tests/test_readme.py", "for script in SCRIPTS + TOOLS"),
]

SCRIPTS = ["p1_ssl_pretrain.py", "p1_finetune.py", "p1_tsne.py", "p1_inference.py", "p2_unet.py", "p2_deeplab.py",
           "p2_inference.py", "p2_sam.py"]
TOOLS = ["tools.benchmark", "tools.download", "tools.toydata", "tools.report", "tools.publish", "tools.presubmit",
         "tools.mutation"]


def readme_commands(text: str):
    """Commands of the ```bash blocks (continuations joined, comments dropped) and inline command spans."""
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        block = re.sub(r"\\\n\s*", " ", block)
        for line in block.splitlines():
            line = " ".join(re.sub(r"\s+#\s.*$", "", line).split())
            if line:
                cmds.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):
        span = " ".join(span.split())
        if span.startswith(STARTS):
            cmds.append(span)
    return cmds


def _parser_args(command: str):
    """(script module, argv) for a command that runs one of our Python scripts, else None."""
    m = re.match(r"^for s in (\S+) .*?; do (.*); done$", command)
    if m:
        command = m.group(2).replace("$s", m.group(1))
    command = re.sub(r"\[([^\]]*)\]", r"\1", command)  # "[--tta]": optional flags are still flags
    tokens = shlex.split(command)
    if tokens[0] in ("python", "python3", sys.executable) and len(tokens) > 2 and tokens[1] == "-m" \
            and tokens[2] == "tools.benchmark":
        return tokens[2], [t for t in tokens[3:] if t != "--help"]
    if tokens[0] not in ("python", "python3", sys.executable) or len(tokens) < 2 or not tokens[1].endswith(".py"):
        return None
    if tokens[1] not in SCRIPTS:
        return None
    return tokens[1][:-3], [t for t in tokens[2:] if t != "--help"]


def test_readme_lists_commands():
    cmds = readme_commands((ROOT / "README.md").read_text())
    assert len(cmds) >= 10  # the extractor still finds the README's commands (the guide keeps the main ones)
    assert "bash demo.sh" in cmds
    assert len(readme_commands(documented_text())) >= 30  # and those of docs/, where the rest moved


def documented_text() -> str:
    """README.md and the guides of docs/: every command they show is covered alike."""
    return "\n".join(p.read_text() for p in [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md")))


def test_every_readme_command_is_run_by_a_test_or_the_demo():
    cmds = readme_commands(documented_text())
    uncovered = [c for c in cmds if not any(re.search(p, c) for p, _, _ in COVERAGE)]
    assert not uncovered, "commands of README.md or docs/ that no test or the demo runs (add them to COVERAGE): " \
        "{}".format(uncovered)


@pytest.mark.parametrize("pattern, where, needle", COVERAGE)
def test_coverage_evidence_exists(pattern, where, needle):
    path = ROOT / where
    assert path.is_file(), where
    assert needle in path.read_text(), "{} does not contain {!r}".format(where, needle)


def test_readme_flags_parse_with_each_scripts_parser():
    checked = 0
    for command in readme_commands(documented_text()):
        if command.startswith("torchrun"):
            tokens = shlex.split(command)
            i = next(i for i, t in enumerate(tokens) if t.endswith(".py"))
            command = "python " + " ".join(shlex.quote(t) for t in tokens[i:])
        parsed = _parser_args(command)
        if parsed is None:
            continue
        module, argv = parsed
        parser = importlib.import_module(module).get_args_parser()
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail("documented command does not parse: {}".format(command))
        checked += 1
    assert checked >= 15


def test_every_script_explains_its_flags():
    for script in SCRIPTS + TOOLS:
        command = [script] if script.endswith(".py") else ["-m", script]
        proc = subprocess.run([sys.executable] + command + ["--help"], cwd=str(ROOT), capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, script + proc.stderr
        module = importlib.import_module(script[:-3] if script.endswith(".py") else script)
        if not hasattr(module, "get_args_parser"):
            continue
        parser = module.get_args_parser()
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, "{}: {} has no help".format(script, action.option_strings)


def test_layout_lists_every_file_and_nothing_else():
    """docs/development.md's Layout names each top-level script, each utils/ and tools/ module, one line each, as the
    tree has them (a module by its name, so a file that becomes a package of the same name stays listed)."""
    text = (ROOT / "docs" / "development.md").read_text()
    section = text[text.index("## Layout"):]
    section = section[:section.index("\n## ")] if "\n## " in section else section
    blocks = re.findall(r"```\n(.*?)```", section, re.S)
    assert len(blocks) == 3, "Layout: top level, utils/, tools/"
    listed = []
    for block, prefix in zip(blocks, ("", "utils/", "tools/")):
        for line in block.splitlines():
            names = line.split("  ")[0].strip()
            listed += [prefix + n.strip() for n in names.split(",") if n.strip()]

    def modules(folder):
        """The modules of a package folder: its .py files but __init__, and its sub-packages, by name."""
        return sorted([p.stem for p in folder.glob("*.py") if p.name != "__init__.py"]
                      + [p.name for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").is_file()])

    tree = sorted(p.name for p in ROOT.iterdir() if p.suffix in (".py", ".sh") and p.is_file()) + ["scripts/"]
    tree += ["utils/" + m for m in modules(ROOT / "utils")] + ["tools/" + m for m in modules(ROOT / "tools")]
    assert sorted(listed) == sorted(tree)
    assert len(listed) == len(set(listed))


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _documents():
    return [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


def test_relative_links_resolve_to_a_file_and_a_heading():
    """Every relative link of README.md and docs/ names a file that exists and, after '#', one of its headings."""
    broken = []
    for doc in _documents():
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            file = (doc.parent / path).resolve() if path else doc
            if not file.is_file():
                broken.append("{}: {}".format(doc.name, target))
                continue
            if anchor:
                headings = re.findall(r"^#+ (.*)$", re.sub(r"```.*?```", "", file.read_text(), flags=re.S), re.M)
                if anchor not in [_anchor(h) for h in headings]:
                    broken.append("{}: {}".format(doc.name, target))
    assert not broken, "links that lead nowhere: {}".format(broken)


def test_each_guide_says_whom_it_is_for_and_the_readme_lists_it():
    readme = (ROOT / "README.md").read_text()
    for doc in sorted((ROOT / "docs").glob("*.md")):
        lines = doc.read_text().splitlines()
        assert lines[0].startswith("# ") and lines[1] == "", doc.name
        assert lines[2].startswith("For "), "{}: its first line says who it is for".format(doc.name)
        assert "](docs/{})".format(doc.name) in readme, "README's index links {}".format(doc.name)


def test_the_readme_stays_a_short_guide():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300 and len(text.split()) <= 3000
    # a student finds there where settings B/D's backbone comes from, and that the course wants a report PDF
    assert "checkpoints/official_dino_model.pth" in text and "bash hw1_download.sh --dino-official" in text
    assert "report PDF" in text and "REPORT.md" in text


def test_code_fences_stand_on_their_own_lines():
    """A fence with text after its language (a rewrapped block) would hide its commands from the checks above."""
    bad = []
    for doc in _documents():
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            if "```" in line and not re.match(r"^\s*```[a-z]*\s*$", line):
                bad.append("{}:{}".format(doc.name, number))
    assert not bad, bad
