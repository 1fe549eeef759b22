"""p1_ssl_pretrain.py's wiring of the DINO recipe, read back from what each training step really received: the lr
and teacher-momentum schedules against DINO's cosine_scheduler written out, the loss's temperatures and center
momentum, the clipping threshold, the optimizer's weight-decay groups, and a teacher that starts as the student."""
import inspect
import math

import pytest
import torch

import p1_ssl_pretrain as dino
from utils.distributed import unwrap
from helpers import run_main

# 24 images, batch 8: 3 steps per epoch, 2 epochs; every recipe value set away from its default
FLAGS = ["--arch", "resnet18", "--batch-size", "8", "--max-images", "24", "--workers", "0", "--global-crop-size", "32",
         "--local-crop-size", "16", "--local-crops-number", "2", "--out-dim", "64", "--hidden-dim", "64",
         "--bottleneck-dim", "32", "--deterministic", "--epochs", "2", "--warmup-epochs", "1", "--lr", "0.2",
         "--lr-ref-batch", "16", "--min-lr", "0.01", "--momentum-teacher", "0.9", "--weight-decay", "3e-4",
         "--warmup-teacher-temp", "0.02", "--teacher-temp", "0.05", "--warmup-teacher-temp-epochs", "3",
         "--student-temp", "0.2", "--center-momentum", "0.8", "--clip-grad", "2.5"]


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    from tools.toydata import make_p1_data

    data = make_p1_data(tmp_path_factory.mktemp("dino_meaning"), num_classes=4, mini_per_class=12,
                        office_train_per_class=0, office_val_per_class=0, seed=0)
    original = dino.train_step
    signature = inspect.signature(original)
    seen = []

    def recording(*args, **kwargs):
        call = signature.bind(*args, **kwargs)
        call.apply_defaults()
        a = dict(call.arguments)
        record = {k: a[k] for k in ("epoch", "momentum", "clip_grad", "freeze_last_layer")}
        loss_fn, optimizer = a["loss_fn"], a["optimizer"]
        record["teacher_temp"] = loss_fn.teacher_temperature(a["epoch"])
        record["student_temp"], record["center_momentum"] = loss_fn.student_temp, loss_fn.center_momentum
        record["lr"] = [g["lr"] for g in optimizer.param_groups]
        if not seen:
            record["groups"] = [(list(g["params"]), g["weight_decay"], g.get("momentum")) for g in
                                optimizer.param_groups]
            record["student"] = unwrap(a["student"])
            record["same_start"] = all(torch.equal(s, t) for s, t in zip(
                unwrap(a["student"]).state_dict().values(), unwrap(a["teacher"]).state_dict().values()))
        seen.append(record)
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(dino, "train_step", recording)
        patch.setattr("utils.runlog.plot_curves", lambda *a, **k: None)  # the figure only (seconds on a busy CPU)
        run_main(dino, ["--data-dir", str(data / "mini" / "train"), "--output-dir",
                        str(tmp_path_factory.mktemp("dino_out"))] + FLAGS)
    return seen


def _cosine_scheduler(base, final, total, warmup):
    """DINO's utils.cosine_scheduler per step: np.linspace(0, base, warmup), then a half cosine base -> final."""
    ramp = [base * i / (warmup - 1) for i in range(warmup)] if warmup > 1 else [0.0] * warmup
    rest = total - warmup
    return ramp + [final + 0.5 * (base - final) * (1 + math.cos(math.pi * i / rest)) for i in range(rest)]


def test_each_step_gets_dinos_lr_and_teacher_momentum(steps):
    assert len(steps) == 6
    peak = 0.2 * 8 / 16  # the linear scaling rule
    expected_lr = _cosine_scheduler(peak, 0.01, 6, 3)
    for record, lr in zip(steps, expected_lr):
        assert record["lr"] == [pytest.approx(lr, abs=1e-12)] * len(record["lr"])
    expected_momentum = _cosine_scheduler(0.9, 1.0, 6, 0)
    assert [r["momentum"] for r in steps] == pytest.approx(expected_momentum, abs=1e-12)


def test_each_step_gets_the_loss_and_clipping_settings_of_its_flags(steps):
    # teacher temperature: np.linspace(0.02, 0.05, 3) over the warm-up epochs, by epoch
    assert [(r["epoch"], r["teacher_temp"]) for r in steps] == [(0, pytest.approx(0.02))] * 3 + [
        (1, pytest.approx(0.035))] * 3
    assert {(r["student_temp"], r["center_momentum"], r["clip_grad"], r["freeze_last_layer"]) for r in steps} == {
        (0.2, 0.8, 2.5, 1)}


def test_optimizer_decays_weights_only_and_the_teacher_starts_as_the_student(steps):
    first = steps[0]
    assert first["same_start"]
    where = {}
    for params, decay, momentum in first["groups"]:
        assert momentum == 0.9  # DINO's SGD
        for p in params:
            assert id(p) not in where
            where[id(p)] = decay
    trainable = [(n, p) for n, p in first["student"].named_parameters() if p.requires_grad]
    assert len(where) == len(trainable)
    for name, p in trainable:
        assert where[id(p)] == (0.0 if p.ndim == 1 else 3e-4), name  # none on biases and norms
