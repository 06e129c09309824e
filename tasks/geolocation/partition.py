"""``python -m tasks.geolocation partition``: PlaNet's adaptive S2 partition of a photo CSV to ``cells.csv``.

    python -m tasks.geolocation partition --csv train.csv --max-photos 10000 --min-photos 50 --out cells.csv

Reads the ``IMG_ID,LAT,LON`` CSV (columns by name; only LAT and LON are kept in memory), splits
every cell holding more than ``--max-photos`` (T1) photos, starting from ``--min-level`` (0: the
six cube faces), drops the cells holding fewer than ``--min-photos`` (T2), and writes one row per
cell (``token,count,lat,lon,center_lat,center_lon``) atomically. GeoEstimation's
``create_cells.py --img_min T2 --img_max T1`` is ``--min-level 2 --min-photos T2+1 --max-photos T1
--centroid-mean degrees`` (it keeps cells holding more than T2; ``tests/test_geolocation_data.py``). The file is what
``--data.cells`` takes. Bad input (an option out of its range, an ``--out`` that is a folder, a
CSV row out of its declared format) ends with one sentence and exit status 2 before any work.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import get_args

from backbone.errors import BadInputError
from backbone.ranges import NonNegativeInt, OptionParser, PositiveInt
from datasets.geo_partition import (
    PLANET_MAX_PHOTOS,
    PLANET_MIN_PHOTOS,
    CentroidMean,
    S2Level,
    build_partition,
    check_thresholds,
)
from datasets.geo_tables import read_geo_csv
from tasks.geolocation.writer import write_cells_csv
from tasks.outputs import check_output_file


def build_parser() -> argparse.ArgumentParser:
    parser = OptionParser(
        prog="python -m tasks.geolocation partition",
        description="PlaNet's adaptive S2 partition of geotagged photos (Weyand et al. 2016, Sec. 3).",
    )
    parser.add_argument("--csv", type=Path, required=True, help="photo CSV with IMG_ID,LAT,LON columns (by name)")
    parser.add_argument(
        "--max-photos",
        type=PositiveInt,
        default=PLANET_MAX_PHOTOS,
        help="T1: split a cell holding more photos (default: %(default)s, PlaNet)",
    )
    parser.add_argument(
        "--min-photos",
        type=NonNegativeInt,
        default=PLANET_MIN_PHOTOS,
        help="T2: drop cells holding fewer photos (default: %(default)s, PlaNet)",
    )
    parser.add_argument(
        "--min-level", type=S2Level, default=0, help="S2 level every photo starts at (default: 0, the cube faces)"
    )
    parser.add_argument(
        "--centroid-mean",
        choices=get_args(CentroidMean),
        default="sphere",
        help="a cell's centroid: the mean unit vector of its photos (sphere, default) or their mean latitude and "
        "longitude (degrees, as GeoEstimation's create_cells.py)",
    )
    parser.add_argument("--out", type=Path, required=True, help="the cells CSV to write")
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: from 2M photos on)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        check_thresholds(args.max_photos, args.min_photos, args.min_level)
        check_output_file(args.out, "cells file (--out)")
        start = time.perf_counter()
        table = read_geo_csv(args.csv, with_ids=False)
        read = time.perf_counter() - start
        cells = build_partition(
            table.lat, table.lon, args.max_photos, args.min_photos, args.min_level, args.progress, args.centroid_mean
        )
        write_cells_csv(cells, args.out)
    except BadInputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    levels = cells.levels
    print(
        f"{len(cells)} cells (levels {levels.min() if len(cells) else '-'}-{levels.max() if len(cells) else '-'}) "
        f"hold {int(cells.counts.sum())} of {len(table)} photos (T1 = {args.max_photos}, T2 = {args.min_photos}); "
        f"read in {read:.1f} s, partitioned in {time.perf_counter() - start - read:.1f} s; wrote {args.out}."
    )
