"""The cells files ``--data.cells`` reads: this project's ``cells.csv`` and GeoEstimation's ``cells_50_*.csv``.

Two declared formats (``datasets.schema``), told apart by their header:

* ``cells.csv``, as ``python -m tasks.geolocation partition`` and every ``fit`` write it:
  ``token,count,lat,lon,center_lat,center_lon`` (``lat,lon``: the centroid of the cell's photos);
  the row is the class index.
* GeoEstimation's (Müller-Budack et al., ECCV 2018; TIBHannover/GeoEstimation), which its users
  reuse: ``cells_50_5000.csv``, ``cells_50_2000.csv``, ``cells_50_1000.csv``, as its
  ``create_cells.py`` writes them: ``class_label,hex_id,imgs_per_cell,latitude_mean,longitude_mean``.
  ``hex_id`` is the S2 cell token, ``class_label`` the class index (0 to N-1, in any row order),
  ``latitude_mean,longitude_mean`` the mean of the cell's photo coordinates, which become the
  cells' centroids (the location ``--model.predict_location centroid`` predicts). The published
  files start with two ``name: value`` lines (``num_images: 4723695``, ``min_concept_probability:
  ---``; its own reader skips two rows): lines of that form before the header are skipped.

Either way the cells must be valid S2 cells, each once and disjoint (a photo belongs to one class);
a file with neither header is one sentence naming both column lists.
"""

from __future__ import annotations

import csv
import io
import os
import re

import numpy as np

from datasets import s2cells
from datasets.schema import Field, Format, show

CELL_COLUMNS = ("token", "count", "lat", "lon", "center_lat", "center_lon")
GEOESTIMATION_COLUMNS = ("class_label", "hex_id", "imgs_per_cell", "latitude_mean", "longitude_mean")
_MAKE_ONE = "; write one with 'python -m tasks.geolocation partition'"
_NOTE = re.compile(r"\s*[A-Za-z_][\w ]*:.*")  # 'num_images: 4723695' above GeoEstimation's header


def _token(name: str) -> Field:
    return Field(
        name,
        str,
        pattern=r"[0-9a-fA-F]{1,16}",
        pattern_words="up to 16 hexadecimal digits",
        unique=True,
        noun="the token of a valid S2 cell",
    )


# cells.csv, declared once.
CELLS_FORMAT = Format(
    "cells file",
    f"a cells.csv as 'python -m tasks.geolocation partition' writes it: a header {','.join(CELL_COLUMNS)}, then "
    "one S2 cell per line",
    (
        _token("token"),
        Field("count", int, low=0, noun="a number of photos"),
        Field("lat", float, -90.0, 90.0, noun="a latitude"),
        Field("lon", float, -180.0, 180.0, noun="a longitude"),
        Field("center_lat", float, -90.0, 90.0, noun="a latitude"),
        Field("center_lon", float, -180.0, 180.0, noun="a longitude"),
    ),
)
# GeoEstimation's cells_50_*.csv, declared once.
GEOESTIMATION_CELLS_FORMAT = Format(
    "GeoEstimation cells file",
    "a cells file as GeoEstimation's create_cells.py writes it (cells_50_1000.csv, ...): optional 'name: value' "
    f"lines, a header {','.join(GEOESTIMATION_COLUMNS)}, then one S2 cell per line",
    (
        Field("class_label", int, low=0, unique=True, noun="a class index"),
        _token("hex_id"),
        Field("imgs_per_cell", int, low=0, noun="a number of photos"),
        Field("latitude_mean", float, -90.0, 90.0, noun="a latitude"),
        Field("longitude_mean", float, -180.0, 180.0, noun="a longitude"),
    ),
)


def read_cells_file(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ids, counts, centroids, centers) of a cells file of either format, in class order.

    ``ids`` uint64; ``centroids`` and ``centers`` (N, 2) latitude, longitude in degrees (a
    GeoEstimation file has no centers: they are the cells' own, from s2sphere).
    """
    path = CELLS_FORMAT.require_file(path, _MAKE_ONE)
    reader = csv.reader(io.StringIO(CELLS_FORMAT.read_text(path), newline=""))
    header = next(reader, [])
    while len(header) == 1 and _NOTE.fullmatch(header[0]):
        header = next(reader, [])
    names = [name.strip() for name in header]
    if "token" in names:
        fmt, required = CELLS_FORMAT, CELL_COLUMNS
    elif "hex_id" in names:
        fmt, required = GEOESTIMATION_CELLS_FORMAT, GEOESTIMATION_COLUMNS
    else:
        raise CELLS_FORMAT.error(
            path,
            reader.line_num,
            f"the header {show(','.join(names))} has neither the columns {','.join(CELL_COLUMNS)} (a cells.csv of "
            f"'python -m tasks.geolocation partition') nor {','.join(GEOESTIMATION_COLUMNS)} (GeoEstimation's "
            "cells_50_*.csv)",
        )
    columns = fmt.header(path, names, required, reader.line_num)
    rows: list[list[str]] = []
    numbers: list[int] = []
    for row in reader:
        if not any(field.strip() for field in row):
            continue
        if len(row) <= max(columns.values()):
            raise fmt.error(
                path, reader.line_num, f"there are {len(row)} fields; expected one per column of the header"
            )
        rows.append([row[columns[c]].strip() for c in required])
        numbers.append(reader.line_num)
    if not rows:
        raise fmt.error(path, None, f"the file holds no cells, only a header; expected {fmt.layout}")
    table = np.asarray(rows, dtype=str).reshape(len(rows), len(required))
    column = {name: fmt.column(path, name, table[:, k], numbers) for k, name in enumerate(required)}
    if fmt is CELLS_FORMAT:
        ids = _cell_ids(fmt, path, "token", column["token"], numbers)
        counts, order = column["count"], np.arange(len(rows))
        centroids = np.stack([column["lat"], column["lon"]], axis=1)
        centers = np.stack([column["center_lat"], column["center_lon"]], axis=1)
    else:
        labels = column["class_label"]
        beyond = np.flatnonzero(labels >= len(rows))  # unique and all below N: 0 to N-1, each once
        if beyond.size:
            row = int(beyond[0])
            expected = f"a class index in [0, {len(rows) - 1}] (the file has {len(rows)} cells, one class each)"
            raise fmt.bad(path, numbers[row], "class_label", table[row, 0], expected)
        ids = _cell_ids(fmt, path, "hex_id", column["hex_id"], numbers)
        order = np.argsort(labels)  # row of class 0, class 1, ...
        counts = column["imgs_per_cell"]
        centroids = np.stack([column["latitude_mean"], column["longitude_mean"]], axis=1)
        centers = s2cells.centers(ids)
    token = "token" if fmt is CELLS_FORMAT else "hex_id"
    _check_disjoint(fmt, path, token, ids, table[:, required.index(token)], numbers)
    return ids[order], counts[order].astype(np.int64), centroids[order], centers[order]


def _cell_ids(fmt: Format, path: os.PathLike[str], name: str, tokens: np.ndarray, numbers: list[int]) -> np.ndarray:
    """The uint64 ids of S2 tokens (``CellId.from_token``), each checked to be a valid cell."""
    ids = np.empty(len(tokens), dtype=np.uint64)
    for index, token in enumerate(tokens.tolist()):
        cell_id = int(token.ljust(16, "0"), 16)
        if not s2cells.is_valid_id(cell_id):
            raise fmt.bad(path, numbers[index], name, token)
        ids[index] = cell_id
    return ids


def _check_disjoint(
    fmt: Format, path: os.PathLike[str], name: str, ids: np.ndarray, tokens: np.ndarray, numbers: list[int]
) -> None:
    """No cell inside another: the later of the first two overlapping lines is named, with the earlier."""
    order = np.argsort(ids, kind="stable")
    ordered = ids[order]
    overlap = np.flatnonzero(s2cells.range_min(ordered[1:]) <= s2cells.range_max(ordered[:-1]))
    if overlap.size:
        earlier, later = sorted(int(order[overlap[0] + k]) for k in (0, 1))
        raise fmt.bad(
            path,
            numbers[later],
            name,
            tokens[later],
            f"a cell disjoint from the others; it overlaps {str(tokens[earlier])!r} of line {numbers[earlier]}",
        )
