"""ImageNet-style folders: ``<root>/train/<class>/*.jpg`` and ``<root>/val/<class>/*.jpg``.

This is the layout of ImageNet after the usual val-set sorting script, and of most custom
classification sets. Class indices follow the sorted folder names (as torchvision's
``ImageFolder``), and the val folder must hold the same classes as the train folder.
"""

from __future__ import annotations

from pathlib import Path

from backbone.errors import BadInputError
from datasets.demo.textures import ensure_imagenet_demo
from datasets.image_list import ImageListDataModule, Sample
from datasets.images import image_files


def class_folders(split_dir: Path) -> list[str]:
    """The sorted class folder names of one split, or a clear error if the split is missing."""
    if not split_dir.is_dir():
        raise BadInputError(
            f"The folder {str(split_dir)!r} does not exist; an ImageNet-style root holds "
            "train/<class>/*.jpg and val/<class>/*.jpg."
        )
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir())


class ImageFolderDataModule(ImageListDataModule):
    """ImageNet-style data for ``tasks.classification``; ``val/`` serves validation and test."""

    layout = "train/<class>/*.jpg and val/<class>/*.jpg"

    def demo_root(self) -> Path:
        return ensure_imagenet_demo()

    def read_classes(self) -> list[str]:
        train = class_folders(self.root / "train")
        val = class_folders(self.root / "val")
        if set(val) - set(train):
            extra = sorted(set(val) - set(train))[0]
            raise BadInputError(
                f"The val folder {str(self.root / 'val')!r} has class {extra!r} that train/ does not have; "
                "both splits must use the same class folders."
            )
        return train

    def _samples(self, split: str) -> list[Sample]:
        samples: list[Sample] = []
        for label, name in enumerate(self.class_names):
            folder = self.root / split / name
            if folder.is_dir():
                samples.extend(Sample(path, label) for path in image_files(folder))
        if not samples:
            raise BadInputError(f"No images (.jpg, .png ...) were found under {str(self.root / split)!r}.")
        return samples

    def train_samples(self) -> list[Sample]:
        return self._samples("train")

    def eval_samples(self) -> list[Sample]:
        return self._samples("val")
