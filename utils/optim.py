"""Optimisation shared by every trainer: parameter groups, the optimizer, and the one learning-rate schedule."""
import math
from typing import Any, Dict, List, Optional

import torch


def schedule(step: int, total_steps: int, base: float, final: float = 0.0, warmup_steps: int = 0,
             warmup_start: float = 0.0, shape: str = "cosine") -> float:
    """The value at ``step`` (0-based) of a linear warm-up followed by a cosine or poly(0.9) decay.

    Warm-up: ``warmup_steps`` values evenly spaced from ``warmup_start`` to ``base`` inclusive (numpy's linspace,
    as DINO's ``cosine_scheduler``: the last warm-up step reaches ``base``). ``warmup_start = base / W`` gives the
    ramp base * (step + 1) / W. Then, with t = (step - W) / (total_steps - W) in [0, 1): cosine
    ``final + (base - final) * (1 + cos(pi t)) / 2`` or poly ``final + (base - final) * (1 - t) ** 0.9``.
    """
    if step < warmup_steps:
        if warmup_steps == 1:
            return warmup_start
        return warmup_start + (base - warmup_start) * step / (warmup_steps - 1)
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if shape == "poly":
        return final + (base - final) * (1.0 - t) ** 0.9
    if shape != "cosine":
        raise ValueError("unknown schedule shape {!r} (cosine or poly)".format(shape))
    return final + 0.5 * (base - final) * (1.0 + math.cos(math.pi * t))


def scaled_lr(lr: float, total_batch: int, ref_batch: Optional[int]) -> float:
    """The linear scaling rule: ``lr`` is the rate for ``ref_batch`` images and the run uses lr * total / ref;
    without a reference batch ``lr`` is used as given."""
    return lr if ref_batch is None else lr * total_batch / ref_batch


def weight_decay_groups(model: torch.nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """Two optimizer groups: weight decay on weights, none on biases and normalisation parameters (1-d)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def make_optimizer(name: str, groups: List[Dict[str, Any]], lr: float, momentum: float = 0.9,
                   nesterov: bool = False) -> torch.optim.Optimizer:
    """SGD (with momentum) or AdamW over ``groups``; each group's lr is set per step by the trainer."""
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError("unknown optimizer {!r} (sgd or adamw)".format(name))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's lr to ``lr`` times the group's ``lr_mult`` (1 when absent)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
