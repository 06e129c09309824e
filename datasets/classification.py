"""What the two classification data sets share: image reading, transforms, the data module.

``ImageListDataset`` is a list of (path, label[, box]) read with PIL; a file that is missing or
cannot be decoded raises ``BadInputError`` naming it. ``ClassificationDataModule`` turns a
``splits()`` method of its subclasses into loaders with the transforms of the paper's recipe
(Section 4: "less regularization and data augmentation techniques because small models have
less trouble with overfitting": a random-resized crop with a moderate scale range and a flip).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from pytorch_lightning import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from backbone.errors import BadInputError
from backbone.mobilenet import IMAGENET_MEAN, IMAGENET_STD
from datasets.demo import announce_demo
from datasets.loading import make_loader


@dataclass(frozen=True)
class Sample:
    """One labelled image; ``box`` (x0, y0, x1, y1 in pixels) is an optional crop."""

    path: Path
    label: int
    box: tuple[int, int, int, int] | None = None


def read_rgb(path: Path) -> Image.Image:
    """Open ``path`` as an RGB image, or raise one clear sentence naming it."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise BadInputError(f"Image file {str(path)!r} does not exist.") from None
    except (UnidentifiedImageError, OSError) as error:
        raise BadInputError(f"Image file {str(path)!r} could not be read as an image ({error}).") from None


def train_transform(resolution: int, min_scale: float = 0.5) -> v2.Compose:
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


def eval_transform(resolution: int, crop_fraction: float = 0.875) -> v2.Compose:
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
    """Images and labels from a list of ``Sample``; crops to ``sample.box`` when one is given."""

    def __init__(self, samples: Sequence[Sample], transform: v2.Transform) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        sample = self.samples[index]
        image = read_rgb(sample.path)
        if sample.box is not None:
            image = image.crop(sample.box)
        return self.transform(image), sample.label


class ClassificationDataModule(LightningDataModule):
    """Base data module: subclasses fill ``train_samples``/``eval_samples`` and ``class_names``.

    Args:
        root: the dataset folder in its public layout; None uses the built-in demo set.
        resolution: the input size (linked from ``--resolution``).
        batch_size: images per batch and per process.
        num_workers: DataLoader worker processes.
        min_scale: smallest area fraction of the random-resized crop.
    """

    def __init__(
        self,
        root: str | None = None,
        resolution: int = 224,
        batch_size: int = 32,
        num_workers: int = 2,
        min_scale: float = 0.5,
    ) -> None:
        super().__init__()
        self.resolution = resolution
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.min_scale = min_scale
        if root is None:
            self.root = self.demo_root()
            announce_demo(self.root)
        else:
            self.root = Path(root).expanduser()
            if not self.root.is_dir():
                raise BadInputError(f"The data root {str(self.root)!r} does not exist or is not a folder.")
        self.class_names: list[str] = self.read_classes()
        if not self.class_names:
            raise BadInputError(f"No classes were found under the data root {str(self.root)!r}.")
        self.train_set: ImageListDataset | None = None
        self.eval_set: ImageListDataset | None = None

    # --- what a layout defines ---------------------------------------------------------------
    def demo_root(self) -> Path:
        """Generate (once) and return the demo set in this layout."""
        raise NotImplementedError

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

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_set is None:
            self.train_set = ImageListDataset(self.train_samples(), train_transform(self.resolution, self.min_scale))
        if self.eval_set is None:
            self.eval_set = ImageListDataset(self.eval_samples(), eval_transform(self.resolution))

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        return make_loader(
            dataset,
            train=train,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            trainer=getattr(self, "trainer", None),
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        assert self.eval_set is not None
        return self._loader(self.eval_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()
