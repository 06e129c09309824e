"""COCO 2017 (or any COCO-format) detection data: the dataset, SSD's augmentation, the data module.

``--data.root`` holds the public layout unchanged::

    annotations/instances_train2017.json   annotations/instances_val2017.json
    train2017/*.jpg                        val2017/*.jpg

COCO category ids are not contiguous (1..90 with gaps, 80 used); the models want labels 1..K with
0 for background, so the dataset maps ``category_id -> label`` on reading and exposes
``label_to_category_id`` for the evaluator to map detections back. Crowd regions (``iscrowd=1``)
are not training targets (the COCO evaluator handles them itself); images without objects are
kept (they are pure negatives). Degenerate boxes are clipped to the image or dropped when reading,
and counted in one warning per file, so nothing degenerate reaches a loss.

A batch from ``collate_detection`` is ``(images, targets)``: ``images`` a float tensor
``(B, 3, R, R)`` in [0, 1] (R = ``resolution``), ``targets`` a list of dicts with ``boxes``
(float ``(N, 4)`` xyxy in the resized image's pixels), ``labels`` (int64 ``(N,)``, 1..K),
``image_id`` (int), ``orig_size`` and ``input_size`` ((h, w) ints) so predictions map back to
original pixels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL.Image import Image
from pycocotools.coco import COCO
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import Dataset

from backbone.errors import BadInputError
from datasets.base import TaskDataModule
from datasets.demo_coco import ensure_demo_coco
from datasets.detection_transforms import (
    AugmentPolicy,
    detection_transform,
    finalize_boxes,
    resize_only,
    to_tensor,
    worker_init,
)
from datasets.images import read_rgb_array

Target = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Reading the annotation file
# --------------------------------------------------------------------------------------------
def read_json_object(path: Path, expected: str, kind: str = "annotation file") -> dict[str, Any]:
    """The JSON object in ``path``, or one sentence naming the file and ``expected``."""
    if not path.is_file():
        raise BadInputError(f"The {kind} {str(path)!r} does not exist; expected {expected} there.")
    try:
        with path.open("rb") as handle:
            data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadInputError(f"The {kind} {str(path)!r} is not valid JSON ({error}); expected {expected}.") from None
    if not isinstance(data, dict):
        raise BadInputError(f"The {kind} {str(path)!r} holds a {type(data).__name__}; expected a COCO JSON object.")
    return data


def read_annotation_json(path: Path) -> dict[str, Any]:
    """Load a COCO annotation file and check the keys this loader relies on.

    Raises ``BadInputError`` (one sentence naming the file) for a missing file, invalid JSON or a
    record without the required keys, instead of a ``KeyError`` deep inside a DataLoader worker.
    """
    data = read_json_object(path, "a COCO instances JSON file")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise BadInputError(
                f"The annotation file {str(path)!r} has no {key!r} list; expected the COCO instances format."
            )
    _check_records(path, data["images"], ("id", "file_name", "width", "height"), "image")
    _check_records(path, data["annotations"], ("id", "image_id", "category_id", "bbox"), "annotation")
    _check_records(path, data["categories"], ("id", "name"), "category")
    if not data["categories"]:
        raise BadInputError(f"The annotation file {str(path)!r} lists no categories; expected at least one.")
    if not data["images"]:
        raise BadInputError(f"The annotation file {str(path)!r} lists no images; expected at least one.")
    seen: set[int] = set()
    for info in data["images"]:
        if int(info["id"]) in seen:
            raise BadInputError(
                f"The annotation file {str(path)!r} lists image id {info['id']} twice; expected unique image ids."
            )
        seen.add(int(info["id"]))
    return data


def _check_records(path: Path, records: list[Any], keys: tuple[str, ...], kind: str) -> None:
    for record in records:
        if not isinstance(record, dict) or any(k not in record for k in keys):
            missing = [k for k in keys if not isinstance(record, dict) or k not in record]
            raise BadInputError(
                f"The annotation file {str(path)!r} has an {kind} record without {missing} "
                f"(record: {str(record)[:80]}); every {kind} needs {list(keys)}."
            )


def coco_from_dict(data: dict[str, Any], coco_cls: type = COCO) -> Any:
    """A ``COCO`` index (pycocotools', or faster-coco-eval's ``coco_cls``) over an already-loaded
    annotation dict: no second JSON read, and without the "creating index..." prints."""
    coco = coco_cls()
    coco.dataset = data
    with redirect_stdout(StringIO()):
        coco.createIndex()
    return coco


def _with_area(ann: Mapping[str, Any], bbox: list[float]) -> dict[str, Any]:
    """``ann`` with ``bbox`` and an ``area`` (w x h when missing or zero, as torchvision's
    ``convert_to_coco_api`` does: pycocotools' evaluation needs it to bin small/medium/large)."""
    area = ann.get("area")
    if not isinstance(area, (int, float)) or not area > 0:
        area = bbox[2] * bbox[3]
    return {**ann, "bbox": bbox, "area": float(area)}


def clean_boxes(
    annotations: Sequence[Mapping[str, Any]], width: float, height: float, category_to_label: Mapping[int, int]
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]], int, int, int]:
    """Turn one image's COCO annotations into training targets and the ground truth to score.

    Returns ``(boxes xyxy float32 (N, 4), labels int64 (N,), kept annotations, n_crowd, n_clipped,
    n_dropped)``. Crowd regions are not training targets (they would teach the model one box
    around a whole crowd) but stay in the ground truth, where COCO's evaluator ignores detections
    matched to them. Boxes sticking out of the image are clipped; boxes with no width/height
    (before or after clipping, < 1 pixel) or with non-finite numbers are dropped, because
    torchvision's detectors refuse them deep in the loss. The kept annotations (clipped, with an
    ``area``) are what evaluation scores against, so a model is never scored on a box it was
    never shown as valid.
    """
    boxes: list[list[float]] = []
    labels: list[int] = []
    kept: list[dict[str, Any]] = []
    n_crowd = n_clipped = n_dropped = 0
    for ann in annotations:
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (TypeError, ValueError):
            n_dropped += 1
            continue
        if not all(np.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
            n_dropped += 1
            continue
        x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
        if x2 - x1 < 1 or y2 - y1 < 1:  # outside the image, or a sliver once clipped
            n_dropped += 1
            continue
        if (x1, y1, x2, y2) != (x, y, x + w, y + h):
            n_clipped += 1
        kept.append(_with_area(ann, [x1, y1, x2 - x1, y2 - y1]))
        if ann.get("iscrowd", 0):
            n_crowd += 1
            continue
        boxes.append([x1, y1, x2, y2])
        labels.append(category_to_label[int(ann["category_id"])])
    return (
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(labels, np.int64),
        kept,
        n_crowd,
        n_clipped,
        n_dropped,
    )


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------
class CocoDetection(Dataset[tuple[Tensor, Target]]):
    """A COCO-format detection split: ``image_dir`` + its instances JSON, read with pycocotools.

    Args:
        image_dir: folder holding the images named by ``file_name``.
        annotation_file: the COCO instances JSON of this split.
        resolution: side of the square model input (SSD300: 300).
        augment: the training augmentation policy (``detection_transform``); ``none`` resizes only.
        category_ids: the category ids in label order (label = index + 1); defaults to this
            file's categories sorted by id. The data module passes the val file's list to both
            splits so train and val agree on the labels.
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
        images = {int(info["id"]): info for info in data["images"]}
        names = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        if category_ids is None:
            category_ids = sorted(names)
        self.category_ids: list[int] = [int(c) for c in category_ids]
        self.category_to_label: dict[int, int] = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        self.label_to_category_id: dict[int, int] = {i + 1: cid for i, cid in enumerate(self.category_ids)}
        self.category_names: list[str] = [names.get(cid, str(cid)) for cid in self.category_ids]

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
        self.image_ids: list[int] = sorted(images)
        for image_id in self.image_ids:
            name = images[image_id]["file_name"]
            if name not in present and not (self.image_dir / name).is_file():
                raise BadInputError(
                    f"The image file {str(self.image_dir / name)!r} listed in {str(self.annotation_file)!r} "
                    "does not exist; expected every listed image in the image folder."
                )
        by_image: dict[int, list[dict[str, Any]]] = {}
        orphans = 0
        for ann in data["annotations"]:
            if int(ann["image_id"]) in images:
                by_image.setdefault(int(ann["image_id"]), []).append(ann)
            else:
                orphans += 1
        # Clean every image's targets once, here, so the count is reported once per dataset, and
        # index the cleaned annotations: evaluation scores against what training was shown.
        self.targets: list[tuple[np.ndarray, np.ndarray]] = []
        kept_annotations: list[dict[str, Any]] = []
        n_crowd = n_clipped = n_dropped = 0
        for image_id in self.image_ids:
            info = images[image_id]
            boxes, labels, kept, c, k, d = clean_boxes(
                by_image.get(image_id, []), float(info["width"]), float(info["height"]), self.category_to_label
            )
            self.targets.append((boxes, labels))
            kept_annotations += kept
            n_crowd, n_clipped, n_dropped = n_crowd + c, n_clipped + k, n_dropped + d
        self.n_crowd, self.n_clipped, self.n_dropped = n_crowd, n_clipped, n_dropped
        self.coco = coco_from_dict({**data, "annotations": kept_annotations})
        if n_clipped or n_dropped or orphans:
            rank_zero_warn(
                f"{self.annotation_file}: dropped {n_dropped} degenerate boxes (no width/height or outside the image), "
                f"clipped {n_clipped} boxes to their image, and dropped {orphans} annotations whose image_id is "
                "not in 'images'."
            )
        self.transform = detection_transform(self.resolution, augment)

    @property
    def num_classes(self) -> int:
        """Foreground categories + 1 for background (torchvision's convention)."""
        return len(self.category_ids) + 1

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        image_id = self.image_ids[index]
        path = self.image_dir / self.coco.imgs[image_id]["file_name"]
        image = read_rgb_array(path)
        orig_h, orig_w = image.shape[:2]
        info = self.coco.imgs[image_id]
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


# --------------------------------------------------------------------------------------------
# The data module
# --------------------------------------------------------------------------------------------
class CocoDataModule(TaskDataModule):
    """COCO 2017 detection (any COCO-format set), or the built-in demo.

    What the detection module reads from it (and nothing else): ``val_coco`` (the ground truth of
    the evaluated split), ``label_to_category_id`` and ``category_names``.

    Args:
        root: the data folder; None uses the built-in demo set (generated once into the cache).
        resolution: side of the square model input (linked from ``--resolution``; SSD300: 300).
        batch_size: images per batch and per process.
        num_workers: DataLoader worker processes.
        predict_dir: a folder of images (searched recursively) for ``predict``; default val.
        augment: training augmentation: ``light`` (horizontal flip, the default for short runs),
            ``ssd`` (SSD's full zoom-out + IoU crop, as the paper rows' configs use) or ``none``.
        train_ann, train_images, val_ann, val_images: the instances JSON and image folder of
            each split, relative to ``root`` (or absolute); COCO 2017's names by default, so a
            custom set needs no renaming.
        predict_ann: an image-info JSON (COCO's ``image_info_test-dev2017.json``) whose images,
            in ``predict_images``, ``predict`` runs on, keeping their ids in ``predictions.json``.
        predict_images: the folder of ``predict_ann``'s images (relative to ``root`` or absolute).

    ``test`` uses the val split: COCO test-dev's labels are not public (its results are scored
    by the evaluation server: ``predict --data.predict_ann``), so the val numbers are the ones a
    local run can report.
    """

    layout = "annotations/instances_{train,val}2017.json, train2017/ and val2017/"
    collate_fn = staticmethod(collate_detection)
    worker_init_fn = staticmethod(worker_init)

    def __init__(
        self,
        root: str | None = None,
        resolution: int = 300,
        batch_size: int = 16,
        num_workers: int = 2,
        predict_dir: str | None = None,
        augment: AugmentPolicy = "light",
        train_ann: str = "annotations/instances_train2017.json",
        train_images: str = "train2017",
        val_ann: str = "annotations/instances_val2017.json",
        val_images: str = "val2017",
        predict_ann: str | None = None,
        predict_images: str = "test2017",
    ) -> None:
        super().__init__(root, resolution, batch_size, num_workers, predict_dir)
        self.train_annotations, self.train_images = self.root / train_ann, self.root / train_images
        self.val_annotations, self.val_images = self.root / val_ann, self.root / val_images
        self.predict_annotations = None if predict_ann is None else self.root / predict_ann
        self.predict_images = self.root / predict_images
        if predict_ann is not None and predict_dir is not None:
            raise BadInputError(
                "Give --data.predict_ann or --data.predict_dir, not both: they name the images to predict."
            )
        # The val split defines the labels; the train split is checked when fit needs it.
        self._require("val", self.val_annotations, self.val_images)
        self.augment = augment
        # The val file is small (25 MB for COCO) and defines the label order for both splits;
        # read once here so num_classes is known when the CLI links it into the model.
        self._val_json = read_annotation_json(self.val_annotations)
        categories = sorted(self._val_json["categories"], key=lambda c: int(c["id"]))
        self.category_ids: list[int] = [int(c["id"]) for c in categories]
        self.category_names: list[str] = [str(c["name"]) for c in categories]
        self.label_to_category_id: dict[int, int] = {i + 1: cid for i, cid in enumerate(self.category_ids)}

    def demo_root(self) -> Path:
        return ensure_demo_coco()

    @property
    def num_classes(self) -> int:
        """Foreground categories + 1 for background; the CLI links it into ``--model.num_classes``."""
        return len(self.category_ids) + 1

    @property
    def val_coco(self) -> COCO:
        """The val split's pycocotools ``COCO`` object (ground truth for the evaluator)."""
        dataset = self.dataset("val")
        assert isinstance(dataset, CocoDetection)
        return dataset.coco

    def _require(self, split: str, *paths: Path) -> None:
        for needed in paths:
            if not needed.exists():
                raise BadInputError(
                    f"The COCO file {str(needed)!r} is missing; expected {self.layout} under --data.root "
                    f"(or --data.{split}_ann / --data.{split}_images naming it)."
                )

    def train_dataset(self) -> Dataset:
        self._require("train", self.train_annotations, self.train_images)
        return CocoDetection(
            self.train_images, self.train_annotations, self.resolution, self.augment, self.category_ids
        )

    def val_dataset(self) -> Dataset:
        return CocoDetection(
            self.val_images, self.val_annotations, self.resolution, "none", self.category_ids, self._val_json
        )

    def predict_dataset(self) -> Dataset:
        if self.predict_annotations is None:
            return super().predict_dataset()
        from datasets.coco_image_info import CocoImageInfo  # it builds on this module

        return CocoImageInfo(self.predict_images, self.predict_annotations, self.resolution, self.category_ids)

    def predict_transform(self) -> Any:
        return predict_transform(self.resolution)
