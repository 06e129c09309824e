"""A COCO-format detection split as a torch ``Dataset`` and its batch collation."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL.Image import Image
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import Dataset

from backbone.errors import BadInputError
from datasets.coco.annotations import clean_boxes, read_annotation_json
from datasets.coco.transforms import (
    AugmentPolicy,
    detection_transform,
    finalize_boxes,
    resize_only,
    seed_augmentation,
    to_tensor,
)
from datasets.images import read_rgb_array

Target = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------
class CocoDetection(Dataset[tuple[Tensor, Target]]):
    """A COCO-format detection split: ``image_dir`` + its instances JSON (``read_annotation_json``).

    Args:
        image_dir: folder holding the images named by ``file_name``.
        annotation_file: the COCO instances JSON of this split.
        resolution: side of the square model input (SSD300: 300).
        augment: the training augmentation policy (``detection_transform``); ``none`` resizes only.
        category_ids: the category ids in label order (label = index + 1); defaults to this
            file's categories sorted by id. The data module passes the val file's list to both
            splits so train and val agree on the labels.
        annotation_data: the file's content when the caller has already read it (the data
            module reads the val file once, for the labels).

    ``ground_truth`` is the split's annotation dict with the cleaned annotations (what the
    evaluator scores against); ``images`` maps an image id to its record.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike[str],
        annotation_file: str | os.PathLike[str],
        resolution: int = 300,
        augment: AugmentPolicy = "none",
        category_ids: Sequence[int] | None = None,
        annotation_data: dict[str, Any] | None = None,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.annotation_file = Path(annotation_file)
        self.resolution = int(resolution)
        if self.resolution < 32:
            raise BadInputError(f"The resolution {resolution} is too small; expected at least 32 pixels.")
        data = annotation_data if annotation_data is not None else read_annotation_json(self.annotation_file)
        self.images: dict[int, dict[str, Any]] = {int(info["id"]): info for info in data["images"]}
        names = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        if category_ids is None:
            category_ids = sorted(names)
        self.category_ids: list[int] = [int(c) for c in category_ids]
        self.category_to_label: dict[int, int] = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        self.label_to_category_id: dict[int, int] = {i + 1: cid for i, cid in enumerate(self.category_ids)}
        self.category_names: list[str] = [names.get(cid, str(cid)) for cid in self.category_ids]

        # The file's own references were checked on reading; this is the split against the labels
        # (the val file's categories, which the data module passes to both splits).
        unknown = {int(a["category_id"]) for a in data["annotations"]} - set(self.category_to_label)
        if unknown:
            raise BadInputError(
                f"The annotation file {str(self.annotation_file)!r} uses category ids {sorted(unknown)[:10]} "
                f"that are not in the category list {self.category_ids[:10]}...; expected every id to be listed."
            )
        if not self.image_dir.is_dir():
            raise BadInputError(
                f"The image folder {str(self.image_dir)!r} does not exist; expected the split's images."
            )
        # One listdir instead of 118k stat calls: a missing file is reported at once, by name.
        present = set(os.listdir(self.image_dir))
        self.image_ids: list[int] = sorted(self.images)
        for image_id in self.image_ids:
            name = self.images[image_id]["file_name"]
            if name not in present and not (self.image_dir / name).is_file():
                raise BadInputError(
                    f"The image file {str(self.image_dir / name)!r} listed in {str(self.annotation_file)!r} "
                    "does not exist; expected every listed image in the image folder."
                )
        by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in data["annotations"]:  # every image_id names a listed image (checked on reading)
            by_image.setdefault(int(ann["image_id"]), []).append(ann)
        # Clean every image's targets once, here, so the count is reported once per dataset, and
        # keep the cleaned annotations: evaluation scores against what training was shown.
        self.targets: list[tuple[np.ndarray, np.ndarray]] = []
        kept_annotations: list[dict[str, Any]] = []
        n_crowd = n_clipped = n_dropped = 0
        for image_id in self.image_ids:
            info = self.images[image_id]
            boxes, labels, kept, c, k, d = clean_boxes(
                by_image.get(image_id, []), float(info["width"]), float(info["height"]), self.category_to_label
            )
            self.targets.append((boxes, labels))
            kept_annotations += kept
            n_crowd, n_clipped, n_dropped = n_crowd + c, n_clipped + k, n_dropped + d
        self.n_crowd, self.n_clipped, self.n_dropped = n_crowd, n_clipped, n_dropped
        # The ground truth of this split as evaluation scores it: the file's dict with the cleaned
        # annotations. It is indexed once, by the evaluator (tasks.detection.evaluation), with the
        # library that scores it; the data side keeps no index of its own.
        self.ground_truth: dict[str, Any] = {**data, "annotations": kept_annotations}
        if n_clipped or n_dropped:
            rank_zero_warn(
                f"{self.annotation_file}: dropped {n_dropped} degenerate boxes (no width/height or outside the image) "
                f"and clipped {n_clipped} boxes to their image."
            )
        self.transform = detection_transform(self.resolution, augment)
        # Seeded from the run's seed: augmenting in the main process (--data.num_workers 0) then
        # repeats from run to run; DataLoader workers re-seed it (worker_init).
        seed_augmentation(self.transform)

    @property
    def num_classes(self) -> int:
        """Foreground categories + 1 for background (torchvision's convention)."""
        return len(self.category_ids) + 1

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        image_id = self.image_ids[index]
        info = self.images[image_id]
        path = self.image_dir / info["file_name"]
        image = read_rgb_array(path)
        orig_h, orig_w = image.shape[:2]
        if (orig_w, orig_h) != (int(info["width"]), int(info["height"])):
            raise BadInputError(
                f"The image file {str(path)!r} is {orig_w}x{orig_h} pixels but {str(self.annotation_file)!r} says "
                f"{info['width']}x{info['height']}; boxes refer to the stored pixels, so the two must agree."
            )
        boxes, labels = self.targets[index]
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
