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
import itertools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from backbone.errors import BadInputError
from backbone.ranges import CropScale, NonNegativeInt, PositiveInt, Share
from datasets.base import TaskDataModule
from datasets.demo.geo import ensure_geo_demo
from datasets.geo_partition import Partition, S2Level, build_partition, check_thresholds
from datasets.image_list import classification_eval_transform, classification_train_transform
from datasets.images import read_rgb

COLUMNS = ("IMG_ID", "LAT", "LON")
_ROWS_PER_CHUNK = 1 << 16
_LIMITS = np.array([90.0, 180.0])  # |LAT|, |LON|
# Code defaults for a small custom set (``None``): T1 = 1/40 of the training photos, so a set of any
# size is cut into some 40-100 cells (a split leaves cells of T1/4 to T1 photos), few enough for a
# short run to learn; T2 = T1 / 10 drops cells with too few photos to learn from. Measured on the
# demo and on a second, differently made set (README). PlaNet's 10,000 / 50 suit 126M photos.
DEFAULT_T1_SHARE = 40
DEFAULT_T1_OVER_T2 = 10


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


def _header(path: Path, row: list[str]) -> dict[str, int]:
    names = {name.strip().upper(): index for index, name in enumerate(row)}
    for column in COLUMNS:
        if column not in names:
            raise BadInputError(
                f"The file {str(path)!r} has no {column} column (its header is {','.join(row)!r}); "
                f"expected the columns {','.join(COLUMNS)}."
            )
    return {column: names[column] for column in COLUMNS}


def _bad_value(path: Path, line: int, column: str, text: str) -> BadInputError:
    what = "a latitude in [-90, 90]" if column == "LAT" else "a longitude in [-180, 180]"
    return BadInputError(f"The file {str(path)!r} line {line}: {column} is {text!r}; expected {what}.")


def _checked_coordinates(path: Path, lines: list[str], first_line: int, columns: dict[str, int]) -> np.ndarray:
    """(N, 2) LAT, LON of a chunk, row by row (the slow path): the first bad line named."""
    values = []
    reader = csv.reader(lines)
    for row in reader:
        if not row:
            continue
        line = first_line + reader.line_num - 1
        for column, limit in (("LAT", 90.0), ("LON", 180.0)):
            index = columns[column]
            if len(row) <= index:
                raise BadInputError(
                    f"The file {str(path)!r} line {line} has {len(row)} fields; its {column} column is missing."
                )
            try:
                value = float(row[index])
            except ValueError:
                raise _bad_value(path, line, column, row[index]) from None
            if not abs(value) <= limit:  # also NaN
                raise _bad_value(path, line, column, row[index])
            values.append(value)
    return np.asarray(values, dtype=np.float64).reshape(-1, 2)


def _coordinates(path: Path, rows: list[str], lines: list[str], first_line: int, columns: dict[str, int]) -> np.ndarray:
    """(N, 2) LAT, LON of the non-blank ``rows`` of a chunk of ``lines``.

    numpy's C parser (``loadtxt``) reads a chunk about 3x faster than the csv module; only a
    chunk it refuses, or with a value out of range, is read again row by row to name the line.
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
        if values.shape[0] == len(rows) and (np.abs(values) <= _LIMITS).all():
            return values
    except ValueError:
        pass
    return _checked_coordinates(path, lines, first_line, columns)


def _chunks(handle: TextIO) -> Iterator[tuple[list[str], int]]:
    """The lines of an open file in chunks, each with the number of its first line."""
    line = 2  # after the header
    while lines := list(itertools.islice(handle, _ROWS_PER_CHUNK)):
        yield lines, line
        line += len(lines)


def read_geo_csv(path: str | os.PathLike[str], with_ids: bool = True) -> GeoTable:
    """Read an ``IMG_ID,LAT,LON`` CSV (columns by name), streamed in chunks; bad rows named.

    A field may not hold a line break (MP-16's and Im2GPS's files have none).
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"The file {str(path)!r} does not exist; expected a CSV with {','.join(COLUMNS)} columns.")
    ids, coordinates = [], []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        first = next(csv.reader([handle.readline()]), None)
        if first is None:
            raise BadInputError(f"The file {str(path)!r} is empty; expected a header {','.join(COLUMNS)}.")
        columns = _header(path, first)
        for lines, first_line in _chunks(handle):
            rows = [line for line in lines if line.strip()]
            coordinates.append(_coordinates(path, rows, lines, first_line, columns))
            if with_ids:
                ids.append(np.asarray([row[columns["IMG_ID"]].encode() for row in csv.reader(rows)], dtype=np.bytes_))
    if not coordinates or not sum(len(c) for c in coordinates):
        raise BadInputError(f"The file {str(path)!r} holds no photos, only a header.")
    both = np.concatenate(coordinates)
    return GeoTable(path, np.concatenate(ids) if with_ids else None, both[:, 0].copy(), both[:, 1].copy())


class GeoPhotos(Dataset[tuple[Tensor, dict[str, Any]]]):
    """Images of a ``GeoTable``; the target is the cell of each partition (training) or the location.

    Args:
        images: the ``images`` folder; photo k is ``images/<IMG_ID>``.
        table: the photos.
        transform: PIL image -> tensor.
        cells: (N, P) class of each photo in each of P partitions (training), or None (evaluation).
    """

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
        image = self.transform(read_rgb(path))
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
        val_share: share of ``train.csv`` held out for validation when there is no ``val.csv``.
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
        val_share: Share = 0.1,
        min_scale: CropScale = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        if not 0 <= val_share < 1:
            raise BadInputError(f"The validation share must be in [0, 1); got {val_share}.")
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
        t1 = self.max_photos or max(math.ceil(photos / DEFAULT_T1_SHARE), 1)
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
        if self._partitions is None and self.cells_file is None and not (self.root / "train.csv").is_file():
            return 0
        return len(self.partitions[-1])

    @property
    def coarse_num_cells(self) -> list[int]:
        """Classes of each coarser partition (linked into ``--model.coarse_num_cells``)."""
        if self.num_cells == 0:
            return []
        return [len(p) for p in self.partitions[:-1]]

    # --- splits ------------------------------------------------------------------------------
    def train_dataset(self) -> Dataset:
        train, _ = self.split_tables()
        labels = np.stack([p.assign(train.lat, train.lon) for p in self.partitions], axis=1)
        kept = np.flatnonzero(labels[:, -1] >= 0)
        transform = classification_train_transform(self.resolution, self.min_scale)
        return GeoPhotos(self.root / "images", train.subset(kept), transform, labels[kept])

    def val_dataset(self) -> Dataset:
        _, val = self.split_tables()
        if len(val) == 0:
            raise BadInputError(f"No validation photos: {str(self.root)!r} has no val.csv and --data.val_share is 0.")
        return GeoPhotos(self.root / "images", val, classification_eval_transform(self.resolution))

    def test_dataset(self) -> Dataset:
        table = read_geo_csv(self.root / "test.csv")
        return GeoPhotos(self.root / "images", table, classification_eval_transform(self.resolution))

    def predict_transform(self) -> v2.Compose:
        return classification_eval_transform(self.resolution)

    def demo_root(self) -> Path:
        return ensure_geo_demo()
