"""The run lifecycle shared by the three trainers (utils/lifecycle.py), under faults: a kill between an epoch's
writes, SIGINT/SIGTERM mid-epoch, --resume with other flags, --overwrite, and checkpoints that must be refused."""
import json
import re
import signal

import pytest
import torch

import p2_unet
from helpers import run, run_main, same_weights, stop_mid_epoch
from tools.toydata import make_p1_data
from utils.checkpoint import load_checkpoint, make_checkpoint, save_atomic
from utils.classify import CLASSIFIER_KIND, build_classifier, load_classifier
from utils.models import build_seg_model
from utils.predict import SEG_KIND, load_segmenter

def unet(width=4, snapshots=(), images=()):
    """A tiny U-Net run's flags; snapshots only at ``snapshots`` (of ``images``)."""
    flags = ["--batch-size", "2", "--crop-size", "32", "--base-width", str(width), "--depth", "2", "--workers", "0",
             "--deterministic", "--print-freq", "1", "--snapshot-epochs"] + [str(e) for e in snapshots]
    return flags + (["--snapshot-images"] + list(images) if images else [])


UNET = unet()
FINETUNE = ["--arch", "resnet18", "--num-classes", "2", "--batch-size", "2", "--image-size", "32", "--hidden-dim", "8",
            "--workers", "0", "--warmup-epochs", "0", "--deterministic", "--print-freq", "1", "--backbone", "none",
            "--setting", "A"]


@pytest.fixture(scope="module")
def office(tmp_path_factory):
    root = make_p1_data(tmp_path_factory.mktemp("p1"), num_classes=2, mini_per_class=8, office_train_per_class=8,
                        office_val_per_class=2, seed=0)
    return root / "office"


# ------------------------------------------------------------------ a kill between an epoch's writes (issue 15.3)

KILL_AT = """
import os, runpy, sys
import utils.lifecycle as lifecycle
real, target = lifecycle.save_atomic, sys.argv[1]
def dying(obj, path):
    if os.path.basename(str(path)) == target:  # die as kill -9 would, halfway through this file's write
        tmp = os.path.join(os.path.dirname(str(path)), "." + os.path.basename(str(path)) + ".x1y2.tmp")
        open(tmp, "wb").write(b"PK partial")
        os._exit(137)
    real(obj, path)
lifecycle.save_atomic = dying
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.parametrize("script, kill_at", [("p2_unet.py", "snapshot_epoch002.pth"),
                                             pytest.param("p1_finetune.py", "epoch_002.pth",
                                                          marks=pytest.mark.slow)])  # the same writes, ~27 s
def test_a_kill_between_an_epochs_writes_is_redone_on_resume(toy_p2, office, tmp_path, script, kill_at):
    if script == "p2_unet.py":
        args = [script, "--data-dir", toy_p2, "--epochs", "3"] + unet(snapshots=[2], images=["0000_sat.jpg"])
    else:
        args = [script, "--data-dir", office, "--epochs", "3"] + FINETUNE + ["--save-epochs", "2"]
    run(args + ["--output-dir", tmp_path / "full"])
    killed = tmp_path / "killed"
    proc = run(["-c", KILL_AT, kill_at] + args + ["--output-dir", killed], ok=False)
    assert proc.returncode == 137
    assert load_checkpoint(killed / "checkpoint.pth")["epoch"] == 1  # epoch 2 never marked done
    assert any(p.name.endswith(".tmp") for p in killed.iterdir())  # the orphan of the killed write
    run(args + ["--output-dir", killed])  # the same command again
    assert not [p.name for p in killed.iterdir() if p.name.endswith(".tmp")]  # orphans cleaned
    assert (killed / kill_at).is_file()  # the epoch's file was redone
    log = [json.loads(line)["epoch"] for line in (killed / "log.jsonl").read_text().splitlines()]
    assert log == [1, 2, 3]
    results = json.loads((killed / "results.json").read_text())
    best = load_checkpoint(killed / "best.pth")
    assert results.get("best_epoch", best["epoch"]) == best["epoch"]
    assert same_weights(tmp_path / "full" / "checkpoint.pth", killed / "checkpoint.pth")
    assert same_weights(tmp_path / "full" / "best.pth", killed / "best.pth")


# ------------------------------------------------- SIGINT / SIGTERM mid-epoch: exact resume (issue 15.10)

@pytest.mark.parametrize("script, sig", [("p2_unet.py", signal.SIGINT), ("p1_finetune.py", signal.SIGTERM),
                                         ("p1_ssl_pretrain.py", signal.SIGINT)])  # the U-Net with 2 loader workers
def test_mid_epoch_stop_then_resume_is_bit_identical_to_an_unbrokenrun(toy_p2, office, tmp_path, script, sig):
    """Augmentations are seeded per sample from (seed, epoch, index) and torch's RNG (dropout, mixup) is saved with
    the mid-epoch checkpoint: the resumed run ends with exactly the unbroken run's weights."""
    if script == "p2_unet.py":  # workers: each draws from its own RNG, restarted every epoch
        args = [script, "--data-dir", toy_p2, "--epochs", "3"] + UNET + ["--workers", "2"]
    elif script == "p1_finetune.py":
        args = [script, "--data-dir", office, "--epochs", "3", "--mixup", "0.4"] + FINETUNE
    else:
        root = office.parent
        args = [script, "--data-dir", root / "mini" / "train", "--epochs", "3", "--batch-size", "2", "--workers",
                "0", "--arch", "resnet18", "--out-dim", "16", "--hidden-dim", "16", "--bottleneck-dim", "8",
                "--global-crop-size", "32", "--local-crop-size", "16", "--local-crops-number", "1",
                "--warmup-epochs", "1", "--print-freq", "1", "--deterministic"]
    run(args + ["--output-dir", tmp_path / "full"])
    stopped = tmp_path / "stopped"
    stop_mid_epoch(args + ["--output-dir", stopped], sig)
    ckpt = load_checkpoint(stopped / "checkpoint.pth")
    assert ckpt["partial_steps"] >= 1 and "rng_state" in ckpt
    run(args + ["--output-dir", stopped])
    assert same_weights(tmp_path / "full" / "checkpoint.pth", stopped / "checkpoint.pth")
    # the resumed epoch's logged means cover all its steps, those before the stop too (issue 24): the curve too is
    # the unbroken run's
    assert _logged_means(stopped) == _logged_means(tmp_path / "full")


def _logged_means(out):
    keys = ("train_loss", "train_acc", "loss", "teacher_entropy", "kl", "embed_std")
    return [{k: r[k] for k in keys if k in r} for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())]


# ------------------------------------------------------------------ the one resume policy (issue 15.6, 15.7)

def test_resume_with_other_model_flags_is_refused_naming_them(toy_p2, tmp_path):
    first = tmp_path / "first"
    run_main(p2_unet, ["--data-dir", toy_p2, "--output-dir", first, "--epochs", "1"] + UNET)
    with pytest.raises(SystemExit) as err:
        run_main(p2_unet, ["--data-dir", toy_p2, "--output-dir", tmp_path / "second", "--epochs", "2",
                           "--resume", first / "checkpoint.pth", "--drop-skip", "0"] + unet(width=8))
    message = str(err.value)
    assert "base_width: 4 in the checkpoint, 8 here" in message and "drop_skip" in message
    assert not (tmp_path / "second" / "results.json").exists()
    # the optimizer too: resuming an AdamW run with SGD was a KeyError('momentum') traceback
    with pytest.raises(SystemExit, match="--optimizer: 'adamw' in the checkpoint, 'sgd' here"):
        run_main(p2_unet, ["--data-dir", toy_p2, "--output-dir", first, "--epochs", "2", "--optimizer", "sgd"]
                 + UNET)


def test_resume_from_another_folder_tracks_the_best_afresh(toy_p2, tmp_path):
    """--resume PATH of another folder: that folder's best.pth is not here, so results.json must not claim a best
    epoch whose best.pth this folder lacks."""
    first = tmp_path / "first"
    run_main(p2_unet, ["--data-dir", toy_p2, "--output-dir", first, "--epochs", "2"] + UNET)
    second = tmp_path / "second"
    result = run_main(p2_unet, ["--data-dir", toy_p2, "--output-dir", second, "--epochs", "3",
                                "--resume", first / "checkpoint.pth"] + UNET)
    assert result["best_epoch"] == 3 and load_checkpoint(second / "best.pth")["epoch"] == 3


def test_overwrite_deletes_only_the_old_runs_files(toy_p2, tmp_path):
    out = tmp_path / "run"
    run_main(p2_unet, ["--data-dir", toy_p2, "--output-dir", out, "--epochs", "2", "--save-every", "1"]
             + unet(snapshots=[1, 2], images=["0000_sat.jpg"]))
    assert (out / "snapshot_epoch002.pth").is_file() and (out / "snapshots" / "epoch_002").is_dir()
    assert (out / "checkpoint_epoch002.pth").is_file()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="holds another run"):
        run_main(p2_unet, ["--data-dir", toy_p2, "--output-dir", out, "--epochs", "1"] + unet(width=8))
    run_main(p2_unet, ["--data-dir", toy_p2, "--output-dir", out, "--epochs", "1", "--overwrite"]
             + unet(width=8, snapshots=[1], images=["0000_sat.jpg"]))
    names = sorted(p.name for p in out.iterdir())
    assert "snapshot_epoch002.pth" not in names and "notes.txt" in names  # the user's file stays
    assert not [n for n in names if n.startswith("checkpoint_epoch")]  # the old run's numbered copies too
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["epoch_001"]
    assert load_checkpoint(out / "checkpoint.pth")["model_config"]["base_width"] == 8
    assert [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()] == [1]


def test_overwrite_refuses_a_file_named_as_a_run_file_that_no_run_wrote(toy_p2, tmp_path):
    """Before: --overwrite deleted every file named as a run names its files (args.json, best.pth, ...) whatever it
    held: a user's notes saved as args.json were gone. Such a file (not a JSON object, not a torch file) is named
    and nothing is deleted; a run's own files are deleted as before."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "args.json").write_text("my notes")
    (out / "best.pth").write_text("not a model")
    with pytest.raises(SystemExit, match="would delete args.json, best.pth"):
        run_main(p2_unet, ["--data-dir", toy_p2, "--output-dir", out, "--epochs", "1", "--overwrite"] + unet())
    assert (out / "args.json").read_text() == "my notes" and (out / "best.pth").read_text() == "not a model"


def test_an_output_dir_that_is_a_dangling_symlink_is_named_not_errno_17(toy_p2, tmp_path):
    """Before: a trainer's --output-dir that is a dangling symlink ended in '[Errno 17] File exists'."""
    (tmp_path / "run").symlink_to(tmp_path / "scratch_gone")
    proc = run(["p2_unet.py", "--data-dir", toy_p2, "--output-dir", tmp_path / "run", "--epochs", "1"] + unet(),
               ok=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "Errno 17" not in proc.stderr, proc.stderr
    assert "symbolic link" in proc.stderr and "scratch_gone" in proc.stderr


# ------------------------------------------------------------ checkpoints that must be refused (issue 15.8, tracebacks)

def _classifier(path, **changes):
    config = {"arch": "resnet18", "num_classes": 3, "hidden_dim": 8, "dropout": 0.5}
    ckpt = make_checkpoint(CLASSIFIER_KIND, config, build_classifier(config).state_dict(), image_size=32,
                           mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    for key, value in changes.items():
        if value is None:
            del ckpt[key]
        else:
            ckpt[key] = value
    save_atomic(ckpt, path)
    return path


@pytest.mark.parametrize("changes, message", [
    ({"std": [0.229, 0.0, 0.225]}, "invalid normalisation std"),
    ({"std": [float("nan")] * 3}, "invalid normalisation std"),
    ({"image_size": 0}, "invalid image_size 0"),
    ({"format_version": "1"}, "invalid format_version '1'"),
    ({"model_config": None}, "no model_config"),
])
def test_degenerate_classifier_checkpoints_are_refused(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message) as err:
        load_classifier(_classifier(tmp_path / "c.pth", **changes), torch.device("cpu"))
    assert str(tmp_path / "c.pth") in str(err.value)


def test_non_finite_weights_are_refused(tmp_path):
    config = {"arch": "resnet18", "num_classes": 3, "hidden_dim": 8, "dropout": 0.5}
    state = build_classifier(config).state_dict()
    state["head.0.weight"][0, 0] = float("nan")
    save_atomic(make_checkpoint(CLASSIFIER_KIND, config, state, image_size=32), tmp_path / "nan.pth")
    with pytest.raises(ValueError, match="non-finite weights .* head.0.weight"):
        load_classifier(tmp_path / "nan.pth", torch.device("cpu"))


def test_a_config_that_does_not_fit_its_weights_fails_before_building_the_model(tmp_path):
    """A config saying base_width 1500 (a 5.7 GB U-Net) with small weights: refused from the shapes alone."""
    import resource

    config = {"arch": "unet", "num_classes": 7, "base_width": 4, "depth": 2, "drop_skip": [], "bilinear": False}
    weights = build_seg_model(config).state_dict()
    save_atomic(make_checkpoint(SEG_KIND, dict(config, base_width=1500), weights), tmp_path / "big.pth")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match="does not fit the model its config describes"):
        load_segmenter(tmp_path / "big.pth", torch.device("cpu"))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024.0
    assert grown_mb < 200  # building it for real would take gigabytes


def test_full_disk_while_saving_a_checkpoint_is_one_line(toy_p2, tmp_path):
    """torch.save's 'unexpected pos' RuntimeError on a full disk becomes 'error: cannot write ...', exit 2, and the
    previous checkpoint stays loadable."""
    out = tmp_path / "run"
    run(["p2_unet.py", "--data-dir", toy_p2, "--output-dir", out, "--epochs", "1"] + UNET)
    script = ("import sys, runpy, torch\n"
              "def full(obj, f, *a, **k):\n"
              "    raise RuntimeError('[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0')\n"
              "torch.save = full\n"
              "sys.argv = sys.argv[1:]\n"
              "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    proc = run(["-c", script, "p2_unet.py", "--data-dir", toy_p2, "--output-dir", out, "--epochs", "2"] + UNET,
                ok=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "error: cannot write {}".format(out) in proc.stderr and "disk full" in proc.stderr  # best.pth comes first
    assert load_checkpoint(out / "checkpoint.pth")["epoch"] == 1


@pytest.mark.parametrize("flags", [["--crop-size", "0"], ["--device", "tpu"], ["--epochs", "0"], ["--epochs", "-3"],
                                   ["--lr", "nan"]])
def test_nonsense_flags_are_usage_errors(toy_p2, tmp_path, flags):
    proc = run(["p2_unet.py", "--data-dir", toy_p2, "--output-dir", tmp_path / "x"] + flags, ok=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and flags[0] in proc.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("missing", ["scaler", "epoch"])
def test_a_resumable_checkpoint_without_an_entry_is_refused_naming_the_file_and_the_entry(tmp_path, missing):
    """Before: a resumable checkpoint (it has an optimizer) without 'epoch' restarted at epoch 0 with the old
    optimizer state, silently."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": {}, "epoch": 3}
    del ckpt[missing]
    run = _bare_run(tmp_path, ckpt=ckpt, resume_path=tmp_path / "checkpoint.pth")
    with pytest.raises(ValueError, match="checkpoint {} has no '{}' entry to resume from".format(
            re.escape(str(tmp_path / "checkpoint.pth")), missing)):
        run.restore(model=model, optimizer=optimizer, scaler=torch.nn.Module())


def _bare_run(tmp_path, **attributes):
    """A Run without __init__ (no process group, no folder checks): for one method at a time."""
    import argparse

    from utils.lifecycle import Run
    from utils.runlog import RunLog

    run = Run.__new__(Run)
    run.out, run.main, run.rank, run.world, run.device = tmp_path, True, 0, 1, torch.device("cpu")
    run.args = argparse.Namespace(workers=2, seed=0, deterministic=False)
    run.log = RunLog(tmp_path)
    for name, value in attributes.items():
        setattr(run, name, value)
    return run


def test_restore_says_where_it_resumes_and_returns_the_runs_variables(tmp_path, capsys):
    model = torch.nn.Linear(2, 2)
    ckpt = {"model": {k: v + 1 for k, v in model.state_dict().items()}, "optimizer": {}, "epoch": 3,
            "best_metric": 0.5}
    run = _bare_run(tmp_path, ckpt=ckpt, resume_path=tmp_path / "checkpoint.pth")
    assert run.restore(model=model) == {"best_metric": 0.5} and (run.start_epoch, run.partial) == (3, 0)
    assert capsys.readouterr().out == "resumed from {} at epoch 3\n".format(tmp_path / "checkpoint.pth")
    assert torch.equal(model.weight, ckpt["model"]["weight"])


def test_a_loaders_own_worker_count_overrides_workers(tmp_path):
    """Cached features and DINO's batched augmentation load in the main process (workers=0) whatever --workers."""
    run = _bare_run(tmp_path)
    data = torch.utils.data.TensorDataset(torch.arange(8.0))
    assert [run.loader(data, 2, train=train).num_workers for train in (True, False)] == [2, 2]
    assert [run.loader(data, 2, train=train, workers=0).num_workers for train in (True, False)] == [0, 0]


def test_a_run_makes_its_nested_output_folder_and_draws_the_curves_of_its_keys(tmp_path):
    from utils.lifecycle import Run

    args = p2_unet.get_args_parser().parse_args(["--output-dir", str(tmp_path / "runs" / "p2" / "unet"),
                                                 "--device", "cpu"])
    run = Run(args, SEG_KIND, {"arch": "unet"}, curve_keys=("val_miou",), title="U-Net")
    assert run.out.is_dir()
    run.log.log({"epoch": 1, "val_miou": 0.25})
    assert (run.out / "curves.png").stat().st_size > 0
