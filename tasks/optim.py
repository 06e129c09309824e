"""Optimisation every task shares: parameter groups without decay on depthwise filters, warm-up, schedules."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.callbacks import Timer
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LinearLR, LRScheduler

from backbone.errors import BadInputError


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


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: float,
    warmup_steps: int,
    time_fraction: Callable[[], float] | None = None,
    decay_start: float = 0.0,
) -> LRScheduler:
    """Linear warm-up then cosine decay to zero at the end of the run, stepped every batch.

    ``decay_start`` in [0, 1): the share of the run (after the warm-up) held at the full lr
    before the cosine starts; 0 is the classic warm-up + cosine. A short run from scratch is
    held back by a cosine over its whole length (the lr falls before the network has learnt
    much); holding the peak and annealing at the end ("warmup-stable-decay", Hu et al. 2024,
    MiniCPM) keeps the learning rate high for longer and still ends annealed.

    The default schedule of the tasks: it needs no tuning to the run's length, which is what a
    short run on a small custom dataset (or the built-in demo) needs. The paper's own ImageNet
    schedule (decay every two epochs) lives in ``configs/``.

    Progress after the warm-up is the larger of the step fraction (when ``total_steps`` is
    finite) and ``time_fraction()`` (the share of ``--trainer.max_time`` used): a run on a time
    budget still ends annealed, which beats a truncated schedule (Li et al., "Budgeted
    Training", ICLR 2020).
    """
    if not 0.0 <= decay_start < 1.0:
        raise ValueError(f"decay_start is a share of the run in [0, 1), not {decay_start}")
    finite = math.isfinite(total_steps)
    if finite:
        total_steps = max(int(total_steps), 1)
        warmup_steps = min(max(warmup_steps, 0), total_steps - 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1) if finite else 0.0
        if time_fraction is not None:
            progress = max(progress, time_fraction())
        progress = max(progress - decay_start, 0.0) / (1.0 - decay_start)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return LambdaLR(optimizer, factor)


def steps_per_epoch(trainer: Trainer) -> int:
    """Optimizer steps in one epoch of the real training loader."""
    batches = trainer.num_training_batches
    if not math.isfinite(batches):
        return 1
    return max(1, math.ceil(batches / trainer.accumulate_grad_batches))


def time_budget_fraction(trainer: Trainer) -> Callable[[], float] | None:
    """A function returning the share of ``--trainer.max_time`` spent training; None without one."""
    timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)  # type: ignore[attr-defined]
    if timer is None or timer.time_remaining("train") is None:
        return None

    def fraction() -> float:
        elapsed = timer.time_elapsed("train")
        remaining = timer.time_remaining("train") or 0.0
        return elapsed / max(elapsed + remaining, 1e-9)

    return fraction


def check_optimization(
    optimizer_factory: Callable[[list[Any]], Optimizer], scheduler_factory: Callable[[Optimizer], Any] | None
) -> None:
    """Build the optimizer and scheduler once on a dummy parameter, when the module is made: torch's
    own checks of their options (a negative learning rate, a zero step size) then refuse them in
    one sentence before any data is read, not in a traceback when training starts."""
    dummy = [torch.zeros(1, requires_grad=True)]
    try:
        optimizer = optimizer_factory(dummy)
    except (ValueError, TypeError) as error:
        raise BadInputError(f"--model.optimizer refuses its options: {str(error).rstrip('.')}.") from None
    if scheduler_factory is not None:
        try:
            scheduler_factory(optimizer)
        except (ValueError, TypeError) as error:
            raise BadInputError(f"--model.lr_scheduler refuses its options: {str(error).rstrip('.')}.") from None


def configure_optimization(
    module: LightningModule,
    optimizer_factory: Callable[[list[dict[str, Any]]], Optimizer],
    scheduler_factory: Callable[[Optimizer], LRScheduler] | None,
    weight_decay: float,
    scheduler_interval: str,
    warmup_epochs: float,
    decay_start: float = 0.0,
) -> Any:
    """``configure_optimizers`` of every task: parameter groups, warm-up, then the schedule.

    The run's length is whatever bounds it (``max_steps``, ``max_epochs``, ``max_time``);
    the warm-up is ``warmup_epochs`` of the real loader's steps. With no ``scheduler_factory``:
    linear warm-up then cosine to zero over the whole run (``warmup_cosine``), stepped every
    batch. With one (a paper recipe from ``configs/``): a per-step linear warm-up from 0.001 x lr,
    as torchvision's references do, chained in front of the given scheduler, which steps every
    ``scheduler_interval``. LinearLR is chainable: it multiplies with the other scheduler's factor
    instead of overriding it.
    """
    optimizer = optimizer_factory(param_groups(module, weight_decay))
    trainer = module.trainer
    total = float(trainer.estimated_stepping_batches)  # inf for a run bounded only by time
    warmup_steps = round(warmup_epochs * steps_per_epoch(trainer))
    if math.isfinite(total):
        warmup_steps = min(warmup_steps, int(total) - 1)
    if scheduler_factory is None:
        scheduler = warmup_cosine(optimizer, total, warmup_steps, time_budget_fraction(trainer), decay_start)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
    schedulers = []
    if warmup_steps > 0:
        warmup = LinearLR(optimizer, start_factor=0.001, total_iters=warmup_steps)
        schedulers.append({"scheduler": warmup, "interval": "step"})
    schedulers.append({"scheduler": scheduler_factory(optimizer), "interval": scheduler_interval})
    return [optimizer], schedulers
