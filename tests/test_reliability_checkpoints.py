"""Checkpoints keep the work: last.ckpt is fresh however a run ends, and --ckpt_path refuses what it cannot use.

Issue 8, "Work is lost" items 1-2 and the checkpoint probes: Lightning 2.6 refreshed last.ckpt only
when the monitored metric improved (a run killed after a plateau resumed from far back), and
``--ckpt_path last`` with no checkpoint validated random weights.

The signal, resume and another-task probes run on every task in ``tests/test_task_contract.py``.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from datasets.demo.textures import write_imagenet_demo
from tasks.checkpoints import AtomicCheckpointIO
from tasks.classification.task import TASK as CLASSIFICATION
from tests.probes import (
    GARBAGE_CHECKPOINTS,
    checkpoint_step,
    cli_command,
    expect_one_sentence,
    metrics_files,
    one_torch_thread,
    read_metrics,
    subprocess_env,
    tiny_run_args,
    truncate_file,
    write_garbage_checkpoint,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


# The tiny_imagenet fixture: 24 training images at batch 8 -> 3 steps an epoch.
STEPS_PER_EPOCH = 3
# Validate every 2 optimizer steps, counted across epochs, so validations fall mid-epoch too.
VALIDATE_EVERY_2 = (
    "--trainer.val_check_interval", "2", "--trainer.check_val_every_n_epoch", "null",
    "--trainer.num_sanity_val_steps", "0", "--trainer.log_every_n_steps", "1",
)  # fmt: skip


def fast(root: Path, runs: Path, *extra: str, **kwargs: Any) -> list[str]:
    """A tiny run at 32 px (the smallest MobileNet input), the cheapest that exercises every path."""
    kwargs.setdefault("resolution", 32)
    return tiny_run_args(root, runs, *extra, **kwargs)


def steps_logged(runs: Path) -> tuple[int, list[int]]:
    """(optimizer steps trained, steps at which a validation ran), read from the newest metrics.csv
    (``--trainer.log_every_n_steps 1``: one ``train_loss`` row per step)."""
    newest = max(runs.glob("lightning_logs/version_*/metrics.csv"), key=lambda p: p.stat().st_mtime)
    rows = list(csv.DictReader(newest.open()))
    trained = sum(1 for row in rows if row.get("train_loss"))
    # A validation row is logged at the step count reached (Lightning's "step" is 0-based there).
    validated = [int(row["step"]) + 1 for row in rows if row.get("top1")]
    return trained, validated


def spy_checkpoint_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record (file name, global_step) of every checkpoint the run writes."""
    writes: list[tuple[str, int]] = []
    original = AtomicCheckpointIO.save_checkpoint

    def save(self: AtomicCheckpointIO, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        original(self, checkpoint, path, storage_options)
        writes.append((Path(path).name, int(checkpoint["global_step"])))

    monkeypatch.setattr(AtomicCheckpointIO, "save_checkpoint", save)
    return writes


@pytest.fixture(scope="module")
def classifier(tiny_imagenet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fitted width-0.25, 32-px, 3-class classifier's run folder (one epoch, validated at its end)."""
    runs = tmp_path_factory.mktemp("classifier")
    CLASSIFICATION.main(["fit", *fast(tiny_imagenet, runs, "--trainer.max_epochs", "1")])
    return runs


# --------------------------------------------------------------------------------------------
# last.ckpt holds the latest state
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "ending",
    [("--trainer.max_steps", "5"), ("--trainer.max_time", "00:00:00:03", "--trainer.max_epochs", "100")],
    ids=["max_steps_mid_epoch", "max_time"],
)
def test_last_ckpt_after_every_validation_and_at_the_end(
    ending: tuple[str, ...], tiny_imagenet: Path, classifier: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """top5 of 3 classes is always 1.0: the monitored metric never improves after the first
    validation, yet last.ckpt follows every validation and the run's final step."""
    runs = tmp_path / "runs"
    # The folder holds a previous run's last.ckpt: a new run replaces it (Lightning's version
    # counter would write last-v1.ckpt and leave --ckpt_path last on the old run).
    shutil.copytree(classifier / "checkpoints", runs / "checkpoints")
    writes = spy_checkpoint_writes(monkeypatch)
    args = fast(tiny_imagenet, runs, *VALIDATE_EVERY_2, "--checkpoint.monitor", "top5", *ending)
    CLASSIFICATION.main(["fit", *args])

    trained, validated = steps_logged(runs)
    last = runs / "checkpoints" / "last.ckpt"
    assert checkpoint_step(last) == trained > 0
    assert sorted(p.name for p in last.parent.glob("last*")) == ["last.ckpt"]
    last_writes = [step for name, step in writes if name == "last.ckpt"]
    assert set(validated) <= set(last_writes), (validated, writes)
    assert last_writes[-1] == trained
    best_writes = [step for name, step in writes if name.startswith("best")]
    assert best_writes == validated[:1]  # the metric improved only at the first validation
    if ending[0] == "--trainer.max_steps":
        assert trained == 5 and validated[:2] == [2, 4]  # step 5 is mid-way through the second epoch


def test_a_bad_image_on_one_ddp_rank_ends_the_run_instead_of_hanging(tiny_imagenet: Path, tmp_path: Path) -> None:
    """Saving a checkpoint is collective under DDP: the failing rank alone saving last.ckpt on its
    exception waited forever for the other, itself waiting in its gradient all-reduce."""
    root = tmp_path / "imagenet"
    shutil.copytree(tiny_imagenet, root)
    damaged = truncate_file(sorted((root / "train").rglob("*.jpg"))[0])
    ddp = ("--trainer.devices", "2", "--trainer.strategy", "ddp", "--trainer.max_epochs", "1")
    args = fast(root, tmp_path / "runs", *ddp, "--trainer.num_sanity_val_steps", "0", batch_size=4)  # 3 steps a rank
    # A session of its own, so that a hung run is ended with every rank it started.
    process = subprocess.Popen(
        cli_command("classification", "fit", *args), env=subprocess_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        _, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("a DDP run with a bad image on one rank hung")
    assert process.returncode != 0
    assert f"error: The image file '{damaged}' could not be read" in err


# --------------------------------------------------------------------------------------------
# --ckpt_path refusals: one sentence, exit 2, nothing written
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("subcommand", "which"), [("validate", "last"), ("test", "best")])
def test_last_or_best_without_a_checkpoint_is_refused(
    subcommand: str, which: str, tiny_imagenet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    folder = re.escape(repr(str(runs / "checkpoints")))
    args = [subcommand, *fast(tiny_imagenet, runs, "--ckpt_path", which)]
    expect_one_sentence(CLASSIFICATION.main, args, rf"--ckpt_path {which} found no .*ckpt in {folder}", capsys)
    assert not metrics_files(runs)  # random weights were not scored


@pytest.mark.parametrize("kind", sorted(GARBAGE_CHECKPOINTS))
def test_a_file_that_is_not_a_checkpoint_is_refused(
    kind: str, tiny_imagenet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, pattern = write_garbage_checkpoint(tmp_path, kind)
    args = ["test", *fast(tiny_imagenet, tmp_path / "runs", "--ckpt_path", str(path))]
    line = expect_one_sentence(CLASSIFICATION.main, args, pattern, capsys)
    assert "weights_only" not in line  # no advice to unpickle an untrusted file
    assert not metrics_files(tmp_path / "runs")


def test_another_width_is_refused_and_a_default_width_is_taken_from_the_checkpoint(
    classifier: Path, tiny_imagenet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = str(classifier / "checkpoints" / "last.ckpt")
    runs = tmp_path / "runs"
    args = ["test", *fast(tiny_imagenet, runs, "--ckpt_path", ckpt, width=0.5)]
    expect_one_sentence(CLASSIFICATION.main, args, r"width 0.25 at resolution 32; this run asks for width 0.5", capsys)
    assert not metrics_files(runs)

    # Neither --backbone nor --resolution given: both come from the checkpoint.
    CLASSIFICATION.main(["test", *tiny_run_args(tiny_imagenet, runs, "--ckpt_path", ckpt, width=None, resolution=None)])
    tested = read_metrics(runs)
    assert tested["stage"] == "test"
    # The same weights on the same images as the fit's last validation: the checkpoint was loaded.
    assert tested["metrics"]["top1"] == pytest.approx(read_metrics(classifier)["metrics"]["top1"])


def test_another_class_count_is_refused(classifier: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "four"
    write_imagenet_demo(root, per_class_train=1, per_class_val=1, size=40, num_classes=4)
    args = ["test", *fast(root, tmp_path / "runs", "--ckpt_path", str(classifier / "checkpoints" / "last.ckpt"))]
    # Named by the recorded class names; a checkpoint without them falls back to the shapes (test_guards.py).
    pattern = r"does not fit the data: it has 3 classes where the data has 4, and its classes output \d is"
    expect_one_sentence(CLASSIFICATION.main, args, pattern, capsys)


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------
def test_a_failed_checkpoint_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, target)
    before = target.read_bytes()
    temporaries: list[Path] = []

    def save_half_then_fail(obj: Any, path: Any, *args: Any, **kwargs: Any) -> None:
        temporaries.append(Path(path))
        Path(path).write_bytes(before[: len(before) // 2])  # half written, as a full disk leaves it
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"global_step": 2}, target)
    assert target.read_bytes() == before
    assert os.listdir(target.parent) == ["last.ckpt"]
    # The temporary file is in the checkpoint folder itself (the rename cannot cross filesystems).
    assert [p.parent for p in temporaries] == [target.parent] and temporaries[0] != target
