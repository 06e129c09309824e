"""CelebA in shards (``datasets.shards``): what ``CelebADataModule`` writes and reads with ``--data.shards``.

An image's record is its name (the key of ``attributes.csv`` and of teacher outputs), its 0/1
labels in the attribute file's column order and whether it is labelled (the unlabelled images of
``--data.unlabelled_root`` are training images without labels). The data's part of the manifest
is the attribute names. Teacher outputs (``--data.teacher_outputs``) are still read from their
file, by name, as for the folder layout.

Kept apart from ``datasets.celeba`` so that the data module needs only its three short hooks.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch.utils.data import ConcatDataset, Dataset

from datasets.shards import ShardImages, ShardSplit

if TYPE_CHECKING:
    from datasets.celeba import CelebADataModule


def celeba_records(data: CelebADataModule, split: str) -> tuple[list[Path], list[dict[str, Any]]]:
    from datasets.celeba import FaceAttributeDataset

    dataset = data.dataset(split)
    assert isinstance(dataset, FaceAttributeDataset)
    labels = dataset.labels.round().int().tolist()  # 0/1 floats as the dataset holds them
    records = [
        {"name": name, "labels": row, "labelled": bool(labelled)}
        for name, row, labelled in zip(dataset.names, labels, dataset.labelled.tolist(), strict=True)
    ]
    return list(dataset.paths), records


def celeba_from_shards(
    data: CelebADataModule, split: str, shard: ShardSplit, images: ShardImages, evaluation: bool = False
) -> Dataset:
    """``split``'s ``FaceAttributeDataset`` from its shards (``evaluation``: the evaluation view even for train)."""
    from datasets.celeba import FaceAttributeDataset, eval_transform, train_transform

    names = shard.column("name")
    labels = np.asarray(shard.column("labels"), np.uint8).reshape(len(names), len(data.attribute_names))
    labelled = np.asarray(shard.column("labelled"), bool)
    teacher = None if evaluation else data._teacher_rows(names, split, required=split == "train")
    train = split == "train" and not evaluation
    transform = train_transform(data.view_resolution, data.min_scale) if train else eval_transform(data.view_resolution)
    return FaceAttributeDataset(names, names, labels, labelled, transform, teacher, images)


def shard_train_labels(shard: ShardSplit, attributes: int) -> np.ndarray:
    """The 0/1 labels (N, A) of the labelled images of a train split's shards."""
    names = shard.column("name")
    labels = np.asarray(shard.column("labels"), np.uint8).reshape(len(names), attributes)
    return labels[np.asarray(shard.column("labelled"), bool)]


def celeba_predict(data: CelebADataModule) -> Dataset:
    """``predict`` from shards: ``--data.predict_split``'s partition, or ``all``: the three splits
    (the unlabelled images are in train's), each image under the evaluation view."""
    assert data.shards is not None
    splits = ["train", "val", "test"] if data.predict_split == "all" else [data.predict_split]
    parts = [
        celeba_from_shards(data, split, data.shards.split(split), data.shards.images(split), evaluation=True)
        for split in splits
    ]
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)
