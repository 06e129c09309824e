"""Geolocation section: PlaNet's S2 partition, vectorised (numpy) against a plain s2sphere loop.

``datasets.geo_partition.build_partition`` computes the leaf cell of every photo with the numpy
port of s2sphere in ``datasets.s2cells`` and splits cells on sorted ids. The anchor is the plain
way: ``s2sphere.CellId.from_lat_lng`` per photo and a dictionary of cells split level by level
(``plain_partition``; the tests use it as the independent reference). Both run on the same
synthetic photos in the same run, the cells must be identical, and the speed-up is their ratio
(target: at least 5x on 1M photos). The loop can run on a subsample (``--geo-loop-points``): its
time is then extrapolated linearly (it is a per-photo loop) and said so in the table. A scale
table measures the vectorised partition at larger sizes (MP-16 is 4.7M photos) with its peak
memory (tracemalloc, which sees numpy's buffers).
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from typing import Any

import numpy as np
import s2sphere

from benchmarks.common import Option, Section, fmt, markdown_table, print_heading, progress, register, verdict
from datasets.geo_partition import Partition, build_partition, latlon_from_xyz

SPEEDUP_TARGET = 5.0  # the target for the vectorised partition over the s2sphere loop
CLUSTERS = 2000  # places photos gather around (cities, landmarks) in the synthetic set
STRAY_SHARE = 0.1  # photos anywhere on the sphere


def synthetic_photos(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` photo locations (degrees) clustered like a photo collection: many places of
    log-normal popularity, a few km to a hundred km of spread, and 10% anywhere."""
    rng = np.random.default_rng(seed)
    centre_lat = np.degrees(np.arcsin(rng.uniform(-0.9, 0.95, CLUSTERS)))
    centre_lon = rng.uniform(-180, 180, CLUSTERS)
    weight = rng.lognormal(0, 1.5, CLUSTERS)
    place = rng.choice(CLUSTERS, n, p=weight / weight.sum())
    spread = np.exp(rng.uniform(np.log(0.02), np.log(1.0), CLUSTERS))[place]  # degrees
    lat = np.clip(centre_lat[place] + rng.normal(0, 1, n) * spread, -90, 90)
    lon = centre_lon[place] + rng.normal(0, 1, n) * spread / np.maximum(np.cos(np.radians(lat)), 0.05)
    stray = rng.random(n) < STRAY_SHARE
    lat[stray] = np.degrees(np.arcsin(rng.uniform(-1, 1, stray.sum())))
    lon[stray] = rng.uniform(-180, 180, stray.sum())
    return lat, (lon + 180.0) % 360.0 - 180.0


def plain_partition(
    lat: np.ndarray, lon: np.ndarray, max_photos: int, min_photos: int, min_level: int = 0
) -> Partition:
    """PlaNet's rule the plain way: s2sphere per photo, a dict of cells split one level at a time."""
    cells: dict[int, list[int]] = {}
    leaves, points = [], []
    for k, (a, b) in enumerate(zip(lat.tolist(), lon.tolist(), strict=True)):
        ll = s2sphere.LatLng.from_degrees(a, b)
        leaf = s2sphere.CellId.from_lat_lng(ll)
        leaves.append(leaf)
        points.append(ll.to_point())
        cells.setdefault(leaf.parent(min_level).id(), []).append(k)
    level, final = min_level, {}
    while cells:
        split: dict[int, list[int]] = {}
        for cell_id, members in cells.items():
            if len(members) <= max_photos or level == s2sphere.CellId.MAX_LEVEL:
                final[cell_id] = members
                continue
            for k in members:
                split.setdefault(leaves[k].parent(level + 1).id(), []).append(k)
        cells, level = split, level + 1
    kept = sorted(cell_id for cell_id, members in final.items() if len(members) >= min_photos)
    sums = np.array([[sum(points[k][axis] for k in final[c]) for axis in range(3)] for c in kept]).reshape(-1, 3)
    centers = [s2sphere.CellId(c).to_lat_lng() for c in kept]
    return Partition(
        np.array(kept, dtype=np.uint64),
        np.array([len(final[c]) for c in kept], dtype=np.int64),
        latlon_from_xyz(sums),
        np.array([(ll.lat().degrees, ll.lng().degrees) for ll in centers]).reshape(-1, 2),
    )


def same_cells(a: Partition, b: Partition, tolerance_deg: float = 1e-9) -> bool:
    """The same cells with the same counts, centroids and centers (sums in another order: a tolerance)."""
    return (
        len(a) == len(b)
        and bool(np.array_equal(a.ids, b.ids) and np.array_equal(a.counts, b.counts))
        and bool(np.allclose(a.centroids, b.centroids, rtol=0, atol=tolerance_deg))
        and bool(np.allclose(a.centers, b.centers, rtol=0, atol=tolerance_deg))
    )


def _timed_partition(lat: np.ndarray, lon: np.ndarray, args: argparse.Namespace) -> tuple[Partition, float, int]:
    """The vectorised partition, its wall time, and its peak traced memory (bytes) from a second
    run under tracemalloc (which sees numpy's buffers but slows the run, so it is not timed)."""
    start = time.perf_counter()
    cells = build_partition(lat, lon, args.geo_max_photos, args.geo_min_photos, progress=False)
    seconds = time.perf_counter() - start
    tracemalloc.start()
    build_partition(lat, lon, args.geo_max_photos, args.geo_min_photos, progress=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return cells, seconds, peak


def measure_speedup(args: argparse.Namespace) -> dict[str, Any]:
    """Vectorised against the plain loop on the same photos (the loop maybe on a subsample)."""
    n = args.geo_points
    lat, lon = synthetic_photos(n)
    progress(f"geolocation: vectorised partition of {n} photos")
    cells, vector_s, peak = _timed_partition(lat, lon, args)
    m = min(args.geo_loop_points or n, n)
    progress(f"geolocation: s2sphere loop on {m} of them")
    start = time.perf_counter()
    reference = plain_partition(lat[:m], lon[:m], args.geo_max_photos, args.geo_min_photos)
    loop_s = (time.perf_counter() - start) * n / m
    # identical cells on exactly the points the loop saw
    sample = cells if m == n else build_partition(lat[:m], lon[:m], args.geo_max_photos, args.geo_min_photos)
    return {
        "points": n,
        "loop_points": m,
        "loop_extrapolated": m < n,
        "max_photos": args.geo_max_photos,
        "min_photos": args.geo_min_photos,
        "cells": len(cells),
        "vectorised_s": vector_s,
        "loop_s": loop_s,
        "speedup": loop_s / vector_s,
        "identical": same_cells(sample, reference),
        "peak_bytes_per_photo": peak / n,
    }


def measure_scale(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The vectorised partition at each size of ``--geo-scale-points``: time and peak memory."""
    rows = []
    for n in args.geo_scale_points:
        lat, lon = synthetic_photos(n, seed=1)
        progress(f"geolocation: vectorised partition of {n} photos (scale)")
        cells, seconds, peak = _timed_partition(lat, lon, args)
        rows.append({"points": n, "cells": len(cells), "seconds": seconds, "peak_mb": peak / 2**20})
    return rows


def judge(speedup: dict[str, Any]) -> dict[str, Any]:
    return {
        "speedup": speedup["speedup"],
        "speedup_met": speedup["speedup"] >= SPEEDUP_TARGET,
        "identical_cells": speedup["identical"],
    }


def report(speedup: dict[str, Any], scale: list[dict[str, Any]], targets: dict[str, Any]) -> None:
    print_heading("Geolocation: PlaNet's S2 partition, vectorised against s2sphere per photo")
    loop = f"{speedup['loop_s']:.1f}" + (
        f" (from {speedup['loop_points']}, ×n)" if speedup["loop_extrapolated"] else ""
    )
    header = ("photos", "T1 / T2", "cells", "numpy s", "s2sphere loop s", "speed-up", "identical", "peak B/photo")
    row = (
        f"{speedup['points']}",
        f"{speedup['max_photos']} / {speedup['min_photos']}",
        f"{speedup['cells']}",
        fmt(speedup["vectorised_s"], ".2f"),
        loop,
        fmt(speedup["speedup"], ".1f") + "×",
        "yes" if speedup["identical"] else "NO",
        fmt(speedup["peak_bytes_per_photo"], ".0f"),
    )
    print(markdown_table(header, [row]))
    print()
    print(markdown_table(
        ("photos", "cells", "numpy s", "peak MB", "peak B/photo"),
        [(f"{r['points']}", f"{r['cells']}", fmt(r["seconds"], ".2f"), fmt(r["peak_mb"], ".0f"),
          fmt(r["peak_mb"] * 2**20 / r["points"], ".0f")) for r in scale],
    ))  # fmt: skip
    print()
    print(
        f"Target G1 (vectorised ≥ {SPEEDUP_TARGET:.0f}× the s2sphere loop, identical cells): "
        f"{targets['speedup']:.1f}×, cells {'identical' if targets['identical_cells'] else 'DIFFER'} — "
        f"{verdict(targets['speedup_met'] and targets['identical_cells'])}"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    speedup = measure_speedup(args)
    scale = measure_scale(args)
    targets = judge(speedup)
    report(speedup, scale, targets)
    return {"speedup": speedup, "scale": scale, "targets": targets}


def _sizes(text: str) -> int:
    return int(float(text))  # accepts 4.7e6


SECTION = register(
    Section(
        "geolocation",
        run,
        options=(
            Option("--geo-points", 1_000_000, quick=10_000, type=_sizes, help="photos partitioned by both paths"),
            Option(
                "--geo-loop-points",
                None,
                quick=2_000,
                type=_sizes,
                help="photos the s2sphere loop runs on (unset: all; fewer: time extrapolated ×n)",
            ),
            Option("--geo-max-photos", 1000, quick=100, type=int, help="T1 of the benchmark partition"),
            Option("--geo-min-photos", 10, quick=5, type=int, help="T2 of the benchmark partition"),
            Option(
                "--geo-scale-points",
                [1_000_000, 4_700_000],
                quick=[20_000],
                type=_sizes,
                nargs="+",
                help="sizes of the scale table (MP-16: 4.7M photos)",
            ),
        ),
    )
)
