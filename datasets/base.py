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
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from PIL.Image import Image
from pytorch_lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from backbone.errors import BadInputError
from backbone.ranges import NonNegativeInt, PositiveInt, Resolution
from datasets.demo.cache import announce_demo
from datasets.images import PredictFolder, collate_with_info
from datasets.loading import make_loader

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
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.predict_dir = predict_dir
        self.uses_demo = root is None
        self.root = self._resolve_root(root)
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
        if split not in self._datasets:
            builder = {
                "train": self.train_dataset,
                "val": self.val_dataset,
                "test": self.test_dataset,
                "predict": self.predict_dataset,
            }[split]
            self._datasets[split] = builder()
        return self._datasets[split]

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

    def train_dataloader(self) -> DataLoader:
        return self.loader("train")

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.loader("predict")
