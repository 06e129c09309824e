"""Labelled image lists, as the two classification layouts (ImageNet-style, Stanford Dogs) read them.

``ImageListDataset`` is a list of (path, label[, box]) read with ``datasets.images.read_rgb`` (a
missing or damaged file raises ``BadInputError`` naming it). ``ImageListDataModule`` turns the
``train_samples()``/``eval_samples()`` of a layout into datasets with the transforms of the
paper's recipe (Section 4: "less regularization and data augmentation techniques because small
models have less trouble with overfitting": a random-resized crop with a moderate scale range and
a flip).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from backbone.errors import BadInputError
from backbone.mobilenet import IMAGENET_MEAN, IMAGENET_STD
from backbone.ranges import CropScale
from datasets.base import OutputNames, TaskDataModule
from datasets.images import read_rgb
from datasets.shards import ShardImages, ShardSplit


@dataclass(frozen=True)
class Sample:
    """One labelled image; ``box`` (x0, y0, x1, y1 in pixels) is an optional crop."""

    path: Path
    label: int
    box: tuple[int, int, int, int] | None = None


def classification_train_transform(resolution: int, min_scale: float = 0.5) -> v2.Compose:
    """Light augmentation: random-resized crop (scale >= ``min_scale``) and horizontal flip."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(resolution, scale=(min_scale, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def classification_eval_transform(resolution: int, crop_fraction: float = 0.875) -> v2.Compose:
    """The standard evaluation view: resize the short side to res/0.875, centre-crop res."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(round(resolution / crop_fraction), antialias=True),
            v2.CenterCrop(resolution),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class ImageListDataset(Dataset[tuple[Tensor, int]]):
    """Images and labels from a list of ``Sample``; crops to ``sample.box`` when one is given.

    ``shards``: the images are read from shards (item ``i`` is sample ``i``'s file) instead of the files.
    """

    def __init__(self, samples: Sequence[Sample], transform: v2.Transform, shards: ShardImages | None = None) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.shards = shards

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        sample = self.samples[index]
        image = read_rgb(sample.path) if self.shards is None else self.shards.read(index)
        if sample.box is not None:
            image = image.crop(sample.box)
        return self.transform(image), sample.label


class ImageListDataModule(TaskDataModule):
    """Base of the classification layouts: subclasses give ``read_classes`` and the samples.

    Args (beyond ``TaskDataModule``'s: root, resolution, batch_size, num_workers, predict_dir):
        min_scale: smallest area fraction of the random-resized crop.
    """

    def __init__(self, root: str | None = None, min_scale: CropScale = 0.5, **kwargs: Any) -> None:
        super().__init__(root, **kwargs)
        self.min_scale = min_scale
        self.class_names: list[str] = self.shards.data_meta()["classes"] if self.shards else self.read_classes()
        if len(self.class_names) < 2:
            raise BadInputError(
                f"The data root {str(self.root)!r} holds {len(self.class_names)} class(es); "
                f"a classifier needs at least 2 ({self.layout})."
            )

    # --- what a layout defines ---------------------------------------------------------------
    def read_classes(self) -> list[str]:
        """The class names, in label order, read cheaply right after construction."""
        raise NotImplementedError

    def train_samples(self) -> list[Sample]:
        raise NotImplementedError

    def eval_samples(self) -> list[Sample]:
        raise NotImplementedError

    # --- shared ------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Number of classes; the CLI links it into ``--model.num_classes``."""
        return len(self.class_names)

    def transform(self, split: str) -> v2.Compose:
        """The training augmentation for ``train``, the evaluation view otherwise."""
        if split == "train":
            return classification_train_transform(self.resolution, self.min_scale)
        return classification_eval_transform(self.resolution)

    def train_dataset(self) -> Dataset:
        return ImageListDataset(self.train_samples(), self.transform("train"))

    def val_dataset(self) -> Dataset:
        return ImageListDataset(self.eval_samples(), self.transform("val"))

    # --- shards: a record is the label, the crop box and the image's path under the root ---------
    def shard_data_meta(self) -> dict[str, Any]:
        return {"classes": list(self.class_names)}

    def shard_samples(self, split: str) -> tuple[list[Path], list[dict[str, Any]]]:
        dataset = self.dataset(split)
        assert isinstance(dataset, ImageListDataset)
        records = [
            {"label": s.label, "box": None if s.box is None else list(s.box), "name": _name(s.path, self.root)}
            for s in dataset.samples
        ]
        return [s.path for s in dataset.samples], records

    def dataset_from_shards(self, split: str, shard: ShardSplit, images: ShardImages) -> Dataset:
        columns = zip(shard.column("name"), shard.column("label"), shard.column("box"), strict=True)
        samples = [Sample(Path(name), int(label), None if box is None else tuple(box)) for name, label, box in columns]
        return ImageListDataset(samples, self.transform(split), images)

    def predict_transform(self) -> v2.Compose:
        return classification_eval_transform(self.resolution)

    def output_names(self, stage: str) -> OutputNames:
        """One output per class, named by its folder (label order)."""
        return {"classes": list(self.class_names)}


def _name(path: Path, root: Path) -> str:
    """``path`` under ``root`` (POSIX), or whole when it lies elsewhere (Stanford Dogs' extra images)."""
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()
