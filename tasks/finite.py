"""Non-finite numbers end a training run in one sentence, and never reach a checkpoint.

A NaN in the data (``--data.teacher_embeddings`` holding one, say) or a learning rate too high
used to train on with exit status 0, leaving ``last.ckpt`` full of NaN weights that every later
``--ckpt_path last`` resumed or scored. Two guards close that:

* ``FiniteLoss`` checks every training loss before its backward pass (so the step that would
  spread it into the weights never runs). Under DDP the ranks agree first (a NaN on one rank stops
  every rank at the same step; a rank stopping alone left the others waiting in their gradient
  all-reduce), and the run ends with ``NonFiniteError``: one sentence naming the step and the
  loss, exit status 2.
* ``first_non_finite`` is what ``tasks.checkpoints.TaskCheckpoint`` asks before writing any
  checkpoint: a state with a NaN or an infinity (a finite loss can still give an infinite
  gradient) is never written, so the checkpoints on disk keep the last finite weights.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from torch import Tensor, nn

from backbone.errors import BadInputError

ADVICE = (
    "look for NaN or infinite values in the data (e.g. --data.teacher_embeddings) or lower the learning rate, "
    "then resume with --ckpt_path last"
)


class NonFiniteError(BadInputError):
    """A training loss or the weights became NaN or infinite (raised on every rank at the same point)."""


def any_rank(trainer: Trainer, flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any rank (a collective: every rank must call it)."""
    return bool(trainer.strategy.reduce_boolean_decision(bool(flag), all=False))


def first_non_finite(module: nn.Module) -> str | None:
    """The name of the first floating-point tensor of ``module``'s state dict holding a NaN or an
    infinity, or None. One device synchronisation, however many tensors."""
    tensors = [(name, t) for name, t in module.state_dict().items() if t.is_floating_point() and t.numel()]
    if not tensors:
        return None
    finite = torch.stack([torch.isfinite(t).all() for _, t in tensors])
    if bool(finite.all()):
        return None
    return tensors[int((~finite).nonzero()[0, 0])][0]


def _format(value: float) -> str:
    return f"{value:.6g}" if value == value and abs(value) != float("inf") else str(value).lower()


class FiniteLoss(Callback):
    """Stop the run, on every rank, at the first training loss that is NaN or infinite (see module docstring)."""

    def __init__(self) -> None:
        self._batch = 0

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self._batch = batch_idx

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        loss = loss.detach()
        bad = not bool(torch.isfinite(loss).all())
        if not any_rank(trainer, bad):
            return
        where = f"after {trainer.global_step} optimizer steps (epoch {trainer.current_epoch}, batch {self._batch}"
        value = float(loss.float().mean())
        if trainer.world_size > 1:
            # Every rank names the same rank and value: the first one whose loss is not finite.
            values = trainer.strategy.all_gather(loss.float().mean().reshape(1)).reshape(-1).tolist()
            rank = next(r for r, v in enumerate(values) if not torch.isfinite(torch.tensor(v)))
            value, where = values[rank], f"{where}, on rank {rank} of {len(values)}"
        raise NonFiniteError(
            f"The training loss is {_format(value)} {where}); the run stopped before applying it and no checkpoint "
            f"holds non-finite weights: {ADVICE}."
        )
