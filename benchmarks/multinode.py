"""Section ``multinode``: every task on 2 simulated nodes x 2 processes (gloo), against one process.

A multi-node run is the same command started once per node with ``--trainer.num_nodes N`` and
the node's ``NODE_RANK``, all pointing at rank 0's ``MASTER_ADDR``/``MASTER_PORT`` (Lightning's
``LightningEnvironment``; under SLURM or torchrun Lightning reads their variables instead), and
Lightning's ``ddp`` strategy starts ``--trainer.devices`` processes on each node. This section does
exactly that on one machine, with 127.0.0.1 as the master and CPU processes talking gloo:

1. ``fit`` a few steps on nodes x devices processes (the built-in demo at a tiny width);
2. ``test`` the checkpoint it wrote on nodes x devices processes, and on one process;
3. compare every metric of the two tests (they must be equal: each is reduced over the whole
   split, not per rank; batches of one image so that no batch composition differs).

Printed: per task, the seconds of each step and the largest metric difference. ``docs/architecture.md``
holds the recipe for real clusters (``docs/architecture.md#many-nodes``).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import Option, Section, fmt, markdown_table, print_heading, progress, register, verdict

TASKS = ("classification", "fine_grained", "detection", "face_attributes", "geolocation", "face_embedding")
# Relative: a mean loss summed over 4 ranks in another order differs in float32's last bits (2e-6).
TOLERANCE = 1e-5


def free_port() -> int:
    """A TCP port free on this machine now (for MASTER_PORT)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def launch(task: str, args: Sequence[str], nodes: int, devices: int, timeout: float = 900) -> None:
    """``python -m tasks.<task> ARGS`` on ``nodes`` simulated nodes of ``devices`` CPU processes each:
    one command per node, started together, as a cluster's launcher would; one sentence on failure."""
    port = free_port()
    command = [sys.executable, "-m", f"tasks.{task}", *args]
    if nodes * devices > 1:
        command += ["--trainer.num_nodes", str(nodes), "--trainer.devices", str(devices)]
        command += ["--trainer.strategy", "ddp", "--trainer.accelerator", "cpu"]
    else:
        command += ["--trainer.devices", "1", "--trainer.accelerator", "cpu"]
    runs = []
    for node in range(nodes):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(node)}
        env["OMP_NUM_THREADS"] = "1"
        log = tempfile.TemporaryFile(mode="w+")
        runs.append((subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    failed = []
    for node, (process, log) in enumerate(runs):
        code = process.wait(timeout=timeout)
        log.seek(0)
        if code:
            failed.append(f"node {node} exited with {code}: ...{log.read()[-1500:]}")
        log.close()
    if failed:
        raise RuntimeError(f"{' '.join(command)} failed on {len(failed)} of {nodes} nodes; " + " | ".join(failed))


def _metrics(runs: Path) -> dict[str, float]:
    newest = max(runs.glob("lightning_logs/*/metrics.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text(encoding="utf-8"))["metrics"]


def simulate(
    task: str, data: Sequence[str], sizes: Sequence[str], out: Path, nodes: int, devices: int, steps: int
) -> dict[str, Any]:  # noqa: E501
    """Fit ``steps`` on nodes x devices, then test its checkpoint there and on one process."""
    common = [*data, *sizes, "--data.num_workers", "0", "--trainer.enable_progress_bar", "false"]
    fit = [*common, "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "2"]
    fit += ["--trainer.num_sanity_val_steps", "0", "--trainer.default_root_dir", str(out / "fit")]
    start = time.perf_counter()
    launch(task, ["fit", *fit], nodes, devices)
    fit_s = time.perf_counter() - start
    checkpoint = next((out / "fit").rglob("last.ckpt"))
    results, seconds = {}, {}
    for name, (n, d) in {"spread": (nodes, devices), "one": (1, 1)}.items():
        start = time.perf_counter()
        test = [*common, "--data.batch_size", "1", "--ckpt_path", str(checkpoint)]
        launch(task, ["test", *test, "--trainer.default_root_dir", str(out / name)], n, d)
        seconds[name] = time.perf_counter() - start
        results[name] = _metrics(out / name)
    differences = {key: abs(results["spread"].get(key, float("nan")) - value) for key, value in results["one"].items()}
    worst = max(differences.values(), default=0.0)
    same_keys = results["spread"].keys() == results["one"].keys()
    return {"fit_s": fit_s, "test_s": seconds, "metrics": results, "max_difference": worst, "same_keys": same_keys}


def _verdict(row: dict[str, Any]) -> str:
    if "error" in row:
        return "failed: " + row["error"][-120:].replace("|", "/")
    return "different keys" if not row["same_keys"] else f"{row['max_difference']:.1e}"


def agrees(row: dict[str, Any]) -> bool:
    """Whether a ``simulate`` result's two tests report the same metrics (within ``TOLERANCE``)."""
    return bool(row["same_keys"] and row["max_difference"] <= TOLERANCE)


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = {}
    # batch 8: face_embedding's P x K batches need at least 2 identities x its 4 images
    sizes = ["--backbone", "0.25", "--resolution", str(args.multinode_resolution), "--data.batch_size", "8"]
    with tempfile.TemporaryDirectory(prefix="multinode-") as folder:
        for task in args.multinode_tasks:
            progress(f"multinode: {task} on {args.multinode_nodes} nodes x {args.multinode_devices} processes")
            try:
                rows[task] = simulate(
                    task, [], sizes, Path(folder) / task, args.multinode_nodes, args.multinode_devices,
                    args.multinode_steps,
                )  # fmt: skip
            except RuntimeError as failed:  # one task's failure is a row, not the end of the section
                rows[task] = {"error": str(failed)[-500:], "same_keys": False, "max_difference": float("nan")}
    equal = all(agrees(r) for r in rows.values())
    ranks = args.multinode_nodes * args.multinode_devices
    print_heading(f"multinode: {args.multinode_nodes} nodes x {args.multinode_devices} gloo processes vs one process")
    print(
        markdown_table(
            [
                "task",
                f"fit {args.multinode_steps} steps s",
                f"test on {ranks} s",
                "test on 1 s",
                "max relative difference",
            ],
            [
                [
                    task,
                    fmt(r.get("fit_s"), ".0f"),
                    fmt(r.get("test_s", {}).get("spread"), ".0f"),
                    fmt(r.get("test_s", {}).get("one"), ".0f"),
                    _verdict(r),
                ]
                for task, r in rows.items()
            ],
        )
    )
    print(f"\nEvery metric equal within {TOLERANCE:g}: {verdict(equal)}.")
    return {"rows": rows, "equal": equal}


SECTION = register(
    Section(
        "multinode",
        run,
        options=(
            Option("--multinode-tasks", list(TASKS), quick=["classification"], nargs="+", help="tasks to simulate"),
            Option("--multinode-nodes", 2, quick=2, type=int, help="simulated nodes"),
            Option("--multinode-devices", 2, quick=1, type=int, help="processes per node"),
            Option("--multinode-steps", 3, quick=2, type=int, help="training steps"),
            Option("--multinode-resolution", 64, quick=32, type=int, help="input resolution"),
        ),
    )
)
