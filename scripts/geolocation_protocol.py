"""The geolocation protocol figures of docs/geolocation.md: center vs centroid, 1 vs 5 vs 10 crops.

    python scripts/geolocation_protocol.py --seeds 0 1 2 --steps 500 --threads 1

Per seed, one ``python -m tasks.geolocation fit --backbone 0.5 --resolution 64 --seed_everything S``
(code defaults otherwise; ``--steps`` optimizer steps; ``--data-root`` another set than the demo),
then ``test --ckpt_path last`` of that one checkpoint with ``--model.predict_location`` centroid
and center and ``--data.test_crops`` 1, 5 and 10: the same weights, read six ways. Prints one
markdown row per reading (the median over seeds of each Im2GPS metric, with the min-max of
acc_25km and median_km), and how far apart a cell's centroid and center are on the partition of
the first seed's run (``cells.csv``): the median over cells, and over the training photos.
``--json FILE`` keeps every run's metrics.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.task_runs import ROOT, fit_in_subprocess, run_env
from tasks.geolocation.metrics import METRIC_NAMES, haversine_km

READINGS = [(location, crops) for location in ("centroid", "center") for crops in (1, 5, 10)]
SIZE = ["--backbone", "0.5", "--resolution", "64"]  # the documented demo settings


def newest_metrics(runs: Path) -> dict[str, float]:
    path = max(runs.glob("lightning_logs/*/metrics.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(path.read_text())["metrics"]


def score(runs: Path, data: list[str], location: str, crops: int, threads: int | None) -> dict[str, float]:
    """``test --ckpt_path last`` of the run in ``runs``, read with ``location`` and ``crops``."""
    command = [sys.executable, "-m", "tasks.geolocation", "test", *SIZE, *data, "--ckpt_path", "last"]
    command += ["--model.predict_location", location, "--data.test_crops", str(crops)]
    command += ["--trainer.default_root_dir", str(runs), "--trainer.enable_progress_bar", "false"]
    subprocess.run(command, check=True, cwd=ROOT, env=run_env(threads), stdout=subprocess.DEVNULL)
    return newest_metrics(runs)


def center_to_centroid_km(cells_csv: Path) -> tuple[float, float, int]:
    """(median over cells, median over training photos, cells) of the centroid-to-center distance."""
    with cells_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    centroid = torch.tensor([[float(r["lat"]), float(r["lon"])] for r in rows])
    center = torch.tensor([[float(r["center_lat"]), float(r["center_lon"])] for r in rows])
    km = haversine_km(centroid, center).numpy()
    counts = np.asarray([int(r["count"]) for r in rows])
    return float(np.median(km)), float(np.median(np.repeat(km, counts))), len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps of each fit")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every run")
    parser.add_argument("--data-root", type=Path, default=None, help="another set than the built-in demo")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "geolocation-protocol")
    parser.add_argument("--json", type=Path, default=None, help="write every run's metrics here")
    args = parser.parse_args()
    data = [] if args.data_root is None else ["--data.root", str(args.data_root)]
    results: dict[str, dict] = {}
    first_cells: Path | None = None
    for seed in args.seeds:
        runs = args.out / f"seed{seed}"
        start = time.perf_counter()
        fit = fit_in_subprocess(
            "geolocation",
            [*SIZE, *data, "--seed_everything", str(seed), "--trainer.max_steps", str(args.steps)],
            runs,
            threads=args.threads,
            quiet=True,
        )
        first_cells = first_cells or Path(fit.log_dir) / "cells.csv"
        readings = {f"{loc}/{crops}": score(runs, data, loc, crops, args.threads) for loc, crops in READINGS}
        results[str(seed)] = {"fit": fit.as_dict(), "readings": readings}
        took = time.perf_counter() - start
        print(f"seed {seed}: {fit.global_step} steps, {took:.0f} s (fit {fit.seconds:.0f} s)", flush=True)
    print(f"\n| reading | crops | {' | '.join(METRIC_NAMES)} |\n|---|---|{'---|' * len(METRIC_NAMES)}")
    for location, crops in READINGS:
        per_seed = [results[str(s)]["readings"][f"{location}/{crops}"] for s in args.seeds]
        cells = []
        for name in METRIC_NAMES:
            values = [r[name] for r in per_seed]
            text = f"{statistics.median(values):.3f}" if name != "median_km" else f"{statistics.median(values):.1f}"
            if name in ("acc_25km", "median_km") and len(values) > 1:
                text += f" ({min(values):.3g}-{max(values):.3g})"
            cells.append(text)
        print(f"| {location} | {crops} | {' | '.join(cells)} |")
    assert first_cells is not None
    by_cell, by_photo, count = center_to_centroid_km(first_cells)
    print(
        f"\ncentroid to center on the partition of {first_cells} ({count} cells): median {by_cell:.1f} km over "
        f"cells, {by_photo:.1f} km over training photos."
    )
    if args.json:
        args.json.write_text(json.dumps({"args": sys.argv[1:], "results": results}, indent=2))


if __name__ == "__main__":
    main()
