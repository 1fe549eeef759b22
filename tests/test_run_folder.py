"""One run per folder, one recipe per run (issue 24, cause 2): the output folder's lock, the whole recipe compared on
resume, the training set's fingerprint, the data's source in results.json, the resumed epoch's logged means, and a
SIGTERM to the whole process group while DataLoader workers run."""
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import p1_ssl_pretrain
import p2_unet
from helpers import ROOT, env, run, run_main, stop_mid_epoch
from utils.checkpoint import load_checkpoint

UNET = ["--batch-size", "2", "--crop-size", "32", "--base-width", "4", "--depth", "2", "--workers", "0",
        "--deterministic", "--print-freq", "1", "--snapshot-epochs"]
DINO = ["--epochs", "1", "--batch-size", "2", "--workers", "0", "--arch", "resnet18", "--out-dim", "16",
        "--hidden-dim", "16", "--bottleneck-dim", "8", "--global-crop-size", "32", "--local-crop-size", "16",
        "--local-crops-number", "1", "--warmup-epochs", "1", "--print-freq", "1", "--deterministic"]


@pytest.fixture
def p2_copy(toy_p2, tmp_path):
    """A copy of the generated p2 data that a test may change."""
    return Path(shutil.copytree(str(toy_p2), str(tmp_path / "p2_data")))


def _unet(data, out, *extra):
    return run_main(p2_unet, ["--data-dir", data, "--output-dir", out] + UNET + [str(e) for e in extra])


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# ------------------------------------------------------------------------------------------- one run per folder

def test_a_second_run_on_a_folder_in_use_is_refused_at_once_and_deletes_nothing(toy_p2, tmp_path):
    """Two p2_unet.py runs 3 s apart in one folder "resumed" each other; now the second is refused while the first
    holds the folder's lock, even with --overwrite (nothing of the first run is deleted)."""
    import fcntl

    out = tmp_path / "run"
    _unet(toy_p2, out, "--epochs", "1")
    before = _files(out)
    with open(str(out / ".run.lock"), "a") as holder:  # what the first, still running, process holds
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        for extra in ([], ["--overwrite"], ["--lr", "0.01", "--seed", "2"]):
            proc = run(["p2_unet.py", "--data-dir", toy_p2, "--output-dir", out, "--epochs", "2"] + UNET + extra,
                       ok=False)
            assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1 and str(out) in lines[0] and "another run" in lines[0], proc.stderr
            assert _files(out) == before  # nothing written, nothing deleted
    _unet(toy_p2, out, "--epochs", "2")  # the lock is gone with its holder: the run resumes
    assert load_checkpoint(out / "checkpoint.pth")["epoch"] == 2


# ------------------------------------------------------------------------------------------ one recipe per run

def test_a_rerun_with_another_lr_or_seed_is_refused_naming_each_flag_and_args_json_is_kept(toy_p2, tmp_path):
    out = tmp_path / "run"
    _unet(toy_p2, out, "--epochs", "1")
    before = _files(out)
    with pytest.raises(SystemExit) as err:
        _unet(toy_p2, out, "--epochs", "2", "--lr", "0.01", "--seed", "2", "--weight-decay", "0")
    message = str(err.value)
    for part in ("--lr: 0.001 in the checkpoint, 0.01 here", "--seed: 0 in the checkpoint, 2 here",
                 "--weight-decay: 0.0001 in the checkpoint, 0.0 here", str(out), "--overwrite"):
        assert part in message, message
    assert "\n" not in message
    assert _files(out) == before  # args.json, checkpoint and log untouched
    # --resume PATH: the same rule
    with pytest.raises(SystemExit, match="--color-jitter: 0.2 in the checkpoint, 0.0 here"):
        _unet(toy_p2, tmp_path / "other", "--epochs", "2", "--color-jitter", "0", "--resume", out / "checkpoint.pth")
    # what may change on resume: more epochs, the worker count, the log interval
    _unet(toy_p2, out, "--epochs", "2", "--workers", "1", "--print-freq", "5")
    assert load_checkpoint(out / "checkpoint.pth")["epoch"] == 2
    assert (out / "args.json").read_bytes() == before["args.json"]  # the run's recipe, as it was started


def test_the_recipe_allow_list_is_one_definition_and_maths_flags_are_not_in_it():
    from utils.lifecycle import RESUME_MAY_CHANGE

    for maths in ("lr", "batch_size", "seed", "weight_decay", "schedule", "loss", "aux_weight", "crop_size",
                  "min_scale", "color_jitter", "optimizer", "data_dir", "mixup", "teacher_temp", "amp"):
        assert maths not in RESUME_MAY_CHANGE


# -------------------------------------------------------------------------------- the training set's fingerprint

def _remove_pairs(folder, count):
    names = sorted(p.name[:-len("_sat.jpg")] for p in folder.glob("*_sat.jpg"))[:count]
    for name in names:
        (folder / (name + "_sat.jpg")).unlink()
        (folder / (name + "_mask.png")).unlink()
    return names


def test_training_pairs_deleted_or_added_between_a_stop_and_its_resume_are_refused(p2_copy, tmp_path):
    """10 of 24 pairs deleted between a stop and its resume: `__len__() should return >= 0`; pairs added: a silent
    resume. Now both are one line saying how many were removed/added and naming some."""
    out = tmp_path / "run"
    args = ["p2_unet.py", "--data-dir", p2_copy, "--output-dir", out, "--epochs", "3"] + UNET
    stop_mid_epoch(args, signal.SIGTERM)
    ckpt = load_checkpoint(out / "checkpoint.pth")
    assert ckpt["partial_steps"] >= 1
    train = p2_copy / "train"
    spare = tmp_path / "spare"
    spare.mkdir()
    for path in sorted(train.iterdir())[:20]:  # the first 10 pairs
        shutil.copy(str(path), str(spare / path.name))
    removed = _remove_pairs(train, 10)
    before = _files(out)
    proc = run(args, ok=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "__len__" not in proc.stderr, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "10 removed" in line and removed[0] + "_sat.jpg" in line and "--overwrite" in line, line
    assert _files(out) == before
    for path in spare.iterdir():  # the data back as it was, plus two new pairs
        shutil.copy(str(path), str(train / path.name))
    for name in ("0000", "0001"):
        for suffix in ("_sat.jpg", "_mask.png"):
            shutil.copy(str(train / (name + suffix)), str(train / ("9" + name[1:] + suffix)))
    with pytest.raises(SystemExit, match=r"2 added \(9000_sat.jpg, 9001_sat.jpg\)"):
        run_main(p2_unet, args[1:])
    for name in ("9000", "9001"):
        for suffix in ("_sat.jpg", "_mask.png"):
            (train / (name + suffix)).unlink()
    run(args)  # the same data again: resumed
    assert load_checkpoint(out / "checkpoint.pth")["epoch"] == 3
    assert ckpt["data"]["count"] == 24  # the stopped run's checkpoint held the fingerprint


def test_dino_images_removed_before_a_resume_are_refused(toy_p2, tmp_path):
    from tools.toydata import make_p1_data

    root = make_p1_data(tmp_path / "p1", num_classes=2, mini_per_class=4, office_train_per_class=2,
                        office_val_per_class=1, seed=0)
    images = Path(shutil.copytree(str(root / "mini" / "train"), str(tmp_path / "images")))
    out = tmp_path / "dino"
    run_main(p1_ssl_pretrain, ["--data-dir", images, "--output-dir", out] + DINO)
    gone = sorted(p for p in images.rglob("*") if p.is_file())[:3]
    for path in gone:
        path.unlink()
    with pytest.raises(SystemExit) as err:
        run_main(p1_ssl_pretrain, ["--data-dir", images, "--output-dir", out] + DINO + ["--epochs", "2"])
    assert "3 removed" in str(err.value) and gone[0].name in str(err.value)


def test_a_mid_epoch_position_beyond_the_epoch_is_a_clear_error(tmp_path):
    """A checkpoint stopped after step 20 of an epoch that now has 4 steps (an old checkpoint without the data's
    fingerprint): one line, never `__len__() should return >= 0`."""
    import argparse

    from utils.lifecycle import Run, StopRequest

    run_ = Run.__new__(Run)
    run_.out, run_.main, run_.rank, run_.world, run_.device = tmp_path, True, 0, 1, torch.device("cpu")
    run_.args = argparse.Namespace(workers=0, seed=0, deterministic=False, epochs=3, eval_only=False)
    run_.stop, run_.start_epoch, run_.partial, run_.ckpt = StopRequest(), 1, 20, {}
    run_.resume_path = tmp_path / "checkpoint.pth"
    loader = run_.loader(torch.utils.data.TensorDataset(torch.arange(8.0)), 2, train=True)
    with pytest.raises(SystemExit, match="step 20 of an epoch that has 4 steps"):
        next(run_.epochs(loader))


# ------------------------------------------------------------------------------------- the data's source recorded

def test_results_json_records_where_the_data_came_from(toy_p2, tmp_path):
    from tools.toydata.output import is_generated

    out = tmp_path / "run"
    _unet(toy_p2, out, "--epochs", "1")
    data = json.loads((out / "results.json").read_text())["data"]
    assert sorted(data) == ["count", "fingerprint", "generated", "root"]
    assert data["root"] == str((toy_p2 / "train").resolve()) and data["count"] == 24
    assert data["generated"] is True and is_generated(toy_p2)
    assert len(data["fingerprint"]) == 64 and int(data["fingerprint"], 16) >= 0
    assert load_checkpoint(out / "checkpoint.pth")["data"]["fingerprint"] == data["fingerprint"]
    assert "data" not in json.loads((out / "args.json").read_text())


# --------------------------------------------------------------------- SIGTERM to the process group, with workers

def test_sigterm_to_the_process_group_with_loader_workers_saves_a_resumable_checkpoint(toy_p2, tmp_path):
    """A job scheduler signals the whole group: the DataLoader workers got SIGTERM too and died, and the trainer
    ended in a traceback without the checkpoint. Workers now leave the decision to the main process."""
    out = tmp_path / "run"
    flags = [f for f in UNET if f != "--deterministic"]  # persistent workers, as in a real run
    args = ["p2_unet.py", "--data-dir", toy_p2, "--output-dir", out, "--epochs", "3"] + flags + ["--workers", "2"]
    proc = subprocess.Popen([sys.executable] + [str(a) for a in args], cwd=str(ROOT), env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    for line in proc.stdout:
        if "epoch 1/" in line:
            break
    os.killpg(proc.pid, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in stderr, stderr
    ckpt = load_checkpoint(out / "checkpoint.pth")
    assert ckpt["partial_steps"] >= 1 and ckpt["epoch"] == 1
    run(args)
    assert load_checkpoint(out / "checkpoint.pth")["epoch"] == 3
