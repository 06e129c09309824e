"""CelebA as it is downloaded, for face attributes (Table 12), with the inputs of distillation.

The data root is read in place in any of the layouts in circulation (``datasets.celeba_layouts``):
this project's flat one (``img_align_celeba/*.jpg``, ``list_attr_celeba.txt``,
``list_eval_partition.txt``), the official release's ``Anno/``, ``Eval/`` and ``Img/`` folders, its
PNG variant, and Kaggle's copy (CSV lists, images in ``img_align_celeba/img_align_celeba/``); the
lists are parsed by ``datasets.attribute_files``. On top of the labelled splits, distillation reads:

* ``teacher_outputs``: an ``attributes.csv``, or at web scale the memory-mapped ``attributes.npy``,
  written by a teacher's ``predict`` (``datasets.teacher_outputs``). Every training image needs a
  row; the val/test images get the teacher's probabilities too when the file covers them (for
  ``emulation_ce``).
* ``unlabelled_root``: a folder of extra images (searched recursively) added to training without
  labels; the loss on them is the teacher's alone. The paper distilled on a large unlabelled web
  collection this way. They are named by their path under the folder.

A sample is a dict: ``image`` (3, H, W), ``labels`` (A,) 0/1 floats, ``labelled`` (bool),
``name`` and ``index``; ``teacher`` (A,) probabilities when the split has teacher outputs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL.Image import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from backbone.errors import BadInputError
from backbone.mobilenet import IMAGENET_MEAN, IMAGENET_STD
from backbone.ranges import CropScale, NonNegativeInt, PositiveInt, Resolution
from datasets.attribute_files import PARTITIONS
from datasets.base import OutputNames, TaskDataModule
from datasets.celeba_layouts import read_celeba
from datasets.celeba_shards import celeba_from_shards, celeba_predict, celeba_records, shard_train_labels
from datasets.demo.celeba import ensure_celeba_demo
from datasets.images import PredictFolder, image_files, read_rgb
from datasets.shards import ShardImages, ShardsOrder, ShardSplit
from datasets.teacher_outputs import TeacherOutputs, TeacherRows, read_teacher_outputs

PredictSplit = Literal["all", "train", "val", "test"]


def eval_transform(resolution: int) -> v2.Compose:
    """The whole aligned face resized to a square (CelebA's 178 x 218 is squeezed, never cropped:
    a hat or a chin at the border is an attribute)."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((resolution, resolution), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def train_transform(resolution: int, min_scale: float) -> v2.Compose:
    """The evaluation view, then a mild random-resized crop (area >= ``min_scale``) and a flip.

    Aligned faces need little augmentation, and none of CelebA's attributes is left/right.
    """
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((resolution, resolution), antialias=True),
            v2.RandomResizedCrop(resolution, scale=(min_scale, 1.0), ratio=(0.9, 1.1), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


class FaceAttributeDataset(Dataset[dict[str, Any]]):
    """Images with optional labels (N, A) and the teacher's probabilities (rows of its outputs file)."""

    def __init__(
        self,
        paths: Sequence[Path],
        names: Sequence[str],
        labels: np.ndarray,
        labelled: np.ndarray,
        transform: Callable[[Image], Tensor],
        teacher: TeacherRows | None = None,
        shards: ShardImages | None = None,  # the images read from shards (item i is image i)
    ) -> None:
        self.shards = shards
        self.paths, self.names = list(paths), list(names)
        self.labels = torch.as_tensor(labels, dtype=torch.float32)
        self.labelled = torch.as_tensor(labelled, dtype=torch.bool)
        self.teacher = teacher
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = {
            "image": self.transform(read_rgb(self.paths[index]) if self.shards is None else self.shards.read(index)),
            "labels": self.labels[index],
            "labelled": self.labelled[index],
            "name": self.names[index],
            "index": index,
        }
        if self.teacher is not None:
            item["teacher"] = torch.from_numpy(self.teacher[index])
        return item


class NamedPredictFolder(PredictFolder):
    """``--data.predict_dir`` images, each named by its path under the folder (the attributes.csv key)."""

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]] | None:
        item = super().__getitem__(index)
        if item is not None:
            item[1]["name"] = self.files[index].relative_to(self.folder).as_posix()
        return item


class CelebADataModule(TaskDataModule):
    """CelebA (or any set in its layout) for ``tasks.face_attributes``.

    Args (beyond ``TaskDataModule``'s: root, resolution, batch_size, num_workers, predict_dir):
        teacher_outputs: a teacher's ``predict`` output, the soft targets: its ``attributes.csv``, or
            its ``attributes.npy`` (memory-mapped, with ``attributes_rows.txt`` beside it).
        unlabelled_root: a folder of extra images without labels, added to training (needs a
            teacher: ``--model.teacher`` or ``teacher_outputs``).
        predict_split: what ``predict`` runs on without ``predict_dir``: ``all`` (every image of
            the three partitions and of ``unlabelled_root``: what a student needs from its
            teacher), or one partition.
        min_scale: smallest area fraction of the training crop.
        view_resolution: the size of the views the loaders produce (default ``resolution``).
            With a live teacher (``--model.teacher``) it is the larger of the student's and the
            teacher's resolution, decided when the arguments are parsed (a link the
            face-attributes module declares), so that both networks see the same crop; the
            module resizes each batch to its own size.
    """

    layout = (
        "CelebA as downloaded: list_attr_celeba.txt and list_eval_partition.txt (in the root or in Anno/ and "
        "Eval/) or Kaggle's list_attr_celeba.csv and list_eval_partition.csv, and the images in "
        "img_align_celeba/ (or Img/, or img_align_celeba_png/)"
    )

    def __init__(
        self,
        root: str | None = None,
        resolution: Resolution = 224,
        batch_size: PositiveInt = 32,
        num_workers: NonNegativeInt = 2,
        predict_dir: str | None = None,
        teacher_outputs: str | None = None,
        unlabelled_root: str | None = None,
        predict_split: PredictSplit = "all",
        min_scale: CropScale = 0.8,
        view_resolution: Resolution | None = None,
        shards: str | None = None,
        shards_order: ShardsOrder = "index",
    ) -> None:
        super().__init__(root, resolution, batch_size, num_workers, predict_dir, shards, shards_order)
        self.teacher_outputs = Path(teacher_outputs).expanduser() if teacher_outputs else None
        self.unlabelled_root = Path(unlabelled_root).expanduser() if unlabelled_root else None
        if self.unlabelled_root is not None and not self.unlabelled_root.is_dir():
            raise BadInputError(f"The unlabelled image folder {str(self.unlabelled_root)!r} does not exist.")
        self.predict_split = predict_split
        self.min_scale = min_scale
        self.view_resolution = view_resolution or resolution
        self._teacher_outputs: TeacherOutputs | None = None
        if self.shards is not None:  # --data.shards: the names from the shards, no file read (datasets.celeba_shards)
            self.attribute_names: list[str] = self.shards.data_meta()["attributes"]
            return
        celeba = read_celeba(self.root)
        self.celeba_layout = celeba.layout
        self.attribute_names = celeba.attribute_names
        self.image_names, self.labels, self.partition = celeba.image_names, celeba.labels, celeba.partition

    def demo_root(self) -> Path:
        return ensure_celeba_demo()

    # --- pieces ------------------------------------------------------------------------------
    def teacher_table(self) -> TeacherOutputs | None:
        """``teacher_outputs`` read once (image name -> probabilities), or None."""
        if self.teacher_outputs is not None and self._teacher_outputs is None:
            self._teacher_outputs = read_teacher_outputs(self.teacher_outputs, self.attribute_names)
        return self._teacher_outputs

    def train_labels(self) -> np.ndarray:
        """The 0/1 labels (N, A) of the training partition: what ``--model.pos_weight auto`` counts."""
        if self.shards is not None:  # the labelled training images of the shards
            return shard_train_labels(self.shards.split("train"), len(self.attribute_names))
        return self.labels[self.partition == PARTITIONS["train"]]

    def _partition(self, split: str) -> tuple[list[Path], list[str], np.ndarray]:
        """Paths, names and labels of one partition; every listed image must exist."""
        layout = self.celeba_layout
        rows = np.flatnonzero(self.partition == PARTITIONS[split])
        if len(rows) == 0:
            raise BadInputError(f"{str(layout.partition_file)!r} puts no image in the {split} partition.")
        names = [self.image_names[i] for i in rows]
        paths = [layout.image_path(name) for name in names]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise BadInputError(
                f"The image {str(missing[0])!r} is listed in {layout.attribute_file.name} but does not exist "
                f"({len(missing)} of the {len(paths)} {split} images are missing)."
            )
        return paths, names, self.labels[rows]

    def _unlabelled(self) -> tuple[list[Path], list[str]]:
        if self.unlabelled_root is None:
            return [], []
        paths = image_files(self.unlabelled_root, recursive=True)
        if not paths:
            raise BadInputError(f"The unlabelled image folder {str(self.unlabelled_root)!r} holds no images.")
        names = [p.relative_to(self.unlabelled_root).as_posix() for p in paths]
        labelled = set(self.image_names)
        clash = next((n for n in names if n in labelled), None)
        if clash is not None:  # attributes.csv keys images by name: the two must not collide
            raise BadInputError(
                f"The unlabelled image {clash!r} has the name of a CelebA image; move the unlabelled images "
                "into a subfolder so that teacher outputs can tell them apart."
            )
        return paths, names

    def _teacher_rows(self, names: Sequence[str], split: str, required: bool) -> TeacherRows | None:
        """The teacher's probabilities of ``names`` from ``teacher_outputs``, or None.

        Training needs a row for every image; for an evaluation split a partial file only means
        no ``emulation_ce`` (said once).
        """
        table = self.teacher_table()
        if table is None:
            return None
        rows = table.rows(names)
        missing = [names[i] for i in np.flatnonzero(rows < 0)]
        if missing and required:
            raise BadInputError(
                f"The teacher outputs file {str(self.teacher_outputs)!r} has no row for the {split} image "
                f"{missing[0]!r} ({len(missing)} of {len(names)} missing); run the teacher's predict on the same "
                "data root and unlabelled folder."
            )
        if missing:
            warnings.warn(
                f"emulation_ce is not computed on the {split} split: {len(missing)} of its {len(names)} images "
                f"have no row in {str(self.teacher_outputs)!r}.",
                stacklevel=2,
            )
            return None
        return TeacherRows(table, rows)

    def _dataset(self, split: str, transform: Callable[[Image], Tensor]) -> FaceAttributeDataset:
        paths, names, labels = self._partition(split)
        labelled = np.ones(len(paths), dtype=bool)
        if split == "train":
            extra_paths, extra_names = self._unlabelled()
            paths, names = paths + extra_paths, names + extra_names
            labels = np.concatenate([labels, np.zeros((len(extra_paths), labels.shape[1]), labels.dtype)])
            labelled = np.concatenate([labelled, np.zeros(len(extra_paths), dtype=bool)])
        teacher = self._teacher_rows(names, split, required=split == "train")
        return FaceAttributeDataset(paths, names, labels, labelled, transform, teacher)

    # --- splits ------------------------------------------------------------------------------
    def train_dataset(self) -> Dataset:
        return self._dataset("train", train_transform(self.view_resolution, self.min_scale))

    def val_dataset(self) -> Dataset:
        return self._dataset("val", eval_transform(self.view_resolution))

    def test_dataset(self) -> Dataset:
        return self._dataset("test", eval_transform(self.view_resolution))

    def predict_transform(self) -> v2.Compose:
        return eval_transform(self.view_resolution)

    def predict_dataset(self) -> Dataset:
        if self.predict_dir is not None:
            return NamedPredictFolder(self.predict_dir, self.predict_transform())
        if self.predict_split != "all":
            paths, names, labels = self._partition(self.predict_split)
        else:
            parts = [self._partition(split) for split in PARTITIONS]
            extra_paths, extra_names = self._unlabelled()
            paths = [p for part in parts for p in part[0]] + extra_paths
            names = [n for part in parts for n in part[1]] + extra_names
            labels = np.zeros((len(paths), len(self.attribute_names)), np.uint8)
        return FaceAttributeDataset(paths, names, labels, np.zeros(len(paths), bool), self.predict_transform())

    # --- shards (datasets.celeba_shards) --------------------------------------------------------
    def shard_data_meta(self) -> dict[str, Any]:
        return {"attributes": list(self.attribute_names)}

    def shard_samples(self, split: str) -> tuple[list[Path], list[dict[str, Any]]]:
        return celeba_records(self, split)

    def dataset_from_shards(self, split: str, shard: ShardSplit, images: ShardImages) -> Dataset:
        return celeba_from_shards(self, split, shard, images)

    def predict_from_shards(self) -> Dataset:
        return celeba_predict(self)

    def output_names(self, stage: str) -> OutputNames:
        """One output per attribute, in the attribute list's column order; ``predict`` writes
        the columns of ``attributes.csv`` under these names."""
        return {"attributes": list(self.attribute_names)}
