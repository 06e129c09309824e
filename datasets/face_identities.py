"""Face identity folders (``<identity>/*.jpg``, the VGGFace2 / CASIA-WebFace layout) and LFW.

* ``identity_images``: the identities and their images under a root, sorted.
* ``PKSampler`` (``datasets.pk_sampler``): batches of P identities x K images for online triplet
  mining (FaceNet, Section 3.2: "all anchor-positive pairs" of a batch with semi-hard negatives from the same batch need
  several images of each identity in it). It subclasses ``DistributedSampler`` so that Lightning
  keeps it under DDP: every rank draws the same global sequence of batches and takes its share.
* ``read_teacher_embeddings``: precomputed teacher embeddings keyed by image path.
* ``FaceDataModule``: training identities, a held-out identity split and/or LFW for validation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import v2

from backbone.errors import BadInputError
from backbone.mobilenet import IMAGENET_MEAN, IMAGENET_STD
from backbone.ranges import CropScale, NonNegativeInt, PositiveInt, Resolution, Share, int_range
from datasets.base import OutputNames, TaskDataModule
from datasets.demo.faces import ensure_demo_faces
from datasets.embedding_files import read_teacher_embeddings
from datasets.face_shards import face_data_meta, face_records, restore_from_shards
from datasets.images import IMAGE_SUFFIXES, read_rgb
from datasets.lfw import LfwPairs, read_pairs
from datasets.packed import PackedPaths, trim_heap
from datasets.pk_sampler import PKSampler
from datasets.shards import ShardImages, ShardsOrder, ShardSplit

# Which evaluation set an image of the validation split belongs to.
SOURCE_LFW, SOURCE_HELDOUT = 0, 1
HELDOUT_SEED = 1503  # the held-out identities are a fixed, seeded choice: the same in every run
# K of a P x K triplet batch: an identity needs 2 images in a batch to give a positive pair.
ImagesPerIdentity = int_range(2)


def validates_on_lfw(root: str | None, lfw_root: str | None) -> bool:
    """Whether a ``FaceDataModule`` of these options has LFW pairs (the demo brings its own)."""
    return lfw_root is not None or root is None


def _image_names(folder: str) -> list[str]:
    """The image files directly in ``folder``, sorted, hidden ones left out (``image_files``' rule,
    from one ``scandir``: VGGFace2 has 3.3M files in 9k folders)."""
    with os.scandir(folder) as entries:
        return sorted(
            entry.name
            for entry in entries
            if entry.name.lower().endswith(IMAGE_SUFFIXES) and not entry.name.startswith(".") and entry.is_file()
        )


def identity_images(root: Path) -> dict[str, PackedPaths]:
    """``{identity: its images}`` for every identity folder under ``root`` that holds images, sorted.

    Each identity's paths are packed (``datasets.packed``): a VGGFace2-sized list is two arrays per
    identity instead of 3.3M ``Path`` objects that every loader worker would copy on read."""
    if not root.is_dir():
        raise BadInputError(f"The identity folder {str(root)!r} does not exist; expected <identity>/*.jpg folders.")
    found = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith("."):
            names = _image_names(entry.path)
            if names:
                found[entry.name] = PackedPaths.in_folder(root / entry.name, names)
    if not found:
        raise BadInputError(f"No identity folders with images (<identity>/*.jpg) were found under {str(root)!r}.")
    return found


def split_heldout(identities: Sequence[str], fraction: float, parts: int = 1) -> list[set[str]]:
    """``parts`` disjoint seeded choices of ``fraction`` of the identities each (at least 2 when any),
    held out of training: validation, then test."""
    if fraction <= 0:
        return [set() for _ in range(parts)]
    count = max(2, round(fraction * len(identities)))
    if count * parts >= len(identities) - 1:
        raise BadInputError(
            f"Holding out {parts} x {fraction} of {len(identities)} identities leaves fewer than 2 to train on; "
            "lower --data.heldout_fraction, add identities, or give --data.lfw_root / --data.test_root to test on."
        )
    order = np.random.default_rng(HELDOUT_SEED).permutation(len(identities))
    shares = [{identities[i] for i in order[k * count : (k + 1) * count]} for k in range(parts)]
    return shares


def face_train_transform(resolution: int, min_scale: float) -> v2.Compose:
    """Aligned face crops: a mild random-resized crop and a flip (FaceNet: random crop + flip)."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.RandomResizedCrop(resolution, scale=(min_scale, 1.0), ratio=(0.9, 1.1), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def face_eval_transform(resolution: int) -> v2.Compose:
    """The whole (already cropped) face resized to resolution x resolution."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((resolution, resolution), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def describe_eval_transform(resolution: int) -> dict[str, Any]:
    """What ``face_eval_transform`` does, as recorded beside a face index."""
    return {"resize": [resolution, resolution], "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


class FaceImages(Dataset[dict[str, Any]]):
    """Images with an identity label (-1: none), their evaluation source and optional teacher vectors.

    Paths, labels and sources are flat arrays (``datasets.packed``), shared by loader workers."""

    def __init__(
        self,
        paths: Sequence[Path],
        labels: Sequence[int] | np.ndarray,
        transform: v2.Transform,
        sources: Sequence[int] | np.ndarray | None = None,
        teacher: np.ndarray | None = None,
        shards: ShardImages | None = None,
    ) -> None:
        self.shards = shards  # the images read from shards (item i is image i) instead of the files
        self.paths = paths if isinstance(paths, PackedPaths) else PackedPaths.of(paths)
        self.labels = np.asarray(labels, dtype=np.int32).reshape(-1)  # 3.3M labels: 13 MB, not 26
        count = len(self.paths)
        self.sources = np.full(count, SOURCE_HELDOUT, np.int8) if sources is None else np.asarray(sources, np.int8)
        self.transform = transform
        self.teacher = teacher

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        teacher = torch.from_numpy(self.teacher[index]) if self.teacher is not None else torch.empty(0)
        path = self.paths[index]
        return {
            "image": self.transform(read_rgb(path) if self.shards is None else self.shards.read(index)),
            "label": int(self.labels[index]),
            "index": index,
            "source": int(self.sources[index]),
            "teacher": teacher,
            "path": str(path),
        }


class FaceDataModule(TaskDataModule):
    """Training identities; validation identities that select and calibrate; test pairs that do neither.

    - ``val`` (checkpoint selection, the threshold's calibration): identities held out of training
      (a seeded ``heldout_fraction`` of ``root``, or ``heldout_root``).
    - ``test`` (the figures to report): LFW's pairs (``lfw_root``), else the identities of
      ``test_root``, else a second seeded share of ``root`` (as large as the held-out one),
      never used in training or selection. With no held-out identities at all the model is
      selected on LFW, and that is said once.

    Args:
        root: ``<identity>/*.jpg`` folders; None uses the built-in demo identities (and demo LFW).
        lfw_root: a folder with ``lfw/<Name>/<Name>_0001.jpg`` and ``pairs.txt``: the test pairs.
        heldout_root: validation identity folders; default a held-out share of ``root``.
        heldout_fraction: the share of ``root``'s identities held out for validation when no
            ``heldout_root`` is given (seeded, the same in every run); 0 keeps all for training.
        test_root: test identity folders when there is no LFW.
        images_per_identity: K of the P x K training batches; P = ``batch_size // K`` (checked when
            training; evaluation and predict batches may have any size).
        teacher_embeddings: precomputed teacher embeddings for distillation (``read_teacher_embeddings``).
        min_scale: smallest area fraction of the training crop.
        shards, shards_order: the splits read from shards (``datasets.face_shards``): the identities
            held out and the LFW pairs are then the writer's, and the options choosing them unused.
    """

    layout = "<identity>/*.jpg folders (VGGFace2 / CASIA-WebFace layout)"

    def __init__(
        self,
        root: str | None = None,
        resolution: Resolution = 224,
        batch_size: PositiveInt = 64,
        num_workers: NonNegativeInt = 2,
        predict_dir: str | None = None,
        lfw_root: str | None = None,
        heldout_root: str | None = None,
        heldout_fraction: Share = 0.1,
        images_per_identity: ImagesPerIdentity = 4,
        teacher_embeddings: str | None = None,
        min_scale: CropScale = 0.8,
        test_root: str | None = None,
        shards: str | None = None,
        shards_order: ShardsOrder = "index",
    ) -> None:
        super().__init__(root, resolution, batch_size, num_workers, predict_dir, shards, shards_order)
        self.images_per_identity = images_per_identity
        self.teacher_embeddings = teacher_embeddings
        self.min_scale = min_scale
        if self.shards is not None:
            restore_from_shards(self)
            return
        if lfw_root is None and self.uses_demo:  # the demo brings its own LFW-layout set (validates_on_lfw)
            lfw_root = str(self.root.parent / "lfw")
        self.lfw_root = Path(lfw_root).expanduser() if lfw_root else None
        if self.lfw_root is not None and not self.lfw_root.is_dir():
            raise BadInputError(
                f"The LFW root {str(self.lfw_root)!r} does not exist; expected a folder with lfw/ and pairs.txt."
            )
        everyone = identity_images(self.root)
        trim_heap()  # the scan's freed names (3.3M on VGGFace2)
        needs_test_share = self.lfw_root is None and test_root is None
        # validation share first, then (only when nothing else can test) a test share of the same size
        shares = split_heldout(list(everyone), heldout_fraction, parts=1 + needs_test_share)
        if heldout_root is not None:
            heldout = identity_images(Path(heldout_root).expanduser())
            shares = [set(), shares[0]] if needs_test_share else [set()]
        else:
            heldout = {name: everyone[name] for name in shares[0]}
        test = {name: everyone[name] for name in shares[-1]} if needs_test_share else {}
        if test_root is not None:
            test = identity_images(Path(test_root).expanduser())
        if not test and self.lfw_root is None:
            test = heldout  # said below: nothing else to test on
        # Identities of a separate --data.heldout_root / --data.test_root may share names with root's.
        kept_out = (set() if heldout_root is not None else set(heldout)) | (set() if test_root else set(test))
        self.train_identities = {n: f for n, f in everyone.items() if n not in kept_out}
        self.heldout_identities = heldout
        self.test_identities = test
        if self.lfw_root is None and not heldout:
            raise BadInputError(
                "Nothing to validate on: give --data.lfw_root (LFW) or hold out identities "
                "(--data.heldout_fraction > 0 or --data.heldout_root)."
            )
        self.lfw_pairs = read_pairs(self.lfw_root) if self.lfw_root is not None else None
        if not heldout:
            _say(
                "No validation identities (--data.heldout_fraction 0, no --data.heldout_root): the checkpoint is "
                "selected on LFW's pairs, the same pairs 'test' reports, so its LFW figures are optimistic."
            )
        elif test is heldout:
            _say(
                "No --data.lfw_root, --data.test_root or test share of --data.root (--data.heldout_fraction 0): "
                "'test' reports the validation identities that selected the checkpoint."
            )
        elif self.lfw_root is None and test_root is None:
            _say(
                f"No --data.lfw_root or --data.test_root: testing on {len(test)} further identities of --data.root "
                "held out of training and of checkpoint selection."
            )

    def demo_root(self) -> Path:
        return ensure_demo_faces() / "identities"

    def train_dataset(self) -> Dataset:
        files = list(self.train_identities.values())
        paths = PackedPaths.concat(files)
        counts = np.asarray([len(f) for f in files], np.int64)
        labels = np.repeat(np.arange(len(files), dtype=np.int32), counts)
        # Each identity's paths become a view of the training arrays: one copy of 3.3M paths, not two.
        ends = np.cumsum(counts)
        for name, start, end in zip(self.train_identities, ends - counts, ends, strict=True):
            self.train_identities[name] = paths.slice(int(start), int(end))
        teacher = None
        if self.teacher_embeddings is not None:
            teacher = read_teacher_embeddings(self.teacher_embeddings, paths, self.root)
        return FaceImages(paths, labels, face_train_transform(self.resolution, self.min_scale), teacher=teacher)

    # --- shards (datasets.face_shards) --------------------------------------------------------
    def shard_data_meta(self) -> dict[str, Any]:
        return face_data_meta(self)

    def shard_samples(self, split: str) -> tuple[list[Path], list[dict[str, Any]]]:
        dataset = self.dataset(split)
        assert isinstance(dataset, FaceImages)
        return face_records(self, dataset)

    def dataset_from_shards(self, split: str, shard: ShardSplit, images: ShardImages) -> Dataset:
        paths = [Path(path) for path in shard.column("path")]  # training ones: under --data.root, as the teacher's
        train, teacher = split == "train", None
        if train and self.teacher_embeddings is not None:
            teacher = read_teacher_embeddings(self.teacher_embeddings, paths, Path())
        transform = (
            face_train_transform(self.resolution, self.min_scale) if train else face_eval_transform(self.resolution)
        )
        return FaceImages(paths, shard.column("label"), transform, shard.column("source"), teacher, images)

    def val_dataset(self) -> Dataset:
        if not self.heldout_identities:
            return self._evaluation_set(self.lfw_pairs, {})
        return self._evaluation_set(None, self.heldout_identities)

    def test_dataset(self) -> Dataset:
        return self._evaluation_set(self.lfw_pairs, {} if self.lfw_pairs is not None else self.test_identities)

    def _evaluation_set(self, pairs: LfwPairs | None, identities: dict[str, PackedPaths]) -> FaceImages:
        """LFW's pair images (first, in ``pairs.images`` order, labelled by person) and/or identity folders."""
        parts: list[PackedPaths] = []
        labels: list[np.ndarray] = []
        sources: list[np.ndarray] = []
        if pairs is not None:
            people = {name: label for label, name in enumerate(sorted({p.parent.name for p in pairs.images}))}
            parts.append(PackedPaths.of(pairs.images))
            labels.append(np.asarray([people[p.parent.name] for p in pairs.images], np.int64))
            sources.append(np.full(len(pairs.images), SOURCE_LFW, np.int8))
        offset = int(labels[0].max()) + 1 if labels and len(labels[0]) else 0
        for label, files in enumerate(identities.values(), start=offset):
            parts.append(files)
            labels.append(np.full(len(files), label, np.int64))
            sources.append(np.full(len(files), SOURCE_HELDOUT, np.int8))
        return FaceImages(
            PackedPaths.concat(parts),
            np.concatenate(labels) if labels else np.empty(0, np.int64),
            face_eval_transform(self.resolution),
            sources=np.concatenate(sources) if sources else np.empty(0, np.int8),
        )

    def predict_transform(self) -> v2.Compose:
        return face_eval_transform(self.resolution)

    def setup(self, stage: str) -> None:
        # Only training batches are P x K: validate, test and predict take any batch size (batches
        # of one image compute each embedding alone, the same to the last bit on any DDP rank).
        batch, k = self.batch_size, self.images_per_identity
        if stage == "fit" and (batch < 2 * k or batch % k):
            raise BadInputError(
                "A triplet batch is P identities x K images (P, K >= 2): --data.batch_size must be a multiple of "
                f"--data.images_per_identity of at least twice it; got {batch} and {k}."
            )
        super().setup(stage)

    def output_names(self, stage: str) -> OutputNames:
        """No named outputs: the embedding's units are not named by the data (identities are only used by the
        loss, and evaluation compares embeddings with each other), so any identity set fits."""
        return {}

    def train_sampler(self, dataset: Dataset) -> PKSampler:
        trainer = getattr(self, "trainer", None)
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        assert isinstance(dataset, FaceImages)
        return PKSampler(
            dataset.labels,
            identities_per_batch=self.batch_size // self.images_per_identity,
            images_per_identity=self.images_per_identity,
            num_replicas=replicas,
            rank=rank,
        )


@rank_zero_only
def _say(message: str) -> None:
    """Print once (rank 0 under DDP)."""
    print(message, flush=True)


def batch_teacher(batch: dict[str, Any]) -> Tensor | None:
    """The batch's teacher embeddings, or None when the data has none."""
    teacher = batch.get("teacher")
    return teacher if isinstance(teacher, Tensor) and teacher.numel() else None
