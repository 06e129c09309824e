"""Every contract of the task CLI, checked on every task.

Each test is parametrised over the task declarations (``tasks.spec.all_tasks()``, with each
task's tiny data from ``tests/tiny_tasks.py``), the way timm runs one test over every model: a
new task gets all of it by being declared. The data are tiny generated sets in each task's real
public layout; the runs are as small as the task allows (width 0.25, 32-64 px, a few steps).

Contracts:
* the declaration drives the CLI: ``python -m tasks.<name>`` reads it, and its resolution, run
  length, monitor and callbacks are the run's defaults;
* run length: ``--trainer.max_steps`` / ``max_epochs`` / ``max_time`` honoured (whichever is
  given, nothing else capping it), the default length in optimizer steps, the last step validated;
* SIGTERM, Ctrl-C (SIGINT) and SIGKILL mid-fit: exit status 143 / 130 / killed, ``last.ckpt``
  at the interrupted step (at the last validation after SIGKILL), and ``fit --ckpt_path last``
  resumes there and ends at the asked step count;
* another task's checkpoint refused in one sentence;
* the same seed gives the same ``metrics.json`` (and weights);
* ``metrics.json`` is strict JSON (a NaN metric is ``null``);
* outputs written atomically: a failed write keeps the existing file and leaves no temporary;
* 2-process CPU DDP (gloo) gives the metrics of 1 process;
* the built-in demo runs with no ``--data.root``.
* ``validate`` / ``test`` / ``predict`` without ``--ckpt_path`` refused (no untrained model is scored);
* a non-finite loss stops the run in one sentence, and no checkpoint holds non-finite weights;
* ``--trainer.fast_dev_run`` and ``--trainer.limit_val_batches`` run to the end and score the monitor;
* a checkpoint is used only with data whose outputs have the same names.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tasks.cli import TaskCLI
from tasks.spec import all_tasks
from tests.probes import (
    NaNMetric,
    PoisonWeights,
    SignalAtStep,
    checkpoint_step,
    expect_one_sentence,
    metrics_files,
    one_torch_thread,
    read_metrics,
    start_in_fork,
)
from tests.tiny_tasks import NO_SANITY, REFERENCE_STEPS, Session, TinyTask, fit_recorded, tiny_tasks

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CASES = tiny_tasks()
# Lightning's own files in a run folder (not written atomically by this project).
LIGHTNING_FILES = {"metrics.csv", "hparams.yaml", "config.yaml"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


@pytest.fixture(params=CASES, ids=[case.name for case in CASES])
def case(request: pytest.FixtureRequest) -> TinyTask:
    return request.param


def temporaries(folder: Path) -> list[Path]:
    """Temporary files left under ``folder`` (``tasks.outputs`` and ``AtomicCheckpointIO`` names)."""
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------------------------
# The declaration
# --------------------------------------------------------------------------------------------
def test_every_task_package_is_declared_and_has_tiny_data() -> None:
    packages = {p.parent.name for p in Path(__file__).parents[1].glob("tasks/*/__main__.py")}
    assert packages == {spec.name for spec in all_tasks()} == {case.name for case in CASES}


def test_the_declaration_drives_the_entry_point_and_the_cli(case: TinyTask, session: Session, tmp_path: Path) -> None:
    spec = case.spec
    # python -m tasks.<name> runs this declaration (imported as a module, not as __main__).
    entry = __import__(f"tasks.{spec.name}.__main__", fromlist=["TASK"])
    assert entry.TASK is spec
    assert spec.module.__module__.startswith("tasks.") and not spec.module.__module__.endswith("__main__")
    # No --resolution and no run length: the declared ones.
    args = case.args(session.data(case), tmp_path, tiny_resolution=False)
    cli = TaskCLI(spec, args=args, run=False)
    assert cli.model.hparams.resolution == cli.datamodule.resolution == spec.resolution
    assert (cli.trainer.max_steps, cli.trainer.max_epochs) == (spec.default_steps, None)  # no epoch cap
    assert cli.trainer.checkpoint_callback.monitor == spec.monitor
    for make in spec.callbacks:
        assert any(type(callback) is make for callback in cli.trainer.callbacks), make


def test_help_names_the_tasks_own_commands(case: TinyTask, capsys: pytest.CaptureFixture[str]) -> None:
    """``partition`` and ``index`` are dispatched before the Lightning parser: its --help names them."""
    with pytest.raises(SystemExit) as exit_info:
        case.spec.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in case.spec.commands:
        assert f"python -m tasks.{case.name} {name} --help" in out


# --------------------------------------------------------------------------------------------
# Run length
# --------------------------------------------------------------------------------------------
def test_max_steps_ends_there_mid_epoch_validated(case: TinyTask, session: Session) -> None:
    runs = session.fitted(case)
    assert checkpoint_step(runs / "checkpoints" / "last.ckpt") == REFERENCE_STEPS
    fitted = read_metrics(runs)
    assert fitted["stage"] == "validate" and fitted["global_step"] == REFERENCE_STEPS  # the last step is scored
    assert isinstance(fitted["metrics"][case.spec.monitor], float)


def test_max_epochs_is_honoured(case: TinyTask, session: Session, tmp_path: Path) -> None:
    record = fit_recorded(case, session.args(case, tmp_path, "--trainer.max_epochs", "2"))
    assert (record.max_epochs, record.max_steps) == (2, -1)
    assert record.last_step == 2 * record.steps_per_epoch == checkpoint_step(tmp_path / "checkpoints" / "last.ckpt")
    assert read_metrics(tmp_path)["global_step"] == record.last_step


def test_max_time_is_honoured(case: TinyTask, session: Session, tmp_path: Path) -> None:
    """Only a time budget: nothing else bounds the run (a task's epoch default capped it once)."""
    record = fit_recorded(case, session.args(case, tmp_path, "--trainer.max_time", "00:00:00:03"))
    assert (record.max_epochs, record.max_steps) == (-1, -1)
    assert record.seconds >= 3.0, f"stopped after {record.seconds:.1f} s of a 3 s budget"
    assert record.last_step == checkpoint_step(tmp_path / "checkpoints" / "last.ckpt") > 0
    assert read_metrics(tmp_path)["global_step"] == record.last_step


def test_default_length_is_the_declared_step_count(case: TinyTask, session: Session) -> None:
    """No length option: the declared step count, no epoch cap, the last step validated."""
    runs, record = session.default_length(case)
    assert (record.max_steps, record.max_epochs, record.last_step) == (REFERENCE_STEPS, -1, REFERENCE_STEPS)
    assert checkpoint_step(runs / "checkpoints" / "last.ckpt") == read_metrics(runs)["global_step"] == REFERENCE_STEPS


# --------------------------------------------------------------------------------------------
# Signals and resume
# --------------------------------------------------------------------------------------------
# Validate every 2 optimizer steps (across epochs) and keep no top-k checkpoint: last.ckpt is
# then refreshed by this project's TaskCheckpoint alone.
SIGNALLED = (
    "--trainer.max_steps", "8", "--trainer.val_check_interval", "2", "--trainer.check_val_every_n_epoch", "null",
    "--checkpoint.save_top_k", "0",
)  # fmt: skip


def test_signals_then_resume_end_at_the_asked_step(case: TinyTask, session: Session, tmp_path: Path) -> None:
    """One 8-step run interrupted three times, each in a real (forked) process: SIGTERM at step 3,
    Ctrl-C at step 5 of the resumed run, SIGKILL at step 7 of the next; the last resume ends at 8."""
    args = session.args(case, tmp_path, *SIGNALLED)
    last = tmp_path / "checkpoints" / "last.ckpt"
    started = tmp_path / "started"
    resume: list[str] = []
    start = 0
    for step, name, status, saved_at in ((3, "SIGTERM", 143, 3), (5, "SIGINT", 130, 5), (7, "SIGKILL", -9, 6)):
        probe = SignalAtStep(step, name, str(started))
        process = start_in_fork(functools.partial(case.spec.main, callbacks=[probe]), ["fit", *args, *resume])
        process.join(timeout=300)
        assert process.exitcode == status, f"{name} at step {step}: exit status {process.exitcode}"
        assert int(started.read_text()) == start, f"the run before {name} resumed at the wrong step"
        # last.ckpt at the interrupted step; after SIGKILL, which leaves no time to save, at the
        # last validation (step 6).
        assert checkpoint_step(last) == saved_at, name
        assert not temporaries(tmp_path), name
        resume, start = ["--ckpt_path", "last"], saved_at
    record = fit_recorded(case, [*args, *resume])
    assert (record.first_step, record.last_step) == (6, 8)
    assert checkpoint_step(last) == read_metrics(tmp_path)["global_step"] == 8


# --------------------------------------------------------------------------------------------
# Checkpoints, seeds, metrics.json, atomic outputs
# --------------------------------------------------------------------------------------------
def test_another_tasks_checkpoint_is_refused(
    case: TinyTask, session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``fit --ckpt_path`` of the previous task's checkpoint (fine_grained gets classification's,
    the same model class: only the task stamp tells them apart)."""
    other = CASES[CASES.index(case) - 1]
    ckpt = session.checkpoint(other)
    pattern = rf"holds a {other.name} model, not a {case.name} one.*--model.backbone_weights"
    expect_one_sentence(case.spec.main, ["fit", *session.args(case, tmp_path, "--ckpt_path", ckpt)], pattern, capsys)
    assert not (tmp_path / "checkpoints").exists() and not metrics_files(tmp_path)


def test_the_same_seed_gives_the_same_metrics(case: TinyTask, session: Session) -> None:
    """Two fits of the same seed and length (the reference fit and the default-length one, which
    ends at the same step): the same metrics.json and the same weights."""
    reference, (again, _) = session.fitted(case), session.default_length(case)
    assert read_metrics(again)["metrics"] == read_metrics(reference)["metrics"]
    a = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(again / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_metrics_json_is_strict_json_with_null_for_nan(case: TinyTask, session: Session, tmp_path: Path) -> None:
    args = session.args(case, tmp_path, "--ckpt_path", session.checkpoint(case))
    case.spec.main(["validate", *args], callbacks=[NaNMetric()])
    written = read_metrics(tmp_path)  # strict: a bare NaN fails here
    assert written["stage"] == "validate" and written["metrics"][NaNMetric.name] is None
    assert isinstance(written["metrics"][case.spec.monitor], float)


def _pinned_logger(save_dir: Path) -> str:
    """One fixed run folder (``<save_dir>/lightning_logs/pinned``) for every run, so that a second
    run writes over the first one's outputs."""
    logger = {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": str(save_dir)}}
    logger["init_args"]["version"] = "pinned"
    return f"--trainer.logger={json.dumps(logger)}"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name not in LIGHTNING_FILES}


def test_outputs_are_written_atomically(
    case: TinyTask, session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``test`` and ``predict`` write their outputs; run again, every rename of a finished
    temporary file fails (a full disk, a kill at the last moment): each run fails, the first
    run's files are intact and no temporary file is left."""
    args = session.args(case, tmp_path, "--ckpt_path", session.checkpoint(case), _pinned_logger(tmp_path))
    folder = tmp_path / "lightning_logs" / "pinned"
    written: dict[str, dict[str, bytes]] = {}
    for subcommand in ("test", "predict"):
        before = _snapshot(folder) if folder.is_dir() else {}
        case.spec.main([subcommand, *args])
        after = _snapshot(folder)
        written[subcommand] = {name: data for name, data in after.items() if before.get(name) != data}
    assert "metrics.json" in written["test"]
    kept = _snapshot(folder)

    real_replace = os.replace

    def failing_replace(source: Any, target: Any) -> None:
        if Path(source).name.endswith(".tmp"):
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", failing_replace)
    for subcommand in ("test", "predict"):
        if written[subcommand]:
            with pytest.raises(OSError, match="No space left"):
                case.spec.main([subcommand, *args])
    monkeypatch.undo()
    assert _snapshot(folder) == kept
    assert not temporaries(tmp_path)


# --------------------------------------------------------------------------------------------
# DDP
# --------------------------------------------------------------------------------------------
def test_two_ddp_processes_give_the_metrics_of_one(case: TinyTask, session: Session, tmp_path: Path) -> None:
    """``test`` of one checkpoint on 2 CPU processes (gloo; forked from this one, so no new
    interpreter starts) and on 1: the metrics are reduced over the whole split, not per rank (the
    tiny evaluation sets have an odd size, so the ranks get unequal shares). In batches of one
    image, so that each image's numbers are the same to the last bit in both runs (a barely
    trained model's scores are near ties, which the position of an image in a batch of another
    composition can reorder)."""
    results = {}
    for devices, strategy in (("1", "auto"), ("2", "ddp_fork")):
        out = tmp_path / devices
        args = session.args(case, out, "--ckpt_path", session.checkpoint(case), "--trainer.devices", devices)
        args += ["--data.batch_size", "1"]
        case.spec.main(["test", *args, "--trainer.strategy", strategy])
        results[devices] = read_metrics(out)["metrics"]
    assert results["2"].keys() == results["1"].keys()
    for name, value in results["1"].items():
        assert results["2"][name] == pytest.approx(value, abs=1e-6, nan_ok=True), name


# --------------------------------------------------------------------------------------------
# The built-in demo
# --------------------------------------------------------------------------------------------
def test_the_demo_runs_without_a_data_root(
    case: TinyTask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No ``--data.root``: the task's demo generator writes its set (shrunk here to a few images,
    in a demo cache of this test) in the real layout, the real loader reads it, the run says so."""
    monkeypatch.setenv("MOBILENET_DEMO_DIR", str(tmp_path / "demo"))
    case.shrink_demo(monkeypatch)
    limits = ("--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.limit_test_batches", "1")
    case.spec.main(["fit", *case.args((), tmp_path / "runs", *NO_SANITY, *limits)])
    out = capsys.readouterr().out
    assert re.search(rf"built-in demo dataset at {re.escape(str(tmp_path / 'demo'))}", out), out
    assert isinstance(read_metrics(tmp_path / "runs")["metrics"][case.spec.monitor], float)


# --------------------------------------------------------------------------------------------
# Guards: no untrained scoring, finite losses, debug limits, names against the checkpoint
# --------------------------------------------------------------------------------------------


def test_evaluation_without_ckpt_path_is_refused(
    case: TinyTask, session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Scoring or predicting with random weights is never what was meant."""
    for subcommand in ("validate", "test", "predict"):
        expect_one_sentence(case.spec.main, [subcommand, *session.args(case, tmp_path)], r"--ckpt_path", capsys)
    assert not metrics_files(tmp_path)


def test_a_non_finite_loss_stops_the_run_in_one_sentence(
    case: TinyTask, session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["fit", *session.args(case, tmp_path, "--trainer.max_steps", "4")]
    pattern = r"^error: The (training loss is (nan|inf)|weights hold a NaN or an infinity)"
    expect_one_sentence(functools.partial(case.spec.main, callbacks=[PoisonWeights(1)]), args, pattern, capsys)
    last = tmp_path / "checkpoints" / "last.ckpt"
    if last.exists():  # a checkpoint from before the poison: finite
        state = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize(
    "limits",
    [("--trainer.fast_dev_run", "true"), ("--trainer.max_steps", "2", "--trainer.limit_val_batches", "2")],
    ids=["fast_dev_run", "limit_val_batches_2"],
)
def test_debug_limits_run_to_the_end(limits: tuple[str, ...], case: TinyTask, session: Session, tmp_path: Path) -> None:
    """face_embedding ended with '43 evaluation images were not embedded by any rank.'"""
    case.spec.main(["fit", *session.args(case, tmp_path, *limits)])
    metrics = json.loads(next(tmp_path.rglob("metrics.json")).read_text())["metrics"]
    assert case.spec.monitor in metrics  # scored on what was seen (face embeddings: NaN/null without 2 LFW folds)


def test_names_are_checked_against_the_checkpoint(
    case: TinyTask, session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same number of classes/attributes/categories under other names: the checkpoint's
    weights would silently answer with the wrong names."""
    if case.rename is None:
        pytest.skip(f"tests/tiny_tasks.py declares no renaming of {case.name}'s tiny data")
    data = case.write(tmp_path / "data")
    case.rename(tmp_path / "data")  # the same count under other names (or in another order)
    for subcommand in ("validate", "test", "predict"):
        runs = tmp_path / subcommand
        args = [subcommand, *case.args(data, runs, *NO_SANITY, "--ckpt_path", session.checkpoint(case))]
        pattern = r"does not fit the data: its \w+ output \d+ is '[^']+' where the data's is '[^']+'"
        expect_one_sentence(case.spec.main, args, pattern, capsys)
        assert not metrics_files(runs)
