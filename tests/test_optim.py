"""utils/optim.py: parameter groups, the optimizer, the scaling rule and the schedule's edges (DINO's cosine
scheduler itself is compared in tests/test_p1_dino_parts.py)."""
import pytest
import torch

from utils.optim import make_optimizer, scaled_lr, schedule, set_lr, weight_decay_groups


class _Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)  # weight 4-d, bias 1-d
        self.bn = torch.nn.BatchNorm2d(4)  # weight, bias 1-d
        self.fc = torch.nn.Linear(4, 2)  # weight 2-d, bias 1-d
        self.scale = torch.nn.Parameter(torch.ones(2, 1))  # 2-d, as DINO's prototype norms
        self.frozen = torch.nn.Linear(2, 2)
        for p in self.frozen.parameters():
            p.requires_grad = False


def test_weight_decay_groups_exempt_exactly_the_1d_parameters():
    model = _Small()
    decay, no_decay = weight_decay_groups(model, 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    name = {id(p): n for n, p in model.named_parameters()}
    assert sorted(name[id(p)] for p in decay["params"]) == ["conv.weight", "fc.weight", "scale"]
    assert sorted(name[id(p)] for p in no_decay["params"]) == ["bn.bias", "bn.weight", "conv.bias", "fc.bias"]
    # frozen parameters are in neither group; an optimizer over the groups takes each parameter once
    optimizer = make_optimizer("sgd", [decay, no_decay], lr=0.1)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]


def test_make_optimizer_sgd_and_adamw_and_an_unknown_name():
    params = [torch.nn.Parameter(torch.zeros(2))]
    sgd = make_optimizer("sgd", [{"params": params}], lr=0.3, momentum=0.8, nesterov=True)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.param_groups[0]["lr"] == 0.3 and sgd.param_groups[0]["momentum"] == 0.8
    assert sgd.param_groups[0]["nesterov"] is True
    plain = make_optimizer("sgd", [{"params": params}], lr=0.3).param_groups[0]
    assert plain["momentum"] == 0.9 and plain["nesterov"] is False
    adamw = make_optimizer("adamw", [{"params": params}], lr=0.002)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["lr"] == 0.002
    with pytest.raises(ValueError, match=r"unknown optimizer 'lamb' \(sgd or adamw\)"):
        make_optimizer("lamb", [{"params": params}], lr=0.1)


def test_set_lr_applies_each_groups_multiplier():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = make_optimizer("sgd", [{"params": [a]}, {"params": [b], "lr_mult": 0.1}], lr=1.0)
    set_lr(optimizer, 0.5)
    assert [g["lr"] for g in optimizer.param_groups] == [0.5, pytest.approx(0.05)]


def test_scaled_lr_is_linear_in_the_total_batch():
    assert scaled_lr(0.04, 128, 32) == pytest.approx(0.16)
    assert scaled_lr(0.04, 16, 32) == pytest.approx(0.02)
    assert scaled_lr(0.04, 128, None) == 0.04


def test_schedule_edges_poly_and_unknown_shape():
    # the ramp runs from warmup_start to base; by default the decay ends at 0
    assert schedule(2, 10, 1.0, 0.1, warmup_steps=5, warmup_start=0.2) == pytest.approx(0.6)
    assert schedule(10, 10, 1.0) == 0.0
    # a single warm-up step gives the start value; after the last step the final value holds
    assert schedule(0, 10, 1.0, 0.1, warmup_steps=1, warmup_start=0.3) == 0.3
    assert schedule(1, 10, 1.0, 0.1, warmup_steps=1, warmup_start=0.3) == 1.0
    assert schedule(10, 10, 1.0, 0.1) == pytest.approx(0.1)
    assert schedule(25, 10, 1.0, 0.1) == pytest.approx(0.1)
    # warm-up only (total = warm-up steps): no division by zero, the peak holds after it
    assert schedule(4, 4, 1.0, 0.0, warmup_steps=4) == pytest.approx(1.0)
    # poly(0.9): final + (base - final) * (1 - t) ** 0.9, t counted after the warm-up
    assert schedule(2, 12, 1.0, 0.1, warmup_steps=2, shape="poly") == pytest.approx(1.0)
    assert schedule(7, 12, 1.0, 0.1, warmup_steps=2, shape="poly") == pytest.approx(0.1 + 0.9 * 0.5 ** 0.9)
    assert schedule(12, 12, 1.0, 0.1, warmup_steps=2, shape="poly") == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"unknown schedule shape 'linear' \(cosine or poly\)"):
        schedule(5, 10, 1.0, shape="linear")
    # by default no warm-up: step 0 is the base value; a warm-up starts from 0 unless told otherwise
    assert schedule(0, 10, 1.0) == 1.0
    assert schedule(0, 10, 1.0, warmup_steps=3) == 0.0
    # one step after the warm-up: its single decay step ends at the final value
    assert schedule(2, 2, 1.0, 0.1, warmup_steps=1) == pytest.approx(0.1)
