"""SSD training throughput: the Lightning task's steps/s with the share of its run spent validating
and waiting for data, next to the minimal training loop's steps/s, measured in the same run.

Part of the ``detection`` section. The task run is ``python -m tasks.detection fit`` itself (its
default data module, augmentation, validation plan and checkpoints) for ``--train-steps`` steps on
the built-in demo set; ``RunClock`` splits its wall time into validation, the gaps between two
training batches (the DataLoader's fetch, plus Lightning's own bookkeeping) and the rest (forward,
backward, step). The minimal loop is ``benchmarks.detection_minimal_loop``'s (PIL, v2 flip,
torchvision's transform, SGD) on the same set, without validation. Their ratio is what the
Lightning task costs per step on top of the work both do.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import torch
from pytorch_lightning import Callback, LightningModule, Trainer

from benchmarks.common import markdown_table, print_heading

TARGET_DATA_WAIT = 0.10  # a training step should almost never wait for the DataLoader
TARGET_VALIDATION = 0.10  # validation takes at most about 10% of a default run (issue 12)


class RunClock(Callback):
    """Wall time of a fit, split into validation, data waits (between two training batches) and the rest."""

    def __init__(self) -> None:
        self.start = self.end = 0.0
        self.validation = self.waiting = 0.0
        self.steps = 0
        self.num_workers = 0
        self._batch_end: float | None = None
        self._validation_start = 0.0
        self._validation_since_batch = 0.0

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.start = self._batch_end = time.perf_counter()  # the first fetch (worker start) counts
        self.num_workers = int(getattr(trainer.datamodule, "num_workers", 0))

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if self._batch_end is not None:
            gap = time.perf_counter() - self._batch_end
            self.waiting += max(gap - self._validation_since_batch, 0.0)
        self._validation_since_batch = 0.0

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        self.steps += 1
        self._batch_end = time.perf_counter()

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        spent = time.perf_counter() - self._validation_start
        self.validation += spent
        self._validation_since_batch += spent

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.end = time.perf_counter()


def measure_task(width: float, resolution: int, batch_size: int, steps: int) -> dict[str, Any]:
    """``python -m tasks.detection fit`` on the demo for ``steps`` steps, clocked by ``RunClock``."""
    # Imported here: the task pulls in Lightning's CLI and the data stack, which only this needs.
    from tasks.detection.task import TASK

    clock = RunClock()
    with tempfile.TemporaryDirectory(prefix="det-bench-") as runs:
        args = ["fit", "--backbone", str(width), "--resolution", str(resolution), "--data.batch_size", str(batch_size)]
        args += ["--trainer.max_steps", str(steps), "--trainer.default_root_dir", runs]
        args += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
        TASK.main(args, callbacks=[clock])
    total = clock.end - clock.start
    return {
        "model": "ssd300",
        "width": width,
        "resolution": resolution,
        "batch": batch_size,
        "num_workers": clock.num_workers,
        "steps": clock.steps,
        "run_s": total,
        "steps_per_s": clock.steps / total,
        "validation_share": clock.validation / total,
        "data_wait_share": clock.waiting / total,
        "train_steps_per_s": clock.steps / max(total - clock.validation, 1e-9),
    }


def measure_minimal_loop(width: float, resolution: int, batch_size: int, steps: int) -> dict[str, Any]:
    """The minimal loop of ``benchmarks.detection_minimal_loop`` on the demo for ``steps`` steps."""
    from benchmarks.detection_minimal_loop import loaders, make_optimizer, train
    from datasets.demo.coco import ensure_demo_coco
    from tasks.detection.ssd import build_ssd300

    torch.manual_seed(0)
    train_loader, _, data = loaders(
        ensure_demo_coco(), "torchvision", batch_size, steps, "replacement", 2, 0, resolution
    )
    model = build_ssd300(width, data.num_classes, resolution)
    timing = train(model, train_loader, make_optimizer(model, 0.05, 4e-5, "all"), None)
    return {"steps": timing["steps"], "run_s": timing["train_s"], "steps_per_s": timing["steps_per_s"],
            "data_wait_share": timing["data_wait_share"]}  # fmt: skip


def measure_training_throughput(
    width: float, resolution: int, batch_size: int, steps: int, loop_steps: int
) -> dict[str, Any]:
    """The task's run and the minimal loop, one after the other in this process."""
    task = measure_task(width, resolution, batch_size, steps)
    loop = measure_minimal_loop(width, resolution, batch_size, loop_steps)
    return {**task, "minimal_loop": loop, "task_vs_loop": task["steps_per_s"] / loop["steps_per_s"]}


def judge(training: dict[str, Any]) -> dict[str, Any]:
    """The targets' entries: data wait and validation shares, and whether they are under target."""
    return {
        "data_wait_share": training["data_wait_share"],
        "data_wait_met": training["data_wait_share"] < TARGET_DATA_WAIT,
        "validation_share": training["validation_share"],
        "validation_met": training["validation_share"] <= TARGET_VALIDATION,
        "task_vs_minimal_loop_steps_per_s": training["task_vs_loop"],
    }


def print_training(training: dict[str, Any], threads: int) -> None:
    """The two-row throughput table under its heading."""
    print_heading(f"SSD training throughput (demo COCO, {threads} threads, same run)")
    header = ["trainer", "α", "res", "batch", "workers", "steps", "steps/s", "validation share", "data wait share"]
    common = [f"{training['width']:g}", str(training["resolution"]), str(training["batch"])]
    task = ["tasks.detection fit", *common, str(training["num_workers"]), str(training["steps"])]
    task += [f"{training['steps_per_s']:.3f}", f"{100 * training['validation_share']:.1f}%"]
    task += [f"{100 * training['data_wait_share']:.1f}%"]
    loop = training["minimal_loop"]
    minimal = ["minimal loop", *common, "2", str(loop["steps"]), f"{loop['steps_per_s']:.3f}", "–"]
    minimal += [f"{100 * loop['data_wait_share']:.1f}%"]
    print(markdown_table(header, [task, minimal]))
    print(
        f"\nThe task runs at {training['task_vs_loop']:.2f}× the minimal loop's steps/s "
        f"({training['train_steps_per_s']:.3f} steps/s without its validation)."
    )


__all__ = ["RunClock", "judge", "measure_training_throughput", "print_training"]
