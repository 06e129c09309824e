"""The detection data module: the splits of ``--data.root`` (or the demo) for the detection task.

Two layouts (``--data.layout``) give the same COCO dict to the same dataset (``CocoDetection``):
``coco`` reads COCO 2017's instances JSON files, ``wider_face`` reads WIDER FACE's
``*_bbx_gt.txt`` files in place (``datasets.wider_face``). Everything after reading (box cleaning,
augmentation, the evaluator's ground truth) is shared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch.utils.data import Dataset

from backbone.errors import BadInputError
from backbone.ranges import NonNegativeInt, PositiveInt, Resolution
from datasets.base import OutputNames, TaskDataModule
from datasets.coco.annotations import INSTANCES
from datasets.coco.dataset import CocoDetection, collate_detection, predict_transform
from datasets.coco.image_info import CocoImageInfo
from datasets.coco.shards import coco_records, split_from_shards
from datasets.coco.transforms import (
    AugmentPolicy,
    worker_init,
)
from datasets.demo.coco import ensure_demo_coco
from datasets.demo.wider_face import ensure_demo_wider_face
from datasets.json_columns import Columns, columns_from_records, read_columns
from datasets.shards import ShardImages, ShardsOrder, ShardSplit
from datasets.wider_face import to_coco

Target = dict[str, Any]
LayoutName = Literal["coco", "wider_face"]


@dataclass(frozen=True)
class Layout:
    """A public detection layout: what ``--data.root`` holds, its file names, its reader and its demo.

    ``read(annotation file, image folder)`` returns the split's checked COCO instances tables as
    columns (``datasets.json_columns``).
    """

    kind: str  # names the files in sentences ("The COCO file ... is missing")
    description: str
    train_ann: str
    train_images: str
    val_ann: str
    val_images: str
    read: Callable[[Path, Path], dict[str, Columns]]
    demo: Callable[[], Path]


LAYOUTS: dict[str, Layout] = {
    "coco": Layout(
        "COCO",
        "annotations/instances_{train,val}2017.json, train2017/ and val2017/",
        "annotations/instances_train2017.json",
        "train2017",
        "annotations/instances_val2017.json",
        "val2017",
        lambda annotations, images: read_columns(INSTANCES, annotations),
        ensure_demo_coco,
    ),
    "wider_face": Layout(
        "WIDER FACE",
        "wider_face_split/wider_face_{train,val}_bbx_gt.txt, WIDER_train/images/ and WIDER_val/images/",
        "wider_face_split/wider_face_train_bbx_gt.txt",
        "WIDER_train/images",
        "wider_face_split/wider_face_val_bbx_gt.txt",
        "WIDER_val/images",
        lambda annotations, images: columns_from_records(INSTANCES, to_coco(annotations, images)),
        ensure_demo_wider_face,
    ),
}


# --------------------------------------------------------------------------------------------
# The data module
# --------------------------------------------------------------------------------------------
class CocoDataModule(TaskDataModule):
    """COCO 2017 detection (any COCO-format set), WIDER FACE, or the built-in demo of either.

    What the detection module reads from it (and nothing else): ``val_ground_truth`` (the
    evaluated split's annotation dict, cleaned as training sees it; the evaluator indexes it),
    ``label_to_category_id`` and ``category_names``.

    Args:
        root: the data folder; None uses the built-in demo set (generated once into the cache).
        resolution: side of the square model input (linked from ``--resolution``; SSD300: 300).
        batch_size: images per batch and per process.
        num_workers: DataLoader worker processes.
        predict_dir: a folder of images (searched recursively) for ``predict``; default val.
        augment: training augmentation: ``light`` (horizontal flip, the default for short runs),
            ``ssd`` (SSD's full zoom-out + IoU crop, as the paper rows' configs use) or ``none``.
        train_ann, train_images, val_ann, val_images: the annotation file and image folder of
            each split, relative to ``root`` (or absolute); None: the layout's own names (COCO
            2017's, or WIDER FACE's), so a custom set needs no renaming.
        predict_ann: an image-info JSON (COCO's ``image_info_test-dev2017.json``) whose images,
            in ``predict_images``, ``predict`` runs on, keeping their ids in ``predictions.json``.
        predict_images: the folder of ``predict_ann``'s images (relative to ``root`` or absolute).
        layout: ``coco`` (the instances JSON files) or ``wider_face`` (WIDER FACE as downloaded:
            one category ``face``; its ``invalid`` faces are ignore regions, see
            ``datasets.wider_face``). Without ``root`` each uses its own built-in demo.
        shards, shards_order: the splits read from shards (``datasets.base.TaskDataModule``).

    ``test`` uses the val split: COCO test-dev's labels are not public (its results are scored
    by the evaluation server: ``predict --data.predict_ann``), so the val numbers are the ones a
    local run can report.
    """

    layout = LAYOUTS["coco"].description  # the instance's: its --data.layout's (named in sentences)
    collate_fn = staticmethod(collate_detection)
    worker_init_fn = staticmethod(worker_init)

    def __init__(
        self,
        root: str | None = None,
        resolution: Resolution = 224,
        batch_size: PositiveInt = 16,
        num_workers: NonNegativeInt = 2,
        predict_dir: str | None = None,
        augment: AugmentPolicy = "light",
        train_ann: str | None = None,
        train_images: str | None = None,
        val_ann: str | None = None,
        val_images: str | None = None,
        predict_ann: str | None = None,
        predict_images: str = "test2017",
        layout: LayoutName = "coco",
        shards: str | None = None,
        shards_order: ShardsOrder = "index",
    ) -> None:
        if layout not in LAYOUTS:  # the CLI checks the Literal; this is for direct Python use
            raise BadInputError(f"The detection layout {layout!r} is unknown; expected one of {sorted(LAYOUTS)}.")
        # Set before the base class resolves the root: it reads the demo and the layout's words.
        self.files = LAYOUTS[layout]
        self.layout = self.files.description
        super().__init__(root, resolution, batch_size, num_workers, predict_dir, shards, shards_order)
        self.augment = augment
        if self.shards is not None:  # the categories come from the shards; no file under a root is read
            if predict_ann is not None:
                raise BadInputError(
                    "--data.predict_ann names files under --data.root; with --data.shards use --data.predict_dir."
                )
            self._set_categories(*zip(*self.shards.data_meta()["categories"], strict=True))
            self.predict_annotations = None
            return
        files = self.files
        self.train_annotations = self.root / (train_ann or files.train_ann)
        self.train_images = self.root / (train_images or files.train_images)
        self.val_annotations = self.root / (val_ann or files.val_ann)
        self.val_images = self.root / (val_images or files.val_images)
        self.predict_annotations = None if predict_ann is None else self.root / predict_ann
        self.predict_images = self.root / predict_images
        if predict_ann is not None and predict_dir is not None:
            raise BadInputError(
                "Give --data.predict_ann or --data.predict_dir, not both: they name the images to predict."
            )
        # The val split defines the labels; the train split is checked when fit needs it.
        self._require("val", self.val_annotations, self.val_images)
        # The val file is small (25 MB for COCO) and defines the label order for both splits;
        # read once here so num_classes is known when the CLI links it into the model.
        self._val_tables = files.read(self.val_annotations, self.val_images)
        categories = self._val_tables["categories"]
        order = np.argsort(categories["id"], kind="stable")
        self._set_categories(categories["id"][order].tolist(), [categories["name"][int(i)] for i in order])

    def _set_categories(self, ids: Sequence[int], names: Sequence[str]) -> None:
        """Label k (1..K) is the k-th category by id."""
        self.category_ids: list[int] = [int(i) for i in ids]
        self.category_names: list[str] = list(names)
        self.label_to_category_id: dict[int, int] = {i + 1: cid for i, cid in enumerate(self.category_ids)}

    def demo_root(self) -> Path:
        return self.files.demo()

    @property
    def num_classes(self) -> int:
        """Foreground categories + 1 for background; the CLI links it into ``--model.num_classes``."""
        return len(self.category_ids) + 1

    @property
    def val_ground_truth(self) -> Callable[[], dict[str, Any]]:
        """The val split's ground truth, as a call that builds its annotation dict (the cleaned
        annotations): the evaluator calls it on the rank that scores, indexes it once with the
        library that scores it, and scores against it. The same object on every access."""
        dataset = self.dataset("val")
        assert isinstance(dataset, CocoDetection)
        return dataset.ground_truth

    def output_names(self, stage: str) -> OutputNames:
        """Label k (1..K; 0 is the background) is the k-th category by id: ``name (id N)``. A
        checkpoint's detections are written with these ids and scored against them."""
        return {
            "categories": [
                f"{name} (id {cid})" for cid, name in zip(self.category_ids, self.category_names, strict=True)
            ]
        }

    def _require(self, split: str, *paths: Path) -> None:
        for needed in paths:
            if not needed.exists():
                raise BadInputError(
                    f"The {self.files.kind} file {str(needed)!r} is missing; expected {self.layout} under --data.root "
                    f"(or --data.{split}_ann / --data.{split}_images naming it)."
                )

    def train_dataset(self) -> Dataset:
        self._require("train", self.train_annotations, self.train_images)
        data = self.files.read(self.train_annotations, self.train_images)
        return CocoDetection(
            self.train_images, self.train_annotations, self.resolution, self.augment, self.category_ids, data
        )

    def val_dataset(self) -> Dataset:
        return CocoDetection(
            self.val_images, self.val_annotations, self.resolution, "none", self.category_ids, self._val_tables
        )

    def predict_dataset(self) -> Dataset:
        if self.predict_annotations is None:
            return super().predict_dataset()

        return CocoImageInfo(self.predict_images, self.predict_annotations, self.resolution, self.category_ids)

    def predict_transform(self) -> Any:
        return predict_transform(self.resolution)

    # --- shards: an image's record is its ids, size, ground truth and targets (datasets.coco.shards) ---
    def shard_data_meta(self) -> dict[str, Any]:
        return {"categories": [[cid, name] for cid, name in zip(self.category_ids, self.category_names, strict=True)]}

    def shard_samples(self, split: str) -> tuple[list[Path], list[dict[str, Any]]]:
        dataset = self.dataset(split)
        assert isinstance(dataset, CocoDetection)
        return coco_records(dataset.split, dataset.image_dir)

    def dataset_from_shards(self, split: str, shard: ShardSplit, images: ShardImages) -> Dataset:
        compact = split_from_shards(shard, self.category_ids, self.category_names)
        augment = self.augment if split == "train" else "none"
        location = Path(shard.location)
        return CocoDetection(location, location, self.resolution, augment, split=compact, shards=images)
