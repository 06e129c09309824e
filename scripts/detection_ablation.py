"""Issue 12's ablation in one command: the minimal SSD loop, one project choice at a time, and the task.

    python scripts/detection_ablation.py --steps 400 --json runs/detection-ablation.json
    python scripts/detection_ablation.py --table runs/detection-ablation.json     # print it again

Every variant trains SSD300 at ``--width`` for exactly ``--steps`` optimizer steps (batch 16) on
the second generated set (``datasets.demo.coco_shapes``; ``--root`` for another), each in its own
process, one after the other, then is scored on val (COCO mAP). The loop variants are
``benchmarks.detection_minimal_loop`` with one switch each; ``task`` is ``python -m
tasks.detection fit --trainer.max_steps STEPS`` with every default (``task_cosine``: the old
default schedule), launched by ``benchmarks.task_runs.fit_in_subprocess`` as the seeds script's
runs are. ``--threads N`` runs every variant with ``OMP_NUM_THREADS=N`` (each record keeps its
thread count: on CPU it changes the trained bits as a seed does). The table gives mAP and
mAP@0.5 of each, and the loop's weights under the other evaluation settings (no retraining).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.task_runs import ROOT, fit_in_subprocess, run_env, run_threads

TASK = "tasks.detection"  # a variant whose arguments start with this is the task's own fit
# name -> (what it changes, arguments of benchmarks.detection_minimal_loop or of the task's fit).
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "loop": ("the minimal loop (PIL, flip, torchvision's resize, SGD 0.05 constant, decay on all)", []),
    "pipeline": ("+ the project's data (cv2 read, albumentations flip + resize)", ["--pipeline", "project"]),
    "cosine": ("+ 1 epoch warm-up, cosine to 0 over the run (the old default)", ["--schedule", "warmup_cosine"]),
    "cosine_lr0.1": ("+ the same at lr 0.1", ["--schedule", "warmup_cosine", "--lr", "0.1"]),
    "hold_cosine": ("+ 1 epoch warm-up, peak held for half the run, cosine to 0 (the new default)",
                    ["--schedule", "warmup_cosine", "--decay-start", "0.5"]),
    "groups": ("+ no decay on BN, biases, depthwise; shuffled epochs", ["--decay", "groups", "--sampling", "epochs"]),
    "all": ("the project's data, schedule, groups and sampling, in the loop",
            ["--pipeline", "project", "--schedule", "warmup_cosine", "--decay-start", "0.5",
             "--decay", "groups", "--sampling", "epochs"]),
    "task_cosine": ("python -m tasks.detection fit, cosine over the run (the old default)",
                    [TASK, "--model.lr_decay_start", "0"]),
    "task": ("python -m tasks.detection fit, every default", [TASK]),
}  # fmt: skip


def run_variant(name: str, args: argparse.Namespace, root: str) -> dict[str, Any]:
    """Train and score one variant in a subprocess; its record (mAP, mAP50, steps, threads, seconds)."""
    _, switches = VARIANTS[name]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="det-ablation-") as tmp:
        if switches[:1] == [TASK]:
            task_args = ["--data.root", root, *switches[1:], "--backbone", str(args.width)]
            task_args += ["--trainer.max_steps", str(args.steps), "--seed_everything", str(args.seed)]
            run = fit_in_subprocess("detection", task_args, Path(tmp), args.threads)
            evals = {"project (0.01, NMS 0.6, 100)": run.metrics}
            steps, threads = run.global_step, run.threads
        else:
            out = Path(tmp) / "record.json"
            command = [sys.executable, "-m", "benchmarks.detection_minimal_loop", "--root", root]
            command += ["--steps", str(args.steps), "--width", str(args.width), "--seed", str(args.seed)]
            command += ["--json", str(out), *switches]
            env = run_env(args.threads)
            subprocess.run(command, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
            record = json.loads(out.read_text())[0]
            evals, steps, threads = record["eval"], int(record["steps"]), run_threads(env)
    seconds = time.perf_counter() - start
    return {"variant": name, "steps": steps, "seconds": seconds, "seed": args.seed, "root": root,
            "threads": threads, "eval": evals}  # fmt: skip


def table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown: one row per variant (mAP and mAP@0.5 under the project's evaluation settings),
    then the loop's weights scored under each evaluation setting."""
    lines = ["| variant | change | steps | mAP | mAP@0.5 |", "|---|---|---|---|---|"]
    for r in records:
        stats = next(iter(r["eval"].values()))  # the project's settings come first
        change = VARIANTS.get(r["variant"], ("?", None))[0]
        lines.append(f"| {r['variant']} | {change} | {r['steps']} | {stats['mAP']:.3f} | {stats['mAP50']:.3f} |")
    loop = next((r for r in records if r["variant"] == "loop"), None)
    if loop is not None and len(loop["eval"]) > 1:
        lines += ["", "| the loop's weights, evaluated with | mAP | mAP@0.5 |", "|---|---|---|"]
        lines += [f"| {name} | {s['mAP']:.3f} | {s['mAP50']:.3f} |" for name, s in loop["eval"].items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", default=None, help="a COCO-layout set; default: the second generated set")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every run (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="append every variant's record to this JSON list")
    parser.add_argument("--table", type=Path, default=None, help="only print the table of this JSON")
    args = parser.parse_args(argv)
    if args.table is not None:
        records = json.loads(args.table.read_text())
        print(table(records))
        return records
    if args.root is None:
        from datasets.demo.coco_shapes import ensure_shapes_set

        args.root = str(ensure_shapes_set())
    records = json.loads(args.json.read_text()) if args.json is not None and args.json.is_file() else []
    for name in args.variants:
        print(f"{name}: training {args.steps} steps", file=sys.stderr, flush=True)
        records.append(run_variant(name, args, args.root))
        if args.json is not None:  # kept after every variant: a long ablation can be stopped
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(records, indent=1))
    print(table(records))
    return records


if __name__ == "__main__":
    main()
