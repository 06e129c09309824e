"""Checkpoints that keep the work: a fresh ``last.ckpt``, atomic writes, and refusals in one sentence.

* ``TaskCheckpoint``: Lightning 2.6's ``ModelCheckpoint(save_last=True)`` refreshes ``last.ckpt``
  only when a top-k checkpoint was saved at the same step, i.e. when the monitored metric
  improved: a run killed after a plateau resumed from far back. Here ``last.ckpt`` is rewritten
  after every validation, at the end of every run (max_epochs, max_steps, max_time) and when a run
  ends by an exception or Ctrl-C (in a single-process run), so a killed run loses at most the
  steps since the last validation (or since ``--checkpoint.every_n_train_steps``).
* ``AtomicCheckpointIO``: every checkpoint is written to a temporary file in the checkpoint
  folder itself and renamed (Lightning's own transaction goes through the system temp folder,
  which may be another filesystem, so a kill can leave a half-moved file).
* ``stamp``: every checkpoint records which task, width and resolution wrote it, so that
  ``check_checkpoint`` can refuse a file of another task or size with one sentence, before
  LightningCLI applies the checkpoint's hyper-parameters (which would fail with a parser error
  or a state-dict traceback); and what each of its output units means (``outputs``: the data
  module's ``output_names``), which ``tasks.guards`` compares by name with the data it is used on.
  The file is opened by ``backbone.checkpoint_reader``, the reader every checkpoint, teacher and
  weights file goes through, so a damaged file gets one sentence.
* ``TaskCheckpoint`` never writes a state holding a NaN or an infinity (``tasks.finite``): the run
  stops in one sentence instead, and the files on disk keep the last finite weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn

from backbone.checkpoint_reader import read_checkpoint
from backbone.errors import BadInputError
from tasks.finite import ADVICE, NonFiniteError, any_rank, first_non_finite

STAMP_KEY = "mobilenet_suite"
OUTPUTS_KEY = "outputs"  # in the stamp: {head: [name of each output unit]}, see TaskDataModule.output_names


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to ``.<name>.tmp`` in the target folder, then ``os.replace``: never half a file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        target = Path(path)
        if "://" in str(path):  # remote storage: Lightning's fsspec transaction
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        try:
            torch.save(checkpoint, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)


class TaskStamp(Callback):
    """Record in every checkpoint which task, width and resolution wrote it, and the names of its outputs."""

    def __init__(self, task: str) -> None:
        self.task = task
        self._outputs: tuple[int, Any] | None = None  # (id of the data module, its output names)

    def output_names(self, trainer: Trainer) -> Any:
        """The training data's ``output_names("fit")`` (read once per data module), or None."""
        data = trainer.datamodule
        if data is None or not callable(getattr(data, "output_names", None)):
            return None
        if self._outputs is None or self._outputs[0] != id(data):
            self._outputs = (id(data), data.output_names("fit"))
        return self._outputs[1]

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        hparams = pl_module.hparams
        checkpoint[STAMP_KEY] = {
            "task": self.task,
            "width": hparams.get("width"),
            "resolution": hparams.get("resolution"),
        }
        outputs = self.output_names(trainer)
        if outputs is not None:
            checkpoint[STAMP_KEY][OUTPUTS_KEY] = {head: list(names) for head, names in outputs.items()}


class TaskCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` always holds the latest state (see module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._last_step_written = -1

    def _refresh_last(self, trainer: Trainer) -> None:
        if not self.save_last or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return
        if trainer.fast_dev_run or self._last_step_written == trainer.global_step or trainer.global_step == 0:
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        # Every rank saves together, and DDP keeps the weights equal on every rank: all raise.
        bad = first_non_finite(trainer.lightning_module)
        if any_rank(trainer, bad is not None):
            raise NonFiniteError(
                f"The weights hold a NaN or an infinity ({bad or 'on another rank'}) after {trainer.global_step} "
                f"optimizer steps, so {str(filepath)!r} was not written and the checkpoints keep the last finite "
                f"weights: {ADVICE}."
            )
        super()._save_checkpoint(trainer, filepath)
        if Path(filepath).name.startswith(self.CHECKPOINT_NAME_LAST):
            self._last_step_written = trainer.global_step

    # Refresh after the hook in which Lightning saves the top-k for this validation (epoch end
    # when validation runs once per epoch, else validation end): refreshing earlier would mark
    # the step as saved and make Lightning skip the top-k checkpoint.
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._refresh_last(trainer)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        # Under DDP only the failing rank gets here, and saving is collective (a broadcast, a
        # barrier): it waited forever for ranks still in their all-reduce (a 2-process gloo run
        # hung). last.ckpt then holds the last validation; the other ranks end on the lost peer.
        # A NonFiniteError is raised by every rank at the same point, so they can save together.
        if trainer.world_size == 1 or isinstance(exception, NonFiniteError):
            # Non-finite weights are not saved (and not raised about again: the run is ending).
            if not any_rank(trainer, first_non_finite(pl_module) is not None):
                self._refresh_last(trainer)


def resolve_ckpt_path(value: str | None, folder: Path) -> str | None:
    """``last`` / ``best`` -> the file in the run's checkpoint folder; a path is read by ``check_checkpoint``."""
    if value is None or value in ("hpc", "registry"):
        return value
    if value == "last":
        path = folder / f"{ModelCheckpoint.CHECKPOINT_NAME_LAST}{ModelCheckpoint.FILE_EXTENSION}"
        if not path.is_file():
            raise BadInputError(
                f"--ckpt_path last found no last.ckpt in {str(folder)!r}; train first, or set "
                "--trainer.default_root_dir to the run folder that holds it."
            )
        return str(path)
    if value == "best":
        candidates = sorted(folder.glob("best-*.ckpt"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
        if not candidates:
            raise BadInputError(
                f"--ckpt_path best found no best-*.ckpt in {str(folder)!r}; train first, or set "
                "--trainer.default_root_dir to the run folder that holds it."
            )
        return str(candidates[-1])
    return value  # read (and refused if it cannot be) by check_checkpoint, through the one reader


def check_checkpoint(
    path: str,
    task: str,
    width: float,
    resolution: int,
    default_width: float,
    default_resolution: int,
    model_options: set[str],
) -> tuple[float, int]:
    """Refuse a checkpoint of another task, or of another width/resolution than the one asked.

    A width or resolution left at its default is taken from the checkpoint, so ``test --ckpt_path
    last`` needs no ``--backbone``. Returns the (width, resolution) to use.
    """
    checkpoint = read_checkpoint(path)
    stamp = checkpoint.get(STAMP_KEY) or {}
    hparams = checkpoint.get("hyper_parameters") or {}
    saved_task = stamp.get("task")
    if saved_task and saved_task != task:
        raise BadInputError(
            f"The checkpoint {path!r} holds a {saved_task} model, not a {task} one; --ckpt_path resumes or evaluates "
            f"a checkpoint of this task (to start from its weights, use --model.backbone_weights {path})."
        )
    foreign = sorted(set(hparams) - model_options - {"_instantiator", "_class_path"})
    if foreign:
        raise BadInputError(
            f"The checkpoint {path!r} was written by another task (its model has {foreign[0]!r}, which a {task} "
            f"model does not); to start from its weights, use --model.backbone_weights {path}."
        )
    saved_width = stamp.get("width", hparams.get("width"))
    saved_resolution = stamp.get("resolution", hparams.get("resolution"))
    if saved_width is not None and width == default_width:
        width = float(saved_width)
    if saved_resolution is not None and resolution == default_resolution:
        resolution = int(saved_resolution)
    if (saved_width is not None and float(saved_width) != width) or (
        saved_resolution is not None and int(saved_resolution) != resolution
    ):
        raise BadInputError(
            f"The checkpoint {path!r} holds a {saved_task or task} model of width {saved_width} at resolution "
            f"{saved_resolution}; this run asks for width {width} at resolution {resolution}."
        )
    return width, resolution
