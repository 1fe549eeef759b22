"""DINO's pieces against independent computations: loss, center, schedules, EMA, head, clipping."""
import math

import numpy as np
import pytest
import torch

import p1_ssl_pretrain
from utils import dino
from utils.optim import schedule


def _reference_loss(student, teacher, center, num_crops, t_temp, s_temp=0.1):
    """The DINO loss written out sample by sample in float64 numpy."""
    s = student.double().numpy() / s_temp
    t = teacher.double().numpy()
    c = center.double().numpy()[0]
    batch = t.shape[0] // 2
    total, pairs = 0.0, 0
    for iq in range(2):
        for v in range(num_crops):
            if v == iq:
                continue
            per_sample = []
            for b in range(batch):
                logits_t = (t[iq * batch + b] - c) / t_temp
                p = np.exp(logits_t - logits_t.max())
                p /= p.sum()
                logits_s = s[v * batch + b]
                log_q = logits_s - logits_s.max() - np.log(np.exp(logits_s - logits_s.max()).sum())
                per_sample.append(-(p * log_q).sum())
            total += np.mean(per_sample)
            pairs += 1
    return total / pairs


def test_loss_and_center_match_the_formula_during_warmup():
    torch.manual_seed(0)
    out_dim, batch, crops = 32, 5, 6
    loss_fn = dino.DINOLoss(out_dim, crops, warmup_teacher_temp=0.04, teacher_temp=0.07,
                            warmup_teacher_temp_epochs=5, student_temp=0.1, center_momentum=0.9)
    loss_fn.center.copy_(torch.randn(1, out_dim) * 0.1)
    center_before = loss_fn.center.clone()
    student = torch.randn(crops * batch, out_dim)
    teacher = torch.randn(2 * batch, out_dim)
    epoch = 2
    temp = np.linspace(0.04, 0.07, 5)[epoch]
    assert loss_fn.teacher_temperature(epoch) == pytest.approx(temp)
    result = loss_fn(student, teacher, epoch)
    expected = _reference_loss(student, teacher, center_before, crops, temp)
    assert float(result["loss"]) == pytest.approx(expected, abs=1e-5)
    expected_center = 0.9 * center_before.double().numpy() + 0.1 * teacher.double().numpy().mean(0, keepdims=True)
    np.testing.assert_allclose(loss_fn.center.double().numpy(), expected_center, atol=1e-6)
    # collapse signals: entropy of the teacher distribution, and KL = loss - entropy
    p = torch.softmax((teacher.double() - center_before.double()) / temp, -1)
    entropy = float(-(p * p.log()).sum(-1).mean())
    assert float(result["teacher_entropy"]) == pytest.approx(entropy, abs=1e-5)
    assert float(result["kl"]) == pytest.approx(expected - entropy, abs=1e-5)
    # after the warm-up the final temperature holds
    assert loss_fn.teacher_temperature(5) == pytest.approx(0.07)
    assert loss_fn.teacher_temperature(100) == pytest.approx(0.07)


def test_loss_skips_same_view_pairs():
    # identical teacher and student logits on a global view give no advantage to that pair: changing the
    # student's view-0 output changes the loss only through pairs with teacher view 1
    torch.manual_seed(1)
    loss_fn = dino.DINOLoss(8, 2, 0.04, 0.04, 1)
    teacher = torch.randn(2 * 3, 8)
    student = torch.randn(2 * 3, 8)
    a = float(loss_fn(student, teacher, 0)["loss"])
    loss_fn.center.zero_()
    student2 = student.clone()
    student2[:3] = teacher[:3]  # student view 0 := teacher view 0 -- irrelevant for the loss (pair skipped)
    b = float(loss_fn(student2, teacher, 0)["loss"])
    loss_fn.center.zero_()
    ref_a = _reference_loss(student, teacher, torch.zeros(1, 8), 2, 0.04)
    ref_b = _reference_loss(student2, teacher, torch.zeros(1, 8), 2, 0.04)
    assert a == pytest.approx(ref_a, abs=1e-5) and b == pytest.approx(ref_b, abs=1e-5)


def _dino_cosine_scheduler(base, final, epochs, steps_per_epoch, warmup_epochs=0, start_warmup_value=0.0):
    """The per-step schedule array as DINO's ``cosine_scheduler`` defines it, written out independently: a
    np.linspace warm-up from start to base over the warm-up steps, then a half cosine from base towards final over
    the remaining steps (evaluated at 0..n-1 of n)."""
    warmup_steps = warmup_epochs * steps_per_epoch
    warmup = np.linspace(start_warmup_value, base, warmup_steps) if warmup_steps > 0 else np.array([])
    n = epochs * steps_per_epoch - warmup_steps
    decay = np.array([final + 0.5 * (base - final) * (1 + math.cos(math.pi * i / n)) for i in range(n)])
    return np.concatenate([warmup, decay])


@pytest.mark.parametrize("epochs, steps, warmup", [(11, 10, 1), (30, 7, 10), (5, 3, 0), (4, 1, 1)])
def test_schedule_is_dinos_cosine_scheduler(epochs, steps, warmup):
    total = epochs * steps
    expected = _dino_cosine_scheduler(0.005, 1e-6, epochs, steps, warmup)
    ours = np.array([schedule(i, total, 0.005, 1e-6, warmup * steps) for i in range(total)])
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-15)
    momentum = _dino_cosine_scheduler(0.996, 1.0, epochs, steps)
    np.testing.assert_allclose([schedule(i, total, 0.996, 1.0) for i in range(total)], momentum, rtol=1e-12)


def test_schedule_warmup_reaches_the_peak_at_its_last_step():
    w = 10
    assert schedule(0, 110, 1.0, 0.01, w) == 0.0  # steps 0, W-1 and W
    assert schedule(w - 1, 110, 1.0, 0.01, w) == pytest.approx(1.0)
    assert schedule(w, 110, 1.0, 0.01, w) == pytest.approx(1.0)
    assert schedule(5, 110, 1.0, 0.01, w) == pytest.approx(5 / 9)
    assert schedule(60, 110, 1.0, 0.01, w) == pytest.approx(0.505)
    # teacher momentum: cosine from 0.996 to 1 over the run, no warm-up
    assert schedule(0, 100, 0.996, 1.0) == pytest.approx(0.996)
    assert schedule(50, 100, 0.996, 1.0) == pytest.approx(0.998)


def _tiny_config():
    return {"arch": "resnet18", "out_dim": 16, "hidden_dim": 32, "bottleneck_dim": 8, "use_bn_in_head": False,
            "norm_last_layer": True}


def test_ema_update_and_teacher_has_no_gradients():
    torch.manual_seed(0)
    student, teacher = dino.build_dino_net(_tiny_config()), dino.build_dino_net(_tiny_config())
    for p in teacher.parameters():
        p.requires_grad = False
    before = {k: v.clone() for k, v in teacher.named_parameters()}
    m = 0.9
    dino.ema_update(teacher, student, m)
    for (name, t), s in zip(teacher.named_parameters(), student.parameters()):
        torch.testing.assert_close(t, m * before[name] + (1 - m) * s.detach(), rtol=0, atol=1e-6)
        assert not t.requires_grad and t.grad is None


def test_ema_update_leaves_every_teacher_buffer_alone():
    """Only parameters follow the EMA: the teacher's BatchNorm running statistics (and batch counts) come from
    its own forward passes, whatever the student's are."""
    torch.manual_seed(0)
    config = dict(_tiny_config(), use_bn_in_head=True)
    student, teacher = dino.build_dino_net(config), dino.build_dino_net(config)
    student.train()
    student([torch.randn(4, 3, 32, 32) * 3 + 1] * 2)  # moves the student's running statistics
    for name, buf in student.named_buffers():
        if buf.is_floating_point():
            buf.add_(torch.rand_like(buf) + 0.5)
    before = {k: v.clone() for k, v in teacher.named_buffers()}
    assert before and any(not torch.equal(before[k], v) for k, v in student.named_buffers())
    dino.ema_update(teacher, student, 0.5)
    for name, buf in teacher.named_buffers():
        assert torch.equal(buf, before[name]), name


def test_head_prototypes_have_unit_norm_and_output_shape():
    head = dino.DINOHead(64, 100, hidden_dim=32, bottleneck_dim=16)
    assert not head.last_g.requires_grad
    x = torch.randn(7, 64)
    out = head(x)
    assert out.shape == (7, 100)
    # |output| <= 1 since both the bottleneck vector and every prototype have unit norm
    assert float(out.detach().abs().max()) <= 1.0 + 1e-5
    assert dino.DINOHead(64, 10, 32, 16, norm_last_layer=False).last_g.requires_grad


def test_head_recipe_defaults_init_and_prototype_normalisation():
    """DINO's head: MLP in -> 2048 -> 2048 -> 256 (GELU, BatchNorm only on request), Linear weights from a normal of
    std 0.02 with zero biases, output = L2-normalised bottleneck times row-normalised prototypes."""
    torch.manual_seed(0)
    head = dino.DINOHead(512, 64)
    linears = [m for m in head.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 2048), (2048, 2048), (2048, 256)]
    assert head.last_v.shape == (64, 256)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in head.mlp)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in dino.DINOHead(8, 4, 16, 8, use_bn=True).mlp) == 2
    for m in linears:
        assert float(m.weight.detach().std()) == pytest.approx(0.02, rel=0.1)
        assert not m.bias.any()
    x = torch.randn(5, 512)
    with torch.no_grad():
        z = torch.nn.functional.normalize(head.mlp(x), dim=1)
        expected = z @ (head.last_v / head.last_v.norm(dim=1, keepdim=True)).T
        torch.testing.assert_close(head(x), expected)


def test_loss_defaults_student_temperature_and_center_momentum():
    torch.manual_seed(2)
    loss_fn = dino.DINOLoss(8, 2, 0.04, 0.04, 1)  # student_temp 0.1, center_momentum 0.9 by default
    student, teacher = torch.randn(2 * 3, 8), torch.randn(2 * 3, 8)
    loss = float(loss_fn(student, teacher, 0)["loss"])
    assert loss == pytest.approx(_reference_loss(student, teacher, torch.zeros(1, 8), 2, 0.04, 0.1), abs=1e-5)
    torch.testing.assert_close(loss_fn.center, 0.1 * teacher.mean(0, keepdim=True))


def test_multicrop_net_groups_resolutions():
    net = dino.build_dino_net(_tiny_config()).eval()
    crops = [torch.randn(2, 3, 32, 32)] * 2 + [torch.randn(2, 3, 16, 16)] * 3
    res = net(crops)
    assert res["out"].shape == (10, 16) and res["features"].shape == (10, 512)


def _step_setup():
    torch.manual_seed(0)
    student, teacher = dino.build_dino_net(_tiny_config()), dino.build_dino_net(_tiny_config())
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    crops = [torch.randn(2, 3, 32, 32) for _ in range(2)] + [torch.randn(2, 3, 16, 16) for _ in range(2)]
    optimizer = torch.optim.SGD([p for p in student.parameters() if p.requires_grad], lr=1.0)
    return student, teacher, crops, optimizer


@pytest.mark.parametrize("clip", [0.5, 0.0])
def test_train_step_clips_steps_and_moves_the_teacher_by_ema(clip):
    """Plain SGD with lr 1: each parameter moves by its (clipped) gradient; the teacher then follows the EMA."""
    from utils.precision import make_grad_scaler

    student, teacher, crops, optimizer = _step_setup()
    before = {k: v.detach().clone() for k, v in student.named_parameters()}
    teacher_before = {k: v.clone() for k, v in teacher.named_parameters()}
    loss_fn = dino.DINOLoss(16, 4, 0.04, 0.04, 1)
    res, features = dino.train_step(student, teacher, loss_fn, optimizer, make_grad_scaler(None), crops, epoch=1,
                                    momentum=0.75, clip_grad=clip, freeze_last_layer=1)
    assert features.shape == (2, 512) and torch.isfinite(res["loss"])  # the first global view's batch
    moves = {k: float((v.detach() - before[k]).norm()) for k, v in student.named_parameters()}
    assert moves["head.last_v"] > 0  # epoch 1: the prototypes train
    if clip:
        assert max(moves.values()) == pytest.approx(0.5, rel=1e-4)  # some gradients were clipped to 0.5
        assert all(m <= 0.5 * (1 + 1e-4) for m in moves.values())
    else:
        assert max(moves.values()) > 1.0  # unclipped
    for k, t in teacher.named_parameters():
        torch.testing.assert_close(t, 0.75 * teacher_before[k] + 0.25 * dict(student.named_parameters())[k].detach())


def test_train_step_runs_the_networks_under_the_asked_autocast_dtype():
    from utils.precision import make_grad_scaler

    for dtype, expected in ((None, torch.float32), (torch.bfloat16, torch.bfloat16)):
        student, teacher, crops, optimizer = _step_setup()
        loss_fn = dino.DINOLoss(16, 4, 0.04, 0.04, 1)
        res, features = dino.train_step(student, teacher, loss_fn, optimizer, make_grad_scaler(dtype), crops,
                                        epoch=1, momentum=0.75, clip_grad=3.0, freeze_last_layer=1, dtype=dtype)
        assert features.dtype == expected and res["loss"].dtype == torch.float32  # the loss itself in float32


def test_embedding_spread_is_one_for_spread_features_and_zero_for_collapse():
    torch.manual_seed(0)
    feats = torch.randn(256, 32) * 5 + 1.0
    x = feats.double().numpy()
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    expected = x.std(0, ddof=1).mean() * math.sqrt(32)
    assert float(p1_ssl_pretrain.embedding_spread(feats)) == pytest.approx(expected, rel=1e-5)
    assert 0.5 < expected < 1.0
    assert float(p1_ssl_pretrain.embedding_spread(torch.ones(8, 32) * 3)) == pytest.approx(0.0, abs=1e-6)


def test_per_parameter_gradient_clipping():
    lin = torch.nn.Linear(4, 3)
    lin.weight.grad = torch.full((3, 4), 10.0)  # norm 10 * sqrt(12)
    lin.bias.grad = torch.tensor([0.1, 0.0, 0.0])  # norm 0.1: untouched
    dino.clip_gradients(lin, 3.0)
    assert float(lin.weight.grad.norm()) == pytest.approx(3.0, rel=1e-4)
    torch.testing.assert_close(lin.bias.grad, torch.tensor([0.1, 0.0, 0.0]))


def test_collapse_warning():
    k = 4096
    assert p1_ssl_pretrain.collapse_warning({"embed_std": 0.5, "loss": 3.0, "teacher_entropy": 2.0, "kl": 1.0}, k, 3) is None
    assert "zero spread" in p1_ssl_pretrain.collapse_warning({"embed_std": 0.01, "loss": 3.0, "teacher_entropy": 2.0,
                                                   "kl": 1.0}, k, 3)
    assert "uniform" in p1_ssl_pretrain.collapse_warning({"embed_std": 0.5, "loss": math.log(k), "teacher_entropy":
                                               math.log(k), "kl": 0.0}, k, 3)
    assert "one prototype" in p1_ssl_pretrain.collapse_warning({"embed_std": 0.5, "loss": 0.001, "teacher_entropy": 0.001,
                                                     "kl": 0.0}, k, 3)


def test_prototype_init_is_nn_linears():
    """DINO's prototype layer is an nn.Linear made after its trunc-normal pass: its rows keep nn.Linear's default
    init, uniform(+-1/sqrt(fan_in)), ~0.577 long for any fan_in (the trunc-normal std 0.02 would give 0.32)."""
    torch.manual_seed(0)
    head = dino.DINOHead(64, 4096, hidden_dim=32, bottleneck_dim=256)
    ours = head.last_v.detach().norm(dim=1)
    reference = torch.nn.Linear(256, 4096, bias=False).weight.detach().norm(dim=1)
    assert abs(float(ours.mean()) - float(reference.mean())) < 0.005 and abs(float(ours.mean()) - 3 ** -0.5) < 0.01
    assert abs(float(ours.std()) - float(reference.std())) < 0.005
    assert float(head.last_v.detach().abs().max()) <= 256 ** -0.5  # the uniform bound 1/sqrt(fan_in)
    # the MLP keeps DINO's trunc-normal(0.02) init and zero biases
    first = head.mlp[0]
    assert abs(float(first.weight.detach().std()) - 0.02) < 0.002 and float(first.bias.detach().abs().max()) == 0.0


def test_lr_rule_is_per_256_images():
    """--lr reads as DINO reads it: lr x total_batch / 256 (the report: 0.04 at batch 32 = 0.005)."""
    from utils.optim import scaled_lr

    args = p1_ssl_pretrain.get_args_parser().parse_args([])
    assert (args.lr, args.lr_ref_batch, args.batch_size) == (0.04, 256, 32)
    assert scaled_lr(args.lr, 32, args.lr_ref_batch) == pytest.approx(0.005)
    assert scaled_lr(args.lr, 4 * 32, args.lr_ref_batch) == pytest.approx(0.02)  # 4 GPUs x 32


def test_no_flags_is_the_reports_recipe():
    """The recipe, written out here independently of the parser (official DINO's ResNet-50 settings as the report
    ran them)."""
    args = p1_ssl_pretrain.get_args_parser().parse_args([])
    recipe = {"arch": "resnet50", "global_crop_size": 224, "local_crop_size": 96, "local_crops_number": 8,
              "global_crops_scale": (0.14, 1.0), "local_crops_scale": (0.05, 0.14), "out_dim": 65536,
              "hidden_dim": 2048, "bottleneck_dim": 256, "use_bn_in_head": False, "norm_last_layer": True,
              "optimizer": "sgd", "lr": 0.04, "lr_ref_batch": 256, "batch_size": 32, "min_lr": 1e-6,
              "weight_decay": 1e-4, "warmup_epochs": 10, "epochs": 300, "momentum_teacher": 0.996,
              "teacher_temp": 0.04, "warmup_teacher_temp": 0.04, "student_temp": 0.1, "center_momentum": 0.9,
              "freeze_last_layer": 1, "clip_grad": 3.0, "warmup_teacher_temp_epochs": 0, "knn_k": 20,
              "knn_temperature": 0.07, "num_classes": 65}
    assert {k: getattr(args, k) for k in recipe} == recipe
    mini = p1_ssl_pretrain.get_args_parser().parse_args(["--preset", "mini84", "--local-crops-number", "4"])
    assert (mini.global_crop_size, mini.local_crop_size, mini.out_dim, mini.local_crops_number) == (128, 64, 4096, 4)


def test_build_dino_net_passes_the_head_options_through():
    config = dict(_tiny_config(), use_bn_in_head=True, norm_last_layer=False)
    head = dino.build_dino_net(config).head
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in head.mlp.modules())
    assert head.last_g.requires_grad  # norm_last_layer=False: the prototypes' norms train
    head = dino.build_dino_net(_tiny_config()).head
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in head.mlp.modules()) and not head.last_g.requires_grad


def test_crops_of_any_resolutions_and_counts_are_batched_per_resolution():
    """Consecutive crops of one size go through the backbone together; in eval mode that equals one by one, for
    groups of any size (here 2, 1, 3)."""
    torch.manual_seed(0)
    net = dino.build_dino_net(_tiny_config()).eval()
    crops = [torch.randn(2, 3, s, s) for s in (32, 32, 24, 16, 16, 16)]
    with torch.no_grad():
        features = net(crops)["features"]
        alone = torch.cat([net.backbone(c) for c in crops])
    torch.testing.assert_close(features, alone, rtol=1e-4, atol=1e-5)


def test_the_center_is_the_mean_teacher_output_over_every_process(monkeypatch):
    """With two processes, each batch sum is all-reduced and divided by the global batch (2 x 4 rows)."""
    from utils import distributed as dist_utils

    loss_fn = dino.DINOLoss(out_dim=3, num_crops=2, warmup_teacher_temp=0.04, teacher_temp=0.04,
                            warmup_teacher_temp_epochs=0, center_momentum=0.5)
    teacher_output = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    other_rank = torch.full((4, 3), 10.0)  # what the second process holds
    monkeypatch.setattr(dist_utils, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist_utils, "all_reduce_sum", lambda t: t.add_(other_rank.sum(0, keepdim=True)))
    loss_fn.update_center(teacher_output)
    global_mean = torch.cat([teacher_output, other_rank]).mean(0, keepdim=True)
    torch.testing.assert_close(loss_fn.center, 0.5 * global_mean)


def test_a_warning_is_framed_on_stderr_to_stand_out_in_a_long_log(capsys):
    p1_ssl_pretrain.warn("epoch 3: the teacher's entropy is near 0 (collapse)")
    rule = "!" * 78
    assert capsys.readouterr() == ("", "\n{}\nWARNING epoch 3: the teacher's entropy is near 0 (collapse)\n{}\n"
                                   .format(rule, rule))
