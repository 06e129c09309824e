"""The base of every task's data module: the data root or the demo, the splits, the loaders.

A task's data module subclasses ``TaskDataModule`` and fills in only what its layout defines::

    class MyData(TaskDataModule):
        layout = "train.csv, test.csv and images/<IMG_ID>"      # named in error messages

        def demo_root(self) -> Path:          # generate (once) the built-in demo in this layout
            return ensure_my_demo()

        def train_dataset(self) -> Dataset: ...
        def val_dataset(self) -> Dataset: ...
        def predict_transform(self) -> Callable[[Image], Tensor]: ...   # for --data.predict_dir
        # test_dataset() defaults to val_dataset(); predict_dataset() to --data.predict_dir's
        # images (PredictFolder) or else test_dataset()

Everything else is shared: ``--data.root`` checked (one sentence naming it) or, when absent, the
demo generated and announced once on rank zero; datasets built lazily once per split; loaders
with an exact evaluation sampler under DDP, an optional training ``sampler`` (``train_sampler``)
and the class's ``collate_fn``/``worker_init_fn``.

``--data.shards URI`` reads the splits from shards instead (``datasets.shards``; written by
``python -m tasks.shards write``): a layout that supports them defines three hooks, what the
writer stores and how a split is rebuilt from it, through the same dataset class and transforms::

        def shard_data_meta(self) -> dict: ...                   # the data's names (classes ...)
        def shard_samples(self, split) -> (image paths, records)  # split's samples, in order
        def dataset_from_shards(self, split, shard, images) -> Dataset
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from PIL.Image import Image
from pytorch_lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from backbone.errors import BadInputError
from backbone.ranges import NonNegativeInt, PositiveInt, Resolution
from datasets.demo.cache import announce_demo
from datasets.images import PredictFolder, collate_with_info
from datasets.loading import make_loader
from datasets.shards import ShardImages, ShardsOrder, ShardSource, ShardSplit, shards_uri

SPLITS = ("train", "val", "test", "predict")
# {head: [the name of each of its output units, in order]}: see ``TaskDataModule.output_names``.
OutputNames = dict[str, list[str]]


class TaskDataModule(LightningDataModule):
    """Root/demo handling, lazily built splits and loaders for one task's data.

    Args:
        root: the dataset folder in its public layout; None uses the built-in demo set.
        resolution: input size in pixels (linked from ``--resolution``, whose default is the task's
            declaration: ``tasks.<task>.task``).
        batch_size: samples per batch and per process.
        num_workers: DataLoader worker processes.
        predict_dir: a folder of images (searched recursively) for ``predict``; default the test split.
        shards: a shard set (a local folder or an s3://, gs://, azure://, r2:// URI) to read the
            splits from instead of ``root`` (``datasets.shards``).
        shards_order: the training order from shards: ``index`` (the task's own sampler: the same
            batches as from ``root``) or ``stream`` (litdata's chunk-wise shuffle, each rank its own
            chunks, resumed mid-epoch from a checkpoint).
    """

    layout: ClassVar[str] = "the dataset's public layout"
    collate_fn: ClassVar[Callable[[list[Any]], Any] | None] = None
    worker_init_fn: ClassVar[Callable[[int], None] | None] = None

    def __init__(
        self,
        root: str | None = None,
        resolution: Resolution = 224,
        batch_size: PositiveInt = 32,
        num_workers: NonNegativeInt = 2,
        predict_dir: str | None = None,
        shards: str | None = None,
        shards_order: ShardsOrder = "index",
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.predict_dir = predict_dir
        if shards is not None and root is not None:
            raise BadInputError(
                "Give --data.root or --data.shards, not both: shards hold the images and labels of the data they "
                "were written from."
            )
        self.shards = None if shards is None else ShardSource(shards_uri(shards), type(self), self._shards_hint)
        self.shards_order = shards_order
        self.uses_demo = root is None and shards is None
        # None when the splits come from shards: a layout reads nothing under a root then.
        self.root: Path = None if shards is not None else self._resolve_root(root)  # type: ignore[assignment]
        self._datasets: dict[str, Dataset] = {}

    def _resolve_root(self, root: str | None) -> Path:
        if root is None:
            folder = self.demo_root()
            announce_demo(folder)
            return folder
        path = Path(root).expanduser()
        if not path.is_dir():
            raise BadInputError(
                f"The data root {str(path)!r} does not exist or is not a folder; expected {self.layout}."
            )
        return path

    # --- what a layout defines ---------------------------------------------------------------
    def demo_root(self) -> Path:
        """Generate (once) and return the built-in demo set, in this layout."""
        raise NotImplementedError

    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def val_dataset(self) -> Dataset:
        raise NotImplementedError

    def test_dataset(self) -> Dataset:
        return self.dataset("val")

    def predict_transform(self) -> Callable[[Image], Tensor]:
        """The evaluation transform for ``--data.predict_dir`` images (a PIL RGB image in)."""
        raise NotImplementedError

    def predict_dataset(self) -> Dataset:
        if self.predict_dir is not None:
            return PredictFolder(self.predict_dir, self.predict_transform())
        return self.dataset("test")

    def train_sampler(self, dataset: Dataset) -> Sampler | None:
        """The training order; None shuffles (see ``make_loader`` for DDP)."""
        return None

    # --- shards (datasets.shards): what a layout that supports them defines ----------------------
    def shard_data_meta(self) -> dict[str, Any]:
        """The data's names that a split needs before any image (classes, categories ...), as JSON."""
        raise NotImplementedError(f"{type(self).__name__} does not support shards.")

    def shard_samples(self, split: str) -> tuple[list[Path], list[dict[str, Any]]]:
        """The image file and the label record (a JSON object, the same keys for each) of every
        sample of ``split``, in the split's order."""
        raise NotImplementedError(f"{type(self).__name__} does not support shards.")

    def dataset_from_shards(self, split: str, shard: ShardSplit, images: ShardImages) -> Dataset:
        """``split``'s dataset rebuilt from its manifest (``shard.columns``: the records as columns)
        with its images read from ``images``: the folder layout's dataset class and transforms."""
        raise NotImplementedError(f"{type(self).__name__} does not support shards.")

    def predict_from_shards(self) -> Dataset:
        """What ``predict`` reads from shards without ``--data.predict_dir``: the test split."""
        return self.dataset("test")

    def output_names(self, stage: str) -> OutputNames | None:
        """What each output unit of the model means in this data: ``{head: [name of unit 0, ...]}``.

        Every checkpoint records the names of the data it was trained on (``tasks.checkpoints.TaskStamp``)
        and a checkpoint is used (``--ckpt_path``) only with data whose names are the same, in the
        same order (``tasks.guards``): a count alone let a model score each attribute against
        another's labels. ``stage`` is Lightning's (``fit``, ``validate``, ``test``, ``predict``);
        None means that the data of ``stage`` does not refer to the outputs by index (nothing to
        compare), ``{}`` that the model has no named outputs. Every layout declares it.
        """
        raise NotImplementedError(f"{type(self).__name__} does not declare output_names().")

    # --- shared ------------------------------------------------------------------------------
    def dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` (train, val, test, predict), built once."""
        if split not in self._datasets and self.shards is not None:
            self._datasets[split] = self._dataset_from_shards(split)
        if split not in self._datasets:
            builder = {
                "train": self.train_dataset,
                "val": self.val_dataset,
                "test": self.test_dataset,
                "predict": self.predict_dataset,
            }[split]
            self._datasets[split] = builder()
        return self._datasets[split]

    def _dataset_from_shards(self, split: str) -> Dataset:
        """``split`` read from ``--data.shards``: predict is ``--data.predict_dir`` or the test split, and
        a layout that tests on its val split (no ``test_dataset`` of its own) reads val's shards."""
        assert self.shards is not None
        if split == "predict":
            return self.predict_dataset() if self.predict_dir is not None else self.predict_from_shards()
        own_test = type(self).test_dataset is not TaskDataModule.test_dataset
        if split == "test" and not own_test and not self.shards.has("test"):
            return self.dataset("val")
        shard = self.shards.split(split)
        return self.dataset_from_shards(split, shard, ShardImages(shard))

    def _shards_hint(self, split: str) -> str:
        """The command that writes ``split``'s shards of this data (for a sentence)."""
        from tasks.spec import all_tasks  # only when a sentence needs the task's name

        names = [spec.name for spec in all_tasks() if spec.data is type(self)] or ["<task>"]
        uri = self.shards.uri if self.shards is not None else "URI"
        return f"'python -m tasks.shards write --task {names[0]} --split {split} --out {uri}'"

    def setup(self, stage: str) -> None:
        """Build (once) the splits ``stage`` needs, so bad input is reported before any step."""
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("predict",)}[stage]
        for split in needed:
            self.dataset(split)

    def loader(self, split: str) -> DataLoader:
        """The DataLoader of ``split``: shuffled (or ``train_sampler``) for train, exact for eval."""
        dataset = self.dataset(split)
        train = split == "train"
        collate = collate_with_info if isinstance(dataset, PredictFolder) else type(self).collate_fn
        if train and self.shards is not None and self.shards_order == "stream":
            return self._stream_loader(dataset)
        return make_loader(
            dataset,
            train=train,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            trainer=getattr(self, "trainer", None),
            sampler=self.train_sampler(dataset) if train else None,
            collate_fn=collate,
            worker_init_fn=type(self).worker_init_fn,
        )

    def _stream_loader(self, dataset: Dataset) -> DataLoader:
        """``--data.shards_order stream`` (``datasets.shard_stream``): litdata's order, not the task's sampler."""
        if self.train_sampler(dataset) is not None:
            raise BadInputError(
                "--data.shards_order stream trains in litdata's streamed order, but this task's training batches come "
                "from its own sampler (e.g. P identities x K images); use --data.shards_order index."
            )
        from datasets.shard_stream import stream_loader  # imports litdata

        return stream_loader(
            dataset,
            self.batch_size,
            self.num_workers,
            type(self).collate_fn,
            type(self).worker_init_fn,
            torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train")

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.loader("predict")
