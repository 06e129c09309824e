"""Section ``data``: the data path at the sizes users train on, against Python-object anchors.

It writes synthetic full-size splits itself (``benchmarks.data_synthetic``): a COCO-2017-sized
train split (118,287 images, about 860k instances with polygons, a 450 MB JSON) and a
VGGFace2-sized identity tree (9,131 identities, 3.31M images; hard links to a few small JPEGs),
then sets each up in fresh processes (``benchmarks.data_probe``): the project's data path (flat
arrays) and an anchor holding the same split as Python objects, the way the data modules did
before. Each row is the set-up time, the main process's PSS, and the PSS of the main process and
its loader workers after a warm-up (a tenth of the batches, at most 100) and after
``--data-batches`` batches (growth is copy-on-read of Python objects).

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
from benchmarks.data_pairs import measure_pairs
from benchmarks.data_shards import run_shards
from benchmarks.data_synthetic import write_coco_split, write_geotag_split, write_identity_tree

MAX_SETUP_S = 10.0
MAX_PSS_GB = 1.0
MAX_GROWTH = 0.05
# set name -> (the project's probe kind, the anchor's)
# geo has no anchor: its geotags were numpy columns before (its row says what it costs).
SETS = {"coco": ("coco", "coco-dicts"), "faces": ("faces", "faces-paths"), "geo": ("geo",)}


def _probe(kind: str, root: Path, batches: int, workers: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.data_probe", kind, str(root), str(batches), str(workers)]
    out = subprocess.run(
        command, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["growth"] = row["pss_all_end_gb"] / row["pss_all_start_gb"] - 1 if "pss_all_end_gb" in row else 0.0
    return row


def _write(name: str, folder: Path, args: argparse.Namespace) -> str:
    """Write the synthetic split ``name`` into ``folder``; its description."""
    if name == "geo":
        write_geotag_split(folder, args.data_geotags)
        return f"MP-16-sized geotags ({args.data_geotags:,} rows; CSV, split and partition, no image check)"
    if name == "coco":
        path = write_coco_split(folder, args.data_images)
        return f"COCO-2017-sized train split ({args.data_images:,} images, {path.stat().st_size / 1e6:.0f} MB JSON)"
    write_identity_tree(folder, args.data_identities, args.data_faces)
    return f"VGGFace2-sized identity folders ({args.data_identities:,} identities, {args.data_faces:,} images)"


def _measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix=f"data-bench-{name}-"))
    try:
        progress(f"data: writing the synthetic {name} split to {folder}")
        start = time.perf_counter()
        described = _write(name, folder, args)
        written = time.perf_counter() - start
        rows = {}
        batches = 0 if name == "geo" else args.data_batches  # geo: no images to read
        for kind in reversed(SETS[name]):  # the anchor first
            progress(f"data: {kind}: set-up, then {batches} batches with {args.data_workers} workers")
            rows[kind] = _probe(kind, folder, batches, args.data_workers)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ours, anchor = rows[SETS[name][0]], rows.get(SETS[name][-1])
    targets = {
        "setup_s": verdict(ours["setup_s"] <= MAX_SETUP_S),
        "pss_main_gb": verdict(ours["pss_main_gb"] <= MAX_PSS_GB),
        "growth": verdict(ours["growth"] <= MAX_GROWTH) if "pss_all_end_gb" in ours else "not measured",
    }
    print_heading(f"data: {described}")
    header = ["held as", "set-up s", "main PSS GB", "of it the split's", "all PSS GB, warmed up", f"after {batches}",
              "growth"]  # fmt: skip
    table = [
        [
            kind,
            fmt(r["setup_s"], ".1f"),
            fmt(r["pss_main_gb"], ".2f"),
            fmt(r.get("pss_data_gb"), ".2f"),
            fmt(r.get("pss_all_start_gb"), ".2f"),
            fmt(r.get("pss_all_end_gb"), ".2f"),
            f"{100 * r['growth']:+.1f}%" if "pss_all_end_gb" in r else "–",
        ]  # fmt: skip
        for kind, r in rows.items()
    ]
    print(markdown_table(header, table))
    ratio = ""
    if len(SETS[name]) > 1:
        ratio = (
            f"{SETS[name][0]} / {SETS[name][1]}: set-up x{ours['setup_s'] / anchor['setup_s']:.2f}, main PSS "
            f"x{ours['pss_main_gb'] / anchor['pss_main_gb']:.2f}. "
        )
    print(
        f"\n{ratio}Targets: set-up <= {MAX_SETUP_S:g} s "
        f"{targets['setup_s']}, PSS <= {MAX_PSS_GB:g} GB {targets['pss_main_gb']}, growth <= "
        f"{100 * MAX_GROWTH:g}% {targets['growth']}."
    )
    return {"split": described, "write_s": written, "rows": rows, "targets": targets}


def _pairs(args: argparse.Namespace) -> dict[str, Any]:
    progress(f"data: the pair scan on {args.data_pair_images:,} embeddings")
    result = measure_pairs(args.data_pair_images, max(2, args.data_pair_images // 20))
    rates = result["pairs_per_s"]
    print_heading(f"data: all pairs of {args.data_pair_images:,} face embeddings (tar_at_far_1e-4), one thread")
    minutes = result["minutes_5pct_vggface2"]
    table = [
        ["anchor (rank 0 alone)", f"{rates['anchor'] / 1e6:.1f}M", fmt(minutes["anchor, rank 0"], ".0f")],
        ["pairs.py scan, 1 rank", f"{rates['scan'] / 1e6:.1f}M", fmt(minutes["scan, 1 rank"], ".0f")],
        ["pairs.py scan, 8 ranks", "", fmt(minutes["scan, 8 ranks"], ".1f")],
    ]
    print(markdown_table(["computed by", "pairs/s", "5% of VGGFace2 (165k images), minutes"], table))
    print(f"\nscan / anchor: x{rates['scan'] / rates['anchor']:.1f} pairs/s; same tar_at_far_1e-4: {result['equal']}.")
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {name: _measure(name, args) for name in args.data_sets}
    if args.data_pair_images:
        results["pairs"] = _pairs(args)
    if args.shards_tasks:
        results["shards"] = run_shards(
            args.shards_tasks, args.shards_batches, args.data_workers, args.shards_batch_size
        )
    return results


SECTION = register(
    Section(
        "data",
        run,
        options=(
            Option("--data-sets", list(SETS), quick=list(SETS), nargs="*", help="which synthetic splits (none: skip)"),
            Option("--data-images", 118_287, quick=300, type=int, help="images of the synthetic COCO split"),
            Option("--data-identities", 9_131, quick=20, type=int, help="identities of the synthetic face tree"),
            Option("--data-faces", 3_310_000, quick=400, type=int, help="images of the synthetic face tree"),
            Option("--data-geotags", 4_723_695, quick=2000, type=int, help="rows of the synthetic MP-16 train.csv"),
            Option("--data-batches", 2000, quick=5, type=int, help="batches read with the loader workers (0: none)"),
            Option("--data-workers", 4, quick=1, type=int, help="DataLoader workers"),
            Option("--data-pair-images", 20_000, quick=300, type=int, help="embeddings of the pair scan (0: skip)"),
            Option(
                "--shards-tasks",
                ["classification", "fine_grained", "detection", "face_attributes", "geolocation", "face_embedding"],
                quick=["fine_grained"],
                nargs="*",
                help="tasks whose demo is read from shards and from folders (benchmarks.data_shards; none: skip)",
            ),
            Option("--shards-batches", 0, quick=3, type=int, help="training batches timed per read (0: an epoch)"),
            Option("--shards-batch-size", 32, quick=8, type=int, help="batch size of the shard reads"),
        ),
    )
)
