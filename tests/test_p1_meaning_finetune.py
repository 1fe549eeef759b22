"""p1_finetune.py's recipe checked against independent computations: which backbone file each setting loads and
what the report says it loaded, the optimizer groups read back from a built optimizer, the loss recomputed by hand
from the logits the model really produced (label smoothing, mixup), cached features against eval-mode features,
the validation accuracy against a direct forward pass, the lr schedule against the formula, best-model bookkeeping.
"""
import json
import math
import types

import pytest
import torch
import torch.nn.functional as F
import torchvision

import p1_finetune
from utils.classify import build_classifier, load_classifier
from utils.datasets import CsvImages, read_rgb, to_chw_uint8
from utils.transforms import classify_eval_transform, normalize
from helpers import run_main

CONFIG = {"arch": "resnet18", "num_classes": 4, "hidden_dim": 8, "dropout": 0.0}
SMALL = ["--arch", "resnet18", "--num-classes", "4", "--hidden-dim", "8", "--image-size", "32", "--workers", "0"]
TA_FILE, DINO_FILE = "checkpoints/official_dino_model.pth", "runs/p1_dino/backbone.pth"
# The report's table (README, problem 1 part II): setting -> (default backbone file, frozen, backbone lr multiplier,
# pre-training wording)
EXPECTED = {
    "A": ("none", False, 1.0, "–"),
    "B": (TA_FILE, False, 0.1, "DINO on ImageNet-1k (TAs provided)"),
    "C": (DINO_FILE, False, 0.1, "w/o label (your SSL pre-trained backbone)"),
    "D": (TA_FILE, True, 0.1, "DINO on ImageNet-1k (TAs provided)"),
    "E": (DINO_FILE, True, 0.1, "w/o label (your SSL pre-trained backbone)"),
}
FULL, FROZEN = "Train full model (backbone + classifier)", "Fix the backbone. Train classifier only"


def _args(*argv):
    return p1_finetune.get_args_parser().parse_args(SMALL + [str(a) for a in argv])


class FakeRun(object):
    """What build_model / train_one_epoch / end_of_epoch read from a Run, on the CPU in fp32; saved files recorded."""

    def __init__(self, args, config=CONFIG):
        self.args, self.config, self.ckpt = args, dict(config), None
        self.device, self.dtype, self.main, self.world = torch.device("cpu"), None, True, 1
        self.stop = types.SimpleNamespace(requested=lambda step, device=None: False)
        self.saved = []  # (epoch, file names, checkpoint state)

    def end_epoch(self, state, epoch, record=None, files=None):
        self.saved.append((epoch, dict(files or {}), state))

    def use_data(self, dataset):
        self.data = dataset

    def carried_sums(self, sums):
        return sums


@pytest.fixture
def default_files(tmp_path, monkeypatch):
    """The two default backbone files at their documented relative places, different random resnet18 weights (the
    TAs' with fc, as torchvision saves it; ours without)."""
    monkeypatch.chdir(tmp_path)
    states = {}
    for seed, path, keep_fc in ((1, TA_FILE, True), (2, DINO_FILE, False)):
        torch.manual_seed(seed)
        state = torchvision.models.resnet18().state_dict()
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v for k, v in state.items() if keep_fc or not k.startswith("fc.")}, str(tmp_path / path))
        states[path] = {k: v for k, v in state.items() if not k.startswith("fc.")}
    return states


@pytest.fixture(scope="module")
def office(tmp_path_factory):
    from tools.toydata import make_p1_data

    root = make_p1_data(tmp_path_factory.mktemp("p1meaning"), num_classes=4, mini_per_class=0,
                        office_train_per_class=8, office_val_per_class=2, seed=0)
    return root / "office"


@pytest.mark.parametrize("setting", sorted(EXPECTED))
def test_each_setting_loads_its_documented_backbone_and_says_so(default_files, setting):
    path, frozen, mult, pretraining = EXPECTED[setting]
    chosen = p1_finetune.resolve_setting(_args("--setting", setting))
    assert (chosen["backbone"], chosen["frozen"], chosen["backbone_lr_mult"]) == (path, frozen, mult)
    assert chosen["pretraining"] == pretraining and chosen["finetuning"] == (FROZEN if frozen else FULL)
    model = p1_finetune.build_model(FakeRun(_args("--setting", setting)), chosen)
    loaded = model.backbone.state_dict()
    if path == "none":  # random: neither file
        assert all(not torch.equal(loaded["conv1.weight"], s["conv1.weight"]) for s in default_files.values())
    else:  # every key of the file, exactly (the other file's weights would differ everywhere)
        assert set(loaded) == set(default_files[path])
        assert all(torch.equal(loaded[k], v) for k, v in default_files[path].items())
    assert all(p.requires_grad != frozen for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())


def test_setting_c_with_backbone_none_does_not_say_it_used_the_ssl_backbone(default_files):
    """Before: `--setting C --backbone none` (random init) wrote "w/o label (your SSL pre-trained backbone)" into
    results.json and the log: the run said it was what it was not."""
    chosen = p1_finetune.resolve_setting(_args("--setting", "C", "--backbone", "none"))
    assert chosen["backbone"] == "none" and "SSL" in chosen["pretraining"]
    assert chosen["pretraining"].startswith("none (random init") and ", not w/o label" in chosen["pretraining"]


@pytest.mark.parametrize("setting", sorted(EXPECTED))
def test_optimizer_groups_read_back_for_each_setting(default_files, setting):
    # what the recipe says, written out per parameter: (lr, weight decay) or absent when frozen
    args = _args("--setting", setting)
    chosen = p1_finetune.resolve_setting(args)
    model = p1_finetune.build_model(FakeRun(args), chosen)
    optimizer = p1_finetune.make_optimizer_for(args, model, chosen, args.lr)
    assert isinstance(optimizer, torch.optim.SGD)
    p1_finetune.set_lr(optimizer, 0.02)  # the schedule's value at some step
    where = {}
    for group in optimizer.param_groups:
        assert group["momentum"] == 0.9 and group["nesterov"] is True
        for p in group["params"]:
            assert id(p) not in where, "a parameter in two groups"
            where[id(p)] = (group["lr"], group["weight_decay"])
    frozen, mult = EXPECTED[setting][1], EXPECTED[setting][2]
    for part, factor in ((model.head, 1.0), (model.backbone, None if frozen else mult)):
        for name, p in part.named_parameters():
            if factor is None:
                assert id(p) not in where, name
                continue
            decay = 0.0 if p.ndim == 1 else 5e-4  # biases and BatchNorm weights: no weight decay
            assert where[id(p)] == pytest.approx((0.02 * factor, decay)), name
    assert len(where) == sum(1 for p in model.parameters() if p.requires_grad)


def test_no_flags_is_the_readme_recipe():
    args = p1_finetune.get_args_parser().parse_args([])
    assert (args.setting, args.epochs, args.batch_size, args.lr, args.lr_ref_batch) == ("C", 100, 64, 0.01, None)
    assert (args.optimizer, args.weight_decay, args.warmup_epochs, args.label_smoothing) == ("sgd", 5e-4, 5.0, 0.1)
    assert (args.mixup, args.randaugment, args.linear_probe_epochs) == (0.0, 0, 0)
    assert (args.hidden_dim, args.dropout, args.num_classes, args.arch) == (1024, 0.5, 65, "resnet50")
    assert (args.image_size, args.min_scale, args.color_jitter) == (224, 0.25, 0.3)
    assert args.save_epochs == [1, -1] and args.cache_features is False and args.backbone is None
    assert args.backbone_lr_mult is None and args.freeze_backbone is None


def test_train_transform_is_the_readme_augmentation():
    ops = p1_finetune.train_transform(_args("--image-size", "48")).transforms
    crop, flip, jitter = ops
    assert isinstance(crop, torchvision.transforms.v2.RandomResizedCrop)
    assert list(crop.size) == [48, 48] and tuple(crop.scale) == (0.25, 1.0)
    assert isinstance(flip, torchvision.transforms.v2.RandomHorizontalFlip) and flip.p == 0.5
    assert isinstance(jitter, torchvision.transforms.v2.ColorJitter)
    assert tuple(jitter.brightness) == pytest.approx((0.7, 1.3)) and tuple(jitter.hue) == pytest.approx((-0.1, 0.1))
    assert tuple(jitter.contrast) == pytest.approx((0.7, 1.3))
    assert tuple(jitter.saturation) == pytest.approx((0.7, 1.3))


def _batch(seed=0, n=8):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    return images, torch.arange(n) % 4


def _one_step(args, frozen=False, seed=0):
    """One train_one_epoch step on a fresh tiny classifier; returns (stats, model input, logits, model, BN before)."""
    torch.manual_seed(seed)
    model = build_classifier(CONFIG)
    seen = []
    model.register_forward_hook(lambda m, inp, out: seen.append((inp[0].detach().clone(), out.detach().clone())))
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = p1_finetune.make_grad_scaler(None)
    run = FakeRun(args)
    torch.manual_seed(seed + 100)
    stats = p1_finetune.train_one_epoch(model, [_batch(seed)], optimizer, scaler, args, run, 1, 0, lambda s: 0.0,
                                        frozen)
    (x, logits), = seen
    return stats, x, logits, model, before


def _smoothed_ce(logits, targets, eps):
    # cross-entropy with probability targets, smoothing as the recipe means it: (1 - eps) * target + eps / K
    k = logits.shape[1]
    soft = (1 - eps) * targets + eps / k
    return float(-(soft * F.log_softmax(logits.double(), 1)).sum(1).mean())


def test_loss_is_label_smoothed_cross_entropy_of_the_logits():
    stats, x, logits, _, _ = _one_step(_args())  # the default --label-smoothing 0.1
    images, labels = _batch(0)
    assert torch.allclose(x, normalize(images))  # the model saw the normalised images, unmixed
    expected = _smoothed_ce(logits, F.one_hot(labels, 4).double(), 0.1)
    assert stats["train_loss"] == pytest.approx(expected, rel=1e-5)
    assert stats["train_loss"] != pytest.approx(_smoothed_ce(logits, F.one_hot(labels, 4).double(), 0.0), rel=1e-3)
    assert stats["train_acc"] == pytest.approx(float((logits.argmax(1) == labels).float().mean()))


def test_mixup_mixes_the_labels_with_the_images():
    stats, x, logits, _, _ = _one_step(_args("--mixup", "1.0", "--label-smoothing", "0.0"))
    images, labels = _batch(0)
    clean = normalize(images)
    # recover lambda and the partner of each image from what the model saw: x_i = lam x_i + (1 - lam) x_j
    lams, partners = [], []
    for i in range(len(x)):
        fits = []
        for j in range(len(x)):
            d = (clean[i] - clean[j]).flatten().double()
            lam = float(((x[i] - clean[j]).flatten().double() @ d) / (d @ d)) if j != i else 1.0
            fits.append((float((x[i] - lam * clean[i] - (1 - lam) * clean[j]).abs().max()), j, lam))
        err, j, lam = min(fits)
        assert err < 1e-3
        partners.append(j)
        if j != i:
            lams.append(lam)
    assert sorted(partners) == list(range(len(x))) and lams and 0.05 < lams[0] < 0.95
    lam = lams[0]
    assert all(abs(v - lam) < 1e-4 for v in lams)  # one lambda for the batch
    onehot = F.one_hot(labels, 4).double()
    mixed = torch.stack([onehot[i] if j == i else lam * onehot[i] + (1 - lam) * onehot[j]
                         for i, j in enumerate(partners)])
    assert stats["train_loss"] == pytest.approx(_smoothed_ce(logits, mixed, 0.0), rel=1e-5)
    assert stats["train_loss"] != pytest.approx(_smoothed_ce(logits, onehot, 0.0), rel=1e-3)


def test_frozen_backbone_keeps_its_batchnorm_statistics_while_the_head_trains():
    stats, _, _, model, before = _one_step(_args(), frozen=True)
    after = model.backbone.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)  # running means/vars too
    assert not torch.equal(model.head[1].running_mean, torch.zeros(8))  # the head's BN did see the batch
    stats, _, _, model, before = _one_step(_args(), frozen=False)
    assert not torch.equal(model.backbone.bn1.running_mean, before["bn1.running_mean"])


def _bn_with_statistics(model, seed=5):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def test_cached_features_are_eval_mode_features_of_the_unaugmented_images_in_row_order(office):
    args = _args("--data-dir", office, "--batch-size", "3", "--setting", "E", "--backbone", "x",
                 "--cache-features")
    torch.manual_seed(0)
    model = _bn_with_statistics(build_classifier(CONFIG))
    model.train()  # as build_model leaves it
    buffers = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    train_set, val_set = p1_finetune.datasets(args, FakeRun(args), model, use_cache=True)
    feats, labels = train_set.tensors
    # independently: each image read, resized short side + centre crop, normalised, through the eval-mode backbone
    plain = CsvImages(office / "train.csv", office / "train")
    assert labels.tolist() == plain.labels and len(set(plain.labels)) == 4
    reference = _bn_with_statistics(build_classifier(CONFIG))
    reference.load_state_dict(model.state_dict())
    reference.eval()
    eval_tf = classify_eval_transform(32)
    with torch.no_grad():
        for i in (0, 5, len(plain) - 1):
            image = eval_tf(to_chw_uint8(read_rgb(office / "train" / plain.rows[i].filename)))
            assert torch.allclose(feats[i], reference.backbone(normalize(image[None]))[0], atol=1e-4), i
    after = model.backbone.state_dict()
    assert all(torch.equal(after[k], buffers[k]) for k in buffers)  # no BN statistic moved while caching


def test_validation_images_get_the_eval_transform(office):
    args = _args("--data-dir", office)
    _, val_set = p1_finetune.datasets(args, FakeRun(args), None, use_cache=False)
    eval_tf = classify_eval_transform(32)
    for i in (0, 3):
        image, label = val_set[i]
        direct = eval_tf(to_chw_uint8(read_rgb(office / "val" / val_set.rows[i].filename)))
        assert torch.equal(image, direct) and label == val_set.rows[i].label


def test_validation_accuracy_is_an_eval_mode_forward_over_every_image():
    torch.manual_seed(0)
    model = _bn_with_statistics(build_classifier(dict(CONFIG, dropout=0.5)))
    images, _ = _batch(3, n=10)
    with torch.no_grad():
        model.eval()
        pred = model(normalize(images)).argmax(1)
    labels = pred.clone()
    labels[:3] = (labels[:3] + 1) % 4  # 7 of 10 right, the wrong ones all in the first (larger) batch
    model.train()
    loader = [(images[:8], labels[:8]), (images[8:], labels[8:])]
    result = p1_finetune.evaluate(model, loader, torch.device("cpu"), None)
    assert result["val_acc"] == pytest.approx(0.7)  # not the mean of the batches' accuracies (0.625 / 1.0)


def test_best_checkpoint_follows_the_best_not_the_last_accuracy():
    args = _args("--epochs", "3")
    run = FakeRun(args)
    torch.manual_seed(0)
    model = build_classifier(CONFIG)
    chosen = {"backbone": "none"}
    state = {"step": 0, "best_metric": -1.0}
    for epoch, acc in ((1, 0.5), (2, 0.75), (3, 0.6)):
        metrics = {"epoch": epoch, "val_acc": acc, "train_loss": 1.0, "train_acc": 0.5}
        p1_finetune.end_of_epoch(run, model, chosen, state, metrics, {})
    assert [sorted(files) for _, files, _ in run.saved] == [["best.pth", "epoch_001.pth"], ["best.pth"],
                                                            ["epoch_003.pth"]]
    assert run.saved[1][1]["best.pth"]["val_acc"] == 0.75 and run.saved[1][1]["best.pth"]["epoch"] == 2
    assert state["best_metric"] == 0.75 and run.saved[2][2]["best_metric"] == 0.75


@pytest.fixture(scope="module")
def recorded_run(office, tmp_path_factory):
    """Setting B, 3 epochs of 2 steps (32 images, batch 16), 1 warm-up epoch; the lr of every step recorded and the
    validation accuracies scripted (0.5, 0.75, 0.6) so that the best epoch is known."""
    tmp_path = tmp_path_factory.mktemp("recorded")
    backbone = tmp_path / "bb.pth"
    torch.manual_seed(3)
    torch.save(torchvision.models.resnet18().state_dict(), str(backbone))
    lrs = []
    real_set_lr = p1_finetune.set_lr

    def set_lr(optimizer, lr):
        lrs.append(lr)
        real_set_lr(optimizer, lr)

    accs = iter([0.5, 0.75, 0.6])
    out = tmp_path / "B"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(p1_finetune, "set_lr", set_lr)
        monkeypatch.setattr("utils.runlog.plot_curves", lambda *a, **k: None)  # the figure only
        monkeypatch.setattr(p1_finetune, "evaluate", lambda *a, **k: {"val_acc": next(accs)})
        result = run_main(p1_finetune, ["--data-dir", office, "--output-dir", out, "--setting", "B", "--backbone",
                                        backbone, "--epochs", "3", "--batch-size", "16", "--warmup-epochs", "1",
                                        "--lr", "0.04", "--deterministic", "--save-epochs", "1", "2", "3"] + SMALL)
    return {"result": result, "lrs": lrs, "out": out}


def test_lr_schedule_is_linear_warmup_then_cosine_per_step(recorded_run):
    # 6 steps, warm-up 2 steps ramping to the peak at its last step, then half a cosine over the 4 others
    peak, total, warmup = 0.04, 6, 2
    expected = [peak * (s + 1) / warmup if s < warmup else
                0.5 * peak * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))) for s in range(total)]
    assert recorded_run["lrs"] == pytest.approx(expected, rel=1e-9)
    ckpt = torch.load(str(recorded_run["out"] / "checkpoint.pth"), weights_only=True)
    groups = ckpt["optimizer"]["param_groups"]
    assert sorted({g["lr_mult"] for g in groups}) == [0.1, 1.0]
    assert all(g["lr"] == pytest.approx(expected[-1] * g["lr_mult"]) for g in groups)


def test_results_and_best_pth_name_the_best_epoch(recorded_run):
    out, result = recorded_run["out"], recorded_run["result"]
    assert result["best_val_acc"] == 0.75 and result["last_val_acc"] == 0.6
    assert json.loads((out / "results.json").read_text())["best_val_acc"] == 0.75
    best = torch.load(str(out / "best.pth"), weights_only=True)
    second = torch.load(str(out / "epoch_002.pth"), weights_only=True)
    assert best["epoch"] == 2 and all(torch.equal(best["model"][k], v) for k, v in second["model"].items())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["val_acc"] for r in log] == [0.5, 0.75, 0.6] and [r["best_acc"] for r in log] == [0.5, 0.75, 0.75]


def test_setting_e_run_from_defaults_reports_and_stores_our_dino_backbone(office, default_files, tmp_path):
    result = run_main(p1_finetune, ["--data-dir", office, "--output-dir", tmp_path / "E", "--setting", "E",
                                    "--epochs", "1", "--batch-size", "16", "--cache-features",
                                    "--deterministic"] + SMALL)
    assert result["backbone"] == DINO_FILE and result["pretraining"] == EXPECTED["E"][3]
    assert result["finetuning"] == FROZEN
    saved = json.loads((tmp_path / "E" / "results.json").read_text())
    assert (saved["backbone"], saved["pretraining"]) == (DINO_FILE, EXPECTED["E"][3])
    model, ckpt = load_classifier(tmp_path / "E" / "best.pth", torch.device("cpu"))
    assert ckpt["backbone_source"] == DINO_FILE and ckpt["setting"] == "E"
    # the classifier the flags asked for (SMALL: 4 classes through an 8-wide hidden layer), as graded from its config
    assert ckpt["model_config"] == {"arch": "resnet18", "num_classes": 4, "hidden_dim": 8, "dropout": 0.5}
    assert [tuple(m.weight.shape) for m in model.head if isinstance(m, torch.nn.Linear)] == [(8, 512), (4, 8)]
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in default_files[DINO_FILE].items())
