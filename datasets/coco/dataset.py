"""A COCO-format detection split as a torch ``Dataset`` and its batch collation."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL.Image import Image
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import Dataset

from backbone.errors import BadInputError
from datasets.coco.annotations import INSTANCES
from datasets.coco.compact import CompactSplit, compact_split
from datasets.coco.transforms import (
    AugmentPolicy,
    detection_transform,
    finalize_boxes,
    resize_only,
    seed_augmentation,
    to_tensor,
)
from datasets.images import read_rgb_array
from datasets.json_columns import Columns, columns_from_records, read_columns
from datasets.packed import trim_heap
from datasets.shards import ShardImages

Target = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------
class CocoDetection(Dataset[tuple[Tensor, Target]]):
    """A COCO-format detection split: ``image_dir`` + its instances JSON, held as flat arrays
    (``datasets.coco.compact``) read straight from the file (``datasets.json_columns``).

    Args:
        image_dir: folder holding the images named by ``file_name``.
        annotation_file: the COCO instances JSON of this split.
        resolution: side of the square model input (SSD300: 300).
        augment: the training augmentation policy (``detection_transform``); ``none`` resizes only.
        category_ids: the category ids in label order (label = index + 1); defaults to this
            file's categories sorted by id. The data module passes the val file's list to both
            splits so train and val agree on the labels.
        annotation_data: the file's content when the caller has already read it: its columns
            (``read_columns(INSTANCES, ...)``; the data module reads the val file once, for the
            labels) or a checked instances dict (WIDER FACE's reader gives one).
        split: the split already cleaned (``CompactSplit``), instead of an annotation file or data:
            what shards hold (``datasets.coco.shards``).
        shards: the images read from shards (item ``i`` is image ``i``) instead of ``image_dir``.

    ``split`` holds the images and the cleaned targets; ``ground_truth()`` builds the annotation
    dict the evaluator scores against.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike[str],
        annotation_file: str | os.PathLike[str],
        resolution: int = 300,
        augment: AugmentPolicy = "none",
        category_ids: Sequence[int] | None = None,
        annotation_data: Mapping[str, Any] | None = None,
        split: CompactSplit | None = None,
        shards: ShardImages | None = None,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.annotation_file = Path(annotation_file)
        self.shards = shards
        self.resolution = int(resolution)
        if self.resolution < 32:
            raise BadInputError(f"The resolution {resolution} is too small; expected at least 32 pixels.")
        if split is not None:
            tables = None
        elif annotation_data is None:
            tables = read_columns(INSTANCES, self.annotation_file)
        elif isinstance(next(iter(annotation_data.values()), None), Columns):
            tables = annotation_data  # already columns (the data module's reader)
        else:  # a checked instances dict (datasets.wider_face.to_coco, tests)
            tables = columns_from_records(INSTANCES, annotation_data)
        # The file's own references were checked on reading; compact_split checks the split
        # against the labels (the val file's categories, which the data module passes to both).
        self.split = split if tables is None else compact_split(tables, category_ids, self.annotation_file)
        del tables
        trim_heap()  # the parse's freed records: not kept mapped in this process and its workers
        self.category_ids: list[int] = list(self.split.category_ids)
        self.category_names: list[str] = list(self.split.category_names)
        self.label_to_category_id: dict[int, int] = {i + 1: cid for i, cid in enumerate(self.category_ids)}
        self.category_to_label: dict[int, int] = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        if shards is None:
            self._check_images()
        self.n_crowd, self.n_clipped, self.n_dropped = self.split.n_crowd, self.split.n_clipped, self.split.n_dropped
        if self.n_clipped or self.n_dropped:
            rank_zero_warn(
                f"{self.annotation_file}: dropped {self.n_dropped} degenerate boxes (no width/height or outside the "
                f"image) and clipped {self.n_clipped} boxes to their image."
            )
        self.transform = detection_transform(self.resolution, augment)
        # Seeded from the run's seed: augmenting in the main process (--data.num_workers 0) then
        # repeats from run to run; DataLoader workers re-seed it (worker_init).
        seed_augmentation(self.transform)

    def _check_images(self) -> None:
        if not self.image_dir.is_dir():
            raise BadInputError(
                f"The image folder {str(self.image_dir)!r} does not exist; expected the split's images."
            )
        # One listdir instead of 118k stat calls: a missing file is reported at once, by name.
        present = set(os.listdir(self.image_dir))
        for index in range(len(self.split)):
            name = self.split.file_names[index]
            if name not in present and not (self.image_dir / name).is_file():
                raise BadInputError(
                    f"The image file {str(self.image_dir / name)!r} listed in {str(self.annotation_file)!r} "
                    "does not exist; expected every listed image in the image folder."
                )

    def ground_truth(self) -> dict[str, Any]:
        """The ground truth of this split as evaluation scores it: its images, the cleaned
        annotations and the categories (``CompactSplit.ground_truth``). Built when called, so only
        the rank that scores holds it; the evaluator indexes it once with the library that scores."""
        return self.split.ground_truth()

    @property
    def num_classes(self) -> int:
        """Foreground categories + 1 for background (torchvision's convention)."""
        return len(self.category_ids) + 1

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        split = self.split
        image_id = int(split.image_ids[index])
        path = self.image_dir / split.file_names[index]
        image = read_rgb_array(path) if self.shards is None else np.asarray(self.shards.read(index))
        orig_h, orig_w = image.shape[:2]
        width, height = int(split.widths[index]), int(split.heights[index])
        if (orig_w, orig_h) != (width, height):
            raise BadInputError(
                f"The image file {str(path)!r} is {orig_w}x{orig_h} pixels but {str(self.annotation_file)!r} says "
                f"{width}x{height}; boxes refer to the stored pixels, so the two must agree."
            )
        boxes, labels = split.targets(index)
        if self.transform is not None:
            out = self.transform(image=image, bboxes=boxes, labels=labels)
            image, boxes, labels = out["image"], np.asarray(out["bboxes"]), np.asarray(out["labels"])
        else:
            image, boxes = resize_only(image, boxes, self.resolution)
        height, width = image.shape[:2]
        box_tensor, label_tensor = finalize_boxes(boxes, labels, height, width)
        target: Target = {
            "boxes": box_tensor,
            "labels": label_tensor,
            "image_id": int(image_id),
            "path": str(path),
            "orig_size": (int(orig_h), int(orig_w)),
            "input_size": (int(height), int(width)),
        }
        return to_tensor(image), target


def predict_transform(resolution: int) -> Any:
    """``--data.predict_dir`` images: the evaluation resize, as a float tensor in [0, 1]."""

    def transform(image: Image) -> Tensor:
        array, _ = resize_only(np.asarray(image), np.zeros((0, 4), np.float32), resolution)
        return to_tensor(array)

    return transform


def collate_detection(batch: Sequence[tuple[Tensor, Target]]) -> tuple[Tensor | list[Tensor], list[Target]]:
    """``(images, targets)``: images stacked to ``(B, 3, H, W)`` when they share a size (always,
    after the resize), else a list; torchvision's detectors accept either. Targets stay a list."""
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    if all(img.shape == images[0].shape for img in images):
        return torch.stack(images), targets
    return images, targets
