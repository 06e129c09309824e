"""Optimisation every task shares: parameter groups without decay on depthwise filters, warm-up, schedules."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pytorch_lightning import LightningModule
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LinearLR, LRScheduler


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split parameters into a decayed group and an undecayed one.

    Section 3.4 of the paper: "it's important to put very little or no weight decay (l2
    regularization) on the depthwise filters since there are so few parameters in them". BN
    affine terms and biases are not decayed either (common practice, as in torchvision's
    reference scripts' ``norm_weight_decay=0``).
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        depthwise = isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels
        for param in module.parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            is_weight = param.ndim > 1
            (decay if is_weight and not depthwise else no_decay).append(param)
    groups: list[dict[str, Any]] = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def warmup_cosine(optimizer: Optimizer, total_steps: int, warmup_steps: int) -> LRScheduler:
    """Linear warm-up then cosine decay to zero, stepped every batch.

    The default schedule of the tasks: it needs no tuning to the run's length, which is what a
    short run on a small custom dataset (or the built-in demo) needs. The paper's own ImageNet
    schedule (decay every two epochs) lives in ``configs/``.
    """
    total_steps = max(total_steps, 1)
    warmup_steps = min(max(warmup_steps, 0), total_steps - 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return LambdaLR(optimizer, factor)


def configure_optimization(
    module: LightningModule,
    optimizer_factory: Callable[[list[dict[str, Any]]], Optimizer],
    scheduler_factory: Callable[[Optimizer], LRScheduler] | None,
    weight_decay: float,
    scheduler_interval: str,
    warmup_epochs: float,
) -> Any:
    """``configure_optimizers`` of every task: parameter groups, warm-up, then the schedule.

    With no ``scheduler_factory``: linear warm-up over ``warmup_epochs`` then cosine to zero,
    stepped every batch. With one (a paper recipe from ``configs/``): a per-step linear warm-up
    from 0.001 x lr, as torchvision's references do, chained in front of the given scheduler,
    which steps every ``scheduler_interval``. LinearLR is chainable: it multiplies with the
    other scheduler's factor instead of overriding it.
    """
    optimizer = optimizer_factory(param_groups(module, weight_decay))
    trainer = module.trainer
    total = int(trainer.estimated_stepping_batches)
    warmup_steps = int(warmup_epochs * total / max(trainer.max_epochs or 1, 1))
    if scheduler_factory is None:
        scheduler = warmup_cosine(optimizer, total, warmup_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
    schedulers = []
    if warmup_steps > 0:
        warmup = LinearLR(optimizer, start_factor=0.001, total_iters=warmup_steps)
        schedulers.append({"scheduler": warmup, "interval": "step"})
    schedulers.append({"scheduler": scheduler_factory(optimizer), "interval": scheduler_interval})
    return [optimizer], schedulers
