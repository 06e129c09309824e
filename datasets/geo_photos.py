"""Geotagged photos in the MP-16 / YFCC / Im2GPS layout, for ``tasks.geolocation``.

``--data.root`` holds ``train.csv`` and ``test.csv`` (and optionally ``val.csv``; without it a
share of train is held out), each with ``IMG_ID,LAT,LON`` columns, matched by name (extra columns
such as MP-16's ``AUTHOR`` or ``S3_Label`` are ignored), and the images at ``images/<IMG_ID>``.

The CSVs are read by ``datasets.geo_tables`` (streamed, checked, one sentence per bad line); no
image is opened before a batch needs it, but every listed image is looked up when a split is set
up (``datasets.file_presence``): a missing one is refused then, with the count and the first
names, or dropped and counted with ``--data.skip_missing true``, never found mid-epoch.

The classes are PlaNet's adaptive S2 cells (``datasets.geo_partition``), built from the rows of the
training CSV when the data module is created (``--data.max_photos``, ``--data.min_photos``,
``--data.min_level``, ``--data.centroid_mean``) or read from ``--data.cells`` (this project's
``cells.csv`` or GeoEstimation's ``cells_50_*.csv``: ``datasets.geo_cells``);
``--data.coarse_max_photos`` adds coarser partitions for a hierarchy of heads (GeoEstimation,
Müller-Budack et al. 2018).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from backbone.errors import BadInputError
from backbone.ranges import CropScale, NonNegativeInt, PositiveInt, float_range
from datasets.base import OutputNames
from datasets.demo.geo import ensure_geo_demo
from datasets.file_presence import missing_files
from datasets.geo_partition import CentroidMean, Partition, S2Level, build_partition, check_thresholds
from datasets.geo_shards import geo_from_shards, geo_records, geo_table
from datasets.geo_tables import GeoTable, read_geo_csv
from datasets.geo_test_sets import EvalCrops, EvalProtocol
from datasets.image_list import classification_eval_transform, classification_train_transform
from datasets.images import read_rgb
from datasets.packed import trim_heap
from datasets.shards import ShardImages, ShardSplit

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
# --data.val_max_photos: without val.csv, 10% of MP-16 is 470k photos validated every epoch;
# GeoEstimation validates on a separate set of 25,600 YFCC photos (its yfcc25600 list), enough for
# acc@1 km to move in steps of 0.004% and few enough to validate often. The held-out share is capped
# at this count, and a larger val.csv is validated on a fixed sample of it (seeded: the same photos
# every epoch and on every rank). The demo's 10% (180 photos) and any set under 256k photos are
# not affected.
VAL_MAX_PHOTOS = 25_600
# The photos of a split whose image is missing named in the sentence: enough to see the pattern.
SHOWN_MISSING = 3
# --data.cells built from other photos leaves training photos outside every cell. A partition built
# from the same photos drops only those of cells under T2: 3-8% of the demo at the code defaults and
# at T2 = T1 / 5 to T1 / 10. More than a fifth outside means the cells belong to another set (the
# reported case left 196 of 200 out): refused; fewer are said in one sentence.
MAX_OUTSIDE_SHARE = 0.2


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


class GeoPhotosDataModule(EvalProtocol):
    """MP-16 / YFCC-style geotagged photos, classified into PlaNet's adaptive S2 cells.

    Args (beyond ``TaskDataModule``'s: resolution, batch_size, num_workers, predict_dir):
        root: folder with ``train.csv``, ``test.csv`` (optional ``val.csv``) and ``images/``;
            None uses the built-in demo set.
        cells: a cells file to use instead of building the partition from ``train.csv``: a
            ``cells.csv`` (``python -m tasks.geolocation partition``) or GeoEstimation's
            ``cells_50_*.csv`` (``datasets.geo_cells``); training photos outside it are counted.
        max_photos: T1, a cell holding more photos is split (None: 1/40 of the training photos).
        min_photos: T2, cells holding fewer photos are dropped (None: T1 / 10, rounded up).
        min_level: the S2 level every photo starts at (0: the six cube faces).
        coarse_max_photos: T1 of coarser partitions trained alongside (a hierarchy of heads whose
            probabilities multiply, as in GeoEstimation); each must exceed ``max_photos``. They use
            the same T2 and starting level, so every fine cell lies inside one coarse cell.
        val_share: share of ``train.csv`` held out for validation when there is no ``val.csv``
            (at most 0.5); the held-out photos are in neither the partition nor training.
        min_scale: smallest area fraction of the training random-resized crop.
        test_crops, test_sets: the test protocol (``datasets.geo_test_sets``): 1, 5 or 10 views
            per test/predict image; {name: folder} of test sets, metrics prefixed by the name.
        skip_missing: photos whose image is missing are dropped (and counted, once per split)
            instead of refused when a split is set up.
        val_max_photos: at most this many validation photos: caps the held-out share and samples a
            larger ``val.csv``, a fixed sample either way (None: no cap).
        centroid_mean: how a built cell's photos are averaged into its centroid, the location
            ``centroid`` predicts: ``sphere`` (mean unit vector) or ``degrees`` (mean latitude and
            longitude, GeoEstimation's).
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
        test_crops: EvalCrops = 1,
        test_sets: dict[str, str] | None = None,
        skip_missing: bool = False,
        val_max_photos: PositiveInt | None = VAL_MAX_PHOTOS,
        centroid_mean: CentroidMean = "sphere",
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        self.set_test_protocol(test_crops, test_sets)
        val_share = ValShare(val_share)  # also when built from Python, not the command line
        self.cells_file = cells
        self.max_photos = max_photos
        self.min_photos = min_photos
        self.min_level = min_level
        self.coarse_max_photos = sorted(coarse_max_photos or [], reverse=True)
        self.val_share = val_share
        self.min_scale = min_scale
        self.skip_missing = skip_missing
        self.val_max_photos = val_max_photos
        self.centroid_mean = centroid_mean
        self._split_tables: tuple[GeoTable, GeoTable] | None = None
        self._partitions: list[Partition] | None = None

    # --- the training photos and their cells -------------------------------------------------
    def split_tables(self) -> tuple[GeoTable, GeoTable]:
        """(train, val): ``val.csv`` if present, else a fixed random share of ``train.csv``; at most
        ``val_max_photos`` validation photos either way. Every row, whether its image exists or not
        (``_with_images`` checks when a split is set up), so the partition depends on the CSV alone."""
        if self._split_tables is None and self.shards is not None:  # datasets.geo_shards
            self._split_tables = (geo_table(self.shards.split("train")), geo_table(self.shards.split("val")))
        if self._split_tables is None:
            train = read_geo_csv(self.root / "train.csv")
            cap = len(train) if self.val_max_photos is None else self.val_max_photos
            rng = np.random.default_rng(0)  # the same sample in every process and on every run
            if (self.root / "val.csv").is_file():
                val = read_geo_csv(self.root / "val.csv")
                if len(val) > cap:
                    val = val.subset(np.sort(rng.choice(len(val), cap, replace=False)))
                    rank_zero_info(
                        f"Validating on a fixed sample of {cap} of the photos of {str(self.root / 'val.csv')!r} "
                        "(--data.val_max_photos), the same every epoch."
                    )
                self._split_tables = (train, val)
            else:
                order = rng.permutation(len(train))
                share = int(round(len(train) * self.val_share))
                held = min(share, cap)
                if held < share:
                    rank_zero_info(
                        f"Holding out {held} of the {len(train)} photos of {str(train.path)!r} for validation "
                        f"(--data.val_share {self.val_share} capped by --data.val_max_photos), a fixed sample the same "
                        "every epoch; the other photos are partitioned and trained on."
                    )
                self._split_tables = (train.subset(np.sort(order[held:])), train.subset(np.sort(order[:held])))
        return self._split_tables

    def _with_images(self, table: GeoTable, split: str, images: Path | None = None) -> GeoTable:
        """The photos of ``table`` whose image exists in ``images`` (default: the root's): all of
        them, or one sentence before any step; with ``--data.skip_missing true`` the others are
        dropped and counted (once per split)."""
        assert table.ids is not None
        images = self.root / "images" if images is None else images
        missing = missing_files(images, table.ids)
        count = int(missing.sum())
        if not count:
            return table
        names = ", ".join(
            repr(table.ids[k].decode("utf-8", "replace")) for k in np.flatnonzero(missing)[:SHOWN_MISSING]
        )
        verb = "has" if count == 1 else "have"
        where = f"{count} of the {len(table)} {split} photos of {str(table.path)!r} {verb} no image in {str(images)!r}"
        if count == len(table) or not self.skip_missing:
            remedy = "" if count == len(table) else ", or --data.skip_missing true to use the others"
            raise BadInputError(f"{where} (first: {names}); expected images/<IMG_ID> for every row{remedy}.")
        rank_zero_warn(f"{where} (first: {names}); --data.skip_missing: using the other {len(table) - count}.")
        return table.subset(np.flatnonzero(~missing))

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
            trim_heap()  # MP-16: the CSV's freed lines and the split's temporaries (half the set-up's PSS)
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
            fine = build_partition(train.lat, train.lon, t1, t2, self.min_level, centroid=self.centroid_mean)
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
            coarse.append(
                build_partition(train.lat, train.lon, coarse_t1, t2, self.min_level, centroid=self.centroid_mean)
            )
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
        train = self._with_images(self.split_tables()[0], "training")
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
            f"{outside} of the {len(train)} training photos of {str(train.path)!r} ({share:.1%}) lie in no cell "
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
        val = self._with_images(val, "validation")
        return GeoPhotos(self.root / "images", val, classification_eval_transform(self.resolution))

    def test_photos(self, root: Path, transform: Any) -> Dataset:
        table = self._with_images(read_geo_csv(root / "test.csv"), "test", root / "images")
        return GeoPhotos(root / "images", table, transform)

    def demo_root(self) -> Path:
        return ensure_geo_demo()

    # --- shards (datasets.geo_shards) ---------------------------------------------------------
    def shard_data_meta(self) -> dict[str, Any]:
        return {}

    def shard_samples(self, split: str) -> tuple[list[Path], list[dict[str, Any]]]:
        return geo_records(self, split)

    def dataset_from_shards(self, split: str, shard: ShardSplit, images: ShardImages) -> Dataset:
        return geo_from_shards(self, split, shard, images)
