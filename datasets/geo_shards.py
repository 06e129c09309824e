"""Geotagged photos in shards (``datasets.shards``): what ``GeoPhotosDataModule`` writes and reads.

A split's shards hold every photo of its table (``train`` before the cells are chosen: the photos
outside every cell too), each record its ``IMG_ID`` and location, so that the partition built
from the shards' training photos is the one the CSVs give, for any ``--data.max_photos`` /
``--data.min_photos`` / ``--data.cells``. ``val`` is the validation table the data module
chose (``val.csv``, or its seeded share of ``train.csv``) and ``test`` is ``test.csv``.

Kept apart from ``datasets.geo_photos`` so that the data module needs only short hooks.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch.utils.data import Dataset

from datasets.shards import ShardImages, ShardSplit

if TYPE_CHECKING:
    from datasets.geo_photos import GeoPhotosDataModule
    from datasets.geo_tables import GeoTable


def _table(data: GeoPhotosDataModule, split: str) -> GeoTable:
    from datasets.geo_tables import read_geo_csv

    if split == "test":
        return read_geo_csv(data.root / "test.csv")
    return data.split_tables()[0 if split == "train" else 1]


def geo_records(data: GeoPhotosDataModule, split: str) -> tuple[list[Path], list[dict[str, Any]]]:
    table = _table(data, split)
    assert table.ids is not None
    ids = [i.decode() for i in table.ids.tolist()]
    records = [
        {"id": i, "lat": lat, "lon": lon}
        for i, lat, lon in zip(ids, table.lat.tolist(), table.lon.tolist(), strict=True)
    ]
    return [data.root / "images" / i for i in ids], records


def geo_table(shard: ShardSplit) -> GeoTable:
    """The photos of a split's shards, as ``read_geo_csv`` gives a CSV's."""
    from datasets.geo_tables import GeoTable

    ids = np.asarray([i.encode() for i in shard.column("id")], np.bytes_)
    lat, lon = (np.asarray(shard.column(name), np.float64) for name in ("lat", "lon"))
    return GeoTable(Path(shard.location), ids, lat, lon)


def geo_from_shards(data: GeoPhotosDataModule, split: str, shard: ShardSplit, images: ShardImages) -> Dataset:
    """``split``'s ``GeoPhotos`` from its shards: what ``train_dataset`` / ``val_dataset`` /
    ``test_dataset`` build from the CSVs (training keeps the photos inside a cell, as there)."""
    from datasets.geo_photos import GeoPhotos
    from datasets.image_list import classification_eval_transform, classification_train_transform

    folder = Path(shard.location)
    if split != "train":
        table = data.split_tables()[1] if split == "val" else geo_table(shard)
        dataset = GeoPhotos(folder, table, classification_eval_transform(data.resolution))
        dataset.shards = images
        return dataset
    train, _ = data.split_tables()
    labels = np.stack([p.assign(train.lat, train.lon) for p in data.partitions], axis=1)
    kept = np.flatnonzero(labels[:, -1] >= 0)
    if data.cells_file is not None:
        data._check_coverage(train, len(train) - len(kept))
    transform = classification_train_transform(data.resolution, data.min_scale)
    dataset = GeoPhotos(folder, train.subset(kept), transform, labels[kept])
    dataset.shards = images.take(kept)
    return dataset
