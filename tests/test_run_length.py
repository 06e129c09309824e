"""A run's length follows what the user asked for, the schedule spans it, and its end is validated.

max_steps / max_epochs / max_time and the default length are checked on every task in
``tests/test_task_contract.py``; here, the validation plan and the schedule.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import patch

import pytest
import torch

from tasks.callbacks import ValidationPlan
from tasks.classification.task import TASK as CLASSIFICATION
from tasks.optim import warmup_cosine
from tests.probes import checkpoint_step, read_metrics, tiny_run_args

# tiny_imagenet: 24 training images at batch 8 -> 3 optimizer steps per epoch.
STEPS_PER_EPOCH = 3


def _validated_steps(runs: Path) -> list[int]:
    """The global steps at which the newest run validated (rows of metrics.csv with top1).

    Lightning logs a validation inside fit under ``global_step - 1`` (the index of the batch that
    triggered it), hence the + 1.
    """
    newest = max(runs.glob("lightning_logs/version_*/metrics.csv"), key=lambda p: p.stat().st_mtime)
    with newest.open() as handle:
        return [int(row["step"]) + 1 for row in csv.DictReader(handle) if row.get("top1")]


def _last_step(runs: Path) -> int:
    return checkpoint_step(runs / "checkpoints" / "last.ckpt")


def test_max_steps_is_not_capped_and_its_last_step_is_validated(tiny_imagenet: Path, tmp_path: Path) -> None:
    # 25 steps = 8 1/3 epochs: the run must end mid-epoch at step 25, validated there.
    CLASSIFICATION.main(["fit", *tiny_run_args(tiny_imagenet, tmp_path, "--trainer.max_steps", "25")])
    assert _last_step(tmp_path) == 25
    steps = _validated_steps(tmp_path)
    assert steps[-1] == 25 and read_metrics(tmp_path)["global_step"] == 25
    # About 10 validations per run, never more often than once per epoch (max(3, ceil(25/10)) = 3).
    assert steps == [3, 6, 9, 12, 15, 18, 21, 24, 25]


def test_time_budget_plans_validation_by_pace() -> None:
    """Under max_time the steps the budget allows are estimated from the pace so far."""
    trainer = SimpleNamespace(
        estimated_stepping_batches=math.inf, global_step=0, accumulate_grad_batches=1, num_training_batches=3,
        check_val_every_n_epoch=1, val_check_batch=3, callbacks=[],
    )  # fmt: skip
    plan = ValidationPlan(times=10, probe_steps=10)
    plan.enabled = True
    used = {"share": 0.0}
    with patch("tasks.callbacks.time_budget_fraction", return_value=lambda: used["share"]):
        plan.on_train_start(trainer, None)  # type: ignore[arg-type]
    assert trainer.check_val_every_n_epoch is None and trainer.val_check_batch == 3  # an epoch until the probe
    trainer.global_step, used["share"] = 10, 0.05  # 10 steps in 5% of the budget: 200 expected
    plan.on_train_batch_end(trainer, None)  # type: ignore[arg-type]
    assert trainer.val_check_batch == 20
    trainer.global_step, used["share"] = 20, 0.25  # slower since (validation, a loaded machine): 80
    trainer.sanity_checking, trainer.training = False, True
    plan.on_validation_end(trainer, None)  # type: ignore[arg-type]
    assert trainer.val_check_batch == 8


def test_warmup_is_counted_from_the_real_steps_per_epoch(tiny_imagenet: Path, tmp_path: Path) -> None:
    """--trainer.max_epochs -1 with max_steps: the warm-up is one epoch (3 steps), not the whole run."""
    extra = ["--trainer.max_epochs", "-1", "--trainer.max_steps", "12", "--model.warmup_epochs", "1"]
    extra += ["--model.optimizer", "SGD", "--model.optimizer.lr", "1.0"]
    CLASSIFICATION.main(["fit", *tiny_run_args(tiny_imagenet, tmp_path, *extra)])
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    # After 12 steps of warm-up 3 + cosine over 9: lr = 0.5 (1 + cos(pi * 9/9)) = 0 at the end.
    assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-9)


def test_time_budget_anneals_the_cosine() -> None:
    """With only a time budget, progress is the elapsed share: the lr reaches 0 at the budget."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    elapsed = {"share": 0.0}
    scheduler = warmup_cosine(optimizer, math.inf, 2, time_fraction=lambda: elapsed["share"])
    lrs = []
    for share in (0.0, 0.0, 0.0, 0.5, 1.0):
        elapsed["share"] = share
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[1] == pytest.approx(1.0) and lrs[3] == pytest.approx(0.5) and lrs[4] == pytest.approx(0.0)


def test_decay_start_holds_the_peak_then_anneals_to_zero() -> None:
    """lr_decay_start 0.5: full lr for the first half after the warm-up, cosine to 0 at the end."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(optimizer, 102, 2, decay_start=0.5)
    lrs = []
    for _ in range(102):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] < lrs[1] < 1.0 and lrs[2] == lrs[52] == pytest.approx(1.0)
    assert lrs[77] == pytest.approx(0.5, abs=0.02) and lrs[101] < 1e-3
    with pytest.raises(ValueError, match="decay_start"):
        warmup_cosine(optimizer, 10, 1, decay_start=1.0)
