"""The geotagged photo CSV (``IMG_ID,LAT,LON``): its declared format and its one reader.

``train.csv``, ``val.csv`` and ``test.csv`` of ``datasets.geo_photos`` (MP-16, YFCC, Im2GPS
style) have ``IMG_ID,LAT,LON`` columns matched by name (extra columns such as MP-16's ``AUTHOR``
or ``S3_Label`` are ignored). The file is streamed in blocks and kept as three numpy arrays (the
ids as bytes, latitude and longitude as float64: about 40 bytes per photo for MP-16's ids). A
latitude outside [-90, 90], a longitude outside [-180, 180], a NaN, a value that is not a number
or a missing column is reported in one sentence naming the file and line; nothing is silently
dropped. When a range check fails and the two columns read the other way round would all pass,
the sentence says the columns look swapped (Im2GPS3k's published metadata has a ``...,LON,LAT``
header over values in latitude, longitude order). A file that passes both ways is read by name:
there is nothing in it to tell.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.schema import Field, Format
from datasets.text import split_lines

COLUMNS = ("IMG_ID", "LAT", "LON")


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


def _parse_latlon(rows: list[str], columns: dict[str, int]) -> np.ndarray:
    """(N, 2) LAT, LON of non-blank ``rows`` by numpy's C parser, unchecked; ValueError if one is not read."""
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
    return values


def _coordinates(path: Path, rows: list[str], numbers: np.ndarray | int, columns: dict[str, int]) -> np.ndarray:
    """(N, 2) LAT, LON of a chunk's non-blank ``rows``, checked against ``GEO_FORMAT``.

    numpy's C parser (``loadtxt``) reads a chunk faster than the csv module (docs/geolocation.md,
    Partition speed and scale); only a chunk it refuses is read again field by field to name the
    line; the ranges are checked vectorised.
    """
    try:
        values = _parse_latlon(rows, columns)
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
            raise _OutOfRange(_line(numbers, row), name, raw)
    return values


class _OutOfRange(Exception):
    """A LAT or LON out of its range: ``read_geo_csv`` turns it into the sentence, with the swap hint."""

    def __init__(self, line: int, name: str, raw: str) -> None:
        super().__init__(line, name, raw)
        self.line, self.name, self.raw = line, name, raw


def _looks_swapped(path: Path, columns: dict[str, int]) -> bool:
    """Whether every LAT value would pass as a longitude and every LON value as a latitude.

    Read again only when a range check has failed (a second pass costs a few seconds on MP-16's
    4.7M rows, and only on the way to an error); a value that is not a number means no.
    """
    for block, (_, text) in enumerate(GEO_FORMAT.read_blocks(path)):
        rows = [line for line in split_lines(text)[0 if block else 1 :] if line.strip()]  # not the header
        if not rows:
            continue
        try:
            values = _parse_latlon(rows, columns)
        except ValueError:
            return False
        if not (
            GEO_FORMAT.field("LON").valid(values[:, 0]).all() and GEO_FORMAT.field("LAT").valid(values[:, 1]).all()
        ):
            return False
    return True


SWAPPED = (
    " (LAT and LON look swapped: every LAT value would pass as a longitude and every LON value as a latitude, "
    "as in Im2GPS3k's published metadata, whose header says LON,LAT over latitude,longitude values; swap the two "
    "names in the header)"
)


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
        try:
            coordinates.append(_coordinates(path, rows, numbers, columns))
        except _OutOfRange as bad:
            words = fmt.field(bad.name).words + (SWAPPED if _looks_swapped(path, columns) else "")
            raise fmt.bad(path, bad.line, bad.name, bad.raw, words) from None
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
