"""Callbacks every task gets from the CLI: ``metrics.json``, the validation plan, the base of prediction writers."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.callbacks import BasePredictionWriter

from datasets.images import PredictFolder
from tasks.distributed import gather_objects
from tasks.optim import steps_per_epoch, time_budget_fraction
from tasks.outputs import write_json_atomic


def run_folder(trainer: Trainer) -> Path:
    """The folder a run writes its outputs to (the logger's version folder).

    ``trainer.log_dir`` broadcasts from rank 0: every rank must call this, not only rank 0.
    """
    return Path(trainer.log_dir or trainer.default_root_dir)


def scalar_metrics(metrics: Mapping[str, Any], skip_prefixes: Iterable[str] = ("train",)) -> dict[str, float | None]:
    """The scalar metrics of ``metrics`` as floats, without the training ones; a NaN or infinite
    value is None (JSON's ``null``: strict JSON has no NaN)."""
    out: dict[str, float | None] = {}
    for name, value in metrics.items():
        if any(name.startswith(p) for p in skip_prefixes):
            continue
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                continue
            value = value.item()
        if isinstance(value, (int, float)):
            out[name] = float(value) if math.isfinite(value) else None
    return out


class MetricsJSON(Callback):
    """Write the metrics of every validate/test run to ``<log_dir>/metrics.json``.

    Scripts and people read results from this file rather than from a progress bar. During
    ``fit`` the file holds the latest validation. It is strict JSON: a metric that is not a
    finite number (a NaN AP of a class with no positives ...) is written as ``null``. Only rank 0
    writes; the metrics it writes are already reduced over all ranks by the task's metric objects.

    It also says what a CPU run's figures depend on beyond the seed: ``torch_threads`` (the same
    seed trains other bits on 1 thread than on 2: a convolution's gradient sums are split
    differently) and ``cpu_capability`` (the kernels' instruction set, e.g. AVX2 or AVX512).
    """

    def _write(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.sanity_checking:
            return
        folder = run_folder(trainer)
        if not trainer.is_global_zero:
            return
        payload: dict[str, Any] = {
            "stage": stage,
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "metrics": scalar_metrics(trainer.callback_metrics),
            "torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        }
        if trainer.ckpt_path:
            payload["checkpoint"] = str(trainer.ckpt_path)
        deployed = getattr(pl_module, "deployed", None)  # test --deployed: which exported model was scored
        if deployed:
            payload["deployed"] = deployed
        write_json_atomic(folder / "metrics.json", payload)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, pl_module, "validate")

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer, pl_module, "test")


class PredictionWriter(BasePredictionWriter):
    """Base of every task's ``predict`` output: gather all ranks' records, write once on rank 0.

    A task's ``predict_step`` returns a list of records (plain Python/numpy objects, one per
    image); a subclass implements ``write(folder, records, trainer, pl_module)``, which runs on
    rank 0 with the records of every rank (a subclass sorts them if it needs an order). Outputs
    land in the run's log folder, next to ``metrics.json``. With ``--data.predict_dir``, the
    number of unreadable images that were skipped is printed at the end.
    """

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(
        self, trainer: Trainer, pl_module: LightningModule, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        folder = run_folder(trainer)
        local = [record for batch in predictions if batch for record in batch]
        records = [record for part in gather_objects(local) for record in part]
        if not trainer.is_global_zero:
            return
        self.write(folder, records, trainer, pl_module)
        loader = trainer.predict_dataloaders
        dataset = getattr(loader[0] if isinstance(loader, list) else loader, "dataset", None)
        if isinstance(dataset, PredictFolder) and len(records) < len(dataset):
            print(f"{len(dataset) - len(records)} of {len(dataset)} images could not be read and were skipped.")

    def write(self, folder: Path, records: list[Any], trainer: Trainer, pl_module: LightningModule) -> None:
        raise NotImplementedError


class ValidationPlan(Callback):
    """Validate about ``times`` times per run, and always at its last step.

    Lightning validates every epoch by default: on a small set (a 15-step epoch) that is a large
    share of the run, while on ImageNet it is rare. When the user sets neither
    ``--trainer.val_check_interval`` nor ``--trainer.check_val_every_n_epoch`` (the CLI decides,
    ``enabled``), a run validates every ``max(1 epoch, expected steps / times)`` steps, and at its
    final step (``should_stop`` makes Lightning validate before it stops), so the last checkpoint
    is always a scored one. The expected steps are the run's ``max_steps``/``max_epochs``; under
    ``--trainer.max_time`` they are also estimated from the pace so far (the steps done over the
    share of the budget used), first after ``probe_steps`` steps and again after every
    validation, and the smaller count is planned for. The stop at the time limit is validated too.
    """

    def __init__(self, times: int = 10, probe_steps: int = 10) -> None:
        self.times = times
        self.probe_steps = probe_steps
        self.enabled = False
        self._total = math.inf
        self._budget: Callable[[], float] | None = None
        self._first_step = 0
        self._probe_at: int | None = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._total = float(trainer.estimated_stepping_batches)
        self._budget = time_budget_fraction(trainer)
        self._first_step = trainer.global_step  # a resumed run's pace counts its own steps
        if not self.enabled or (self._budget is None and not math.isfinite(self._total)):
            return  # the user's plan, or an unbounded run: Lightning's per-epoch validation
        trainer.check_val_every_n_epoch = None  # count batches across epochs, not within one
        self._plan(trainer, self._total)
        if self._budget is not None:
            self._probe_at = trainer.global_step + self.probe_steps

    def _plan(self, trainer: Trainer, expected_steps: float) -> None:
        per_epoch = steps_per_epoch(trainer)
        every = per_epoch if not math.isfinite(expected_steps) else math.ceil(expected_steps / self.times)
        trainer.val_check_batch = max(per_epoch, every) * trainer.accumulate_grad_batches

    def _replan_by_pace(self, trainer: Trainer) -> None:
        """Under max_time: plan for the steps the budget will allow at the pace so far."""
        assert self._budget is not None
        used = self._budget()
        done = trainer.global_step - self._first_step
        if used > 0 and done > 0:
            self._plan(trainer, min(self._total, trainer.global_step + done * (1.0 - used) / used))

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.enabled and self._budget is not None and not trainer.sanity_checking and trainer.training:
            self._replan_by_pace(trainer)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if self._probe_at is not None and trainer.global_step >= self._probe_at:
            self._probe_at = None
            self._replan_by_pace(trainer)
        if trainer.global_step >= self._total:
            trainer.should_stop = True  # the last step: Lightning validates, then stops
