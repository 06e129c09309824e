"""Section ``data``: the data path at the sizes users train on, against the Python-object anchor.

It writes a synthetic COCO-2017-sized train split itself (``benchmarks.data_synthetic``: 118,287
images, about 860k instances with polygons, a 420-450 MB JSON), then sets it up in fresh
processes (``benchmarks.data_probe``): the project's ``CocoDetection`` (flat arrays) and the
anchor that holds the split as Python objects, the way the data module did before. Each prints
the set-up time, the main process's PSS, and the PSS of the main process and its loader workers
after the first batch and after ``--data-batches`` batches (growth is copy-on-read).

Targets (issue 20): set-up at most 10 s, main-process PSS at most 1 GB, no growth over the
batches (at most 5%: allocator noise).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Option, Section, fmt, markdown_table, print_heading, progress, register, verdict
from benchmarks.data_shards import run_shards
from benchmarks.data_synthetic import write_coco_split

MAX_SETUP_S = 10.0
MAX_PSS_GB = 1.0
MAX_GROWTH = 0.05


def _probe(kind: str, annotations: Path, images: Path, batches: int, workers: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.data_probe", kind, str(annotations), str(images), str(batches),
         str(workers)],
        check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="data-bench-"))
    try:
        progress(f"data: writing a synthetic COCO split of {args.data_images:,} images to {folder}")
        start = time.perf_counter()
        annotations = write_coco_split(folder, args.data_images)
        written = time.perf_counter() - start
        size_mb = annotations.stat().st_size / 1e6
        rows = {}
        for kind in ("dicts", "compact"):
            progress(f"data: {kind}: set-up, then {args.data_batches} batches with {args.data_workers} workers")
            rows[kind] = _probe(kind, annotations, folder / "train2017", args.data_batches, args.data_workers)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    compact, anchor = rows["compact"], rows["dicts"]
    for row in rows.values():
        row["growth"] = row["pss_all_end_gb"] / row["pss_all_start_gb"] - 1 if "pss_all_end_gb" in row else 0.0
    targets = {
        "setup_s": verdict(compact["setup_s"] <= MAX_SETUP_S),
        "pss_main_gb": verdict(compact["pss_main_gb"] <= MAX_PSS_GB),
        "growth": verdict(compact["growth"] <= MAX_GROWTH),
    }
    print_heading(f"data: COCO-2017-sized train split ({args.data_images:,} images, {size_mb:.0f} MB JSON)")
    print(
        markdown_table(
            ["held as", "set-up s", "main PSS GB", "all PSS GB, batch 1", f"after {args.data_batches}", "growth"],
            [
                [
                    kind,
                    fmt(r["setup_s"], ".1f"),
                    fmt(r["pss_main_gb"], ".2f"),
                    fmt(r.get("pss_all_start_gb"), ".2f"),
                    fmt(r.get("pss_all_end_gb"), ".2f"),
                    f"{100 * r['growth']:+.1f}%",
                ]
                for kind, r in rows.items()
            ],
        )
    )
    print(
        f"\ncompact / dicts: set-up x{compact['setup_s'] / anchor['setup_s']:.2f}, main PSS "
        f"x{compact['pss_main_gb'] / anchor['pss_main_gb']:.2f}. Targets: set-up <= {MAX_SETUP_S:g} s "
        f"{targets['setup_s']}, PSS <= {MAX_PSS_GB:g} GB {targets['pss_main_gb']}, growth <= "
        f"{100 * MAX_GROWTH:g}% {targets['growth']}."
    )
    shards = run_shards(args.shards_tasks, args.shards_batches, args.data_workers, args.shards_batch_size)
    return {
        "images": args.data_images,
        "json_mb": size_mb,
        "write_s": written,
        "rows": rows,
        "targets": targets,
        "shards": shards,
    }


SECTION = register(
    Section(
        "data",
        run,
        options=(
            Option("--data-images", 118_287, quick=300, type=int, help="images of the synthetic COCO split"),
            Option("--data-batches", 2000, quick=5, type=int, help="batches read with the loader workers (0: none)"),
            Option("--data-workers", 4, quick=1, type=int, help="DataLoader workers"),
            Option(
                "--shards-tasks",
                ["classification", "fine_grained", "detection", "face_attributes", "geolocation", "face_embedding"],
                quick=["fine_grained"],
                nargs="+",
                help="tasks whose demo is read from shards and from folders (benchmarks.data_shards)",
            ),
            Option("--shards-batches", 0, quick=3, type=int, help="training batches timed per read (0: an epoch)"),
            Option("--shards-batch-size", 32, quick=8, type=int, help="batch size of the shard reads"),
        ),
    )
)
