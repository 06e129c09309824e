"""The geolocation evaluation protocol: multi-crop test views and several named test sets per run.

GeoEstimation (Müller-Budack et al., ECCV 2018) scores every test photo by five crops and reports
Im2GPS, Im2GPS3k and YFCC4k side by side. What their code does (TIBHannover/GeoEstimation,
``classification/dataset.py`` ``FiveCropImageDataset`` and ``classification/train_base.py``
``_multi_crop_inference``): resize the short side to 256, take torchvision's ``FiveCrop(224)``
(the four corners and the center), softmax each crop's logits per partition, take the MAX over
the crops of each cell's probability, then (with several partitions) multiply along the hierarchy;
the predicted cell is the argmax. ``--data.test_crops 5`` is that view at any ``--resolution``
(the short side resized to resolution / 0.875, the project's evaluation resize: 256 at 224);
``10`` adds the horizontal flips (torchvision's ``TenCrop``); ``1`` is the single center crop.
The reduction over crops is the model's (``tasks.geolocation.model.multi_crop_log_probs``).

``--data.test_sets`` names several test sets, each a folder in the layout of ``--data.root``'s
test split (``test.csv`` with ``IMG_ID,LAT,LON`` and ``images/<IMG_ID>``). ``test`` then scores
each with its own loader and logs its metrics under its name (``im2gps/acc_25km``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from backbone.errors import BadInputError
from backbone.mobilenet import IMAGENET_MEAN, IMAGENET_STD
from datasets.base import TaskDataModule
from datasets.image_list import classification_eval_transform
from datasets.loading import make_loader

# --data.test_crops: 1 (center), 5 (GeoEstimation's FiveCrop), 10 (FiveCrop and its flips).
EvalCrops = Literal[1, 5, 10]
EVAL_CROP_FRACTION = 0.875  # the crop is 0.875 of the resized short side (224 of 256), as GeoEstimation's
# A set's name prefixes its metric names (``<name>/acc_25km``) and its error-curve file name.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
TEST_SET_LAYOUT = "a folder with test.csv (IMG_ID,LAT,LON columns) and images/<IMG_ID>"


class MultiCrop:
    """K views of an image stacked as one (K, C, H, W) tensor: ``v2.FiveCrop``/``v2.TenCrop`` of the
    resized image, each normalised. (``v2.Lambda`` cannot stack them: v2 applies it to each view.)"""

    def __init__(self, resolution: int, crops: int) -> None:
        views = v2.FiveCrop(resolution) if crops == 5 else v2.TenCrop(resolution)
        self.views = v2.Compose(
            [v2.ToImage(), v2.Resize(round(resolution / EVAL_CROP_FRACTION), antialias=True), views]
        )
        self.finish = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __call__(self, image: Any) -> Tensor:
        return self.finish(torch.stack([torch.as_tensor(view) for view in self.views(image)]))


def eval_transform(resolution: int, crops: int = 1) -> v2.Transform | MultiCrop:
    """The test view: one center crop (``crops`` 1), or ``crops`` views stacked as (K, C, H, W)."""
    if crops == 1:
        return classification_eval_transform(resolution, EVAL_CROP_FRACTION)
    if crops not in (5, 10):
        raise BadInputError(f"--data.test_crops is {crops}; expected one of 1, 5, 10.")
    return MultiCrop(resolution, crops)


def check_test_sets(sets: Mapping[str, str] | None) -> dict[str, Path]:
    """``--data.test_sets`` as {name: folder}, each checked before any work (one sentence each)."""
    checked: dict[str, Path] = {}
    for name, root in (sets or {}).items():
        if not _NAME.fullmatch(str(name)):
            raise BadInputError(
                f"--data.test_sets has a set named {name!r}; expected a name of letters, digits, '_', '.' or '-' "
                "(it prefixes the metric names, as in im2gps/acc_25km)."
            )
        folder = Path(str(root)).expanduser()
        if not folder.is_dir():
            raise BadInputError(
                f"--data.test_sets {name}: the folder {str(folder)!r} does not exist; expected {TEST_SET_LAYOUT}."
            )
        if not (folder / "test.csv").is_file():
            raise BadInputError(
                f"--data.test_sets {name}: the folder {str(folder)!r} has no test.csv; expected {TEST_SET_LAYOUT}."
            )
        checked[str(name)] = folder
    return checked


class EvalProtocol(TaskDataModule):
    """The test side of a geotagged-photo data module: crops, named sets, their loaders.

    A layout subclasses it, calls ``set_test_protocol`` in its ``__init__`` and defines
    ``test_photos(root, transform)``: the test split of a folder in its layout.
    """

    test_crops: int
    test_sets: dict[str, Path]

    def set_test_protocol(self, test_crops: int, test_sets: Mapping[str, str] | None) -> None:
        eval_transform(self.resolution, test_crops)  # refuses a count other than 1, 5, 10 (Python use)
        self.test_crops = test_crops
        self.test_sets = check_test_sets(test_sets)  # before any work: one sentence per bad entry
        self._named: list[Dataset] = []

    def test_photos(self, root: Path, transform: Any) -> Dataset:
        """The test split of ``root`` (a folder in this layout) seen through ``transform``."""
        raise NotImplementedError

    @property
    def test_set_names(self) -> list[str]:
        """The names that prefix each test set's metrics; empty: the root's test split, unprefixed."""
        return list(self.test_sets)

    def named_test_datasets(self) -> list[Dataset]:
        """The sets of ``--data.test_sets``, in their order, each read once."""
        if not self._named:
            transform = eval_transform(self.resolution, self.test_crops)
            self._named = [self.test_photos(root, transform) for root in self.test_sets.values()]
        return self._named

    def test_dataset(self) -> Dataset:
        return self.test_photos(self.root, eval_transform(self.resolution, self.test_crops))

    def predict_transform(self) -> Any:
        return eval_transform(self.resolution, self.test_crops)  # predict reads photos as test does

    def setup(self, stage: str) -> None:
        if stage == "test" and self.test_sets:  # every named set read now: bad input before any step
            self.named_test_datasets()
            return
        super().setup(stage)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """The root's test loader, or one exact loader per named set (each image once across DDP
        ranks: ``datasets.loading.eval_sampler``), in the order of ``test_set_names``."""
        if not self.test_sets:
            return super().test_dataloader()
        kind = type(self)
        return [
            make_loader(
                dataset,
                train=False,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                trainer=getattr(self, "trainer", None),
                collate_fn=kind.collate_fn,
                worker_init_fn=kind.worker_init_fn,
            )
            for dataset in self.named_test_datasets()
        ]
