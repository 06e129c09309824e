"""Streamed shards: a task's splits in litdata's optimized format, read with ``--data.shards URI``.

The format is litdata's (Lightning's own streaming library), chosen over WebDataset tar shards
(docs/architecture.md, Shards): its reader gives random access by sample index, so the task's own
samplers decide the order exactly as they do for the folder layout (the same seed gives the same
batches and the same metrics, P x K face batches and the exact evaluation sampler of
``datasets.loading`` included); its ``StreamingDataset`` assigns whole chunks to each rank and
worker and its ``StreamingDataLoader`` saves its position, which Lightning keeps in the checkpoint
(``--data.shards_order stream``: resumed mid-epoch where it stopped); and it reads s3://, gs://,
azure:// and r2:// URIs itself. WebDataset streams tar files in order only: no random access
(``wids`` is a separate reader), no mid-epoch state, and exact evaluation under DDP only when every
rank gets whole shards.

A shard set is what ``python -m tasks.shards write`` writes: ``URI/<split>/`` for each split
(``train``, ``val``, ``test``) holds litdata's ``index.json`` and ``chunk-*.bin`` files and this
project's ``shards.json`` (``MANIFEST_FORMAT``). Item ``i`` is ``{"index": i, "image": the image
file's bytes as stored (never decoded), "record": sample i's label record as JSON text}``, in the
order of the task's split, so a shard is readable without this project. ``shards.json`` says which
task, data module and split the items are and how many, and carries in ``meta`` what a data module
needs before any image is read: the data's names (classes, categories, attributes) and the split's
label records as columns (what samplers, partitions and the evaluator's ground truth are built
from).
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL.Image import Image

from backbone.errors import BadInputError
from datasets.images import decode_rgb
from datasets.schema import Field, Format

# litdata asks PyPI for a newer version of itself (a 30 s timeout) whenever a dataset is created
# unless this is set: an offline cluster would wait at every start.
os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")

SPLITS = ("train", "val", "test")
MANIFEST = "shards.json"
FORMAT_NAME = "mobilenet-suite shards"
VERSION = 1
# What litdata's reader downloads itself (``local:`` is a folder read as if remote: copied into the cache).
REMOTE_PREFIXES = ("s3://", "gs://", "azure://", "r2://", "local:")
# The training order from shards: the task's own sampler over random access (``index``), or
# litdata's chunk-wise shuffled stream (``stream``): each rank its own chunks, resumable mid-epoch.
ShardsOrder = Literal["index", "stream"]

MANIFEST_FORMAT = Format(
    "shard manifest",
    f"{MANIFEST} as 'python -m tasks.shards write' writes it: a JSON object with the keys format, version, task, "
    "data, split, count and meta",
    (
        Field("format", str, choices=(FORMAT_NAME,)),
        Field("version", int, choices=(VERSION,)),
        Field("task", str, pattern=r"[a-z_]+", pattern_words="a task name"),
        Field("data", str, pattern=r"[A-Za-z_][\w.]*", pattern_words="a data module's import path"),
        Field("split", str, choices=SPLITS),
        Field("count", int, low=1, noun="a number of samples"),
        Field("meta", dict, expected="an object with the keys data and columns"),
    ),
    record="key",
)


def shards_uri(uri: str, what: str = "--data.shards") -> str:
    """A shard set's location: a local folder (made absolute) or a URI litdata reads, else one sentence."""
    if uri.startswith(REMOTE_PREFIXES):
        return uri.rstrip("/")
    if "://" in uri:
        raise BadInputError(
            f"{what} {uri!r} is a URI litdata cannot read; expected a local folder or an s3://, gs://, azure:// "
            "or r2:// URI."
        )
    return str(Path(uri).expanduser().absolute())


def is_remote(uri: str) -> bool:
    return uri.startswith(REMOTE_PREFIXES)


def split_location(uri: str, split: str) -> str:
    return f"{uri}/{split}"


def class_path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True)
class ShardSplit:
    """One split's shards as its manifest describes them (``open_split``)."""

    location: str  # the split's folder or URI: URI/<split>
    task: str
    data: str  # the data module's import path
    split: str
    count: int
    data_meta: dict[str, Any]  # the data's names: the same in every split of a set
    columns: dict[str, list[Any]]  # the split's label records as columns, in item order

    def column(self, name: str) -> list[Any]:
        """A column of the records, or one sentence if the manifest has none of that name."""
        if name not in self.columns:
            detail = f"it has no column {name!r}; expected the records of {self.data}"
            raise MANIFEST_FORMAT.error(f"{self.location}/{MANIFEST}", "key meta", detail)
        return self.columns[name]


def _fetch_manifest(location: str, folder: str) -> Path:
    """The manifest of the split at ``location``: the local file, or a copy downloaded into ``folder``."""
    if not is_remote(location):
        return Path(location) / MANIFEST
    from litdata.streaming.downloader import get_downloader

    local = Path(folder) / MANIFEST
    try:
        get_downloader(location, folder, []).download_file(f"{location}/{MANIFEST}", str(local))
    except Exception as error:  # noqa: BLE001 - any client's failure (missing object, no access) is one sentence
        said = (str(error).strip().splitlines() or [""])[0]
        raise MissingShards(
            f"The shard manifest {location}/{MANIFEST} could not be read ({type(error).__name__}: {said}); expected "
            "a split written by 'python -m tasks.shards write'."
        ) from None
    return local


class MissingShards(BadInputError):
    """A split that was not written (or cannot be fetched): ``ShardSource.has`` tells it from a wrong one."""


def open_split(uri: str, split: str, data: type, hint: Callable[[], str]) -> ShardSplit:
    """The manifest of ``split`` under the shard set ``uri``, checked to hold ``data``'s ``split``.

    ``hint()`` is the command that writes it, for the sentence when it is missing or another's.
    """
    location = split_location(uri, split)
    fmt = MANIFEST_FORMAT
    with tempfile.TemporaryDirectory(prefix="shards-manifest-") as folder:
        path = _fetch_manifest(location, folder)
        if not path.is_file():
            raise MissingShards(f"No {split} shards at {location!r} (it has no {MANIFEST}); write them with {hint()}.")
        raw = fmt.read_json(path)
    shown = f"{location}/{MANIFEST}"
    if not isinstance(raw, dict):
        raise fmt.error(shown, None, f"it holds a JSON {type(raw).__name__}; expected {fmt.layout}")
    values = {}
    for field in fmt.fields:
        if field.name not in raw:
            raise fmt.error(shown, None, f"it has no key {field.name!r}; expected {fmt.layout}")
        values[field.name] = fmt.value(shown, f"key {field.name}", field.name, raw[field.name])
    meta = values["meta"]
    if not isinstance(meta.get("data"), dict) or not isinstance(meta.get("columns"), dict):
        raise fmt.bad(shown, "key meta", "meta", meta)
    columns = meta["columns"]
    for name, column in columns.items():
        if not isinstance(column, list) or len(column) != values["count"]:
            size = len(column) if isinstance(column, list) else "no list"
            raise fmt.error(
                shown, "key meta", f"the column {name!r} has {size} values; expected one per sample ({values['count']})"
            )
    expected = class_path(data)
    if values["data"] != expected:
        raise BadInputError(
            f"The shards at {location!r} hold {values['task']} data ({values['data']}); this task reads {expected} "
            f"data: write its own with {hint()}."
        )
    if values["split"] != split:
        raise BadInputError(
            f"The shards at {location!r} hold the {values['split']} split, not the {split} split their folder names; "
            f"write the {split} split with {hint()}."
        )
    return ShardSplit(location, values["task"], values["data"], split, values["count"], meta["data"], columns)


class ShardImages:
    """Random access to one split's images: item ``i``'s bytes, decoded as ``read_rgb`` decodes a file.

    litdata maps a local chunk in place and downloads a remote one into its cache on first use.
    The reader is opened in each process that reads (DataLoader workers included): it holds file
    handles, which are not shared across a fork.
    """

    def __init__(self, split: ShardSplit) -> None:
        self.location = split.location
        self.count = split.count
        self.rows: np.ndarray | None = None  # a subset's items (``take``): image i is item rows[i]
        self._given: dict[str, Any] | None = None  # an item the stream already read (``give``)
        self._reader: Any = None
        # index.json read now: a missing one is said before any step. The items of every chunk, not
        # len(), which under DDP is this rank's share of a stream (random access reads them all).
        found = sum(end - start for start, end in self._open().region_of_interest)
        if found != split.count:
            raise BadInputError(
                f"The shards at {self.location!r} hold {found} items but their {MANIFEST} says {split.count}; "
                "write the split again."
            )

    def _open(self) -> Any:
        if self._reader is None:
            from litdata import StreamingDataset

            # A remote split's chunks are downloaded into $LITDATA_CACHE_DIR (litdata's default:
            # ~/.lightning/chunks), read here at each opening rather than once at litdata's import.
            cache = os.environ.get("LITDATA_CACHE_DIR") if is_remote(self.location) else None
            try:
                # batch_decode 0: one item deserialised per access. litdata's default decodes a window of
                # 256 items around it, which random access throws away: 0.65-0.96x the folder layout's
                # images/s on the demos (benchmarks.data_shards) before this.
                self._reader = StreamingDataset(self.location, cache_dir=cache, batch_decode=0)
            except Exception as error:  # noqa: BLE001 - litdata raises several kinds for a missing or bad index
                said = (str(error).strip().splitlines() or [""])[0]  # litdata adds lines of hints
                raise BadInputError(
                    f"The shards at {self.location!r} could not be opened ({type(error).__name__}: {said}); "
                    "expected litdata's index.json and chunk files as 'python -m tasks.shards write' writes them."
                ) from None
        return self._reader

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_reader": None, "_given": None}

    def __len__(self) -> int:
        return self.count if self.rows is None else len(self.rows)

    def take(self, rows: Sequence[int] | np.ndarray) -> ShardImages:
        """The images of items ``rows`` (a dataset that keeps part of a split: image i is item rows[i])."""
        subset = copy.copy(self)
        rows = np.asarray(rows, np.int64)
        subset.rows = rows if self.rows is None else self.rows[rows]
        return subset

    def position(self, item: int) -> int:
        """The image number of shard item ``item`` (-1: not one of a subset's)."""
        if self.rows is None:
            return item
        at = int(np.searchsorted(self.rows, item))  # take() is given sorted rows (a kept mask's flatnonzero)
        return at if at < len(self.rows) and self.rows[at] == item else -1

    def give(self, item: dict[str, Any]) -> None:
        """The next ``item(i)`` of this item's number returns it: the stream has read it already
        (``datasets.shard_stream``), and the task's dataset then makes its sample as from random access."""
        self._given = item

    def item(self, index: int) -> dict[str, Any]:
        """Item ``index`` as stored: ``index``, ``image`` (bytes) and ``record`` (JSON text)."""
        index = index if self.rows is None else int(self.rows[index])
        given, self._given = self._given, None
        if given is not None and given["index"] == index:
            return given
        item = self._open()[index]
        if item["index"] != index:
            raise BadInputError(
                f"Item {index} of the shards at {self.location!r} is numbered {item['index']}; the chunks and "
                "index.json do not belong together: write the split again."
            )
        return item

    def read(self, index: int) -> Image:
        """Image ``index`` as an RGB PIL image (``datasets.images.read_rgb``'s decoding)."""
        item = self.item(index)
        return decode_rgb(item["image"], f"{item['index']} of the shards at {self.location!r}")

    def record(self, index: int) -> dict[str, Any]:
        return json.loads(self.item(index)["record"])


def columns_of(records: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Records with the same keys as columns: ``{key: [value of record 0, ...]}``."""
    keys = list(records[0]) if records else []
    return {key: [record[key] for record in records] for key in keys}


class ShardSource:
    """What a ``TaskDataModule`` reads ``--data.shards`` through: each split's manifest opened once.

    Args:
        uri: the shard set (``shards_uri``).
        data: the data module's class (the manifest must name it).
        hint: the command that writes a missing split.
    """

    def __init__(self, uri: str, data: type, hint: Callable[[str], str]) -> None:
        # hint(split): the command that writes a split (asked only for a sentence)
        self.uri = uri
        self.data = data
        self.hint = hint
        self._splits: dict[str, ShardSplit] = {}

    def has(self, split: str) -> bool:
        """Whether ``split`` was written (its manifest is there), without refusing when it is not."""
        if split in self._splits:
            return True
        if is_remote(self.uri):
            try:
                self.split(split)
            except MissingShards:
                return False
            return True
        return (Path(split_location(self.uri, split)) / MANIFEST).is_file()

    def split(self, split: str) -> ShardSplit:
        """``split``'s manifest, checked; the data's names must be those of the splits opened before."""
        if split not in self._splits:
            opened = open_split(self.uri, split, self.data, lambda: self.hint(split))
            for other in self._splits.values():
                if other.data_meta != opened.data_meta:
                    raise BadInputError(
                        f"The shards at {opened.location!r} were written from other data than those at "
                        f"{other.location!r} (their names differ); write every split from the same data options."
                    )
            self._splits[split] = opened
        return self._splits[split]

    def data_meta(self) -> dict[str, Any]:
        """The data's names, from the first split written (train, val, test)."""
        for split in SPLITS:
            if self.has(split):
                return self.split(split).data_meta
        raise BadInputError(
            f"--data.shards {self.uri!r} holds no split (no train/, val/ or test/ with a {MANIFEST}); "
            f"write them with {self.hint('train')}."
        )

    def images(self, split: str) -> ShardImages:
        return ShardImages(self.split(split))
