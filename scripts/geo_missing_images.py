"""How long the missing-image check takes on a generated table (issue 19), against a stat per photo.

    python scripts/geo_missing_images.py --rows 100000 --layout flat
    python scripts/geo_missing_images.py --rows 100000 --layout mp16
    python scripts/geo_missing_images.py --rows 100000 --layout dense

Writes ``--rows`` empty image files under a temporary ``images/`` folder (deleted at the end; kept
under ``--folder``, and measured as it is when that folder exists: a cache that has cooled since),
removes 1% of them, and times on the same files, ``--repeat`` rounds each: ``missing_files`` (what
the data module runs: one ``os.scandir`` per folder, on a pool of 8 threads, and on one thread),
the same listing as a plain loop, and a ``stat`` per photo (``os.path.isfile``) on one thread and
on a pool of 8. Layouts: ``flat`` (Im2GPS's ``images/<name>.jpg``), ``mp16`` (MP-16's
``images/<hex>/<hex>/<number>.jpg``: 65,536 folders, so a 100k subset fills 51k of them, 1.9 photos each)
and ``dense`` (1024 folders, about 100 photos each, the density of the whole 4.7M MP-16 in its
65,536 folders). Prints one markdown row per method.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from datasets.file_presence import missing_files


def image_ids(rows: int, layout: str, seed: int = 0) -> list[bytes]:
    numbers = np.random.default_rng(seed).choice(9 * 10**9, rows, replace=False) + 10**9
    if layout == "flat":
        return [f"{n}.jpg".encode() for n in numbers.tolist()]
    buckets = 256 if layout == "mp16" else 32
    return [f"{n % buckets:02x}/{n // buckets % buckets:02x}/{n}.jpg".encode() for n in numbers.tolist()]


def write_tree(images: Path, names: list[bytes]) -> None:
    """Empty files for ``names`` under ``images``, 1% of them then deleted (the missing ones)."""
    for name in names:
        path = images / name.decode()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    for name in names[::100]:
        (images / name.decode()).unlink()


def stat_each(folder: Path, names: list[bytes], workers: int) -> np.ndarray:
    base = os.fsencode(folder)
    with ThreadPoolExecutor(workers) as pool:
        found = pool.map(lambda n: os.path.isfile(os.path.join(base, n)), names, chunksize=1024)
        return ~np.fromiter(found, dtype=bool, count=len(names))


def scandir_each_folder(folder: Path, names: list[bytes]) -> np.ndarray:
    base = os.fsencode(folder)
    present: dict[bytes, set[bytes]] = {}
    missing = np.empty(len(names), dtype=bool)
    for row, name in enumerate(names):
        sub, leaf = os.path.split(name)
        if sub not in present:
            try:
                with os.scandir(os.path.join(base, sub)) as entries:
                    present[sub] = {e.name for e in entries if e.is_file()}
            except OSError:
                present[sub] = set()
        missing[row] = leaf not in present[sub]
    return missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--layout", choices=("flat", "mp16", "dense"), default="mp16")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every method (median and min shown)")
    parser.add_argument("--folder", type=Path, help="write the files here and keep them (default: a temporary folder)")
    args = parser.parse_args()
    names = image_ids(args.rows, args.layout)
    with tempfile.TemporaryDirectory() as tmp:
        images = (args.folder or Path(tmp)) / "images"
        if not images.is_dir():  # a kept --folder is measured again as it is (its cache cooled since)
            write_tree(images, names)
        folders = len({os.path.dirname(n) for n in names})
        methods: dict[str, Callable[[], np.ndarray]] = {
            "missing_files (the data module's: 8 threads)": lambda: missing_files(images, names),
            "missing_files, 1 thread": lambda: missing_files(images, names, workers=1),
            "os.scandir per folder, a plain loop": lambda: scandir_each_folder(images, names),
            "os.path.isfile per photo, 1 thread": lambda: stat_each(images, names, 1),
            "os.path.isfile per photo, 8 threads": lambda: stat_each(images, names, 8),
        }
        seconds: dict[str, list[float]] = {label: [] for label in methods}
        for _ in range(args.repeat):  # rounds interleave the methods, so machine load hits them alike
            for label, method in methods.items():
                start = time.perf_counter()
                missing = method()
                seconds[label].append(time.perf_counter() - start)
                assert int(missing.sum()) == len(names[::100]) and missing[::100].all()
        print("| layout | photos | folders | method | median s | min s |\n|---|---|---|---|---|---|")
        for label, times in seconds.items():
            row = f"| {args.layout} | {args.rows} | {folders} | {label} | {np.median(times):.2f} | {min(times):.2f} |"
            print(row)


if __name__ == "__main__":
    main()
