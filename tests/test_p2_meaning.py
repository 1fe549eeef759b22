"""Problem 2's training recipe against independent computations: the loss as written out by hand, one training
epoch replayed step by step, evaluation pooled as graded, the report's snapshots, and what fit() keeps."""
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import p2_deeplab
import p2_unet
from helpers import run_main
from utils import segmentation
from utils.segmentation import evaluate, seg_loss, train_one_epoch

IGNORE = 255
# ImageNet statistics in 0..255 units, written out: what every model of problem 2 must be fed
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


def _targets(shape, seed, ignored=0.2, classes=7):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, classes, shape, generator=g)
    target[torch.rand(shape, generator=g) < ignored] = IGNORE
    return target


# ---------------------------------------------------------------------------------------------- the loss
def _hand_ce(logits, target):
    # per-pixel negative log-likelihood of the label, averaged over the labelled pixels only
    logp = logits.log_softmax(1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    t = target.reshape(-1)
    keep = t != IGNORE
    return -logp[keep].gather(1, t[keep].unsqueeze(1)).mean()


def _hand_dice(logits, target):
    # soft Dice per class (smoothing 1) over the labelled pixels only, 1 - mean over the classes
    probs = logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    t = target.reshape(-1)
    keep = t != IGNORE
    probs, t = probs[keep], t[keep]
    losses = []
    for c in range(logits.shape[1]):
        p, g = probs[:, c], (t == c).float()
        losses.append(1 - (2 * (p * g).sum() + 1) / (p.sum() + g.sum() + 1))
    return torch.stack(losses).mean()


def _hand_focal(logits, target):
    logp = logits.log_softmax(1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    t = target.reshape(-1)
    keep = t != IGNORE
    logpt = logp[keep].gather(1, t[keep].unsqueeze(1)).squeeze(1)
    return (-(1 - logpt.exp()) ** 2 * logpt).mean()


HAND_LOSS = {"ce": _hand_ce, "ce+dice": lambda lg, t: _hand_ce(lg, t) + _hand_dice(lg, t), "focal": _hand_focal}


@pytest.mark.parametrize("kind", sorted(HAND_LOSS))
def test_seg_loss_equals_the_hand_written_loss_with_ignored_pixels_left_out(kind):
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 5, 6) * 2
    target = _targets((2, 5, 6), seed=1, ignored=0.3)
    assert (target == IGNORE).any() and (target != IGNORE).any()
    assert torch.allclose(seg_loss(logits, target, kind), HAND_LOSS[kind](logits, target), atol=1e-6)
    # the ignored pixels really are left out: whatever the logits there, the loss stays the same
    changed = logits.clone()
    changed[(target == IGNORE).unsqueeze(1).expand_as(logits)] = 9.0
    assert torch.allclose(seg_loss(changed, target, kind), seg_loss(logits, target, kind), atol=1e-6)


# ------------------------------------------------------------------------------------ one training epoch
class _LogitModel(torch.nn.Module):
    """Its logits are parameters (any input size broadcast): the loss and the SGD step can be replayed by hand.
    It records what it was fed, its mode, and the optimizer's learning rate at each forward."""

    def __init__(self, aux=True):
        super().__init__()
        torch.manual_seed(0)
        self.out = torch.nn.Parameter(torch.randn(1, 7, 4, 4))
        self.aux = torch.nn.Parameter(torch.randn(1, 7, 4, 4)) if aux else None
        self.seen, self.modes, self.lrs = [], [], []
        self.optimizer = None

    def forward(self, x):
        self.seen.append(x.detach().clone())
        self.modes.append(self.training)
        self.lrs.append([g["lr"] for g in self.optimizer.param_groups])
        out = {"out": self.out.expand(x.shape[0], -1, -1, -1)}
        if self.aux is not None:
            out["aux"] = self.aux.expand(x.shape[0], -1, -1, -1)
        return out


def _fake_run():
    stop = SimpleNamespace(requested=lambda batches, device: False)
    return SimpleNamespace(device=torch.device("cpu"), dtype=None, stop=stop, carried_sums=lambda sums: sums)


def _batches(count, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 256, (batch, 3, 4, 4), generator=g, dtype=torch.uint8), _targets((batch, 4, 4), seed + i))
            for i in range(count)]


def _train(model, batches, loss, aux_weight, first_step=0, lr_at=lambda step: 0.1):
    from utils.precision import make_grad_scaler

    optimizer = torch.optim.SGD(model.parameters(), lr=123.0)  # the trainer sets every step's lr itself
    model.optimizer = optimizer
    args = SimpleNamespace(epochs=1, loss=loss, aux_weight=aux_weight, print_freq=1, batch_size=2)
    return train_one_epoch(model, batches, optimizer, make_grad_scaler(None), args, _fake_run(), 1, first_step,
                           lr_at)


@pytest.mark.parametrize("kind", sorted(HAND_LOSS))
def test_the_training_loss_is_the_main_loss_plus_half_the_aux_loss(kind):
    """DeepLab's recipe: main loss + 0.5 x the auxiliary head's loss, both of the chosen kind (torchvision's
    reference); 0.5 is p2_deeplab.py's default."""
    aux_weight = p2_deeplab.get_args_parser().parse_args([]).aux_weight
    assert aux_weight == 0.5
    batches = _batches(1)
    model = _LogitModel()
    with torch.no_grad():
        out, aux = model.out.expand(2, -1, -1, -1).clone(), model.aux.expand(2, -1, -1, -1).clone()
    stats = _train(model, batches, kind, aux_weight)
    target = batches[0][1]
    expected = HAND_LOSS[kind](out, target) + 0.5 * HAND_LOSS[kind](aux, target)
    assert stats["train_loss"] == pytest.approx(float(expected), rel=1e-5)
    # --aux-weight 0 (and a model without an aux head): the main loss alone
    model = _LogitModel()
    assert _train(model, batches, kind, 0.0)["train_loss"] == pytest.approx(float(HAND_LOSS[kind](out, target)),
                                                                            rel=1e-5)


def test_each_step_feeds_normalised_images_in_train_mode_at_the_scheduled_lr_and_steps_on_its_own_batch():
    """Three SGD steps replayed by hand: each batch's gradient alone (no accumulation), at lr_at(step) of a step
    counter that continues from the epoch's first step; the model in train mode, fed ImageNet-normalised pixels."""
    batches = _batches(3, seed=5)
    model = _LogitModel(aux=False)
    model.eval()  # as evaluate() leaves it
    start = model.out.detach().clone()
    stats = _train(model, batches, "ce", 0.5, first_step=7, lr_at=lambda step: 0.01 * (step + 1))
    assert stats["step"] == 10 and stats["batches"] == 3
    assert model.modes == [True, True, True]
    assert [lrs[0] for lrs in model.lrs] == pytest.approx([0.08, 0.09, 0.10])
    for seen, (images, _) in zip(model.seen, batches):
        assert torch.allclose(seen, (images.float() - MEAN) / STD, atol=1e-5)
    # replay: w <- w - lr_step * d(CE of that batch)/dw
    w = start.clone()
    losses = []
    for step, (_, target) in zip((7, 8, 9), batches):
        w = w.detach().requires_grad_(True)
        loss = _hand_ce(w.expand(2, -1, -1, -1), target)
        (grad,) = torch.autograd.grad(loss, w)
        losses.append(float(loss.detach()))
        w = w - 0.01 * (step + 1) * grad
    assert torch.allclose(model.out.detach(), w.detach(), atol=1e-6)
    assert stats["train_loss"] == pytest.approx(sum(losses) / 3, rel=1e-5)


# ------------------------------------------------------------------------------------------- evaluation
class _ScriptedPredictor(torch.nn.Module):
    """Predicts the class maps it was given, one batch after another (in eval mode; garbage in train mode)."""

    def __init__(self, preds):
        super().__init__()
        self.preds = list(preds)
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        pred = self.preds.pop(0) if not self.training else torch.zeros(x.shape[0], *x.shape[-2:], dtype=torch.long)
        return {"out": F.one_hot(pred, 7).permute(0, 3, 1, 2).float() * 10}


def _graded_miou(preds, labels):
    # docs/data.md: counts pooled over the whole set; IoU_c = TP / (#pred==c + #label==c - TP) for c in 0..5;
    # unknown (6) not averaged but counted; red (ignore) pixels left out
    pred, label = np.concatenate([p.ravel() for p in preds]), np.concatenate([t.ravel() for t in labels])
    keep = label != IGNORE
    pred, label = pred[keep], label[keep]
    ious = []
    for c in range(6):
        tp = np.sum((pred == c) & (label == c))
        ious.append(tp / (np.sum(pred == c) + np.sum(label == c) - tp))
    return float(np.mean(ious))


def test_evaluate_pools_the_counts_over_the_whole_set_in_eval_mode():
    g = torch.Generator().manual_seed(3)
    # batches of different sizes and contents: per-batch means differ from the pooled value
    labels = [torch.randint(0, 7, (2, 6, 6), generator=g), torch.randint(0, 3, (1, 6, 6), generator=g),
              _targets((3, 6, 6), seed=4)]
    preds = [torch.where(torch.rand(t.shape, generator=g) < 0.6, t.clamp(max=6), torch.randint(0, 7, t.shape,
                                                                                                 generator=g))
             for t in labels]
    loader = [(torch.zeros(t.shape[0], 3, 6, 6, dtype=torch.uint8), t) for t in labels]
    model = _ScriptedPredictor(preds)
    model.train()
    result = evaluate(model, loader, torch.device("cpu"), None, {"arch": "deeplabv3"})
    expected = _graded_miou([p.numpy() for p in preds], [t.numpy() for t in labels])
    assert result["val_miou"] == pytest.approx(expected, abs=1e-12)
    # the data tells the pooled value from one batch's (a matrix restarted per batch) and from a mean of batches
    first = _graded_miou([preds[0].numpy()], [labels[0].numpy()])
    last = _graded_miou([preds[2].numpy()], [labels[2].numpy()])
    assert abs(first - expected) > 1e-3 and abs(last - expected) > 1e-3
    assert len(result["val_iou"]) == 6


# --------------------------------------------------------------------------------------- report snapshots
class _Brightness(torch.nn.Module):
    """Class 0 (urban) where the normalised red channel is positive (a bright tile), class 1 where negative."""

    def forward(self, x):
        assert x.shape[:2] == (1, 3), x.shape  # one RGB image at a time
        red = x[:, :1] * 10
        return {"out": torch.cat([red, -red, torch.full_like(red, -50).expand(-1, 5, -1, -1)], 1)}


def test_snapshots_are_predicted_on_the_validation_tiles_of_the_report_names(tmp_path):
    """The report's mask snapshots show validation images 0018/0065/0109 and 0013/0065/0104 (docs/data.md); a
    training tile of the same name is another image and must not be drawn."""
    args = p2_deeplab.get_args_parser().parse_args(["--data-dir", str(tmp_path / "data")])
    assert {"0018_sat.jpg", "0065_sat.jpg", "0109_sat.jpg", "0013_sat.jpg", "0104_sat.jpg"} <= set(
        args.snapshot_images)
    assert args.snapshot_epochs == [1, 50, 100]
    bright = {}
    for split in ("train", "validation"):
        (tmp_path / "data" / split).mkdir(parents=True)
        for k, name in enumerate(args.snapshot_images):
            value = 230 if (k % 2 == 0) == (split == "validation") else 20  # the two splits disagree everywhere
            Image.new("RGB", (32, 24), (value, value, value)).save(str(tmp_path / "data" / split / name))
            Image.new("RGB", (32, 24), (0, 255, 0)).save(str(tmp_path / "data" / split / name.replace(
                "_sat.jpg", "_mask.png")))
            if split == "validation":
                bright[name.replace("_sat.jpg", "")] = value > 128
    logged = []
    run = SimpleNamespace(out=tmp_path / "run", args=args, device=torch.device("cpu"), config={"arch": "deeplabv3"},
                          dtype=None, log=SimpleNamespace(image=lambda *a: logged.append(a)))
    segmentation.snapshot(_Brightness(), run, 50)
    folder = tmp_path / "run" / "snapshots" / "epoch_050"
    assert sorted(p.name for p in folder.iterdir()) == sorted(i + "_mask.png" for i in bright)
    for image_id, is_bright in bright.items():
        rgb = np.asarray(Image.open(str(folder / (image_id + "_mask.png"))).convert("RGB"))
        expected = (0, 255, 255) if is_bright else (255, 255, 0)  # urban cyan / agriculture yellow
        assert rgb.shape == (24, 32, 3) and (rgb == expected).all(), image_id
    assert (tmp_path / "run" / "snapshots.png").is_file() and len(logged) == 1
    segmentation.snapshot(_Brightness(), run, 50)  # a resumed run redoing epoch 50 writes it again
    assert sorted(p.name for p in folder.iterdir()) == sorted(i + "_mask.png" for i in bright) and len(logged) == 2
    # the grid's colours are the graded palette, out-of-range values drawn as the nearest class
    from utils.masks import PALETTE
    assert (segmentation._palette_rgb(np.array([[0, 1, 2, 3], [4, 5, 6, 9]])) ==
            np.asarray(PALETTE)[[[0, 1, 2, 3], [4, 5, 6, 6]]]).all()


# ------------------------------------------------------------------------------------------------- fit()
@pytest.mark.parametrize("shape", ["cosine", "poly"])
def test_fit_wires_the_recipe_keeps_the_best_miou_epoch_and_snapshots_the_asked_epochs(toy_p2, tmp_path,
                                                                                         monkeypatch, capsys, shape):
    """p2_unet.py's whole epoch loop with training and evaluation replaced by recorders: the optimizer built from
    the flags, the per-step lr schedule (warm-up then cosine over every step of every epoch), the step counter
    carried across epochs, validation on the validation split, best.pth = the epoch of the highest val mIoU (not
    the lowest loss, not the last), and the snapshot files of exactly the asked epoch."""
    calls, evaluated, val_sets = [], [], []
    mious = {1: 0.2, 2: 0.6, 3: 0.4}

    def fake_train(model, loader, optimizer, scaler, args, run, epoch, step, lr_at):
        calls.append({"epoch": epoch, "step": step, "batches": len(loader), "train_images": len(loader.dataset),
                      "train_set": loader.dataset.dataset, "optimizer": optimizer, "lr_at": lr_at})
        with torch.no_grad():  # mark the weights with the epoch: which epoch's model a file holds
            model.head.bias.fill_(float(epoch))
        return {"train_loss": 1.0 / epoch, "step": step + len(loader), "interrupted": False, "batches": len(loader),
                "train_seconds": 0.0, "lr": lr_at(step)}

    def fake_evaluate(model, loader, device, dtype, config):
        evaluated.append((len(loader.dataset), float(model.head.bias[0].detach())))
        val_sets.append(loader.dataset)
        miou = mious[len(evaluated)]
        return {"val_miou": miou, "val_iou": [miou] * 6, "val_pixel_acc": 0.5}

    monkeypatch.setattr(segmentation, "train_one_epoch", fake_train)
    monkeypatch.setattr(segmentation, "evaluate", fake_evaluate)
    from utils import runlog
    panels = []  # the curves drawn: the keys the log holds, in order
    monkeypatch.setattr(runlog, "plot_curves", lambda records, keys, path, title="": panels.append(
        [k for k in keys if any(r.get(k) is not None for r in records)]))
    out = tmp_path / "run"
    result = run_main(p2_unet, ["--data-dir", toy_p2, "--output-dir", out, "--epochs", "3", "--batch-size", "4",
                                "--crop-size", "32", "--min-scale", "0.5", "--color-jitter", "0.3", "--base-width",
                                "4", "--depth", "2", "--workers", "0",
                                "--optimizer", "sgd", "--momentum", "0.8", "--weight-decay", "3e-4", "--lr", "0.2",
                                "--warmup-epochs", "0.5", "--schedule", shape, "--snapshot-epochs", "2",
                                "--snapshot-images", "0000_sat.jpg"])
    # 24 training tiles in batches of 4: 6 steps an epoch, 18 in all, 3 of warm-up
    assert [c["step"] for c in calls] == [0, 6, 12] and {c["batches"] for c in calls} == {6}
    # the start-up line states the data, the batch and the (batch-scaled) lr the run really uses
    assert "24 train / 8 val images, 1 process(es) x batch 4, lr 0.2, 3 epochs, device cpu" in capsys.readouterr().out
    assert panels == [["train_loss", "val_miou", "lr"]] * 3 and result["epochs"] == 3
    assert {c["train_images"] for c in calls} == {24} and evaluated == [(8, 1.0), (8, 2.0), (8, 3.0)]
    # training: the training split through the flags' scale-and-crop and colour jitter; validation: whole tiles
    train_set = calls[0]["train_set"]
    assert train_set.folder.name == "train" and val_sets[0].folder.name == "validation"
    assert val_sets[0].transform is None
    ops = {type(op).__name__: op for op in train_set.transform.transforms}
    assert list(ops["RandomResizedCrop"].size) == [32, 32] and ops["RandomResizedCrop"].scale == (0.5, 1.0)
    assert ops["ColorJitter"].brightness == pytest.approx((0.7, 1.3))
    optimizer = calls[0]["optimizer"]
    assert isinstance(optimizer, torch.optim.SGD)
    assert [g["momentum"] for g in optimizer.param_groups] == [0.8, 0.8]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [3e-4, 0.0]
    assert all(p.ndim > 1 for p in optimizer.param_groups[0]["params"])  # no decay on biases and BatchNorm

    def expected_lr(step):  # linear ramp to 0.2 over 3 steps, then cosine or poly(0.9) to 0 over the other 15
        if step < 3:
            return 0.2 * (step + 1) / 3
        t = min(1.0, (step - 3) / 15)
        return 0.2 * 0.5 * (1 + math.cos(math.pi * t)) if shape == "cosine" else 0.2 * (1 - t) ** 0.9

    lr_at = calls[0]["lr_at"]
    assert [lr_at(s) for s in range(19)] == pytest.approx([expected_lr(s) for s in range(19)], abs=1e-12)
    # best = epoch 2 (highest mIoU), though the loss kept falling
    assert result["best_epoch"] == 2 and result["best_miou"] == 0.6 and result["last_miou"] == 0.4
    best = torch.load(str(out / "best.pth"), weights_only=True)
    assert best["epoch"] == 2 and best["val_miou"] == 0.6 and float(best["model"]["head.bias"][0]) == 2.0
    snaps = sorted(p.name for p in out.glob("snapshot_epoch*.pth"))
    assert snaps == ["snapshot_epoch002.pth"]
    snap = torch.load(str(out / "snapshot_epoch002.pth"), weights_only=True)
    assert snap["epoch"] == 2 and float(snap["model"]["head.bias"][0]) == 2.0
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == ["epoch_002"]
    assert (out / "snapshots" / "epoch_002" / "0000_mask.png").is_file()
    # the last epoch's resumable checkpoint carries what a resume needs: step, best so far, optimizer, scaler
    last = torch.load(str(out / "checkpoint.pth"), weights_only=True)
    assert (last["epoch"], last["step"], last["best_metric"], last["best_epoch"]) == (3, 18, 0.6, 2)
    assert last["best_values"] == [0.6] * 6 and last["val_miou"] == 0.4
    assert last["optimizer"]["param_groups"][0]["momentum"] == 0.8 and "scaler" in last


def test_deeplab_no_aux_flag_builds_a_model_without_the_aux_head_and_its_loss():
    parse = p2_deeplab.get_args_parser().parse_args
    base = ["--encoder", "resnet50", "--weights", "none", "--output-stride", "16"]
    config = p2_deeplab.model_config(parse(base + ["--no-aux"]))
    assert config["aux_loss"] is False
    from utils.models import build_seg_model

    model = build_seg_model(config).eval()
    with torch.no_grad():
        assert set(model(torch.zeros(1, 3, 32, 32))) == {"out"}
    assert p2_deeplab.model_config(parse(base))["aux_loss"] is True


def test_both_trainers_default_to_the_reports_recipe():
    """The recipes the scripts state: DeepLabV3 (model B) as torchvision's segmentation reference trains it (SGD
    0.01, momentum 0.9, wd 1e-4, poly), the U-Net with AdamW 1e-3 and cosine; both 100 epochs of batch 8 on whole
    512 tiles, CE, aux weight 0.5, 1 warm-up epoch, snapshots at epochs 1/50/100 (the report's)."""
    deeplab = p2_deeplab.get_args_parser().parse_args([])
    unet = p2_unet.get_args_parser().parse_args([])
    for args in (deeplab, unet):
        assert (args.epochs, args.batch_size, args.crop_size, args.loss, args.aux_weight, args.warmup_epochs) == \
            (100, 8, 512, "ce", 0.5, 1.0)
        assert (args.min_scale, args.color_jitter, args.snapshot_epochs) == (0.25, 0.2, [1, 50, 100])
        assert (args.workers, args.amp, args.seed, args.device, args.save_every) == (4, True, 0, "auto", 0)
    assert (deeplab.optimizer, deeplab.lr, deeplab.momentum, deeplab.weight_decay, deeplab.schedule) == \
        ("sgd", 0.01, 0.9, 1e-4, "poly")
    assert (unet.optimizer, unet.lr, unet.weight_decay, unet.schedule) == ("adamw", 1e-3, 1e-4, "cosine")
    assert unet.drop_skip == [] and (unet.base_width, unet.depth, unet.bilinear) == (64, 4, False)


def test_the_snapshot_grid_shows_each_tile_its_ground_truth_and_every_snapshot_epochs_mask(tmp_path, monkeypatch):
    """snapshots.png, the report's figure: one column per snapshot tile that exists in validation/, rows input,
    ground truth, then each epoch's predicted mask in epoch order, masks drawn in the graded palette; a missing
    prediction leaves its panel empty rather than shifting the rows."""
    import matplotlib.axes
    from utils.masks import PALETTE, write_mask

    val = tmp_path / "data" / "validation"
    val.mkdir(parents=True)
    rng = np.random.default_rng(0)
    tiles, truth = {}, {}
    for k, image_id in enumerate(["0018", "0065"]):
        tiles[image_id] = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(tiles[image_id]).save(str(val / (image_id + "_sat.png")))
        (val / (image_id + "_sat.png")).rename(val / (image_id + "_sat.jpg"))  # lossless pixels under the .jpg name
        truth[image_id] = np.full((6, 8), k, dtype=np.uint8)
        write_mask(val / (image_id + "_mask.png"), truth[image_id])
    preds = {}
    out = tmp_path / "run"
    for epoch in (10, 2):
        folder = out / "snapshots" / "epoch_{:03d}".format(epoch)
        folder.mkdir(parents=True)
        for image_id in tiles:
            if (image_id, epoch) == ("0065", 2):
                continue  # this prediction is missing
            preds[image_id, epoch] = np.full((6, 8), epoch % 7, dtype=np.uint8)
            write_mask(folder / (image_id + "_mask.png"), preds[image_id, epoch])
    drawn, titles = [], []
    monkeypatch.setattr(matplotlib.axes.Axes, "imshow", lambda ax, array, **kw: drawn.append(np.asarray(array)))
    real_title = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", lambda ax, t, **kw: (titles.append(t),
                                                                                 real_title(ax, t, **kw)))
    args = SimpleNamespace(data_dir=str(tmp_path / "data"), snapshot_images=["0018_sat.jpg", "0099_sat.jpg",
                                                                               "0065_sat.jpg"])
    assert segmentation.draw_snapshot_grid(out, args) == out / "snapshots.png"
    assert (out / "snapshots.png").is_file()
    palette = np.asarray(PALETTE)
    assert titles == ["0018: input", "ground truth", "epoch 2", "epoch 10",
                      "0065: input", "ground truth", "epoch 2", "epoch 10"]
    expected = [tiles["0018"], palette[truth["0018"]], palette[preds["0018", 2]], palette[preds["0018", 10]],
                tiles["0065"], palette[truth["0065"]], palette[preds["0065", 10]]]
    assert len(drawn) == len(expected)
    for got, want in zip(drawn, expected):
        assert got.shape == want.shape and (got == want).all()


def _saved_figures(monkeypatch):
    """[(figure, file name)] of every Figure.savefig from now on, read before the figure is closed."""
    import matplotlib.figure

    from helpers import figure_target

    saved = []
    real_savefig = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, path, **kw: saved.append((fig, figure_target(path))) or
                        real_savefig(fig, path, **kw))
    return saved


def colour_key(fig):
    """[(label, RGB 0..255)] of the figure's legends, in order."""
    return [(text.get_text(), tuple(int(round(255 * c)) for c in patch.get_facecolor()[:3]))
            for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
            for text, patch in zip(legend.get_texts(), legend.get_patches())]


# the grading contract's colours and names (docs/data.md, "Mask colours"), written out
CLASS_KEY = [("urban", (0, 255, 255)), ("agriculture", (255, 255, 0)), ("rangeland", (255, 0, 255)),
             ("forest", (0, 255, 0)), ("water", (0, 0, 255)), ("barren", (255, 255, 255)), ("unknown", (0, 0, 0))]


@pytest.mark.parametrize("columns", [1, 5])
def test_the_snapshot_grid_has_a_colour_key_of_the_seven_classes_inside_the_figure(tmp_path, monkeypatch, columns):
    """A mask grid without a key leaves the reader guessing which colour is which class: snapshots.png carries a
    legend of the seven graded colours with their names, drawn inside the figure, for one column or five."""
    from utils.masks import write_mask

    val = tmp_path / "data" / "validation"
    val.mkdir(parents=True)
    names = []
    for k in range(columns):
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(str(val / "{:04d}_sat.jpg".format(k)), "PNG")
        write_mask(val / "{:04d}_mask.png".format(k), np.full((8, 8), k % 7, dtype=np.uint8))
        names.append("{:04d}_sat.jpg".format(k))
    folder = tmp_path / "run" / "snapshots" / "epoch_001"
    folder.mkdir(parents=True)
    for k in range(columns):
        write_mask(folder / "{:04d}_mask.png".format(k), np.zeros((8, 8), dtype=np.uint8))
    saved = _saved_figures(monkeypatch)
    segmentation.draw_snapshot_grid(tmp_path / "run", SimpleNamespace(data_dir=str(tmp_path / "data"),
                                                                      snapshot_images=names))
    (fig, path), = saved
    assert path.endswith("snapshots.png") and colour_key(fig) == CLASS_KEY
    fig.canvas.draw()
    box = fig.legends[0].get_window_extent()
    width, height = fig.canvas.get_width_height()
    assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height  # not cut off
    for ax in fig.axes:  # and not over a panel
        assert not box.overlaps(ax.get_window_extent()), ax.get_title()


def test_the_sam_figure_has_the_same_colour_key_when_it_shows_class_masks(tmp_path, monkeypatch):
    """p2_sam.py's figure shows our model's mask and the ground truth in the graded colours: the same key (its own
    copy before; now one helper); SAM's masks alone, in random colours, get none."""
    import p2_sam

    saved = _saved_figures(monkeypatch)
    panel = np.zeros((8, 8, 3), dtype=np.uint8)
    p2_sam.save_figure(tmp_path / "with.png", [("input", panel), ("SAM", panel), ("ours", panel)], with_legend=True)
    p2_sam.save_figure(tmp_path / "without.png", [("input", panel), ("SAM", panel)], with_legend=False)
    assert colour_key(saved[0][0]) == CLASS_KEY and colour_key(saved[1][0]) == []


def test_the_model_configs_the_checkpoints_keep_describe_the_seven_class_network_asked_for():
    """The config is all that rebuilds a graded model (hw1_2.sh): every architecture's says 7 classes, and holds the
    flags that shape the network."""
    unet = p2_unet.get_args_parser().parse_args
    assert p2_unet.model_config(unet(["--encoder", "resnet34", "--encoder-weights", "imagenet",
                                      "--drop-skip", "0"])) == {
        "arch": "unet", "num_classes": 7, "encoder": "resnet34", "drop_skip": [0], "backbone_weights": "imagenet"}
    assert p2_unet.model_config(unet(["--base-width", "8", "--depth", "3", "--bilinear"])) == {
        "arch": "unet", "num_classes": 7, "base_width": 8, "depth": 3, "drop_skip": [], "bilinear": True}
    deeplab = p2_deeplab.get_args_parser().parse_args
    assert p2_deeplab.model_config(deeplab(["--arch", "fcn32s", "--weights", "none"])) == {
        "arch": "fcn32s", "num_classes": 7, "backbone_weights": "none"}
    assert p2_deeplab.model_config(deeplab(["--arch", "deeplabv3plus", "--encoder", "resnet50"])) == {
        "arch": "deeplabv3plus", "num_classes": 7, "encoder": "resnet50", "output_stride": 16, "aux_loss": True,
        "backbone_weights": "coco"}
