"""p1_ssl_pretrain.py end to end on generated data: resume, torchrun, export."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torchvision

import p1_ssl_pretrain as dino
from utils.checkpoint import load_checkpoint
from helpers import run_main

TINY = ["--arch", "resnet18", "--batch-size", "16", "--workers", "0", "--global-crop-size", "32",
        "--local-crop-size", "16", "--local-crops-number", "2", "--out-dim", "64", "--hidden-dim", "64",
        "--bottleneck-dim", "32", "--warmup-epochs", "1", "--deterministic", "--save-every", "1"]


@pytest.fixture(scope="module")
def toy_p1(tmp_path_factory):
    from tools.toydata import make_p1_data

    return make_p1_data(tmp_path_factory.mktemp("toyp1"), num_classes=4, mini_per_class=12,
                        office_train_per_class=4, office_val_per_class=2, seed=0)


def _run(data, out, *extra):
    return run_main(dino, ["--data-dir", str(data / "mini" / "train"), "--output-dir", str(out)] + TINY + list(extra))


def _losses(out):
    return [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)]


def test_resumed_run_follows_the_uninterrupted_trajectory(toy_p1, tmp_path):
    _run(toy_p1, tmp_path / "full", "--epochs", "3")
    (tmp_path / "resumed").mkdir()
    # a run killed after epoch 1 leaves exactly this state as its checkpoint.pth
    shutil.copy(str(tmp_path / "full" / "checkpoint_epoch001.pth"), str(tmp_path / "resumed" / "checkpoint.pth"))
    _run(toy_p1, tmp_path / "resumed", "--epochs", "3")
    full, resumed = _losses(tmp_path / "full"), _losses(tmp_path / "resumed")
    assert len(full) == 3 and len(resumed) == 2
    assert resumed == full[1:]
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pth", "p1_dino")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pth", "p1_dino")
    assert a["step"] == b["step"] == 3 * (48 // 16)
    assert torch.equal(a["center"], b["center"])
    for key in a["teacher"]:
        assert torch.equal(a["teacher"][key], b["teacher"][key]), key


@pytest.fixture(scope="module")
def recorded_run(toy_p1, tmp_path_factory):
    """A 2-epoch tiny run (48 images, batch 16: 3 steps per epoch; 1 warm-up epoch; prototypes frozen in epoch 1;
    --lr 0.3 given for a batch of 64) in which every step records, as it starts, the rate of each optimizer group
    and the student's prototypes and first MLP weight."""
    from utils.distributed import unwrap

    steps = []
    original = dino.train_step

    def recording(student, teacher, loss_fn, optimizer, *args, **kwargs):
        head = unwrap(student).head
        steps.append({"lr": [group["lr"] for group in optimizer.param_groups],
                      "last_v": head.last_v.detach().clone(), "mlp": head.mlp[0].weight.detach().clone()})
        return original(student, teacher, loss_fn, optimizer, *args, **kwargs)

    out = tmp_path_factory.mktemp("recorded") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dino, "train_step", recording)
        _run(toy_p1, out, "--epochs", "2", "--lr", "0.3", "--lr-ref-batch", "64", "--freeze-last-layer", "1")
    return out, steps


def test_the_optimizer_uses_the_batch_scaled_lr(recorded_run):
    """The linear scaling rule, as used and logged: peak = 0.3 x 16 / 64 = 0.075, reached at the warm-up's last
    step (linspace 0 -> peak over 3 steps), then the cosine starts from it."""
    out, steps = recorded_run
    peak = 0.3 * 16 / 64
    assert len(steps) == 6
    for step, expected in enumerate([0.0, peak / 2, peak, peak]):
        assert steps[step]["lr"] == [pytest.approx(expected, abs=1e-12)] * 2, step
    assert 0 < steps[5]["lr"][0] < peak
    log = [r for r in (json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()) if "lr" in r]
    assert log[0]["epoch"] == 1 and log[0]["lr"] == pytest.approx(peak, abs=1e-12)


def test_prototypes_frozen_for_exactly_the_first_epoch(recorded_run):
    out, steps = recorded_run
    initial = steps[0]["last_v"]
    epoch1 = load_checkpoint(out / "checkpoint_epoch001.pth", "p1_dino")["student"]
    epoch2 = load_checkpoint(out / "checkpoint_epoch002.pth", "p1_dino")["student"]
    assert torch.equal(epoch1["head.last_v"], initial) and torch.equal(steps[3]["last_v"], initial)
    assert not torch.equal(epoch1["head.mlp.0.weight"], steps[0]["mlp"])  # the rest of the student trained
    assert not torch.equal(epoch2["head.last_v"], epoch1["head.last_v"])


def test_checkpoint_contents_and_backbone_export(toy_p1, tmp_path):
    out = tmp_path / "r50"
    result = run_main(dino, ["--data-dir", str(toy_p1 / "mini" / "train"), "--output-dir", str(out), "--arch", "resnet50",
                       "--epochs", "1", "--batch-size", "8", "--max-images", "16", "--workers", "0",
                       "--global-crop-size", "32", "--local-crop-size", "16", "--local-crops-number", "1",
                       "--out-dim", "32", "--hidden-dim", "32", "--bottleneck-dim", "16"])
    ckpt = load_checkpoint(out / "checkpoint.pth", "p1_dino")
    assert {"student", "teacher", "optimizer", "scaler", "center", "epoch", "step", "args"} <= set(ckpt)
    assert ckpt["center"].shape == (1, 32) and float(ckpt["center"].abs().sum()) > 0
    # backbone.pth is a plain torchvision resnet50 state_dict without fc
    state = torch.load(result["backbone"], weights_only=True)
    missing, unexpected = torchvision.models.resnet50().load_state_dict(state, strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []
    torch.testing.assert_close(state["conv1.weight"], ckpt["teacher"]["backbone.conv1.weight"])
    # --export-only from any checkpoint, student on request
    run_main(dino, ["--output-dir", str(out), "--export-only", "--export-from", "student",
              "--export-path", str(tmp_path / "student.pth")])
    student = torch.load(str(tmp_path / "student.pth"), weights_only=True)
    torch.testing.assert_close(student["conv1.weight"], ckpt["student"]["backbone.conv1.weight"])
    # the teacher moved by EMA only: it differs from the student after training
    assert not torch.equal(student["conv1.weight"], state["conv1.weight"])
    # a different model in the same folder is refused
    with pytest.raises(SystemExit, match="holds another run"):
        run_main(dino, ["--data-dir", str(toy_p1 / "mini" / "train"), "--output-dir", str(out), "--arch", "resnet18"])


@pytest.mark.parametrize("batched", [False, pytest.param(True, marks=pytest.mark.slow)])  # (True: CI's slow step)
def test_torchrun_two_processes_center_identical(toy_p1, tmp_path, repo_root, batched):
    """Both data paths under torchrun; with --batched-aug rank 0 writes the image cache, rank 1 reads it."""
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    # the README's multi-node flags (c10d rendezvous), here with one node of two processes
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--node_rank=0", "--nproc_per_node=2",
           "--rdzv_backend=c10d", "--rdzv_endpoint=127.0.0.1:{}".format(29518 + int(batched)),
           "p1_ssl_pretrain.py", "--data-dir", str(toy_p1 / "mini" / "train"), "--output-dir", str(out),
           "--epochs", "1", "--device", "cpu"] + TINY[:-2]
    if batched:
        cmd += ["--batched-aug", "--image-cache", str(tmp_path / "cache.npy")]
    proc = subprocess.run(cmd, cwd=str(repo_root), env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es) x batch 16 = 32" in proc.stdout
    result = json.loads((out / "results.json").read_text())
    assert result["world_size"] == 2 and result["center_rank_max_diff"] == 0.0
    assert (tmp_path / "cache.npy").is_file() == batched
    ckpt = load_checkpoint(out / "checkpoint.pth", "p1_dino")
    assert ckpt["step"] == 48 // 32 and not any(k.startswith("module.") for k in ckpt["student"])


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(toy_p1, tmp_path, monkeypatch):
    out = tmp_path / "nan"
    _run(toy_p1, out, "--epochs", "1")
    good = load_checkpoint(out / "checkpoint.pth", "p1_dino")
    original = dino.DINOLoss.forward

    def poisoned(self, student_output, teacher_output, epoch):
        result = original(self, student_output, teacher_output, epoch)
        result["loss"] = result["loss"] * float("nan")
        return result

    monkeypatch.setattr(dino.DINOLoss, "forward", poisoned)
    with pytest.raises(SystemExit, match="the DINO loss became nan in epoch 2; the last good checkpoint"):
        _run(toy_p1, out, "--epochs", "2")
    kept = load_checkpoint(out / "checkpoint.pth", "p1_dino")
    assert kept["epoch"] == good["epoch"] == 1
    for key in good["teacher"]:
        assert torch.equal(kept["teacher"][key], good["teacher"][key])


# The DINO sanity set and a short CPU recipe on which the teacher's k-NN rises (acceptance of the DINO issue).
# Measured with this exact command (--preset toy: resnet18, 32/16 px crops, 8 epochs = 128 steps, ~2 min on 2 cores), k-NN of
# the teacher backbone on 210 probe images of 7 shapes (chance 0.14), random init -> after training:
#   seed 0: 0.600 -> 0.648; seed 1: 0.590 -> 0.667; seed 2: 0.524 -> 0.652 (epoch 4: 0.652, 0.667, 0.662).
# The report's recipe (tau_t 0.04, 2 local crops of 4 here, out_dim 4096) needs far more steps than a test has;
# at this scale a sharper teacher (tau_t 0.01) keeps the teacher from drifting to uniform outputs early.
SANITY = ["--preset", "toy", "--epochs", "8", "--warmup-epochs", "2", "--num-classes", "7", "--knn-every", "4",
          "--seed", "1"]


@pytest.mark.slow
def test_short_run_raises_teacher_knn_above_random_init(tmp_path):
    from utils.runlog import read_jsonl
    from tools.toydata import make_p1_sanity_data

    root = make_p1_sanity_data(tmp_path / "data")  # 512 unlabeled + 7 x (30 + 30) labeled, 32 px
    out = tmp_path / "run"
    result = run_main(dino, ["--data-dir", str(root / "mini" / "train"), "--output-dir", str(out),
                       "--knn-train-csv", str(root / "office" / "train.csv"),
                       "--knn-val-csv", str(root / "office" / "val.csv")] + SANITY)
    knn = {r["epoch"]: r["knn_acc"] for r in read_jsonl(out / "log.jsonl") if "knn_acc" in r}
    assert sorted(knn) == [0, 4, 8]
    # measured for this seed: 0.590 -> 0.667 (one thread), 0.590 -> 0.662 (two threads; 0.619 at epoch 4)
    assert result["initial_knn_acc"] == knn[0] and result["final_knn_acc"] == knn[8]
    assert knn[8] >= knn[0] + 0.04, knn


def test_batched_aug_path_trains_resumes_exactly_and_caches_the_decoded_images(toy_p1, tmp_path, capsys):
    """--batched-aug: images decoded once (cached as .npy), views made on the device in batches; a resumed run
    follows the uninterrupted one exactly, and the per-image path gives a loss of the same size."""
    cache = tmp_path / "mini_uint8.npy"
    _run(toy_p1, tmp_path / "full", "--epochs", "2", "--batched-aug", "--image-cache", str(cache))
    assert cache.is_file()
    from utils.datasets import InMemoryImages

    images = InMemoryImages(toy_p1 / "mini" / "train", cache_path=cache)
    assert images.from_cache and images.images.shape == (48, 3, 84, 84) and images.images.dtype == torch.uint8
    (tmp_path / "resumed").mkdir()
    shutil.copy(str(tmp_path / "full" / "checkpoint_epoch001.pth"), str(tmp_path / "resumed" / "checkpoint.pth"))
    _run(toy_p1, tmp_path / "resumed", "--epochs", "2", "--batched-aug", "--image-cache", str(cache))
    assert _losses(tmp_path / "resumed") == _losses(tmp_path / "full")[1:]
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pth", "p1_dino")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pth", "p1_dino")
    assert all(torch.equal(a["teacher"][k], b["teacher"][k]) for k in a["teacher"])
    _run(toy_p1, tmp_path / "per_image", "--epochs", "1")
    batched, per_image = _losses(tmp_path / "full")[0], _losses(tmp_path / "per_image")[0]
    # Same model, same first epoch: losses of the same size. Measured (batched - per image) / per image over seeds
    # 0-4: -3.5%..+6.8% (torch 2.14), -4.4%..+5.2% (torch 2.4), so 15% only catches a broken path; the views'
    # distributions are compared exactly in tests/test_gpu_multicrop.py.
    assert abs(batched - per_image) < 0.15 * per_image
