"""DINO (Caron et al. 2021) for a ResNet: the multi-crop network, the head, the loss and one training step.

The trainer (``p1_ssl_pretrain.py``) and the benchmark (``tools/benchmark.py``) both run ``train_step``.
"""
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import distributed as dist_utils
from utils.models import build_resnet_backbone
from utils.precision import autocast


class DINOHead(nn.Module):
    """MLP (GELU) -> L2-normalise -> prototype layer whose rows have unit norm (weight norm with g fixed at 1)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 use_bn: bool = False, norm_last_layer: bool = True) -> None:
        super().__init__()
        layers = []  # type: List[nn.Module]
        dims = [in_dim, hidden_dim, hidden_dim]
        for a, b in zip(dims[:-1], dims[1:]):
            layers.append(nn.Linear(a, b))
            if use_bn:
                layers.append(nn.BatchNorm1d(b))
            layers.append(nn.GELU())
        layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        # weight norm written out: W = g * v / ||v|| per prototype; g = 1 and frozen when norm_last_layer. DINO makes
        # this layer after its trunc-normal init pass, so v keeps nn.Linear's default init (rows ~0.58 long, not
        # 0.32): with unit-norm prototypes the length of v sets how fast each prototype turns per step.
        self.last_v = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        nn.init.kaiming_uniform_(self.last_v, a=math.sqrt(5))  # what nn.Linear.reset_parameters does
        self.last_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return F.linear(x, self.last_g * F.normalize(self.last_v, dim=1))


class MultiCropNet(nn.Module):
    """Backbone + head over a list of crops: crops of one resolution go through the backbone together."""

    def __init__(self, backbone: nn.Module, head: DINOHead) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops: Sequence[torch.Tensor]) -> Dict[str, torch.Tensor]:
        feats = []
        start = 0
        while start < len(crops):  # group consecutive crops of equal size into one batch
            end = start + 1
            while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
                end += 1
            feats.append(self.backbone(torch.cat(list(crops[start:end]))))
            start = end
        feats_all = torch.cat(feats)  # (V*B, D)
        return {"out": self.head(feats_all), "features": feats_all}


def build_dino_net(config: Dict[str, Any]) -> MultiCropNet:
    """Student or teacher network from its config dict (stored in every checkpoint)."""
    backbone = build_resnet_backbone(config["arch"])
    head = DINOHead(backbone.feature_dim, config["out_dim"], config["hidden_dim"], config["bottleneck_dim"],
                    config["use_bn_in_head"], config["norm_last_layer"])
    return MultiCropNet(backbone, head)


class DINOLoss(nn.Module):
    """Cross-entropy between centred, sharpened teacher softmax on the 2 global views and the student's
    log-softmax on every other view, averaged over pairs; updates the center (all-reduced) after each call."""

    def __init__(self, out_dim: int, num_crops: int, warmup_teacher_temp: float, teacher_temp: float,
                 warmup_teacher_temp_epochs: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.num_crops, self.student_temp, self.center_momentum = num_crops, student_temp, center_momentum
        self.warmup_teacher_temp, self.teacher_temp = warmup_teacher_temp, teacher_temp
        self.warmup_epochs = warmup_teacher_temp_epochs
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temperature(self, epoch: int) -> float:
        """Linear warm-up from warmup_teacher_temp (epoch 0) to teacher_temp (epoch = warm-up epochs - 1)."""
        if epoch >= self.warmup_epochs:
            return self.teacher_temp
        if self.warmup_epochs == 1:
            return self.warmup_teacher_temp
        t = epoch / (self.warmup_epochs - 1)
        return self.warmup_teacher_temp + t * (self.teacher_temp - self.warmup_teacher_temp)

    def forward(self, student_output: torch.Tensor, teacher_output: torch.Tensor,
                epoch: int) -> Dict[str, torch.Tensor]:
        """student_output: (num_crops*B, K); teacher_output: (2*B, K). Returns loss and collapse signals."""
        student = (student_output.float() / self.student_temp).chunk(self.num_crops)
        temp = self.teacher_temperature(epoch)
        teacher_probs = F.softmax((teacher_output.float() - self.center) / temp, dim=-1).detach().chunk(2)
        total, pairs = 0.0, 0
        for iq, q in enumerate(teacher_probs):
            for v in range(self.num_crops):
                if v == iq:
                    continue  # no loss between a view and itself
                total = total + torch.sum(-q * F.log_softmax(student[v], dim=-1), dim=-1).mean()
                pairs += 1
        loss = total / pairs
        probs = torch.cat(teacher_probs)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()
        self.update_center(teacher_output.float())
        # loss = mean over pairs of H(teacher, student) = H(teacher) + KL(teacher || student)
        return {"loss": loss, "teacher_entropy": entropy.detach(), "kl": (loss - entropy).detach()}

    def update_center(self, teacher_output: torch.Tensor) -> None:
        """center <- m * center + (1 - m) * mean teacher output over the global batch of all processes."""
        with torch.no_grad():
            batch_center = teacher_output.sum(dim=0, keepdim=True)
            dist_utils.all_reduce_sum(batch_center)
            batch_center = batch_center / (teacher_output.shape[0] * dist_utils.get_world_size())
            self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)


def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher = m * teacher + (1 - m) * student for every parameter (not the BatchNorm buffers), in two fused
    foreach calls."""
    with torch.no_grad():
        t_params = [p for p in teacher.parameters()]
        s_params = [p.detach() for p in student.parameters()]
        torch._foreach_mul_(t_params, momentum)
        torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)


def clip_gradients(model: nn.Module, clip: float) -> None:
    """Scale each parameter's gradient to norm <= clip (DINO's per-parameter rule), without host syncs."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    scales = torch._foreach_norm(grads)  # min(1, clip / (norm + 1e-6)) per parameter, in a few fused calls
    torch._foreach_add_(scales, 1e-6)
    torch._foreach_reciprocal_(scales)
    torch._foreach_mul_(scales, clip)
    torch._foreach_clamp_max_(scales, 1.0)
    torch._foreach_mul_(grads, scales)


def train_step(student: nn.Module, teacher: nn.Module, loss_fn: DINOLoss, optimizer: torch.optim.Optimizer,
               scaler: Any, crops: Sequence[torch.Tensor], epoch: int, momentum: float, clip_grad: float,
               freeze_last_layer: int, dtype: Optional[torch.dtype] = None,
               ema: Callable[[nn.Module, nn.Module, float], None] = ema_update
               ) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    """One DINO step (0-based ``epoch``): teacher on the 2 global views, student on all, loss, backward,
    per-parameter clipping, prototypes frozen during the first ``freeze_last_layer`` epochs, optimizer step, EMA.
    ``student``/``teacher`` may be DDP- or torch.compile-wrapped. Returns the loss outputs and the student's
    backbone features of the first global view (for the spread monitor)."""
    device = crops[0].device
    with autocast(device, dtype):
        with torch.no_grad():
            teacher_out = teacher(crops[:2])["out"]  # only the global views go through the teacher
        student_res = student(crops)
        res = loss_fn(student_res["out"], teacher_out, epoch)
    plain_student = dist_utils.unwrap(student)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(res["loss"]).backward()
    if clip_grad > 0:
        scaler.unscale_(optimizer)
        clip_gradients(plain_student, clip_grad)
    if epoch < freeze_last_layer:  # the prototypes stay fixed during the first epoch(s)
        plain_student.head.last_v.grad = None
        plain_student.head.last_g.grad = None
    scaler.step(optimizer)
    scaler.update()
    ema(dist_utils.unwrap(teacher), plain_student, momentum)
    return res, student_res["features"][: crops[0].shape[0]]
