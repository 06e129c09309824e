"""Pieces every task module shares: optimizer parameter groups, schedules, metrics.json."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
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


def write_json_atomic(path: str | os.PathLike[str], payload: Mapping[str, Any] | list[Any]) -> None:
    """Write JSON to ``path`` through a temporary file and a rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def scalar_metrics(metrics: Mapping[str, Any], skip_prefixes: Iterable[str] = ("train",)) -> dict[str, float]:
    """The scalar metrics of ``metrics`` as floats, without the training ones."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if any(name.startswith(p) for p in skip_prefixes):
            continue
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        if isinstance(value, (int, float)):
            out[name] = float(value)
    return out


class MetricsJSON(Callback):
    """Write the metrics of every validate/test run to ``<log_dir>/metrics.json``.

    Scripts and people read results from this file rather than from a progress bar. During
    ``fit`` the file holds the latest validation. Only rank 0 writes; the metrics it writes are
    already reduced over all ranks by the task's metric objects.
    """

    def _write(self, trainer: Trainer, stage: str) -> None:
        if trainer.sanity_checking:
            return
        # ``trainer.log_dir`` broadcasts from rank 0: every rank must ask, before rank 0 writes.
        log_dir = trainer.log_dir or trainer.default_root_dir
        if not trainer.is_global_zero:
            return
        payload: dict[str, Any] = {
            "stage": stage,
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "metrics": scalar_metrics(trainer.callback_metrics),
        }
        if trainer.ckpt_path:
            payload["checkpoint"] = str(trainer.ckpt_path)
        write_json_atomic(Path(log_dir) / "metrics.json", payload)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, "validate")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, "test")
