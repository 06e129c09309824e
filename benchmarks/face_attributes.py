"""The face-attributes section: reading a teacher's outputs at web scale, ``attributes.csv`` against
the memory-mapped ``attributes.npy`` + ``attributes_rows.txt`` (``datasets.teacher_outputs``).

For each size of ``--teacher-rows`` (300k and 3M rows of 40 attributes by default), synthetic
probabilities are written the way ``predict`` writes them, into a temporary folder, and read back
with ``read_teacher_outputs`` as ``--data.teacher_outputs`` reads them (every value checked, the
name -> row table built), then every image's row is looked up (what the data module does for the
training split). The CSV is written and read only up to ``--teacher-csv-rows`` (parsing it is the
cost this section shows; a 3M-row CSV takes minutes). Files are read right after they are written,
so from the page cache: the times are parsing and checking, not the disk. The ratio is to the CSV
of the same size, measured in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Option, Section, fmt, markdown_table, print_heading, progress, register
from datasets.attribute_files import format_attributes_csv
from datasets.teacher_outputs import ARRAY_FILE, read_teacher_outputs

ATTRIBUTES = [f"Attribute_{i:02d}" for i in range(40)]  # CelebA's count
_CSV_BLOCK = 50_000  # rows formatted at once when writing the CSV


def row_counts(text: str) -> list[int]:
    """``--teacher-rows 300000,3000000``: one or more sizes."""
    counts = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--teacher-rows is {text!r}; expected sizes >= 1 separated by commas")
    return counts


def synthetic_outputs(count: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``count`` image names as an unlabelled web folder names them, and their probabilities (float32)."""
    names = [f"web/{i // 1000:05d}/{i:09d}.jpg" for i in range(count)]
    return names, np.random.default_rng(seed).random((count, len(ATTRIBUTES)), dtype=np.float32)


def write_csv(path: Path, names: list[str], values: np.ndarray) -> None:
    with path.open("w") as handle:
        for start in range(0, len(names), _CSV_BLOCK):
            rows = list(zip(names[start : start + _CSV_BLOCK], values[start : start + _CSV_BLOCK], strict=True))
            text = format_attributes_csv(ATTRIBUTES, rows)
            handle.write(text if start == 0 else text.split("\n", 1)[1])  # one header


def read_seconds(path: Path, names: list[str]) -> tuple[float, float]:
    """Seconds to read ``path`` as ``--data.teacher_outputs``, and to look up every image's row."""
    start = time.perf_counter()
    outputs = read_teacher_outputs(path, ATTRIBUTES)
    read = time.perf_counter() - start
    start = time.perf_counter()
    rows = outputs.rows(names)
    lookup = time.perf_counter() - start
    assert int(rows.min()) >= 0
    return read, lookup


def measure(counts: list[int], csv_rows: int, folder: Path) -> list[dict[str, Any]]:
    """One row per (size, format): file size, read and lookup seconds."""
    from tasks.face_attributes.writer import write_teacher_array  # the writer predict uses

    results = []
    for count in counts:
        names, values = synthetic_outputs(count)
        if count <= csv_rows:
            progress(f"attributes.csv, {count} rows")
            path = folder / f"{count}" / "attributes.csv"
            path.parent.mkdir()
            write_csv(path, names, values)
            results.append(_row(count, "attributes.csv", [path], *read_seconds(path, names)))
            path.unlink()
        progress(f"attributes.npy, {count} rows")
        (folder / f"{count}npy").mkdir()
        write_teacher_array(folder / f"{count}npy", ATTRIBUTES, names, values)
        path = folder / f"{count}npy" / ARRAY_FILE
        results.append(
            _row(count, "attributes.npy", [path, path.with_name("attributes_rows.txt")], *read_seconds(path, names))
        )
    for row in results:
        csv_row = next((r for r in results if r["rows"] == row["rows"] and r["file"] == "attributes.csv"), None)
        row["read_vs_csv"] = row["read_s"] / csv_row["read_s"] if csv_row else None
    return results


def _row(count: int, file: str, paths: list[Path], read: float, lookup: float) -> dict[str, Any]:
    size = sum(p.stat().st_size for p in paths) / 1e6
    return {"rows": count, "attributes": len(ATTRIBUTES), "file": file, "mb": size, "read_s": read, "lookup_s": lookup}


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="teacher-outputs-", dir=args.teacher_dir) as folder:
        results = measure(args.teacher_rows, args.teacher_csv_rows, Path(folder))
    print_heading(
        "Teacher outputs: attributes.csv vs the memory-mapped attributes.npy (read as --data.teacher_outputs)"
    )
    header = ["rows", "file", "MB", "read s", "vs attributes.csv", "row lookup s (every image)"]
    rows = [
        [f"{r['rows']:,}", r["file"], fmt(r["mb"], ".0f"), fmt(r["read_s"], ".2f"), fmt(r["read_vs_csv"], ".3f"),
         fmt(r["lookup_s"], ".2f")]
        for r in results
    ]  # fmt: skip
    print(markdown_table(header, rows))
    return {"teacher_outputs": results}


SECTION = register(
    Section(
        "face_attributes",
        run,
        options=(
            Option("--teacher-rows", [300_000, 3_000_000], quick=[2000], type=row_counts, help="teacher output rows"),
            Option("--teacher-csv-rows", 300_000, quick=2000, type=int, help="largest size also written as CSV"),
            Option("--teacher-dir", None, quick=None, type=str, help="where the files are written (default: temp)"),
        ),
    )
)
