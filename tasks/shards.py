"""``python -m tasks.shards write``: any task's splits into shards, the format ``--data.shards`` reads.

    python -m tasks.shards write --task detection --data.root ROOT --out FOLDER [--split train val test]

The data module of ``--task`` is built from the same ``--data.*`` options a run takes (``--data.root``
or the built-in demo, and every other data option, e.g. face embedding's held-out share), and each
split it reads is written as that run reads it: the same images in the same order with the same
labels (``datasets.shards`` describes the format). Without ``--split``: train, val, and test when the
task tests on a split of its own (classification, detection and fine-grained test on val).

The chunks are written with litdata's ``BinaryWriter`` in this process, in the split's order.
litdata's ``optimize`` runs the same writer in worker processes, but a worker that raises (a
missing image) left it waiting for ever (measured with litdata 0.2.76), and the order only holds
with ``keep_data_ordered``; here a bad file ends the command in one sentence. The image files are
read ahead by a few threads (reading is I/O, not the GIL), in order.

Everything lands in a temporary folder beside the target, ``shards.json`` last, and is renamed
into place at the end: a killed writer leaves the previous split (or none), never a half-written
one that a reader would take for whole. Each split's throughput is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backbone.errors import BadInputError
from backbone.ranges import OptionParser, PositiveInt
from datasets.shards import FORMAT_NAME, MANIFEST, SPLITS, VERSION, class_path, columns_of, is_remote, shards_uri
from tasks.outputs import ensure_folder, write_json_atomic

DEFAULT_CHUNK_BYTES = "64MB"  # litdata's advice: chunks of tens of MB stream well from object stores


@dataclass(frozen=True)
class WriteReport:
    """What one split's writing did: where, how many images and bytes, in how long."""

    location: Path
    images: int
    bytes: int
    seconds: float

    def sentence(self, split: str) -> str:
        rate = self.images / max(self.seconds, 1e-9)
        megabytes = self.bytes / 1e6
        return (
            f"Wrote {self.images} {split} images ({megabytes:.1f} MB) to {self.location} in {self.seconds:.2f} s: "
            f"{rate:.0f} images/s, {megabytes / max(self.seconds, 1e-9):.1f} MB/s."
        )


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BadInputError(f"The image file {str(path)!r} does not exist.") from None
    except OSError as error:
        raise BadInputError(f"The image file {str(path)!r} could not be read ({error.strerror}).") from None


def write_split(
    out: str,
    split: str,
    task: str,
    data: type,
    paths: Sequence[Path],
    records: Sequence[dict[str, Any]],
    data_meta: dict[str, Any],
    chunk_bytes: int | str = DEFAULT_CHUNK_BYTES,
    overwrite: bool = False,
    threads: int = 4,
) -> WriteReport:
    """Write ``split``'s images (the files' bytes) and ``records`` to ``out/<split>``.

    Args:
        out: the shard set's local folder.
        split, task, data: what the manifest says the items are (``data``: the data module class).
        paths, records: each sample's image file and label record, in the split's order.
        data_meta: the data's names (``TaskDataModule.shard_data_meta``).
        chunk_bytes: the size of a chunk file (litdata's ``chunk_bytes``: ``"64MB"`` or a number).
        overwrite: replace an existing ``out/<split>`` (else refused).
        threads: files read ahead in parallel.
    """
    from litdata.streaming.writer import BinaryWriter

    if is_remote(out):
        raise BadInputError(
            f"--out {out!r} is an object-store URI; write the shards to a local folder and copy it there with the "
            "store's own tool (e.g. 'aws s3 cp --recursive FOLDER URI'), then read them with --data.shards URI."
        )
    if not paths:
        raise BadInputError(f"The {split} split has no samples to write.")
    target = Path(out) / split
    if target.exists() and not overwrite:
        raise BadInputError(f"The shards folder {str(target)!r} exists; pass --overwrite to replace it.")
    ensure_folder(Path(out), "shards folder (--out)")
    work = Path(tempfile.mkdtemp(dir=out, prefix=f".{split}.", suffix=".tmp"))
    readable = _permissions()
    start = time.perf_counter()
    total = 0
    try:
        writer = BinaryWriter(str(work), chunk_bytes=chunk_bytes)
        with ThreadPoolExecutor(max(1, threads)) as pool:
            for index, (image, record) in enumerate(zip(pool.map(_read_bytes, paths), records, strict=True)):
                writer.add_item(index, {"index": index, "image": image, "record": _json(record)})
                total += len(image)
        writer.done()
        writer.merge()
        manifest = {
            "format": FORMAT_NAME,
            "version": VERSION,
            "task": task,
            "data": class_path(data),
            "split": split,
            "count": len(paths),
            "meta": {"data": data_meta, "columns": columns_of(records)},
        }
        write_json_atomic(work / MANIFEST, manifest, indent=None)
        # mkdtemp and the atomic writer make private files: the shards are data for every reader
        (work / MANIFEST).chmod(readable & 0o666)
        work.chmod(readable)
        if target.exists():  # --overwrite: the old split out of the way first, removed once the new one is in
            retired = Path(tempfile.mkdtemp(dir=out, prefix=f".{split}.", suffix=".old"))
            target.rename(retired / split)
            work.rename(target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return WriteReport(target, len(paths), total, time.perf_counter() - start)


def _permissions() -> int:
    """The mode a new folder gets under the process's umask (files: without the execute bits)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def _json(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), allow_nan=False)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------
def build_parser(tasks: Sequence[str]) -> argparse.ArgumentParser:
    parser = OptionParser(
        prog="python -m tasks.shards write",
        description="Write a task's splits (images as stored + label records) into litdata shards for --data.shards.",
        epilog="Every other option is the task's --data.* option (e.g. --data.root ROOT; none: the built-in demo).",
    )
    parser.add_argument("--task", required=True, choices=list(tasks), help="the task whose data to write")
    parser.add_argument("--out", required=True, help="the shard set's local folder: each split goes to OUT/<split>")
    parser.add_argument(
        "--split", nargs="+", choices=SPLITS, default=None, help="the splits to write (default: every split read)"
    )
    parser.add_argument(
        "--chunk_bytes", default=DEFAULT_CHUNK_BYTES, help="size of a chunk file (default: %(default)s)"
    )
    parser.add_argument("--threads", type=PositiveInt, default=4, help="image files read ahead (default: 4)")
    parser.add_argument("--overwrite", action="store_true", help="replace splits already written under --out")
    return parser


def build_data(spec: Any, options: Sequence[str]) -> Any:
    """The task's data module from ``--data.*`` options, parsed and checked as a run parses them."""
    from jsonargparse import ArgumentParser

    from tasks.cli import TaskArgumentParser

    parser = TaskArgumentParser(prog=f"python -m tasks.shards write --task {spec.name}", exit_on_error=True)
    parser.add_class_arguments(spec.data, "data", fail_untyped=False)
    assert isinstance(parser, ArgumentParser)
    config = parser.parse_args(list(options))
    if config.data.get("shards") is not None:
        raise BadInputError("--data.shards names shards to read; the writer reads --data.root (or the demo).")
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    return instantiate(config).data


def write_task(
    spec: Any, data: Any, out: str, splits: Sequence[str] | None, chunk_bytes: int | str, threads: int, overwrite: bool
) -> list[WriteReport]:
    """Write ``splits`` of ``data`` (default: every split ``spec``'s runs read) under ``out``; print each one's rate."""
    chosen = list(splits) if splits else list(SPLITS)
    if not splits and "test" in chosen and data.dataset("test") is data.dataset("val"):
        chosen.remove("test")  # the task tests on its val split: written once, read for both
    meta = data.shard_data_meta()
    reports = []
    for split in chosen:
        paths, records = data.shard_samples(split)
        report = write_split(out, split, spec.name, spec.data, paths, records, meta, chunk_bytes, overwrite, threads)
        print(report.sentence(split), flush=True)
        reports.append(report)
    return reports


def main(argv: Sequence[str] | None = None) -> None:
    from tasks.spec import all_tasks

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "write":
        print("usage: python -m tasks.shards write --task TASK --out FOLDER [--data.* ...] (see write --help)")
        raise SystemExit(0 if argv[:1] in (["-h"], ["--help"]) else 2)
    specs = {spec.name: spec for spec in all_tasks()}
    args, options = build_parser(list(specs)).parse_known_args(argv[1:])
    try:
        out = shards_uri(args.out, "--out")
        data = build_data(specs[args.task], options)
        write_task(specs[args.task], data, out, args.split, args.chunk_bytes, args.threads, args.overwrite)
    except BadInputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
