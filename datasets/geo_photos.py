"""Geotagged photos in the MP-16 / YFCC / Im2GPS layout, for ``tasks.geolocation``.

``--data.root`` holds ``train.csv`` and ``test.csv`` (and optionally ``val.csv``; without it a
share of train is held out), each with ``IMG_ID,LAT,LON`` columns, matched by name (extra columns
such as MP-16's ``AUTHOR`` or ``S3_Label`` are ignored), and the images at ``images/<IMG_ID>``.

The CSVs are streamed in chunks and kept as three numpy arrays (the ids as bytes, latitude and
longitude as float64: about 40 bytes per photo for MP-16's ids), and no image is opened before a
batch needs it. A latitude outside [-90, 90], a longitude outside [-180, 180], a NaN, a value that
is not a number or a missing column is reported in one sentence naming the file and line; nothing
is silently dropped.

The classes are PlaNet's adaptive S2 cells (``datasets.geo_partition``), built from the training
photos when the data module is created (``--data.max_photos``, ``--data.min_photos``,
``--data.min_level``) or read from ``--data.cells``; ``--data.coarse_max_photos`` adds coarser
partitions for a hierarchy of heads (GeoEstimation, Müller-Budack et al. 2018).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from backbone.errors import BadInputError
from backbone.ranges import CropScale, NonNegativeInt, PositiveInt, float_range
from datasets.base import OutputNames, TaskDataModule
from datasets.demo.geo import ensure_geo_demo
from datasets.geo_partition import Partition, S2Level, build_partition, check_thresholds
from datasets.geo_shards import geo_from_shards, geo_records, geo_table
from datasets.image_list import classification_eval_transform, classification_train_transform
from datasets.images import read_rgb
from datasets.schema import Field, Format
from datasets.shards import ShardImages, ShardSplit
from datasets.text import split_lines

COLUMNS = ("IMG_ID", "LAT", "LON")
_ROWS_PER_CHUNK = 1 << 16
# Code defaults for a small custom set (``None``): T1 = 1/40 of the training photos, so a set of any
# size is cut into some 40-100 cells (a split leaves cells of T1/4 to T1 photos), few enough for a
# short run to learn; T2 = T1 / 10 drops cells with too few photos to learn from (measured on the
# demo and on a second, differently made set: docs/geolocation.md, Measured). PlaNet's 10,000 / 50
# suit 126M photos.
DEFAULT_T1_SHARE = 40
DEFAULT_T1_OVER_T2 = 10
# --data.val_share: a validation split larger than the training split is never a recipe (give a
# val.csv for an unusual split); 0.999 of the demo trained on 2 photos without a word. At most half,
# training always keeps photos; a share that holds out none of a tiny set is said by val_dataset.
ValShare = float_range(0.0, 0.5)
# --data.cells built from other photos leaves training photos outside every cell. A partition built
# from the same photos drops only those of cells under T2: 3-8% of the demo at the code defaults and
# at T2 = T1 / 5 to T1 / 10. More than a fifth outside means the cells belong to another set (the
# reported case left 196 of 200 out): refused; fewer are said in one sentence.
MAX_OUTSIDE_SHARE = 0.2


@dataclass(frozen=True)
class GeoTable:
    """The photos of one CSV: ids (bytes, or None when not read), latitude and longitude in degrees."""

    path: Path
    ids: np.ndarray | None
    lat: np.ndarray
    lon: np.ndarray

    def __len__(self) -> int:
        return int(self.lat.shape[0])

    def subset(self, rows: np.ndarray) -> GeoTable:
        return GeoTable(self.path, None if self.ids is None else self.ids[rows], self.lat[rows], self.lon[rows])


# The format of train.csv / val.csv / test.csv, declared once (``datasets.schema``).
GEO_FORMAT = Format(
    "geotagged photo CSV",
    f"a CSV whose header names the columns {','.join(COLUMNS)} (in any order and case; other columns are "
    "ignored), then one photo per line",
    (
        Field(
            "IMG_ID",
            str,
            pattern=r"\s*[^/\s].*",
            pattern_words="its path under images/, not blank, not absolute",
            unique=True,
            noun="an image",
        ),
        Field("LAT", float, -90.0, 90.0, noun="a latitude"),
        Field("LON", float, -180.0, 180.0, noun="a longitude"),
    ),
)


def _line(numbers: np.ndarray | int, row: int) -> int:
    return numbers + row if isinstance(numbers, int) else int(numbers[row])


def _raw_field(path: Path, rows: list[str], numbers: np.ndarray | int, row: int, column: str, index: int) -> str:
    """The text of one field as written (for the sentence); a line too short for it is named."""
    fields = next(csv.reader([rows[row]]), [])
    if len(fields) <= index:
        words = GEO_FORMAT.field(column).words
        raise GEO_FORMAT.error(
            path, _line(numbers, row), f"{column} is missing (the line has {len(fields)} fields); expected {words}"
        )
    return fields[index]


def _coordinates(path: Path, rows: list[str], numbers: np.ndarray | int, columns: dict[str, int]) -> np.ndarray:
    """(N, 2) LAT, LON of a chunk's non-blank ``rows``, checked against ``GEO_FORMAT``.

    numpy's C parser (``loadtxt``) reads a chunk faster than the csv module (docs/geolocation.md,
    Partition speed and scale); only a chunk it refuses is read again field by field to name the
    line; the ranges are checked vectorised.
    """
    try:
        values = np.loadtxt(
            rows,
            delimiter=",",
            usecols=(columns["LAT"], columns["LON"]),
            dtype=np.float64,
            quotechar='"',
            comments=None,  # '#' may be part of an IMG_ID
            ndmin=2,
        )
        if values.shape != (len(rows), 2):
            raise ValueError("a row was not read")
    except ValueError:  # the slow path: each field as text, the first bad one named
        texts = [
            [_raw_field(path, rows, numbers, row, name, columns[name]) for name in ("LAT", "LON")]
            for row in range(len(rows))
        ]
        table = np.asarray(texts, dtype=str).reshape(len(rows), 2)
        return np.stack(
            [GEO_FORMAT.column(path, name, table[:, axis], numbers) for axis, name in enumerate(("LAT", "LON"))], axis=1
        )
    for axis, name in enumerate(("LAT", "LON")):
        bad = np.flatnonzero(~GEO_FORMAT.field(name).valid(values[:, axis]))
        if bad.size:
            row = int(bad[0])
            raw = _raw_field(path, rows, numbers, row, name, columns[name])
            raise GEO_FORMAT.bad(path, _line(numbers, row), name, raw)
    return values


def _ids(path: Path, rows: list[str], numbers: np.ndarray | int, index: int, text: str) -> np.ndarray:
    """The IMG_ID of each row of a chunk (``text``) as bytes, checked: not blank, not absolute."""
    ids: list[str] | None = None
    if '"' not in text:  # no quoting: a plain split is exact, and 3x faster than the csv module
        try:
            if index == 0:
                ids = [row.partition(",")[0] for row in rows]
            else:
                ids = [row.split(",", index + 1)[index] for row in rows]
        except IndexError:
            ids = None
    if ids is None:
        ids = [_raw_field(path, rows, numbers, row, "IMG_ID", index) for row in range(len(rows))]
    # numpy encodes ASCII itself, 3x faster than str.encode one by one
    encoded = np.asarray(ids, dtype=np.bytes_) if text.isascii() else np.asarray([i.encode() for i in ids], np.bytes_)
    stripped = np.strings.lstrip(encoded)
    bad = np.flatnonzero((np.strings.str_len(stripped) == 0) | np.strings.startswith(stripped, b"/"))
    if bad.size:
        raise GEO_FORMAT.bad(path, _line(numbers, int(bad[0])), "IMG_ID", ids[int(bad[0])])
    return encoded


def read_geo_csv(path: str | os.PathLike[str], with_ids: bool = True) -> GeoTable:
    """Read an ``IMG_ID,LAT,LON`` CSV (columns by name) in blocks, checked against ``GEO_FORMAT``:
    the first bad line is named. ``with_ids`` False reads only LAT and LON.

    A field may not hold a line break (MP-16's and Im2GPS's files have none).
    """
    fmt = GEO_FORMAT
    path = fmt.require_file(path)
    ids: list[np.ndarray] = []
    coordinates: list[np.ndarray] = []
    chunks: list[tuple[np.ndarray | int, int]] = []  # line numbers of each chunk's rows
    columns: dict[str, int] | None = None
    for first_line, text in fmt.read_blocks(path):
        lines = split_lines(text)
        if columns is None:
            header = next(csv.reader(lines[:1]), [])
            columns = fmt.header(path, [name.strip().upper() for name in header], COLUMNS)
            lines, first_line = lines[1:], first_line + 1
        rows = [line for line in lines if line.strip()]
        numbers: np.ndarray | int = first_line
        if len(rows) != len(lines):
            numbers = np.asarray([first_line + i for i, line in enumerate(lines) if line.strip()], dtype=np.int64)
        coordinates.append(_coordinates(path, rows, numbers, columns))
        if with_ids:
            ids.append(_ids(path, rows, numbers, columns["IMG_ID"], text))
        chunks.append((numbers, len(rows)))
    if columns is None:
        raise fmt.error(path, None, f"the file is empty; expected {fmt.layout}")
    if not sum(len(c) for c in coordinates):
        raise fmt.error(path, None, f"the file holds no photos, only a header; expected {fmt.layout}")
    both = np.concatenate(coordinates)
    all_ids = np.concatenate(ids) if with_ids else None
    if all_ids is not None and len(set(all_ids.tolist())) != len(all_ids):  # a set: 2x faster than np.unique
        lines_of_rows = np.concatenate([np.arange(n, n + count) if isinstance(n, int) else n for n, count in chunks])
        fmt.unique(path, "IMG_ID", all_ids, lines_of_rows)
    return GeoTable(path, all_ids, both[:, 0].copy(), both[:, 1].copy())


class GeoPhotos(Dataset[tuple[Tensor, dict[str, Any]]]):
    """Images of a ``GeoTable``; the target is the cell of each partition (training) or the location.

    Args:
        images: the ``images`` folder; photo k is ``images/<IMG_ID>``.
        table: the photos.
        transform: PIL image -> tensor.
        cells: (N, P) class of each photo in each of P partitions (training), or None (evaluation).
    """

    shards: ShardImages | None = None  # the images read from shards instead (image i is item i): datasets.geo_shards

    def __init__(self, images: Path, table: GeoTable, transform: v2.Transform, cells: np.ndarray | None = None):
        assert table.ids is not None
        self.images = images
        self.table = table
        self.transform = transform
        self.cells = cells

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        assert self.table.ids is not None
        path = self.images / self.table.ids[index].decode()
        image = self.transform(read_rgb(path) if self.shards is None else self.shards.read(index))
        if self.cells is not None:
            return image, {"cells": torch.from_numpy(self.cells[index])}
        latlon = torch.tensor([self.table.lat[index], self.table.lon[index]], dtype=torch.float64)
        return image, {"latlon": latlon, "path": str(path), "index": index}


class GeoPhotosDataModule(TaskDataModule):
    """MP-16 / YFCC-style geotagged photos, classified into PlaNet's adaptive S2 cells.

    Args (beyond ``TaskDataModule``'s: resolution, batch_size, num_workers, predict_dir):
        root: folder with ``train.csv``, ``test.csv`` (optional ``val.csv``) and ``images/``;
            None uses the built-in demo set.
        cells: a ``cells.csv`` (``python -m tasks.geolocation partition``) to use instead of
            building the partition from ``train.csv``.
        max_photos: T1, a cell holding more photos is split (None: 1/40 of the training photos).
        min_photos: T2, cells holding fewer photos are dropped (None: T1 / 10, rounded up).
        min_level: the S2 level every photo starts at (0: the six cube faces).
        coarse_max_photos: T1 of coarser partitions trained alongside (a hierarchy of heads whose
            probabilities multiply, as in GeoEstimation); each must exceed ``max_photos``. They use
            the same T2 and starting level, so every fine cell lies inside one coarse cell.
        val_share: share of ``train.csv`` held out for validation when there is no ``val.csv``
            (at most 0.5).
        min_scale: smallest area fraction of the training random-resized crop.
    """

    layout = "train.csv and test.csv (optional val.csv) with IMG_ID,LAT,LON columns, and images/<IMG_ID>"

    def __init__(
        self,
        root: str | None = None,
        cells: str | None = None,
        max_photos: PositiveInt | None = None,
        min_photos: NonNegativeInt | None = None,
        min_level: S2Level = 0,
        coarse_max_photos: list[PositiveInt] | None = None,
        val_share: ValShare = 0.1,
        min_scale: CropScale = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        val_share = ValShare(val_share)  # also when built from Python, not the command line
        self.cells_file = cells
        self.max_photos = max_photos
        self.min_photos = min_photos
        self.min_level = min_level
        self.coarse_max_photos = sorted(coarse_max_photos or [], reverse=True)
        self.val_share = val_share
        self.min_scale = min_scale
        self._split_tables: tuple[GeoTable, GeoTable] | None = None
        self._partitions: list[Partition] | None = None

    # --- the training photos and their cells -------------------------------------------------
    def split_tables(self) -> tuple[GeoTable, GeoTable]:
        """(train, val): ``val.csv`` if present, else a fixed random share of ``train.csv``."""
        if self._split_tables is None and self.shards is not None:  # datasets.geo_shards
            self._split_tables = (geo_table(self.shards.split("train")), geo_table(self.shards.split("val")))
        if self._split_tables is None:
            train = read_geo_csv(self.root / "train.csv")
            if (self.root / "val.csv").is_file():
                self._split_tables = (train, read_geo_csv(self.root / "val.csv"))
            else:
                order = np.random.default_rng(0).permutation(len(train))
                held = int(round(len(train) * self.val_share))
                self._split_tables = (train.subset(np.sort(order[held:])), train.subset(np.sort(order[:held])))
        return self._split_tables

    def thresholds(self, photos: int) -> tuple[int, int]:
        """(T1, T2) for a training set of ``photos`` photos: the given ones or the code defaults."""
        t1 = self.max_photos if self.max_photos is not None else max(math.ceil(photos / DEFAULT_T1_SHARE), 1)
        t2 = self.min_photos if self.min_photos is not None else math.ceil(t1 / DEFAULT_T1_OVER_T2)
        return t1, t2

    @property
    def partitions(self) -> list[Partition]:
        """The partitions, coarse to fine (the last is the classes); built once from the training photos."""
        if self._partitions is None:
            self._partitions = self._build_partitions()
        return self._partitions

    def _build_partitions(self) -> list[Partition]:
        if self.cells_file is not None and not self.coarse_max_photos:  # no train.csv needed
            fine = Partition.load_csv(self.cells_file)
            rank_zero_info(f"Partition: {len(fine)} S2 cells read from {self.cells_file}.")
            return [fine]
        train, _ = self.split_tables()
        t1, t2 = self.thresholds(len(train))
        check_thresholds(t1, t2, self.min_level)
        if self.cells_file is not None:
            fine = Partition.load_csv(self.cells_file)
        else:
            fine = build_partition(train.lat, train.lon, t1, t2, self.min_level)
        if len(fine) == 0:
            raise BadInputError(
                f"No S2 cell holds at least T2 = {t2} of the {len(train)} training photos in {str(train.path)!r}; "
                "lower --data.min_photos."
            )
        coarse = []
        for coarse_t1 in self.coarse_max_photos:
            if coarse_t1 <= t1:
                raise BadInputError(
                    f"Each --data.coarse_max_photos must exceed --data.max_photos = {t1}; got {coarse_t1}."
                )
            coarse.append(build_partition(train.lat, train.lon, coarse_t1, t2, self.min_level))
        partitions = [*coarse, fine]
        for partition, size in zip(coarse, self.coarse_max_photos, strict=True):
            if (partition.containing(fine) < 0).any():
                raise BadInputError(
                    f"A cell of the fine partition lies in no cell of the coarse partition with T1 = {size}; "
                    "build both from the same train.csv, T2 and starting level."
                )
        levels = fine.levels
        rank_zero_info(
            f"Partition: {len(fine)} S2 cells (levels {levels.min()}-{levels.max()}) holding "
            f"{int(fine.counts.sum())} of {len(train)} training photos (T1 = {t1}, T2 = {t2}). "
            + (f"Coarser partitions: {[len(p) for p in coarse]} cells. " if coarse else "")
            + "Photos outside the cells are not used for training."
        )
        return partitions

    @property
    def num_cells(self) -> int:
        """Classes of the finest partition (linked into ``--model.num_cells``); 0 when there is no
        training set to build them from (test/predict then take them from the checkpoint)."""
        has_train = self.shards.has("train") if self.shards else (self.root / "train.csv").is_file()
        if self._partitions is None and self.cells_file is None and not has_train:
            return 0
        return len(self.partitions[-1])

    @property
    def coarse_num_cells(self) -> list[int]:
        """Classes of each coarser partition (linked into ``--model.coarse_num_cells``)."""
        if self.num_cells == 0:
            return []
        return [len(p) for p in self.partitions[:-1]]

    def output_names(self, stage: str) -> OutputNames | None:
        """Training: one head per partition, coarse to fine, each output named by its S2 cell token.

        Evaluation and predict need no names: their targets are coordinates, and the cells used
        are the checkpoint's own (kept in its buffers), whatever the data would build now.
        """
        if stage != "fit":
            return None
        heads = {
            f"coarse cells (T1 = {t1})": p.tokens
            for t1, p in zip(self.coarse_max_photos, self.partitions, strict=False)
        }
        return {**heads, "cells": self.partitions[-1].tokens}

    # --- splits ------------------------------------------------------------------------------
    def train_dataset(self) -> Dataset:
        train, _ = self.split_tables()
        labels = np.stack([p.assign(train.lat, train.lon) for p in self.partitions], axis=1)
        kept = np.flatnonzero(labels[:, -1] >= 0)
        if self.cells_file is not None:
            self._check_coverage(train, len(train) - len(kept))
        transform = classification_train_transform(self.resolution, self.min_scale)
        return GeoPhotos(self.root / "images", train.subset(kept), transform, labels[kept])

    def _check_coverage(self, train: GeoTable, outside: int) -> None:
        """Training photos outside the cells of ``--data.cells``: refused above a fifth, else said."""
        if not outside:
            return
        share = outside / len(train)
        sentence = (
            f"{outside} of the {len(train)} training photos of {str(train.path)!r} ({share:.0%}) lie in no cell "
            f"of --data.cells {self.cells_file!r}"
        )
        if share > MAX_OUTSIDE_SHARE:
            raise BadInputError(
                f"{sentence}; expected at most {MAX_OUTSIDE_SHARE:.0%} (the photos of cells under T2): build the cells "
                "from this train.csv with 'python -m tasks.geolocation partition'."
            )
        rank_zero_info(f"{sentence}; they are not used for training.")

    def val_dataset(self) -> Dataset:
        _, val = self.split_tables()
        if len(val) == 0:
            raise BadInputError(
                f"No validation photos: {str(self.root)!r} has no val.csv and --data.val_share {self.val_share} of "
                f"its {len(self.split_tables()[0])} training photos is none; expected a larger share or a val.csv."
            )
        return GeoPhotos(self.root / "images", val, classification_eval_transform(self.resolution))

    def test_dataset(self) -> Dataset:
        table = read_geo_csv(self.root / "test.csv")
        return GeoPhotos(self.root / "images", table, classification_eval_transform(self.resolution))

    def predict_transform(self) -> v2.Compose:
        return classification_eval_transform(self.resolution)

    def demo_root(self) -> Path:
        return ensure_geo_demo()

    # --- shards (datasets.geo_shards) ---------------------------------------------------------
    def shard_data_meta(self) -> dict[str, Any]:
        return {}

    def shard_samples(self, split: str) -> tuple[list[Path], list[dict[str, Any]]]:
        return geo_records(self, split)

    def dataset_from_shards(self, split: str, shard: ShardSplit, images: ShardImages) -> Dataset:
        return geo_from_shards(self, split, shard, images)
