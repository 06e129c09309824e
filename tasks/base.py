"""The base of every task's LightningModule: optimisation, hyper-parameters, predict plumbing.

A task subclasses ``TaskModule`` and adds only its network, loss and metric::

    class MyTask(TaskModule):
        def __init__(self, num_cells: int = 10, label_smoothing: float = 0.0, **kwargs: Any) -> None:
            super().__init__(**kwargs)      # width, resolution, weight_decay, optimizer, ...
            self.model = ...
        def training_step(self, batch, batch_idx): ...
        def validation_step(self, batch, batch_idx): ...
        def predict_records(self, batch): ...   # one record per image, for the task's writer

LightningCLI follows ``**kwargs`` into this ``__init__`` (jsonargparse resolves
``super().__init__(**kwargs)``), so ``--model.optimizer``, ``--model.weight_decay``,
``--model.warmup_epochs`` ... are the same options in every task, written once, here. A task
whose recipe wants another default optimizer or weight decay declares that argument itself and
passes it on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Literal

import torch
from pytorch_lightning import LightningModule
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.optim import Optimizer

from backbone.errors import BadInputError
from backbone.ranges import NonNegativeFloat, Resolution, Share, Width
from tasks.guards import check_loaded_checkpoint
from tasks.optim import check_optimization, configure_optimization


def adamw(params: Iterable[Any]) -> Optimizer:
    """AdamW, lr 3e-3: the default for a short from-scratch run on a small set.

    Chosen against SGD with Nesterov momentum on the built-in classification demo: see
    docs/classification.md, Measured. Weight decay comes from the parameter groups
    (``weight_decay``), never on depthwise filters (Section 3.4).
    """
    return torch.optim.AdamW(params, lr=3e-3)


class TaskModule(LightningModule):
    """What every task module shares.

    Args:
        width: width multiplier alpha (linked from ``--backbone``).
        resolution: input size (linked from ``--resolution``, whose default the task declares in
            ``tasks.<task>.task``).
        weight_decay: L2 on conv/FC weights; never on depthwise filters, BN or biases (Section 3.4).
        optimizer: any ``torch.optim`` optimizer (``--model.optimizer RMSprop --model.optimizer.lr ...``).
        lr_scheduler: a scheduler stepped every ``scheduler_interval``; None means linear
            warm-up over ``warmup_epochs`` then cosine to zero over the whole run, every batch.
        scheduler_interval: ``epoch`` or ``step``, for a given ``lr_scheduler``.
        warmup_epochs: linear warm-up length, before the cosine or in front of ``lr_scheduler``.
        lr_decay_start: share of the run (after the warm-up) held at the full lr before the
            default cosine starts (``tasks.optim.warmup_cosine``); 0 anneals over the whole run.
    """

    # Arguments kept out of the checkpoint's hyper-parameters. LightningCLI's ``--ckpt_path``
    # applies a checkpoint's hparams *over* the command line, so a saved inference option would
    # silently win over the one given at test/predict time; weight files need not exist where a
    # checkpoint (which already holds the weights) is used. Subclasses extend the tuple.
    not_saved: ClassVar[tuple[str, ...]] = ("optimizer", "lr_scheduler", "backbone_weights")
    # Old parameter-name prefix -> new, for checkpoints written before a rename.
    renamed_prefixes: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        width: Width = 1.0,
        resolution: Resolution = 224,
        weight_decay: NonNegativeFloat = 4e-5,
        optimizer: OptimizerCallable = adamw,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["epoch", "step"] = "epoch",
        warmup_epochs: NonNegativeFloat = 1.0,
        lr_decay_start: Share = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= lr_decay_start < 1.0:
            raise BadInputError(f"--model.lr_decay_start is a share of the run in [0, 1), not {lr_decay_start}.")
        # Collects the arguments of the subclass's __init__ too (Lightning walks the frames).
        self.save_hyperparameters(ignore=list(self.not_saved))
        self.optimizer_factory: Callable[..., Optimizer] = optimizer
        self.scheduler_factory = lr_scheduler
        check_optimization(optimizer, lr_scheduler)  # their own option checks, before any data is read

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        return configure_optimization(
            self,
            self.optimizer_factory,
            self.scheduler_factory,
            hp.weight_decay,
            hp.scheduler_interval,
            hp.warmup_epochs,
            hp.get("lr_decay_start", 0.0),
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Rename parameters saved under an older name (``renamed_prefixes``), then refuse in one
        sentence a checkpoint whose outputs mean other things than the data's (``tasks.guards``) or
        whose tensors do not fit this model (another width, class count ...)."""
        state = checkpoint.get("state_dict", {})
        for old, new in self.renamed_prefixes.items():
            for key in [k for k in state if k.startswith(old)]:
                state[new + key[len(old) :]] = state.pop(key)
        check_loaded_checkpoint(self._trainer, checkpoint)
        own = self.state_dict()
        for key, value in state.items():
            if key in own and tuple(own[key].shape) != tuple(value.shape):
                path = getattr(self._trainer, "ckpt_path", None) or "given"
                raise BadInputError(
                    f"The checkpoint {str(path)!r} holds {key} of shape {tuple(value.shape)} where this model has "
                    f"{tuple(own[key].shape)}: it was trained for another width or number of classes."
                )

    # --- deploy (``export``, ``test --deployed``: tasks/export.py) -------------------------
    # The names of the exported network's outputs, in order.
    deploy_outputs: ClassVar[tuple[str, ...]] = ("logits",)

    def check_export(self, runtime: str, int8: bool) -> None:
        """Refuse, in one sentence and before any work, an export this task cannot make well."""

    def deploy_network(self) -> nn.Module:
        """The network ``export`` writes: this module's ``forward`` (a batch of images, as the data
        gives them, in; what ``forward`` returns out), with any buffer it reads as a constant."""
        return ForwardOf(self)

    def deploy_inputs(self, batch: Any) -> Tensor:
        """The images ``deploy_network`` takes, from a training batch (int8 calibration)."""
        return batch[0] if isinstance(batch, (tuple, list)) else batch["image"]

    def deploy_state(self) -> dict[str, Tensor]:
        """What ``test --deployed`` needs of this module besides the network: its own persistent
        buffers (geolocation's partition), saved in ``deploy.json``."""
        skipped = self._non_persistent_buffers_set
        return {name: b for name, b in self.named_buffers(recurse=False) if name not in skipped}

    def deploy_metadata(self) -> dict[str, Any]:
        """What a runner needs to read the outputs, beyond the output names the data declares."""
        return {}

    def deployed_forward(self, runner: Any, record: Mapping[str, Any]) -> nn.Module:
        """What stands in for ``forward`` under ``test --deployed``: ``runner`` (a ``deploy.runtime.Runner``
        of the model ``deploy.json`` (``record``) describes) with ``forward``'s signature."""
        from deploy.runtime import DeployedForward

        return DeployedForward(runner)

    def use_deployed(self, network: nn.Module) -> None:
        """Score ``network`` (a deployed model with ``forward``'s signature) in place of ``forward``:
        every step that calls ``self(images)`` then runs the exported model, nothing else changes."""
        object.__setattr__(self, "forward", network)  # an instance attribute shadows the method

    # --- predict ----------------------------------------------------------------------------
    def predict_records(self, batch: Any) -> list[Any]:
        """One record per image of ``batch`` for the task's ``PredictionWriter``."""
        raise NotImplementedError

    def predict_step(self, batch: Any, batch_idx: int) -> list[Any]:
        # A batch of only unreadable files arrives as None (``collate_with_info``).
        return [] if batch is None else self.predict_records(batch)


class ForwardOf(nn.Module):
    """A task module's ``forward`` as a plain ``nn.Module``: what export traces.

    The task's network (``task.model``) is this module's child, so its weights are the graph's;
    the task itself is held outside the module tree: a tracer walking a LightningModule reads
    its ``trainer`` (refused when there is none). Buffers the task's ``forward`` reads become
    constants of the graph.
    """

    def __init__(self, task: TaskModule) -> None:
        super().__init__()
        self.net = task.model
        object.__setattr__(self, "task", task)

    def forward(self, images: Tensor) -> Any:
        return type(self.task).forward(self.task, images)
