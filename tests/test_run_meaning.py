"""What the shared run machinery promises the report, checked against independent counts: each training sample's
augmentation is its own and changes every epoch (and a seed replays it, whatever the loader's worker count); the
train order is reshuffled per epoch; under torchrun every validation image is scored exactly once and every rank
holds the pooled metric; the lr set in the optimizer follows the global batch; a resumed epoch continues exactly
where the stopped one was; non-finite losses stop the run before anything claims that epoch; --overwrite and a
fresh start leave nothing of an older run.

torchrun is played in-process: world sizes patched into utils.distributed / torch.distributed, and where ranks
must talk (all_reduce) by threads of one process (``FakeWorld``), never by spawning processes."""
import json
import shutil
from pathlib import Path

import pytest
import torch

import p2_unet
from helpers import run_main
from utils import lifecycle
from utils import segmentation
from utils.checkpoint import check_finite as check_finite_weights
from utils.checkpoint import load_checkpoint, save_atomic
from utils.fileio import SIGNATURES
from utils.datasets import SegmentationDataset
from utils.lifecycle import Run, checkpoint_state
from utils.transforms import seg_train_transform

KIND = "meaning_test"


def make_run(out, *flags):
    """A Run over p2_unet's real flags (the common training flags every trainer shares)."""
    args = p2_unet.get_args_parser().parse_args(["--output-dir", str(out), "--device", "cpu", "--workers", "0"]
                                                + [str(f) for f in flags])
    return Run(args, KIND, {"arch": "toy"})


class Indexed(torch.utils.data.Dataset):
    """Item i -> (i, a draw from torch's global RNG): what every augmentation of the trainers draws from."""

    def __init__(self, length):
        self.length = length

    def __len__(self):
        return self.length

    def __getitem__(self, index):
        return index, torch.rand(())


class Keyed(torch.utils.data.Dataset):
    """A trainer's dataset with each item tagged by its index."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return (index,) + tuple(self.dataset[index])


def epoch_batches(run, loader):
    """{epoch: [(indices, draws) per batch]} over the run's remaining epochs (run.epochs re-seeds each)."""
    seen = {}
    for epoch in run.epochs(loader):
        seen[epoch] = [(batch[0].tolist(), batch[1].tolist()) for batch in loader]
    return seen


# ------------------------------------------------------------------------ per-sample augmentation seeds

@pytest.fixture(scope="module")
def same_tile(toy_p2, tmp_path_factory):
    """Six copies of one training tile and its mask: what differs between their crops is the augmentation only."""
    folder = tmp_path_factory.mktemp("same_tile")
    for i in range(6):
        shutil.copy(str(toy_p2 / "train" / "0003_sat.jpg"), str(folder / "{:04d}_sat.jpg".format(i)))
        shutil.copy(str(toy_p2 / "train" / "0003_mask.png"), str(folder / "{:04d}_mask.png".format(i)))
    return folder


def tile_augmentations(out, folder, workers, seed=0):
    """{(epoch, index): augmented uint8 crop} of p2's training dataset and transform through Run.loader."""
    run = make_run(out, "--epochs", "2", "--seed", seed)
    dataset = Keyed(SegmentationDataset(folder, seg_train_transform(32, 0.25, 0.2)))
    loader = run.loader(dataset, 2, train=True, workers=workers)
    crops = {}
    for epoch in run.epochs(loader):
        for indices, images, _ in loader:
            crops.update({(epoch, int(i)): image for i, image in zip(indices, images)})
    return crops


@pytest.mark.parametrize("workers", [0, 2])
def test_each_sample_and_each_epoch_get_their_own_augmentation_and_the_seed_replays_it(same_tile, tmp_path,
                                                                                         workers):
    crops = tile_augmentations(tmp_path / "a", same_tile, workers)
    assert sorted(crops) == [(e, i) for e in (1, 2) for i in range(6)]
    for epoch in (1, 2):  # one source tile: six different crops/jitters in one epoch
        views = [crops[epoch, i] for i in range(6)]
        assert all(not torch.equal(views[i], views[j]) for i in range(6) for j in range(i))
    assert all(not torch.equal(crops[1, i], crops[2, i]) for i in range(6))  # each sample anew every epoch
    # the same seed replays them, bit for bit, with or without loader workers; another seed does not
    replay = tile_augmentations(tmp_path / "b", same_tile, 2 - workers)
    assert all(torch.equal(crops[key], replay[key]) for key in crops)
    other = tile_augmentations(tmp_path / "c", same_tile, workers, seed=1)
    assert all(not torch.equal(crops[key], other[key]) for key in crops)


def test_the_train_order_is_a_fresh_permutation_every_epoch_and_the_seed_fixes_it(tmp_path):
    run = make_run(tmp_path / "a", "--epochs", "3")
    seen = epoch_batches(run, run.loader(Indexed(10), 2, train=True))
    orders = {e: [i for indices, _ in batches for i in indices] for e, batches in seen.items()}
    assert all(sorted(order) == list(range(10)) for order in orders.values())  # every sample once per epoch
    assert orders[1] != orders[2] and orders[2] != orders[3] and orders[1] != orders[3]
    again = make_run(tmp_path / "b", "--epochs", "3")
    assert epoch_batches(again, again.loader(Indexed(10), 2, train=True)) == seen
    other = make_run(tmp_path / "c", "--epochs", "3", "--seed", "5")
    assert [i for b in epoch_batches(other, other.loader(Indexed(10), 2, train=True))[1] for i in b[0]] != orders[1]


# ----------------------------------------------------------------------------------------- resume exactness

def write_resumable(run_dir, epoch, partial=0, rng=None, **extra):
    """A checkpoint as a trainer leaves it after ``epoch`` epochs (and ``partial`` steps of the next)."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    extra.update({"partial_steps": partial, "rng_state": rng} if partial else {})
    save_atomic(checkpoint_state(KIND, {"arch": "toy"}, {"w": param.detach()}, None, epoch=epoch, step=5 * epoch,
                                 optimizer=optimizer, **extra), run_dir / "checkpoint.pth")
    return optimizer


def test_an_epoch_resumed_mid_way_continues_the_unbroken_runs_batches_and_rng(tmp_path):
    """10 samples, batch 2: the unbroken run's epochs against a run stopped after 2 steps of epoch 2."""
    run = make_run(tmp_path / "full", "--epochs", "3")
    loader = run.loader(Indexed(10), 2, train=True)
    full, draws = {}, {}
    for epoch in run.epochs(loader):
        draws[epoch] = torch.rand(3)  # torch's RNG at the start of each epoch (dropout, mixup draw from it)
        full[epoch] = [(b[0].tolist(), b[1].tolist()) for b in loader]
    torch.manual_seed(1234)
    saved = lifecycle.rng_state(torch.device("cpu"))
    expected_draw = torch.rand(3)
    out = tmp_path / "stopped"
    out.mkdir()
    optimizer = write_resumable(out, epoch=1, partial=2, rng=saved)
    resumed = make_run(out, "--epochs", "3")
    assert resumed.restore(optimizer=optimizer) == {"step": 5}
    loader = resumed.loader(Indexed(10), 2, train=True)
    seen, resumed_draws = {}, {}
    for epoch in resumed.epochs(loader):
        resumed_draws[epoch] = torch.rand(3)
        seen[epoch] = [(b[0].tolist(), b[1].tolist()) for b in loader]
    assert sorted(seen) == [2, 3]
    assert seen[2] == full[2][2:]  # the 2 batches done before the stop are skipped, the rest as unbroken
    assert seen[3] == full[3]  # and the next epoch is whole again
    assert torch.equal(resumed_draws[2], expected_draw)  # the interrupted epoch's RNG continues
    assert torch.equal(resumed_draws[3], draws[3])  # every epoch starts from (seed, epoch)


def test_a_resumed_run_keeps_its_log_up_to_the_checkpoint_and_a_fresh_run_starts_a_fresh_log(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    lines = "".join(json.dumps({"epoch": e, "loss": 1.0}) + "\n" for e in (1, 2, 3))
    (out / "log.jsonl").write_text(lines)  # epoch 3's line written, then killed before its checkpoint
    optimizer = write_resumable(out, epoch=2, best_metric=0.25, best_epoch=1)
    run = make_run(out, "--epochs", "4")
    # the same command again resumes, never restarts, and the best so far is still the one to beat
    assert run.restore(optimizer=optimizer) == {"step": 10, "best_metric": 0.25, "best_epoch": 1}
    assert run.start_epoch == 2 and (out / "checkpoint.pth").is_file()
    run.begin("resumed")
    assert [r["epoch"] for r in run.log.records()] == [1, 2]
    # no checkpoint (a run killed in its first epoch, or deleted): the new run's log holds only its own epochs
    (out / "checkpoint.pth").unlink()
    (out / "log.jsonl").write_text(lines)
    fresh = make_run(out, "--epochs", "4")
    assert fresh.restore(optimizer=optimizer) == {}
    fresh.begin("fresh")
    fresh.log.log({"epoch": 1, "loss": 0.5})
    assert [(r["epoch"], r["loss"]) for r in fresh.log.records()] == [(1, 0.5)]


def test_a_second_stop_in_the_same_epoch_counts_the_steps_of_both(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    torch.manual_seed(7)
    optimizer = write_resumable(out, epoch=1, partial=3, rng=lifecycle.rng_state(torch.device("cpu")))
    run = make_run(out, "--epochs", "3")
    run.restore(optimizer=optimizer)
    with pytest.raises(SystemExit) as stop:
        run.save_and_exit({"epoch": 1, "model": {}, "format_version": 1, "kind": KIND, "model_config": {}},
                          done=2, steps_per_epoch=10)
    assert stop.value.code == 128 + 15  # SIGTERM when no signal was recorded
    ckpt = torch.load(str(out / "checkpoint.pth"), weights_only=True)
    assert ckpt["partial_steps"] == 5 and "cpu" in ckpt["rng_state"]


# -------------------------------------------------------------------------------------- saving order

def test_an_epochs_files_then_its_log_line_then_the_checkpoint_and_numbered_copies_every_save_every(tmp_path,
                                                                                                    monkeypatch):
    run = make_run(tmp_path / "run", "--save-every", "2")
    order = []
    real_save = lifecycle.save_atomic
    monkeypatch.setattr(lifecycle, "save_atomic", lambda obj, path: (order.append(path.name), real_save(obj, path)))
    real_log = run.log.log
    monkeypatch.setattr(run.log, "log", lambda record: (order.append("log"), real_log(record)))
    for epoch in (1, 2, 3, 4):
        run.end_epoch({"epoch": epoch}, epoch, {"epoch": epoch}, files={"best.pth": {"epoch": epoch}})
    per_epoch = ["best.pth", "log", "checkpoint.pth"]
    assert order == per_epoch * 2 + ["checkpoint_epoch002.pth"] + per_epoch * 2 + ["checkpoint_epoch004.pth"]
    assert torch.load(str(tmp_path / "run" / "checkpoint_epoch002.pth"), weights_only=True) == {"epoch": 2}


# ----------------------------------------------------------------------------- --overwrite, non-finite

def test_overwrite_leaves_no_file_of_the_old_run_and_keeps_the_users(tmp_path):
    out = tmp_path / "run"
    (out / "snapshots" / "epoch_002").mkdir(parents=True)
    (out / "tensorboard").mkdir()
    # every name the three trainers write (p2: snapshots, p1_finetune: epoch_NNN.pth, DINO: backbone.pth and
    # --save-every copies), an interrupted atomic write's temp file, and files that are the user's
    written = ["checkpoint.pth", "checkpoint_epoch002.pth", "checkpoint_epoch100.pth", "best.pth", "epoch_003.pth",
               "snapshot_epoch002.pth", "backbone.pth", "log.jsonl", "curves.png", "snapshots.png", "args.json",
               "results.json", ".checkpoint.pth.a1b2c3.tmp"]
    mine = ["notes.txt", "my_best.pth", "checkpoint.pth.bak", "log.jsonl.old"]

    def fill(name):  # what a file of that name starts with when a run wrote it (--overwrite checks that too)
        (out / name).write_bytes(SIGNATURES.get(Path(name).suffix, b"") + b"x")

    for name in written + mine:
        fill(name)
    make_run(out, "--overwrite")
    # the lock file the new run holds (utils.lifecycle.LOCK_FILE) is that run's, not the old one's
    assert sorted(p.name for p in out.iterdir()) == sorted(mine + [lifecycle.LOCK_FILE])
    # without --overwrite only the temp file goes
    for name in written:
        fill(name)
    (out / "snapshots").mkdir()
    with pytest.raises(ValueError):  # the junk checkpoint.pth is read to resume it (and refused)
        make_run(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(set(written + mine + ["snapshots", lifecycle.LOCK_FILE])
                                                           - {".checkpoint.pth.a1b2c3.tmp"})


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_loss_stops_the_run_and_names_the_kept_checkpoint(tmp_path, value):
    run = make_run(tmp_path / "run")
    with pytest.raises(SystemExit, match="became {} in epoch 3".format(value)):
        run.check_finite(value, 3)
    run.check_finite(1e30, 3)  # large but finite goes on


def test_checkpoints_with_infinite_weights_are_refused_as_well_as_nan(tmp_path):
    for value in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(ValueError, match=r"^checkpoint .*c\.pth holds non-finite weights \(NaN/inf\) in 1 "
                                             r"tensor\(s\), e\.g\. bad: the run"):
            check_finite_weights({"ok": torch.zeros(2), "bad": torch.tensor([0.0, value])}, tmp_path / "c.pth")
    check_finite_weights({"ok": torch.zeros(2), "steps": torch.tensor([3])}, tmp_path / "c.pth")


@pytest.mark.parametrize("poison", [float("inf"), float("nan")])
def test_a_loss_turning_non_finite_ends_the_run_before_a_checkpoint_claims_that_epoch(toy_p2, tmp_path,
                                                                                    monkeypatch, poison):
    """The loss of epoch 2 gets +inf (or NaN) added: the gradients stay finite, only the value says it."""
    calls = []
    real_loss = segmentation.seg_loss

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss + poison if len(calls) > 6 else loss  # 24 tiles / batch 4: 6 steps per epoch

    monkeypatch.setattr(segmentation, "seg_loss", poisoned)
    out = tmp_path / "run"
    flags = ["--data-dir", toy_p2, "--output-dir", out, "--epochs", "3", "--batch-size", "4", "--crop-size", "32",
             "--base-width", "4", "--depth", "2", "--workers", "0", "--snapshot-epochs", "--save-every", "1"]
    with pytest.raises(SystemExit, match="became {} in epoch 2".format(poison)):
        run_main(p2_unet, flags)
    assert load_checkpoint(out / "checkpoint.pth")["epoch"] == 1
    assert load_checkpoint(out / "best.pth")["epoch"] == 1
    assert sorted(p.name for p in out.glob("checkpoint_epoch*.pth")) == ["checkpoint_epoch001.pth"]
    assert [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()] == [1]


def test_training_batches_are_full_and_a_set_smaller_than_one_batch_still_trains(tmp_path):
    """drop_last only when a full batch exists: 7 samples, batch 2 -> 3 batches of 2 (a batch of 1 breaks
    BatchNorm); 3 samples, batch 4 -> one batch of 3, not an epoch without a step."""
    run = make_run(tmp_path / "a", "--epochs", "1")
    batches = epoch_batches(run, run.loader(Indexed(7), 2, train=True))[1]
    assert [len(indices) for indices, _ in batches] == [2, 2, 2]
    assert len({i for indices, _ in batches for i in indices}) == 6
    run = make_run(tmp_path / "b", "--epochs", "1")
    assert [len(indices) for indices, _ in epoch_batches(run, run.loader(Indexed(3), 4, train=True))[1]] == [3]


def test_a_run_seeds_torch_numpy_and_python_from_its_seed(tmp_path):
    """The model's initial weights come from torch's RNG right after Run(): the same --seed, the same draws."""
    import random

    import numpy as np

    def draws(seed):
        make_run(tmp_path / str(seed), "--seed", seed)
        return torch.rand(4).tolist(), np.random.rand(2).tolist(), random.random()

    assert draws(3) == draws(3)
    assert all(a != b for a, b in zip(draws(3), draws(4)))


def test_a_first_signal_asks_for_a_stop_on_stderr_and_a_second_aborts(capsys):
    import signal

    from utils.lifecycle import StopRequest

    stop = StopRequest(every=1)
    stop._handle(signal.SIGTERM, None)
    assert stop.signum == signal.SIGTERM
    out = capsys.readouterr()
    assert out.out == "" and out.err == ("\nSIGTERM received: finishing this step, saving a checkpoint, then stopping "
                                         "(send it again to abort)\n")
    with pytest.raises(KeyboardInterrupt):
        stop._handle(signal.SIGINT, None)


@pytest.mark.parametrize("answer, expected", [(True, True), (False, False), (AttributeError, False),
                                              (RuntimeError, False)])
def test_cpu_bf16_is_used_only_where_onednn_says_it_has_the_kernels(monkeypatch, answer, expected):
    from utils import precision

    def ask():
        if isinstance(answer, type):
            raise answer("no mkldnn")
        return answer

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", ask, raising=False)
    assert precision.cpu_bf16_supported() is expected
    cpu = torch.device("cpu")
    assert precision.amp_dtype(cpu, True, cpu=True) == (torch.bfloat16 if expected else None)
    assert precision.amp_dtype(cpu, True) is None and precision.amp_dtype(cpu, False, cpu=True) is None


def test_autocast_runs_matmuls_in_the_asked_dtype_and_fp32_runs_stay_fp32():
    from utils import precision

    cpu = torch.device("cpu")
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with precision.autocast(cpu, None):
        assert (a @ b).dtype == torch.float32
    with precision.autocast(cpu, torch.bfloat16):
        assert (a @ b).dtype == torch.bfloat16
    assert precision.fast_layout(cpu, None) is False and precision.fast_layout(cpu, torch.bfloat16) is True
    assert precision.fast_layout(torch.device("cuda"), None) is True  # (a device object needs no GPU)
