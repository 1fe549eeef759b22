"""The real-data shell scripts in scripts/ and the report generator, run end to end at toy sizes.

The scripts hold the report's recipes; here every one of them runs on generated data in the real layout with flags
appended that shrink the run (later flags win), one of them on two processes through NGPUS=2 (torchrun, gloo), and
report.sh turns the runs into REPORT.md, whose numbers must be the runs' own.
"""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from tools.toydata import make_p1_data, make_p2_data

# p1_tsne.sh needs scikit-learn, which the grading environment (.ci/grading_env.sh) does not install
HAVE_SKLEARN = importlib.util.find_spec("sklearn") is not None


def _bash(repo_root: Path, script: str, env: dict, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", TQDM_DISABLE="1", **env)
    proc = subprocess.run(["bash", "scripts/" + script] + list(args), cwd=str(repo_root), env=full_env,
                          capture_output=True, text=True, timeout=900)
    if ok:
        assert proc.returncode == 0, "{} failed:\n{}\n{}".format(script, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, repo_root):
    """Every script at toy size, then report.sh; returns (runs, report dir)."""
    base = tmp_path_factory.mktemp("scripts")
    data, runs, report = base / "hw1_data", base / "runs", base / "report"
    make_p1_data(data, mini_size=32, num_classes=4, mini_per_class=8, office_train_per_class=6,
                 office_val_per_class=3)
    make_p2_data(data, size=64, num_train=8, num_val=4)
    ta = base / "official_dino_model.pth"  # DINO on ImageNet-1k (TAs provided): here a random resnet18 in its format
    torch.save({k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")},
               str(ta))
    env = {"HW1_DATA": str(data), "RUNS": str(runs), "REPORT_DIR": str(report), "TA_BACKBONE": str(ta),
           "SNAPSHOTS": "1 2", "SNAPSHOT_IMAGES": "0000_sat.jpg 0001_sat.jpg"}
    p1 = ["--arch", "resnet18", "--workers", "0", "--num-classes", "4"]
    _bash(repo_root, "p1_dino.sh", env, *p1, "--epochs", "1", "--batch-size", "8", "--global-crop-size", "32",
          "--local-crop-size", "16", "--local-crops-number", "2", "--out-dim", "64", "--hidden-dim", "64",
          "--bottleneck-dim", "32", "--knn-size", "32", "--warmup-epochs", "0", "--warmup-teacher-temp-epochs", "1")
    _bash(repo_root, "p1_settings.sh", env, *p1, "--epochs", "2", "--batch-size", "8", "--image-size", "32",
          "--hidden-dim", "32", "--warmup-epochs", "0")
    if HAVE_SKLEARN:
        _bash(repo_root, "p1_tsne.sh", env, "--workers", "0", "--perplexity", "5")
    seg = ["--epochs", "2", "--batch-size", "4", "--crop-size", "64", "--workers", "0"]
    unet = _bash(repo_root, "p2_unet.sh", dict(env, NGPUS="2"), *seg, "--base-width", "8",
                 "--depth", "2")
    _bash(repo_root, "p2_deeplab.sh", env, *seg, "--weights", "none", "--encoder", "resnet50", "--output-stride",
          "16")
    _bash(repo_root, "report.sh", env)
    (runs / "p2_unet.stdout").write_text(unet.stdout)
    return runs, report


@pytest.mark.slow  # the toy pipeline (~2.5 min): in CI's slow step, to keep the default suite ~15 min
def test_every_script_runs_and_writes_its_outputs(pipeline):
    runs, _ = pipeline
    assert (runs / "p1_dino" / "backbone.pth").is_file()
    for s in "ABCDE":
        assert json.loads((runs / "p1_{}".format(s) / "results.json").read_text())["setting"] == s
    if HAVE_SKLEARN:
        assert (runs / "p1_tsne" / "tsne.png").is_file()
        labels = [c["name"] for c in json.loads((runs / "p1_tsne" / "tsne_metrics.json").read_text())["checkpoints"]]
        assert labels == ["epoch 1", "epoch 2"]  # first and last epoch found by the script
    ablation = json.loads((runs / "p2_unet_drop_skip" / "results.json").read_text())
    assert ablation["model_config"]["drop_skip"] == [0]  # the 2025 report's ablation: one skip, the shallowest
    assert json.loads((runs / "p2_unet" / "args.json").read_text())["snapshot_epochs"] == [1, 2]
    assert (runs / "p2_deeplab" / "snapshots.png").is_file()
    graded = json.loads((runs / "grading_p2.json").read_text())
    assert graded["num_images"] == 4
    assert sorted(p.name for p in (runs / "grading" / "p2_masks").iterdir()) == \
        ["{:04d}_mask.png".format(i) for i in range(4)]


@pytest.mark.slow  # the toy pipeline (~2.5 min): in CI's slow step, to keep the default suite ~15 min
def test_unet_script_ran_on_two_processes(pipeline):
    runs, _ = pipeline
    log = [json.loads(line) for line in (runs / "p2_unet" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2
    stdout = (runs / "p2_unet.stdout").read_text()
    assert stdout.count("2 process(es)") == 2 and "1 process(es)" not in stdout  # both runs, under torchrun
    results = json.loads((runs / "p2_unet" / "results.json").read_text())
    assert results["model_config"]["drop_skip"] == []


@pytest.mark.slow  # the toy pipeline (~2.5 min): in CI's slow step, to keep the default suite ~15 min
def test_report_numbers_are_the_runs_own(pipeline):
    runs, report = pipeline
    text = (report / "REPORT.md").read_text()
    for s in "ABCDE":
        acc = json.loads((runs / "p1_{}".format(s) / "results.json").read_text())["best_val_acc"]
        assert re.search(r"^\| {} \|.*\| {:.4f} \|".format(s, acc), text, re.M), s
    for name in ("p2_unet", "p2_unet_drop_skip", "p2_deeplab"):
        res = json.loads((runs / name / "results.json").read_text())
        assert "{:.4f}".format(res["best_miou"]) in text
        assert len(res["best_iou"]) == 6 and res["best_epoch"] in (1, 2)
        for v in res["best_iou"]:
            assert v is None or "{:.4f}".format(v) in text
    graded = json.loads((runs / "grading_p2.json").read_text())
    assert "mIoU {:.4f}".format(graded["miou"]) in text
    assert "Model A, one skip dropped: U-Net (from scratch, width 8, depth 2, skip 0 (shallowest) dropped)" in text
    dino = json.loads((runs / "p1_dino" / "results.json").read_text())
    assert "{:.4f}".format(dino["final_knn_acc"]) in text
    # every table says where its numbers come from; here: generated data
    assert text.count("Source: data generated by `tools.toydata`") >= (6 if HAVE_SKLEARN else 5)  # t-SNE: sklearn
    assert "Source: the course's data" not in text
    # every figure link points at a copied file
    links = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", text)
    assert len(links) >= (12 if HAVE_SKLEARN else 11)  # the t-SNE figure needs scikit-learn
    for link in links:
        assert (report / link).is_file(), link
    assert "not run" in text  # SAM did not run here, and the report says so rather than failing


def test_scripts_name_a_missing_input_before_any_work(tmp_path, repo_root):
    env = {"HW1_DATA": str(tmp_path / "nowhere"), "RUNS": str(tmp_path / "runs")}
    for script in ("p1_dino.sh", "p1_settings.sh", "p2_unet.sh", "p2_deeplab.sh"):
        proc = _bash(repo_root, script, env, ok=False)
        assert proc.returncode == 2 and "not found: {}".format(tmp_path / "nowhere") in proc.stderr, script
    proc = _bash(repo_root, "p1_dino.sh", dict(env, NGPUS="two"), ok=False)
    assert proc.returncode == 2 and "NGPUS must be a positive integer" in proc.stderr


@pytest.mark.slow
def test_sam_script(pipeline, tmp_path, repo_root):
    """scripts/p2_sam.sh with a ViT-B checkpoint file (random weights in the official format) and the DeepLabV3
    run of the pipeline as our prediction panel; the report then shows the SAM figures."""
    pytest.importorskip("segment_anything")
    from segment_anything import sam_model_registry

    runs, report = pipeline
    ckpt = tmp_path / "sam_vit_b.pth"
    torch.manual_seed(0)
    torch.save(sam_model_registry["vit_b"]().state_dict(), str(ckpt))
    data = runs.parent / "hw1_data"
    env = {"HW1_DATA": str(data), "RUNS": str(runs), "REPORT_DIR": str(report), "SAM_CHECKPOINT": str(ckpt),
           "SAM_MODEL_TYPE": "vit_b", "SNAPSHOT_IMAGES": "0000_sat.jpg"}
    _bash(repo_root, "p2_sam.sh", env, "--device", "cpu", "--points-per-side", "4", "--pred-iou-thresh", "0",
          "--stability-score-thresh", "0")
    summary = json.loads((runs / "p2_sam" / "sam_summary.json").read_text())
    assert len(summary["images"]) == 1 and (runs / "p2_sam" / "0000_sat_sam.png").is_file()
    _bash(repo_root, "report.sh", dict(env, TA_BACKBONE="unused"))
    assert "figures/p2_sam_0000_sat_sam.png" in (report / "REPORT.md").read_text()


def test_all_sh_runs_every_step_in_order(tmp_path, repo_root):
    """scripts/all.sh calls each step once, in the report's order, with the recipe's inputs: a stand-in
    interpreter records the calls instead of training (the steps themselves run in the pipeline above)."""
    log = tmp_path / "calls.txt"
    fake = tmp_path / "fake_python"
    fake.write_text("#!/usr/bin/env bash\necho \"$*\" >> {}\n".format(log))
    fake.chmod(0o755)
    data, runs = tmp_path / "hw1_data", tmp_path / "runs"
    for d in ("p1_data/mini/train", "p1_data/office", "p2_data/train", "p2_data/validation"):
        (data / d).mkdir(parents=True)
    (data / "p1_data" / "office" / "train.csv").write_text("id,filename,label\n")
    (tmp_path / "official_dino_model.pth").write_bytes(b"")
    (runs / "p1_dino").mkdir(parents=True)
    (runs / "p1_dino" / "backbone.pth").write_bytes(b"")
    (runs / "p1_C").mkdir()
    for n in (1, 100):
        (runs / "p1_C" / "epoch_{:03d}.pth".format(n)).write_bytes(b"")
    env = {"HW1_DATA": str(data), "RUNS": str(runs), "PYTHON": str(fake), "SAM_CHECKPOINT": str(tmp_path / "none"),
           "TA_BACKBONE": str(tmp_path / "official_dino_model.pth")}
    proc = subprocess.run(["bash", "scripts/all.sh"], cwd=str(repo_root), env=dict(os.environ, **env),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    calls = [line.split()[0] for line in log.read_text().splitlines()]
    assert calls == ["p1_ssl_pretrain.py"] + ["p1_finetune.py"] * 5 + ["p1_tsne.py", "p2_unet.py", "p2_unet.py",
                                                                         "p2_deeplab.py", "-m"]
    lines = log.read_text().splitlines()
    assert "--epochs" not in lines[0] and "--knn-val-csv" in lines[0]  # the recipe's defaults, with the probe
    assert "--batched-aug" in lines[0]  # the multi-crop on the GPU
    assert ["--setting {}".format(s) in lines[1 + i] for i, s in enumerate("ABCDE")] == [True] * 5
    assert "epoch 100" in lines[6] and "--snapshot-epochs 1 50 100" in lines[9]
    # the U-Net, then the 2025 report's ablation: the same U-Net with one skip, the shallowest, dropped
    assert "--drop-skip" not in lines[7] and "runs/p2_unet " in lines[7] + " "
    assert "--output-dir {}/p2_unet_drop_skip --drop-skip 0 ".format(runs) in lines[8]
    snapshot_images = "--snapshot-images 0013_sat.jpg 0018_sat.jpg 0065_sat.jpg 0104_sat.jpg 0109_sat.jpg"
    assert all(snapshot_images in lines[i] for i in (7, 8, 9))  # both image sets of the template
    assert "skipping SAM" in proc.stdout


@pytest.mark.slow  # in CI's slow step: it keeps the default suite under ~15 minutes
def test_gpu_check_script_runs_end_to_end_at_tiny_scale_on_the_cpu(tmp_path, repo_root):
    """scripts/gpu_check.sh is the one prepared run for a session that gets a GPU; here its wiring runs on the
    CPU at SCALE=tiny so that the GPU session spends its minutes measuring, not debugging."""
    out = tmp_path / "gpu_check"
    proc = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=str(repo_root),
                          env=dict(os.environ, DEVICE="cpu", SCALE="tiny", OUT=str(out), PYTHON=sys.executable,
                                   OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["device"]["device"] == "cpu"
    names = {m["name"] for m in summary["benchmark"]}
    assert {"aug_per_image", "aug_batched", "dino_step", "inference"} <= names
    assert all(m.get("ratio", 1) > 0 for m in summary["benchmark"])
    assert len(summary["dino_batched_images_per_s"]) == 2 and min(summary["dino_batched_images_per_s"]) > 0
    assert len(summary["dino_per_image_images_per_s"]) == 2
    assert summary["unet_torchrun_ok"] and summary["hw1_2_masks"] == summary["hw1_2_tiles"] == 6
    assert summary["hw1_1_rows"] == summary["hw1_1_images"] == 12 and summary["hw1_1_seconds"] > 0
    assert summary["tta_flip_scale_masks"] == 6 and summary["dino_batched_hours_for_300_epochs"] > 0
    assert summary["dino_batched_gpu"] is None  # no nvidia-smi samples on the CPU
    assert summary["hw1_2_seconds"] > 0
    assert summary["tta_flip_scale_masks"] == 6 and summary["tta_flip_scale_seconds"] > 0


def test_relative_path_variables_are_taken_from_the_callers_folder(tmp_path, repo_root):
    """HW1_DATA, RUNS, TA_BACKBONE, DINO_BACKBONE, PYTHON (a path), SAM_CHECKPOINT and REPORT_DIR given relative
    mean the caller's folder, not the repository; a script that stops on a missing input creates no folder."""
    caller = tmp_path / "caller"
    office = caller / "mydata" / "p1_data" / "office"
    office.mkdir(parents=True)
    (office / "train.csv").write_text("id,filename,label\n")
    (caller / "ta.pth").write_bytes(b"")
    (caller / "dino.pth").write_bytes(b"")
    log = tmp_path / "calls.txt"
    (caller / "fake_python").write_text("#!/usr/bin/env bash\necho \"$*\" >> {}\n".format(log))
    (caller / "fake_python").chmod(0o755)
    env = dict(os.environ, HW1_DATA="mydata", RUNS="myruns", TA_BACKBONE="ta.pth", DINO_BACKBONE="dino.pth",
               PYTHON="./fake_python", SETTINGS="B C")
    proc = subprocess.run(["bash", str(repo_root / "scripts" / "p1_settings.sh")], cwd=str(caller), env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    assert "--backbone {0}/ta.pth --data-dir {0}/mydata/p1_data/office --output-dir {0}/myruns/p1_B".format(
        caller) in lines[0], lines
    assert "--backbone {0}/dino.pth".format(caller) in lines[1], lines
    for name in ("mydata", "myruns", "ta.pth"):
        assert not (repo_root / name).exists(), name
    # a missing input: an error naming the caller's path, and no empty RUNS folder anywhere
    env.update(HW1_DATA="nowhere")
    for script in ("p1_dino.sh", "p2_unet.sh", "p2_deeplab.sh"):
        proc = subprocess.run(["bash", str(repo_root / "scripts" / script)], cwd=str(caller), env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "not found: {}/nowhere/".format(caller) in proc.stderr, (script, proc.stderr)
    assert not (caller / "myruns").exists() and not (repo_root / "myruns").exists()
    proc = subprocess.run(["bash", str(repo_root / "scripts" / "p2_sam.sh")], cwd=str(caller),
                          env=dict(env, SAM_CHECKPOINT="sam.pth"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not found: {}/sam.pth".format(caller) in proc.stderr, proc.stderr
    # gpu_check.sh: OUT and PYTHON from the caller's folder too (the stand-in interpreter fails the first step)
    (caller / "failing_python").write_text("#!/usr/bin/env bash\nexit 1\n")
    (caller / "failing_python").chmod(0o755)
    proc = subprocess.run(["bash", str(repo_root / "scripts" / "gpu_check.sh")], cwd=str(caller),
                          env=dict(env, OUT="gpu_out", PYTHON="./failing_python"), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and (caller / "gpu_out").is_dir() and not (repo_root / "gpu_out").exists()
