"""Helpers for probing a task's CLI the way a demanding user would: tiny runs, inputs broken on purpose.

A task's own reliability probe is a few lines::

    from tests.probes import expect_one_sentence, tiny_run_args, truncate_file

    def test_truncated_photo_is_named(my_root: Path, tmp_path: Path, capsys) -> None:
        truncate_file(next(my_root.rglob("*.jpg")))
        expect_one_sentence(my_task.main, ["fit", *tiny_run_args(my_root, tmp_path)], r"could not be read", capsys)

``expect_one_sentence`` checks the contract of ``backbone.errors.BadInputError`` as the CLI
delivers it: exit status 2, exactly one ``error: `` line on stderr, no traceback.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pytorch_lightning import Callback, Trainer

ROOT = Path(__file__).resolve().parents[1]


def one_torch_thread() -> Iterator[None]:
    """For a module fixture: torch on one thread while the module's tests run.

    On this project's shared 2-core machines a second intra-op thread made a tiny training step
    13x slower (0.9 s instead of 0.07 s) whenever other jobs held the cores.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_run_args(
    root: Path | None,
    runs: Path,
    *extra: str,
    width: float | None = 0.25,
    resolution: int | None = 64,
    batch_size: int = 8,
) -> list[str]:
    """Arguments of a tiny CPU run: ``root`` (None: the built-in demo), outputs under ``runs``.

    ``width``/``resolution`` None leave ``--backbone``/``--resolution`` at the task's default
    (e.g. to see them taken from a checkpoint).
    """
    args = [] if root is None else ["--data.root", str(root)]
    if width is not None:
        args += ["--backbone", str(width)]
    if resolution is not None:
        args += ["--resolution", str(resolution)]
    return [
        *args, "--data.batch_size", str(batch_size), "--data.num_workers", "0",
        "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(runs), *extra,
    ]  # fmt: skip


def read_metrics(runs: Path) -> dict[str, Any]:
    """The newest ``metrics.json`` of the runs under ``runs``, parsed as strict JSON."""
    newest = max(runs.glob("lightning_logs/*/metrics.json"), key=lambda p: p.stat().st_mtime)
    return strict_json(newest)


def metrics_files(runs: Path) -> list[Path]:
    """Every ``metrics.json`` under ``runs`` (none after a refused run)."""
    return sorted(runs.rglob("metrics.json"))


def checkpoint_step(path: Path) -> int:
    """The ``global_step`` a checkpoint holds."""
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def start_in_fork(main: Callable[[list[str]], None], args: Sequence[str]) -> BaseProcess:
    """Run ``main(args)`` in a forked copy of this process, for probes that kill or interrupt a
    real run (``SignalAtStep``): torch and Lightning are already imported there, so it starts at once
    (a fresh ``python -m tasks.<task>`` took 20-30 s to import them on a loaded 2-core machine).
    Its ``exitcode`` is ``main``'s ``SystemExit`` code, or minus the signal that ended it."""
    process = multiprocessing.get_context("fork").Process(target=main, args=(list(args),), daemon=True)
    process.start()
    return process


class SignalAtStep(Callback):
    """Send this process the signal ``name`` (``SIGKILL``, ``SIGINT`` = Ctrl-C ...) when training
    reaches optimizer step ``step``: a kill or an interrupt at a known point of a real run.
    ``started``: a file to write the step the run started (or resumed) at."""

    def __init__(self, step: int, name: str, started: str | None = None) -> None:
        self.step = step
        self.signal = signal.Signals[name]
        self.started = started

    def on_train_start(self, trainer: Trainer, *args: Any) -> None:
        if self.started:
            Path(self.started).write_text(str(trainer.global_step))
        if self.signal == signal.SIGINT:
            # A shell starts background jobs with SIGINT ignored (Python then installs no handler):
            # a run started in a terminal raises KeyboardInterrupt on Ctrl-C, so this one must too.
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def on_train_batch_end(self, trainer: Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signal)


class RunRecord(Callback):
    """Record how a run was planned and how it went: its length options as the trainer got them,
    its steps per epoch, the step it started at and ended at, and its training time."""

    def __init__(self) -> None:
        self.max_steps = self.max_epochs = self.steps_per_epoch = self.first_step = self.last_step = -1
        self.seconds = -1.0
        self._start = 0.0

    def on_train_start(self, trainer: Trainer, *args: Any) -> None:
        self.max_steps, self.max_epochs = trainer.max_steps, int(trainer.max_epochs or 0)
        self.steps_per_epoch = int(trainer.num_training_batches) // trainer.accumulate_grad_batches
        self.first_step = trainer.global_step
        self._start = time.perf_counter()

    def on_train_end(self, trainer: Trainer, *args: Any) -> None:
        self.last_step = trainer.global_step
        self.seconds = time.perf_counter() - self._start


class NaNMetric(Callback):
    """Log a metric that is NaN at the end of every validation and test (as an AP over a class
    with no positives is), to see how ``metrics.json`` writes it."""

    name = "nan_probe"

    def _log(self, trainer: Trainer, pl_module: Any) -> None:
        pl_module.log(self.name, float("nan"))

    on_validation_epoch_end = _log
    on_test_epoch_end = _log


class PoisonWeights(Callback):
    """Fill every float parameter with NaN after optimizer step ``step``: the loss of the next
    step is not finite, as after a diverged update."""

    def __init__(self, step: int = 1) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, pl_module: Any, *args: Any) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                for parameter in pl_module.parameters():
                    if parameter.is_floating_point():
                        parameter.fill_(float("nan"))


def strict_json(path: Path) -> Any:
    """``path`` parsed as strict JSON: a bare NaN or Infinity (not JSON) fails the test."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def cli_command(task: str, *args: str) -> list[str]:
    """``python -m tasks.<task> ...``, for probes that need a real process (kill, signal)."""
    return [sys.executable, "-m", f"tasks.{task}", *args]


def subprocess_env() -> dict[str, str]:
    """The environment of a CLI subprocess: this checkout importable, one thread (2 shared cores)."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def expect_one_sentence(
    main: Callable[[list[str]], None], args: Sequence[str], pattern: str, capsys: pytest.CaptureFixture[str]
) -> str:
    """Run ``main(args)``; it must exit 2 with one ``error: `` line matching ``pattern``. Returns the line."""
    capsys.readouterr()  # forget what earlier steps of the test printed
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    return check_one_sentence(err, pattern)


def check_one_sentence(err: str, pattern: str) -> str:
    """``err`` (a stderr) holds exactly one ``error: `` line, matching ``pattern``, and no traceback."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err
    assert "Traceback" not in err, err
    assert re.search(pattern, errors[0]), errors[0]
    return errors[0]


def truncate_file(path: Path, keep: float = 0.5) -> Path:
    """Cut ``path`` to the first ``keep`` of its bytes, as an interrupted copy or download leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_image(path: Path, width: int = 48, height: int = 40, seed: int = 0) -> Path:
    """A valid image (format from the suffix) of random texture: incompressible, so a cut JPEG misses
    real image data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return path


# Files a user may pass as ``--ckpt_path`` by mistake, and the sentence each must produce.
GARBAGE_CHECKPOINTS = {
    "empty": (b"", r"checkpoint '.*empty\.ckpt' is an empty file"),
    "noise": (
        np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        r"checkpoint '.*noise\.ckpt' could not be read as a PyTorch checkpoint",
    ),
}


def write_garbage_checkpoint(folder: Path, kind: str) -> tuple[Path, str]:
    """Write the ``GARBAGE_CHECKPOINTS[kind]`` file into ``folder``; returns (path, expected sentence)."""
    content, pattern = GARBAGE_CHECKPOINTS[kind]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}.ckpt"
    path.write_bytes(content)
    return path, pattern


# Two COCO categories with non-contiguous ids, as in COCO.
COCO_CATEGORIES = [{"id": 3, "name": "square"}, {"id": 7, "name": "disc"}]


def write_coco_split(root: Path, split: str, count: int, first_id: int = 1, size: tuple[int, int] = (96, 80)) -> Path:
    """``<split>2017/`` with ``count`` random-texture JPEGs of ``size`` (w, h), one box each, and
    ``annotations/instances_<split>2017.json``; returns the JSON's path (tests edit it to break it)."""
    width, height = size
    images, annotations = [], []
    for index in range(count):
        image_id = first_id + index
        name = f"{image_id:012d}.jpg"
        write_image(root / f"{split}2017" / name, width, height, seed=image_id)
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        box = [4.0 + index, 6.0, width / 2, height / 2]
        annotations.append(
            {"id": image_id, "image_id": image_id, "category_id": COCO_CATEGORIES[index % 2]["id"], "bbox": box,
             "area": box[2] * box[3], "iscrowd": 0}
        )  # fmt: skip
    path = root / "annotations" / f"instances_{split}2017.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": COCO_CATEGORIES}))
    return path


def write_coco(root: Path, train: int = 4, val: int = 3, size: tuple[int, int] = (96, 80)) -> Path:
    """A tiny COCO 2017 layout under ``root``: ``train`` and ``val`` images (ids 1.. and 1001..)."""
    write_coco_split(root, "train", train, 1, size)
    write_coco_split(root, "val", val, 1001, size)
    return root
