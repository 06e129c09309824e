"""PlaNet's adaptive partition of the Earth into S2 cells: the classes of photo geolocation.

Weyand et al., "PlaNet - Photo Geolocation with Convolutional Neural Networks" (ECCV 2016), Sec. 3:
every photo starts in its S2 cell at level ``min_level`` (0: the six cube faces); a cell holding
more than ``max_photos`` (T1) photos is split into its four children, repeatedly, until none holds
more than T1 (or the cells are leaves, level 30); then cells holding fewer than ``min_photos`` (T2)
photos are dropped, with their photos, which are not used for training. PlaNet used T1 = 10,000 and
T2 = 50 on 126M photos (26,263 cells).

The split runs on the *sorted* leaf ids: the descendants of an S2 cell are one contiguous range of
ids (the Hilbert curve), so the cells at every level are runs of a sorted array and one level costs
one pass over the photos still in over-full cells. Memory is about 32 bytes per photo (lat, lon,
its leaf id and a sorted copy) plus fixed-size chunks. Each cell keeps its photo count, the
centroid of its photos (the normalised mean of their unit vectors, so a cell across the
antimeridian gets a centroid inside it, not the mean of +179 and -179 degrees) and its own center.

A built partition keeps its cells in id order; one read from a cells file (``datasets.geo_cells``:
this project's ``cells.csv`` or GeoEstimation's ``cells_50_*.csv``) keeps the file's class order.
The row is the class index.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, TextIO

import numpy as np
from tqdm import tqdm

from backbone.errors import BadInputError
from backbone.ranges import int_range
from datasets import s2cells
from datasets.geo_cells import CELL_COLUMNS, read_cells_file

# PlaNet's full-scale thresholds (Weyand et al. 2016, Sec. 3): configs/geolocation/planet.yaml.
PLANET_MAX_PHOTOS = 10_000
PLANET_MIN_PHOTOS = 50
_CHUNK = 1 << 18  # points per vectorised chunk: a few MB of temporaries
_PROGRESS_FROM = 2_000_000  # show a progress bar from this many photos on (a few seconds of work)
S2Level = int_range(0, s2cells.MAX_LEVEL)  # the starting level of a partition: 0 (cube faces) to 30 (leaves)
# How a cell's photos are averaged into its centroid. "sphere": the normalised mean of their unit
# vectors (a cell across the antimeridian gets a centroid inside it). "degrees": the mean of their
# latitudes and of their longitudes, as GeoEstimation's create_cells.py writes latitude_mean and
# longitude_mean (close to "sphere" for a small cell; but the mean of +179 and -179 is 0).
CentroidMean = Literal["sphere", "degrees"]


@dataclass(frozen=True)
class Partition:
    """Disjoint S2 cells in class order, with their photo counts, photo centroids and own centers.

    Attributes:
        ids: S2 cell ids (uint64); row k is class k. ``build_partition`` puts them in id order; a
            cells file keeps its own class order (GeoEstimation's ``class_label``).
        counts: training photos per cell.
        centroids: (N, 2) latitude, longitude (degrees) of the centroid of each cell's photos.
        centers: (N, 2) latitude, longitude (degrees) of each cell's own center.
    """

    ids: np.ndarray
    counts: np.ndarray
    centroids: np.ndarray
    centers: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def tokens(self) -> list[str]:
        return s2cells.to_tokens(self.ids)

    @property
    def levels(self) -> np.ndarray:
        return s2cells.id_levels(self.ids)

    @cached_property
    def _by_id(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows in id order, the smallest and the largest leaf id of each of those cells)."""
        order = np.argsort(self.ids, kind="stable")
        return order, s2cells.range_min(self.ids[order]), s2cells.range_max(self.ids[order])

    def index_of_leaves(self, leaves: np.ndarray) -> np.ndarray:
        """The class (row) of each leaf cell id, -1 where no cell of the partition holds it."""
        order, lo, hi = self._by_id
        if not len(order):
            return np.full(np.shape(leaves), -1, dtype=np.int64)
        row = np.searchsorted(lo, leaves, side="right") - 1
        inside = row >= 0
        inside[inside] = leaves[inside] <= hi[row[inside]]
        return np.where(inside, order[np.maximum(row, 0)], -1)

    def assign(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """The class of each point (degrees), -1 for points in no cell (dropped or never seen)."""
        return self.index_of_leaves(s2cells.leaf_ids(lat, lon))

    def containing(self, finer: Partition) -> np.ndarray:
        """For each cell of ``finer``, the row of the cell of this partition that contains it (-1: none)."""
        lo = self.index_of_leaves(s2cells.range_min(finer.ids))
        hi = self.index_of_leaves(s2cells.range_max(finer.ids))
        return np.where(lo == hi, lo, -1)

    # --- cells.csv ---------------------------------------------------------------------------
    def write_csv(self, handle: TextIO) -> None:
        """Write the cells as ``cells.csv`` rows (``CELL_COLUMNS``) to an open text file."""
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CELL_COLUMNS)
        for token, count, (lat, lon), (center_lat, center_lon) in zip(
            self.tokens, self.counts.tolist(), self.centroids.tolist(), self.centers.tolist(), strict=True
        ):
            # 7 decimals of a degree is 1 cm: finer than the error of any photo's GPS tag.
            writer.writerow([token, count, f"{lat:.7f}", f"{lon:.7f}", f"{center_lat:.7f}", f"{center_lon:.7f}"])

    @classmethod
    def load_csv(cls, path: str | os.PathLike[str]) -> Partition:
        """Read a cells file (``datasets.geo_cells``): a ``cells.csv`` written by ``python -m
        tasks.geolocation partition`` (or by hand), or GeoEstimation's ``cells_50_*.csv``; row k of
        the partition is the file's class k."""
        return cls(*read_cells_file(path))


def latlon_from_xyz(xyz: np.ndarray) -> np.ndarray:
    """(N, 2) latitude, longitude in degrees of (not necessarily unit) vectors (N, 3)."""
    lat = np.degrees(np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1])))
    return np.stack([lat, np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0]))], axis=1)


def _split(sorted_leaves: np.ndarray, max_photos: int, min_level: int) -> tuple[np.ndarray, np.ndarray]:
    """PlaNet's split rule on sorted leaf ids: the final cells (ids in order) and their counts."""
    ids, counts = [], []
    active = sorted_leaves
    for level in range(min_level, s2cells.MAX_LEVEL + 1):
        parents = s2cells.parent_ids(active, level)
        starts = np.flatnonzero(np.concatenate(([True], parents[1:] != parents[:-1])))
        sizes = np.diff(np.append(starts, parents.shape[0]))
        split = sizes > max_photos if level < s2cells.MAX_LEVEL else np.zeros(sizes.shape, dtype=bool)
        ids.append(parents[starts[~split]])
        counts.append(sizes[~split])
        if not split.any():
            break
        active = active[np.repeat(split, sizes)]
    all_ids, all_counts = np.concatenate(ids), np.concatenate(counts)
    order = np.argsort(all_ids)
    return all_ids[order], all_counts[order]


def build_partition(
    lat: np.ndarray,
    lon: np.ndarray,
    max_photos: int,
    min_photos: int,
    min_level: int = 0,
    progress: bool | None = None,
    centroid: CentroidMean = "sphere",
) -> Partition:
    """PlaNet's adaptive partition of photos at ``lat``/``lon`` (degrees, already validated).

    ``progress`` shows a bar over the photos (default: from 2M photos on); ``centroid`` is how a
    cell's photos are averaged (``CentroidMean``).
    """
    check_thresholds(max_photos, min_photos, min_level)
    n = int(np.asarray(lat).shape[0])
    show = n >= _PROGRESS_FROM if progress is None else progress
    leaves = np.empty(n, dtype=np.uint64)
    with tqdm(total=2 * n, unit="photo", desc="partition", disable=not show, unit_scale=True) as bar:
        for start in range(0, n, _CHUNK):
            leaves[start : start + _CHUNK] = s2cells.leaf_ids(lat[start : start + _CHUNK], lon[start : start + _CHUNK])
            bar.update(min(_CHUNK, n - start))
        ids, counts = _split(np.sort(leaves), max_photos, min_level)
        kept = counts >= min_photos
        cells = Partition(ids[kept], counts[kept], np.empty((0, 2)), np.empty((0, 2)))
        sums = np.zeros((len(cells), 3 if centroid == "sphere" else 2))
        for start in range(0, n, _CHUNK):
            rows = cells.index_of_leaves(leaves[start : start + _CHUNK])
            a, b = lat[start : start + _CHUNK], lon[start : start + _CHUNK]
            values = s2cells.lat_lng_to_xyz(a, b) if centroid == "sphere" else np.stack([a, b], axis=1)
            inside = rows >= 0
            for axis in range(values.shape[1]):
                sums[:, axis] += np.bincount(rows[inside], weights=values[inside, axis], minlength=len(cells))
            bar.update(min(_CHUNK, n - start))
    centroids = latlon_from_xyz(sums) if centroid == "sphere" else sums / np.maximum(cells.counts, 1)[:, None]
    return Partition(cells.ids, cells.counts, centroids, s2cells.centers(cells.ids))


def check_thresholds(max_photos: int, min_photos: int, min_level: int) -> None:
    """The three partition settings, checked with one sentence each."""
    if max_photos < 1:
        raise BadInputError(f"The maximum photos per cell (T1) must be at least 1; got {max_photos}.")
    if min_photos < 0 or min_photos > max_photos:
        raise BadInputError(f"The minimum photos per cell (T2) must be in [0, T1 = {max_photos}]; got {min_photos}.")
    if not 0 <= min_level <= s2cells.MAX_LEVEL:
        raise BadInputError(f"The starting S2 level must be in [0, {s2cells.MAX_LEVEL}]; got {min_level}.")
