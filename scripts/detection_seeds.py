"""The detection figures of docs/detection.md in one command: the default fit, 3 seeds, on the demo and the second set.

    python scripts/detection_seeds.py --backbone 0.5 0.75                  # code defaults (300 steps)
    python scripts/detection_seeds.py --backbone 0.75 --sets demo --threads 1
    python scripts/detection_seeds.py --backbone 0.5 -- --trainer.max_time 00:00:08:00

Each run is ``python -m tasks.detection fit --backbone A --seed_everything S`` (plus the arguments
after ``--``) on the built-in demo and on the second generated set (``datasets.demo.coco_shapes``),
one after the other, in its own process and run folder (``runs/detection-seeds/<set>-<A>-<seed>``),
launched by ``benchmarks.task_runs.fit_in_subprocess``. ``--threads N`` runs them with
``OMP_NUM_THREADS=N``: on CPU the thread count changes the trained bits as a seed does, so a figure
is reproduced by the same seed *and* thread count (the table says which). The table gives, per
set and width, the median over seeds of the final validation's mAP and mAP@0.5 with their spread
(min-max), the steps run, the threads and the wall time; ``--json`` also keeps every run
(``--table FILE`` prints the table of such a file again).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.task_runs import ROOT, fit_in_subprocess, split_passthrough


def set_root(name: str) -> str | None:
    """``--data.root`` of a set: None for the built-in demo, the generated folder for ``shapes``."""
    if name == "demo":
        return None
    from datasets.demo.coco_shapes import ensure_shapes_set

    return str(ensure_shapes_set())


def fit(
    set_name: str, seed: int, backbone: float, runs: Path, extra: Sequence[str], threads: int | None = None
) -> dict[str, Any]:
    """One default fit in a subprocess; its final ``metrics.json``, steps, threads and wall time."""
    args = ["--backbone", str(backbone), "--seed_everything", str(seed)]
    root = set_root(set_name)
    if root is not None:
        args += ["--data.root", root]
    run = fit_in_subprocess("detection", [*args, *extra], runs / f"{set_name}-{backbone:g}-{seed}", threads)
    return {"set": set_name, "backbone": backbone, "seed": seed, **run.as_dict()}


def summary(runs: list[dict[str, Any]]) -> str:
    """A markdown table: per set and width, median (min-max) of mAP and mAP@0.5 over seeds, steps,
    threads, time."""
    lines = ["| set | α | seeds | mAP median (min-max) | mAP@0.5 median (min-max) | steps | threads "
             "| wall time median |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, backbone in dict.fromkeys((r["set"], r.get("backbone", 0.5)) for r in runs):
        rows = [r for r in runs if r["set"] == name and r.get("backbone", 0.5) == backbone]

        def spread(key: str, rows: list[dict[str, Any]] = rows) -> str:
            values = [r["metrics"][key] for r in rows]
            return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"

        steps = sorted({r["global_step"] for r in rows})
        threads = sorted({str(r.get("threads", "?")) for r in rows})
        minutes = statistics.median(r["seconds"] for r in rows) / 60
        lines.append(
            f"| {name} | {backbone:g} | {len(rows)} | {spread('mAP')} | {spread('mAP50')} | "
            f"{'/'.join(map(str, steps))} | {'/'.join(threads)} | {minutes:.1f} min |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    own, extra = split_passthrough(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", type=float, nargs="+", default=[0.5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sets", nargs="+", choices=["demo", "shapes"], default=["demo", "shapes"])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "detection-seeds")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every run (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write every run here")
    parser.add_argument("--table", type=Path, default=None, help="only print the table of this --json file")
    args = parser.parse_args(own)
    if args.table is not None:
        runs = json.loads(args.table.read_text())
        print(summary(runs))
        return runs
    runs = [
        fit(s, seed, a, args.runs, extra, args.threads) for a in args.backbone for s in args.sets for seed in args.seeds
    ]
    print(summary(runs))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(runs, indent=1))
    return runs


if __name__ == "__main__":
    main()
