"""p1_finetune.py: the five settings, backbone loading formats, frozen backbones, the report table."""
import json

import pytest
import torch
import torchvision

import p1_finetune
from utils.classify import load_classifier
from utils.models import build_resnet_backbone
from helpers import run_main

TINY = ["--arch", "resnet18", "--epochs", "2", "--batch-size", "16", "--image-size", "32", "--workers", "0",
        "--num-classes", "4", "--hidden-dim", "32", "--deterministic", "--warmup-epochs", "0.5"]


@pytest.fixture(scope="module")
def office(tmp_path_factory):
    from tools.toydata import make_p1_data

    root = make_p1_data(tmp_path_factory.mktemp("p1ft"), num_classes=4, mini_per_class=8,
                        office_train_per_class=8, office_val_per_class=4, seed=0)
    return root / "office"


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory):
    """A torchvision resnet18 state_dict WITH fc (a plain torchvision state_dict, as the TAs' file)."""
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("bb") / "official_dino_model.pth"
    torch.save(torchvision.models.resnet18().state_dict(), str(path))
    return path


def _run(office, out, *extra):
    return run_main(p1_finetune, ["--data-dir", str(office), "--output-dir", str(out)] + TINY + list(extra))


def _backbone_state(path):
    model, _ = load_classifier(path, torch.device("cpu"))
    return {k: v.clone() for k, v in model.backbone.state_dict().items()}


@pytest.mark.parametrize("setting", ["A", "B", "C", "D", "E"])
def test_each_setting_trains_and_freezes_as_specified(office, backbone_file, tmp_path, setting):
    extra = [] if setting == "A" else ["--backbone", str(backbone_file)]
    result = _run(office, tmp_path / setting, "--setting", setting, *extra)
    assert result["setting"] == setting and 0.0 <= result["best_val_acc"] <= 1.0
    out = tmp_path / setting
    for name in ("best.pth", "checkpoint.pth", "epoch_001.pth", "epoch_002.pth", "results.json", "log.jsonl",
                 "curves.png"):
        assert (out / name).is_file(), name
    after = _backbone_state(out / "epoch_002.pth")
    if setting == "A":
        before = None
    else:
        source = torch.load(str(backbone_file), weights_only=True)
        before = {k: v for k, v in source.items() if not k.startswith("fc.")}
    if setting in ("D", "E"):
        # frozen: parameters AND BatchNorm buffers unchanged
        assert set(after) == set(before)
        for key in after:
            assert torch.equal(after[key], before[key]), key
    elif before is not None:
        assert any(not torch.equal(after[k], before[k]) for k in after if k.endswith("weight"))
        changed_bn = [k for k in after if k.endswith("running_mean") and not torch.equal(after[k], before[k])]
        assert changed_bn  # the backbone trained, so its BN statistics moved
    ckpt = torch.load(str(out / "best.pth"), weights_only=True)
    assert ckpt["setting"] == setting and ckpt["image_size"] == 32 and ckpt["model_config"]["num_classes"] == 4


def test_backbone_formats_and_mismatch(office, tmp_path):
    torch.manual_seed(0)
    reference = build_resnet_backbone("resnet18").state_dict()
    formats = {
        "plain_without_fc.pth": dict(reference),
        "dino_ckpt.pth": {"teacher": {"module.backbone." + k: v for k, v in reference.items()},
                          "student": {"module.backbone." + k: torch.zeros_like(v) for k, v in reference.items()},
                          "epoch": 3},
    }
    for name, obj in formats.items():
        torch.save(obj, str(tmp_path / name))
        out = tmp_path / ("run_" + name)
        run_main(p1_finetune, ["--data-dir", str(office), "--output-dir", str(out), "--backbone", str(tmp_path / name),
                         "--setting", "E"] + TINY[:2] + ["--epochs", "1"] + TINY[4:])
        loaded = _backbone_state(out / "best.pth")
        for key in reference:
            assert torch.equal(loaded[key], reference[key]), (name, key)  # teacher, not student
    bad = dict(reference)
    bad.pop("layer1.0.conv1.weight")
    bad["layer9.weird"] = torch.zeros(1)
    torch.save(bad, str(tmp_path / "bad.pth"))
    with pytest.raises(ValueError) as err:
        _run(office, tmp_path / "bad_run", "--setting", "C", "--backbone", str(tmp_path / "bad.pth"))
    assert "layer1.0.conv1.weight" in str(err.value) and "layer9.weird" in str(err.value)


def test_missing_backbones_are_named_with_where_they_come_from(office, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default paths are relative: nothing there
    for setting in "BD":
        with pytest.raises(SystemExit) as err:
            _run(office, tmp_path / "x", "--setting", setting)
        message = str(err.value)
        assert "DINO ImageNet-1k" in message and p1_finetune.TA_BACKBONE in message
        assert "official_dino_model.pth" in message and "docs/problem1.md" in message
    with pytest.raises(SystemExit, match="p1_ssl_pretrain.py first"):
        _run(office, tmp_path / "x", "--setting", "C")
    assert not (tmp_path / "x").exists()  # refused before any work


def test_frozen_random_backbone_is_refused_and_report_table(office, tmp_path, backbone_file):
    with pytest.raises(SystemExit, match="frozen random backbone"):
        _run(office, tmp_path / "x", "--setting", "D", "--backbone", "none")
    _run(office, tmp_path / "A", "--setting", "A", "--epochs", "1")
    _run(office, tmp_path / "D", "--setting", "D", "--backbone", str(backbone_file), "--epochs", "1",
         "--cache-features")
    from tools.report import load_results, settings_table

    table = settings_table(load_results([tmp_path / "D", tmp_path / "A"]))
    lines = table.splitlines()
    assert lines[0].startswith("| Setting | Pre-training | Fine-tuning | Validation accuracy")
    assert lines[2].startswith("| A | – | Train full model (backbone + classifier) |")
    assert lines[3].startswith("| D | DINO on ImageNet-1k (TAs provided) | Fix the backbone. Train classifier only |")
    acc = json.loads((tmp_path / "A" / "results.json").read_text())["best_val_acc"]
    assert "{:.4f}".format(acc) in lines[2]


@pytest.mark.slow  # in CI's slow step: it keeps the default suite under ~15 minutes
def test_labeled_standin_backbone_beats_random_init(tmp_path):
    """Settings B and D with the STAND-IN of the course's labeled backbone (a short supervised run on the
    generated mini images' hidden labels) beat setting A at equal epochs. Measured (seed 0): stand-in 0.93 on
    office val; A 0.35, B 0.90, D 0.82 (chance 0.25)."""
    from tools.toydata import make_p1_data

    root = make_p1_data(tmp_path / "data", num_classes=4, mini_per_class=60, office_train_per_class=10,
                        office_val_per_class=10, seed=0)
    common = ["--arch", "resnet18", "--batch-size", "32", "--image-size", "48", "--workers", "0", "--num-classes",
              "4", "--hidden-dim", "64", "--deterministic", "--warmup-epochs", "1", "--lr", "0.05", "--save-epochs"]
    standin = run_main(p1_finetune, ["--setting", "A", "--data-dir", str(root / "office"), "--train-csv",
                               str(root / "standin_mini_labels.csv"), "--train-dir", str(root / "mini" / "train"),
                               "--output-dir", str(tmp_path / "standin_SL"), "--epochs", "8"] + common)
    assert standin["best_val_acc"] > 0.6
    acc = {}
    for setting, extra in (("A", []), ("B", ["--backbone", str(tmp_path / "standin_SL" / "best.pth")]),
                           ("D", ["--backbone", str(tmp_path / "standin_SL" / "best.pth")])):
        acc[setting] = run_main(p1_finetune, ["--setting", setting, "--data-dir", str(root / "office"), "--output-dir",
                                        str(tmp_path / setting), "--epochs", "6"] + extra + common)["best_val_acc"]
    assert acc["B"] > acc["A"] + 0.2
    assert acc["D"] > acc["A"] + 0.2


@pytest.mark.slow  # ~160 s on 2 cores, the longest test: CI runs it in its slow step
def test_dino_backbone_beats_random_init_and_grading_matches(tmp_path, repo_root):
    """Setting C (our DINO backbone: the demo's recipe, --preset toy, 4 epochs on the "shapes" kind) beats A at
    equal epochs, and hw1_1.sh's accuracy on the val csv equals p1_finetune's val accuracy for the same checkpoint.
    Measured (7 classes, 140 val images, chance 0.143; one thread, torch 2.14), fine-tuning seeds 0 / 1, for data
    seeds 0-3: A 0.26 0.31 / 0.29 0.24 / 0.21 0.24 / 0.40 0.24, C 0.36 0.36 / 0.32 0.36 / 0.41 0.39 / 0.36 0.54;
    C's mean beats A's by 0.075 / 0.079 / 0.18 / 0.13. A single run moves by ~0.1 with the random stream (another
    torch draws other numbers), so the test uses data seed 2 and asserts +0.04, which every data seed measured
    passes."""
    import os
    import subprocess

    import p1_ssl_pretrain
    from tools.toydata import make_p1_data

    root = make_p1_data(tmp_path / "data", kind="shapes", mini_size=32, num_classes=7, mini_per_class=72,
                        office_train_per_class=16, office_val_per_class=20, seed=2)
    run_main(p1_ssl_pretrain, ["--preset", "toy", "--num-classes", "7", "--data-dir", str(root / "mini" / "train"),
                               "--output-dir", str(tmp_path / "dino")])
    common = ["--arch", "resnet18", "--workers", "0", "--num-classes", "7", "--data-dir", str(root / "office"),
              "--epochs", "8", "--batch-size", "16", "--image-size", "48", "--lr", "0.05", "--hidden-dim", "128",
              "--warmup-epochs", "1", "--save-epochs", "--deterministic"]
    acc = {"A": [], "C": []}
    for seed in ("0", "1"):
        for setting, backbone in (("A", "none"), ("C", str(tmp_path / "dino" / "backbone.pth"))):
            result = run_main(p1_finetune, common + ["--setting", setting, "--backbone", backbone, "--seed", seed,
                                               "--output-dir", str(tmp_path / (setting + seed))])
            acc[setting].append(result["best_val_acc"])
    print("A", acc["A"], "C", acc["C"])
    assert sum(acc["C"]) / 2 > sum(acc["A"]) / 2 + 0.04
    # LP-FT (README, Beating the baselines) from the same backbone learns too: above chance (1/7)
    lpft = run_main(p1_finetune, common + ["--setting", "C", "--backbone", str(tmp_path / "dino" / "backbone.pth"),
                                           "--linear-probe-epochs", "2", "--output-dir", str(tmp_path / "C_lpft")])
    print("C with LP-FT", lpft["best_val_acc"])
    assert lpft["best_val_acc"] > 1 / 7 + 0.06  # measured, seeds 0-3 (seed 0 here): 0.264, 0.286, 0.357, 0.329
    # the grading path scores the checkpoint exactly as the trainer's validation did
    out_csv = tmp_path / "pred" / "val_pred.csv"
    env = dict(os.environ, HW1_P1_CHECKPOINT=str(tmp_path / "C0" / "best.pth"), TQDM_DISABLE="1")
    proc = subprocess.run(["bash", "hw1_1.sh", str(root / "office" / "val.csv"), str(root / "office" / "val"),
                           str(out_csv)], cwd=str(repo_root), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    truth = {line.split(",")[1]: int(line.split(",")[2])
             for line in (root / "office" / "val.csv").read_text().splitlines()[1:]}
    rows = [line.split(",") for line in out_csv.read_text().splitlines()[1:]]
    graded = sum(int(label) == truth[name] for _, name, label in rows) / len(rows)
    assert graded == pytest.approx(acc["C"][0], abs=1e-6)


def test_torchrun_two_processes(office, tmp_path, repo_root):
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29519",
           "p1_finetune.py", "--data-dir", str(office), "--output-dir", str(out), "--setting", "A",
           "--device", "cpu"] + TINY[:2] + ["--epochs", "1"] + TINY[4:]
    proc = subprocess.run(cmd, cwd=str(repo_root), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es) x batch 16" in proc.stdout
    result = json.loads((out / "results.json").read_text())
    assert result["setting"] == "A" and 0.0 <= result["best_val_acc"] <= 1.0
    ckpt = torch.load(str(out / "checkpoint.pth"), weights_only=True)
    assert ckpt["step"] == 32 // 32 and not any(k.startswith("module.") for k in ckpt["model"])
    model, _ = load_classifier(out / "best.pth", torch.device("cpu"))
    assert model.head[-1].out_features == 4


def test_linear_probe_then_fine_tune_unfreezes_at_the_right_epoch(office, backbone_file, tmp_path):
    """--linear-probe-epochs 2: the backbone (weights and BatchNorm statistics) stays exactly the file's through
    epochs 1-2 while the head learns, then trains from epoch 3."""
    out = tmp_path / "lpft"
    result = _run(office, out, "--setting", "B", "--backbone", str(backbone_file), "--epochs", "3",
                  "--linear-probe-epochs", "2", "--save-epochs", "1", "2", "3")
    initial = {k: v for k, v in torch.load(str(backbone_file), weights_only=True).items() if not k.startswith("fc.")}
    states = [_backbone_state(out / "epoch_{:03d}.pth".format(e)) for e in (1, 2, 3)]
    for state in states[:2]:
        assert all(torch.equal(state[k], initial[k]) for k in initial)
    assert not all(torch.equal(states[2][k], initial[k]) for k in initial)
    heads = [load_classifier(out / "epoch_{:03d}.pth".format(e), torch.device("cpu"))[0].head.state_dict()
             for e in (1, 2)]
    assert not all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])  # the head trains in the probe
    assert result["finetuning"].startswith("Linear probe for 2 epoch(s)")
    with pytest.raises(SystemExit, match="keeps it frozen"):
        _run(office, tmp_path / "x", "--setting", "D", "--backbone", str(backbone_file), "--linear-probe-epochs", "1")


@pytest.mark.slow  # ~25 s: in CI's slow step
def test_linear_probe_then_fine_tune_resumes_across_the_boundary(office, backbone_file, tmp_path):
    """Stopped mid-way through the first epoch after the probe (a checkpoint from the frozen phase plus part of the
    unfrozen one), then resumed: the same weights as an unbroken run."""
    import signal

    from helpers import run, same_weights, stop_mid_epoch

    args = ["p1_finetune.py", "--data-dir", office, "--setting", "B", "--backbone", backbone_file, "--epochs", "3",
            "--linear-probe-epochs", "1", "--print-freq", "1"] + TINY[:2] + TINY[4:]
    run(args + ["--output-dir", tmp_path / "full"])
    stop_mid_epoch(args + ["--output-dir", tmp_path / "stopped"], signal.SIGTERM)
    assert torch.load(str(tmp_path / "stopped" / "checkpoint.pth"), weights_only=True)["epoch"] == 1
    run(args + ["--output-dir", tmp_path / "stopped"])
    assert same_weights(tmp_path / "full" / "checkpoint.pth", tmp_path / "stopped" / "checkpoint.pth")
