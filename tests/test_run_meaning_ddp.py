"""torchrun's promises, played in-process: the validation shards of the ranks are the validation set exactly once
(also when its length is not a multiple of the world size), every rank ends validation with the metric of the whole
set (the one single process computes), the train shards are disjoint and reshuffled per epoch, and the lr set in
the optimizer is --lr x global batch / --lr-ref-batch.

``FakeWorld`` plays a process group with threads of this process: torch.distributed's rank / world size answer per
thread, all_reduce sums the ranks' tensors, barrier waits for all; no process is spawned."""
import copy
import threading

import pytest
import torch
import torch.distributed as dist

import p1_finetune
import p1_ssl_pretrain
import p2_unet
from helpers import run_main
from tools.toydata import make_p1_data
from utils import distributed as dist_utils
from utils import segmentation
from utils.datasets import SegmentationDataset
from utils.lifecycle import Run
from utils.metrics import confusion_matrix, iou_from_confusion
from utils.models import build_seg_model


class FakeWorld(object):
    """``size`` ranks as threads of this process, through torch.distributed's own names (patched)."""

    def __init__(self, monkeypatch, size):
        self.size, self.local = size, threading.local()
        self.slots = [None] * size
        self.gate = threading.Barrier(size, timeout=60)
        monkeypatch.setattr(dist, "is_initialized", lambda: True)
        monkeypatch.setattr(dist, "get_rank", lambda group=None: self.local.rank)
        monkeypatch.setattr(dist, "get_world_size", lambda group=None: size)
        monkeypatch.setattr(dist, "all_reduce", self.all_reduce)
        monkeypatch.setattr(dist, "barrier", lambda *a, **k: self.gate.wait())

    def all_reduce(self, tensor, op=None, group=None, async_op=False):
        self.slots[self.local.rank] = tensor.detach().clone()
        self.gate.wait()
        total = torch.stack(self.slots).sum(0)
        self.gate.wait()
        tensor.copy_(total)

    def run(self, fn):
        """[fn(rank) for every rank], the ranks running at once."""
        results, errors = [None] * self.size, []

        def target(rank):
            self.local.rank = rank
            try:
                results[rank] = fn(rank)
            except BaseException as exc:  # noqa: B902 - re-raised in the test's thread
                errors.append(exc)
                self.gate.abort()

        threads = [threading.Thread(target=target, args=(r,)) for r in range(self.size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results


def make_run(out, *flags):
    args = p2_unet.get_args_parser().parse_args(["--output-dir", str(out), "--device", "cpu", "--workers", "0"]
                                                + [str(f) for f in flags])
    return Run(args, "meaning_test", {"arch": "toy"})


def as_rank(run, rank, world):
    """The Run of process ``rank`` of ``world`` (the loader builds that rank's shard)."""
    ranked = copy.copy(run)
    ranked.rank, ranked.world, ranked.main = rank, world, rank == 0
    return ranked


# ------------------------------------------------------------------------------------- validation shards

@pytest.mark.parametrize("length, world", [(7, 2), (8, 2), (10, 3), (2, 3)])
def test_the_validation_shards_of_all_ranks_are_the_validation_set_exactly_once(tmp_path, length, world):
    run = make_run(tmp_path)
    seen = []
    for rank in range(world):
        loader = as_rank(run, rank, world).loader(list(range(length)), 2, train=False)
        seen += [int(i) for batch in loader for i in batch]
    assert sorted(seen) == list(range(length))  # no image twice (padding), none dropped (drop_last)


@pytest.fixture(scope="module")
def val_tiles(toy_p2):
    return SegmentationDataset(toy_p2 / "validation")


def tiny_unet():
    config = {"arch": "unet", "num_classes": 7, "base_width": 4, "depth": 2, "drop_skip": [], "bilinear": False}
    torch.manual_seed(3)
    model = build_seg_model(config).eval()
    with torch.no_grad():  # a random U-Net answers one class everywhere; vary its last layer so all classes appear
        for p in model.parameters():
            p.mul_(4.0)
    return model, config


@pytest.mark.parametrize("length", [7, 8])
def test_every_rank_ends_validation_with_the_miou_of_the_whole_set(monkeypatch, tmp_path, val_tiles, length):
    model, config = tiny_unet()
    subset = torch.utils.data.Subset(val_tiles, list(range(length)))
    # independent: predict every tile alone, pool one confusion matrix by hand, IoU as graded
    with torch.no_grad():
        mat = sum(confusion_matrix(segmentation.predict_classes(model, image[None], config), mask)
                  for image, mask in subset)
    whole = iou_from_confusion(mat)
    run = make_run(tmp_path)
    world = FakeWorld(monkeypatch, 2)
    results = world.run(lambda rank: segmentation.evaluate(
        model, as_rank(run, rank, 2).loader(subset, 2, train=False), torch.device("cpu"), None, config))
    for result in results:
        assert result["val_miou"] == pytest.approx(whole["miou"], abs=1e-12)
        assert result["val_iou"] == pytest.approx(whole["iou"], abs=1e-12, nan_ok=True)
    shard_only = iou_from_confusion(sum(confusion_matrix(segmentation.predict_classes(model, image[None], config),
                                                         mask) for image, mask in list(subset)[::2]))
    assert shard_only["miou"] != pytest.approx(whole["miou"])  # the test can tell one shard from the whole


def test_every_rank_ends_validation_with_the_accuracy_of_the_whole_set(monkeypatch, tmp_path):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (7, 3, 4, 4), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 1, 0, 1, 1, 1])
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(48, 2)).eval()
    data = torch.utils.data.TensorDataset(images, labels)
    with torch.no_grad():  # independent: the whole set in one batch
        expected = float((model(p1_finetune.normalize(images)).argmax(1) == labels).float().mean())
    run = make_run(tmp_path)
    world = FakeWorld(monkeypatch, 2)
    results = world.run(lambda rank: p1_finetune.evaluate(
        model, as_rank(run, rank, 2).loader(data, 2, train=False), torch.device("cpu"), None))
    assert [r["val_acc"] for r in results] == [pytest.approx(expected)] * 2
    assert expected not in (0.0, 1.0)


# ----------------------------------------------------------------------------------------- train shards

def test_train_shards_under_torchrun_are_disjoint_equal_and_reshuffled_every_epoch(monkeypatch):
    world = FakeWorld(monkeypatch, 2)

    def shards(seed):
        def one_rank(rank):
            sampler = dist_utils.train_sampler(list(range(9)), seed=seed)
            orders = []
            for epoch in (1, 2):
                dist_utils.start_epoch(sampler, seed, epoch)
                orders.append([index for index, _ in sampler])
            return orders
        return one_rank

    (a1, a2), (b1, b2) = world.run(shards(4))
    for a, b in ((a1, b1), (a2, b2)):
        assert len(a) == len(b) == 4 and not set(a) & set(b)  # drop_last: 9 -> 2 x 4, no sample on both ranks
    assert a1 != a2 and b1 != b2
    # the shuffle is the run's --seed's: the same seed replays it, other seeds give other orders
    assert world.run(shards(4)) == [[a1, a2], [b1, b2]]
    assert all(world.run(shards(seed))[0] != [a1, a2] for seed in (0, 5, 6))


# --------------------------------------------------------------------------------------- lr and world size

class FirstStep(Exception):
    pass


@pytest.fixture(scope="module")
def office(tmp_path_factory):
    return make_p1_data(tmp_path_factory.mktemp("p1"), num_classes=2, mini_per_class=6, office_train_per_class=6,
                        office_val_per_class=2, seed=0)


def trainer_flags(trainer, toy_p2, office):
    if trainer is p2_unet:
        return ["--data-dir", toy_p2, "--crop-size", "32", "--base-width", "4", "--depth", "2"]
    if trainer is p1_finetune:
        return ["--data-dir", office / "office", "--arch", "resnet18", "--num-classes", "2", "--image-size", "32",
                "--hidden-dim", "8", "--backbone", "none", "--setting", "A"]
    return ["--data-dir", office / "mini" / "train", "--arch", "resnet18", "--out-dim", "16", "--hidden-dim", "16",
            "--bottleneck-dim", "8", "--global-crop-size", "32", "--local-crop-size", "16",
            "--local-crops-number", "1"]


@pytest.mark.parametrize("world", [1, 2])
@pytest.mark.parametrize("trainer", [p2_unet, p1_finetune, p1_ssl_pretrain], ids=["p2", "finetune", "dino"])
def test_the_lr_in_the_optimizer_at_the_first_step_is_lr_times_the_global_batch_over_the_reference(
        toy_p2, office, tmp_path, monkeypatch, trainer, world):
    monkeypatch.setattr(dist_utils, "get_world_size", lambda: world)  # one process that believes it is 1 of 2
    seen = []

    def first_step(self, *args, **kwargs):
        seen.append([group["lr"] for group in self.param_groups])
        raise FirstStep

    monkeypatch.setattr(torch.optim.SGD, "step", first_step)
    monkeypatch.setattr(torch.optim.AdamW, "step", first_step)
    flags = trainer_flags(trainer, toy_p2, office) + [
        "--output-dir", tmp_path / "run", "--epochs", "2", "--batch-size", "3", "--lr", "0.01", "--lr-ref-batch",
        "4", "--warmup-epochs", "0", "--workers", "0", "--device", "cpu"]
    with pytest.raises(FirstStep):
        run_main(trainer, flags)
    # independent: the linear scaling rule by hand, 3 images per process
    assert seen == [[pytest.approx(0.01 * 3 * world / 4)] * len(seen[0])]


# ------------------------------------------------------------------------------------ SIGTERM under torchrun

def test_a_signal_on_one_rank_stops_every_rank_at_the_same_step(monkeypatch):
    """Only rank 1 got the SIGTERM (a scheduler signals one process first): both ranks must stop after the same
    step, the first multiple of --print-freq, or the other rank waits forever in its next collective."""
    from utils.lifecycle import StopRequest

    world = FakeWorld(monkeypatch, 2)

    def answers(rank):
        stop = StopRequest(every=3)
        if rank == 1:
            stop.signum = 15
        return [stop.requested(step) for step in range(1, 7)]

    assert world.run(answers) == [[False, False, True, False, False, True]] * 2
    alone = StopRequest(every=3)  # alone (no process group): at once, whatever the step
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    assert not alone.requested(1)
    alone.signum = 2
    assert alone.requested(1)


def test_unwrap_reaches_the_plain_model_inside_torch_compile():
    """--compile wraps the model in an OptimizedModule; checkpoints and evaluation must see the plain model's
    names (no ``_orig_mod.`` prefix) or a compiled run's best.pth would not load for grading."""
    net = torch.nn.Linear(2, 2)
    assert dist_utils.unwrap(net) is net
    compiled = torch.compile(net)
    assert compiled is not net and dist_utils.unwrap(compiled) is net
    assert set(dist_utils.unwrap(compiled).state_dict()) == {"weight", "bias"}


def test_a_classifier_loss_turning_non_finite_stops_with_its_epoch_and_keeps_the_last_good_checkpoint(
        office, tmp_path, monkeypatch):
    """As test_run_meaning's for the U-Net (and test_p1_dino_run's for DINO): the loss of epoch 2 turns NaN; the
    run stops with one line naming the epoch, and the resumable checkpoint is still epoch 1's."""
    from types import SimpleNamespace

    from utils.checkpoint import load_checkpoint

    calls, functional = [], p1_finetune.F

    def cross_entropy(*args, **kwargs):
        calls.append(1)
        loss = functional.cross_entropy(*args, **kwargs)
        return loss + float("nan") if len(calls) > 3 else loss  # 12 images / batch 4: 3 steps an epoch

    monkeypatch.setattr(p1_finetune, "F", SimpleNamespace(one_hot=functional.one_hot, cross_entropy=cross_entropy))
    out = tmp_path / "run"
    flags = trainer_flags(p1_finetune, None, office) + ["--output-dir", out, "--epochs", "3", "--batch-size", "4",
                                                        "--workers", "0", "--print-freq", "1", "--device", "cpu"]
    with pytest.raises(SystemExit, match="the training loss became nan in epoch 2"):
        run_main(p1_finetune, flags)
    assert load_checkpoint(out / "checkpoint.pth")["epoch"] == 1
