"""Part of section ``data``: each task's demo from shards against its folder layout, and the writer.

For each task, its built-in demo (the folder layout ``--data.root`` reads) is written into shards
(``tasks.shards.write_task``: the writer's images/s and MB/s), then one epoch of the training
loader is read three ways, as a run gets it (decoded and augmented at the task's resolution):
from the folders, from the shards in the task's own order (``--data.shards``: random access) and
in litdata's streamed order (``--data.shards_order stream``; not for a task that samples its own
batches). Each figure is images per second on this machine; the ratios to the folder layout are
what carries over. The demos are small and sit in the page cache after their first read (the
first epoch is read once untimed): this compares the code paths, not disks.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from backbone.errors import BadInputError
from benchmarks.common import fmt, markdown_table, print_heading, progress

MODES = ("folder", "shards", "stream")


def _epoch(data: Any, batches: int) -> tuple[int, float]:
    """Images and seconds of ``batches`` training batches (0: the whole epoch) after one untimed pass."""
    loader = data.loader("train")
    for _ in zip(range(2), loader, strict=False):  # workers started, files in the page cache
        pass
    count, start = 0, time.perf_counter()
    for index, batch in enumerate(loader):
        count += _batch_size(batch)
        if batches and index + 1 >= batches:
            break
    return count, time.perf_counter() - start


def _batch_size(batch: Any) -> int:
    first = batch[0] if isinstance(batch, (list, tuple)) else batch["image"]
    return len(first)


def measure_task(spec: Any, batches: int, workers: int, batch_size: int) -> dict[str, Any]:
    """The writer's throughput and the three training reads of ``spec``'s demo."""
    from tasks.shards import write_task

    sizes = {"resolution": spec.resolution, "num_workers": workers, "batch_size": batch_size}
    folder = Path(tempfile.mkdtemp(prefix=f"shards-bench-{spec.name}-"))
    try:
        source = spec.data(**sizes)  # the demo, in its folder layout
        reports = write_task(spec, source, str(folder), None, "64MB", 4, False)
        images, size, seconds = (sum(getattr(r, k) for r in reports) for k in ("images", "bytes", "seconds"))
        row: dict[str, Any] = {
            "images": images,
            "mb": size / 1e6,
            "write_images_per_s": images / seconds,
            "write_mb_per_s": size / 1e6 / seconds,
        }
        for mode in MODES:
            try:
                data = source if mode == "folder" else spec.data(shards=str(folder), shards_order=mode, **sizes)
                data.setup("fit")
                count, elapsed = _epoch(data, batches)
            except BadInputError as error:  # the streamed order of a task that samples its own batches
                progress(f"data: {spec.name} {mode}: {error}")
                row[mode] = None
                continue
            row[mode] = count / elapsed
        return row
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_shards(tasks: list[str], batches: int, workers: int, batch_size: int) -> dict[str, Any]:
    """Measure ``tasks`` (names), print the table, return the rows by task."""
    from tasks.spec import all_tasks

    specs = {spec.name: spec for spec in all_tasks()}
    rows = {}
    for name in tasks:
        progress(f"data: shards of the {name} demo: writing, then reading {batches or 'every'} training batches")
        rows[name] = measure_task(specs[name], batches, workers, batch_size)
    print_heading(f"data: shards against the folder layout (the demos; {workers} loader workers, batch {batch_size})")
    print(
        markdown_table(
            [
                "task",
                "images",
                "MB",
                "write img/s",
                "write MB/s",
                "folder img/s",
                "shards img/s",
                "stream img/s",
                "shards / folder",
                "stream / folder",
            ],
            [
                [
                    name,
                    str(r["images"]),
                    fmt(r["mb"], ".1f"),
                    fmt(r["write_images_per_s"], ".0f"),
                    fmt(r["write_mb_per_s"], ".1f"),
                    *(fmt(r[mode], ".0f") for mode in MODES),
                    *(fmt(r[mode] / r["folder"] if r[mode] else None, ".2f") for mode in MODES[1:]),
                ]
                for name, r in rows.items()
            ],
        )  # fmt: skip
    )
    return rows
