"""A task's ``fit`` (or ``test``, ``predict``) in its own process and what it measured: the one
launcher of the scripts that reproduce the README's tables (``scripts/detection_seeds.py``,
``scripts/detection_ablation.py``, ``scripts/face_attributes_compression.py``).

Each run is ``python -m tasks.<task> fit ARGS --trainer.default_root_dir FOLDER`` from the project
root, in a fresh process (nothing of one run, such as a seeded generator or a warmed-up thread
pool, leaks into the next); its result is the ``metrics.json`` of the log folder the run created
(its last validation), with the step count, the wall time and the command.

Torch's intra-op thread count is part of a CPU run's result: the same seed trains other bits on 1
thread than on 2 (the sums of a convolution's gradient are split differently), and by 300 steps
that is as far apart as another seed. ``threads`` sets ``OMP_NUM_THREADS`` for the run, and every
record says how many threads it ran on (``torch``'s default, the machine's core count, when not
set), so a table can state it and a rerun can match it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class FitRun:
    """One finished fit: the final validation's metrics and how the run was made."""

    command: list[str]
    threads: int
    seconds: float
    global_step: int
    metrics: dict[str, float]
    log_dir: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def split_passthrough(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """A script's own arguments and, after ``--``, the ones it passes on to every task run."""
    argv = list(argv)
    if "--" not in argv:
        return argv, []
    return argv[: argv.index("--")], argv[argv.index("--") + 1 :]


def run_env(threads: int | None = None) -> dict[str, str]:
    """The environment of a run: the project importable, and ``OMP_NUM_THREADS`` when given."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_threads(env: Mapping[str, str]) -> int:
    """Torch's intra-op threads in a process started with ``env``: ``OMP_NUM_THREADS``, else
    torch's default (one per physical core, what a fresh process of this machine gets)."""
    if env.get("OMP_NUM_THREADS", "").isdigit():
        return int(env["OMP_NUM_THREADS"])
    command = [sys.executable, "-c", "import torch; print(torch.get_num_threads())"]
    return int(subprocess.run(command, env=dict(env), capture_output=True, text=True, check=True).stdout)


def _log_dirs(folder: Path) -> set[Path]:
    return set(folder.glob("lightning_logs/version_*"))


def run_in_subprocess(
    task: str, command: str, args: Sequence[str], folder: Path, threads: int | None = None, quiet: bool = False
) -> tuple[Path, float, list[str]]:
    """``python -m tasks.<task> COMMAND ARGS`` (fit, validate, test, predict) with its outputs in
    ``folder``: the log folder it created, its wall seconds and the command line.

    ``threads`` sets ``OMP_NUM_THREADS`` (None: the environment's, else torch's default);
    ``quiet`` hides the run's stdout (its errors still show). Raises ``CalledProcessError`` when the
    run fails.
    """
    folder = Path(folder)
    line = [sys.executable, "-m", f"tasks.{task}", command, *args]
    line += ["--trainer.default_root_dir", str(folder), "--trainer.enable_progress_bar", "false"]
    before = _log_dirs(folder)
    start = time.perf_counter()
    subprocess.run(line, check=True, cwd=ROOT, env=run_env(threads), stdout=subprocess.DEVNULL if quiet else None)
    seconds = time.perf_counter() - start
    created = sorted(_log_dirs(folder) - before, key=lambda p: p.stat().st_mtime)
    if not created:
        raise RuntimeError(f"The run {' '.join(line)} created no log folder under {folder}.")
    return created[-1], seconds, line


def fit_in_subprocess(
    task: str, args: Sequence[str], folder: Path, threads: int | None = None, quiet: bool = False
) -> FitRun:
    """``python -m tasks.<task> fit ARGS`` with its outputs in ``folder`` (``run_in_subprocess``); its
    final ``metrics.json``."""
    log_dir, seconds, command = run_in_subprocess(task, "fit", args, folder, threads, quiet)
    result = json.loads((log_dir / "metrics.json").read_text())
    env = run_env(threads)
    return FitRun(command, run_threads(env), seconds, int(result["global_step"]), result["metrics"], str(log_dir))
