"""Where a CelebA copy keeps its lists and images: the layouts in circulation, each read in place.

CelebA is found today in three shapes, and none is converted: ``--data.root`` points at the folder
as it was unpacked, and the files are looked for in this order (the first found is read)::

    attribute list   list_attr_celeba.txt          the data root (this project's flat layout)
                     Anno/list_attr_celeba.txt     the official release's folders
                     list_attr_celeba.csv          Kaggle's copy (image_id column, -1/1 values)
    partition list   list_eval_partition.txt       the data root
                     Eval/list_eval_partition.txt  the official release
                     list_eval_partition.csv       Kaggle's copy (image_id,partition)
    images           img_align_celeba/                       flat, and the official zip unpacked in place
                     img_align_celeba/img_align_celeba/      Kaggle's copy (the zip's folder inside a folder)
                     Img/img_align_celeba/                   the official release's folders
                     img_align_celeba_png/, Img/img_align_celeba_png/
                                                             the official PNG variant: the lists say
                                                             000001.jpg, the file is 000001.png

Each list is found on its own, so a mixed copy (Kaggle's CSVs beside the official ``Eval/``) is read
too. Kaggle's ``list_bbox_celeba.csv`` and ``list_landmarks_align_celeba.csv`` are not needed for the
aligned images and are ignored. The image folder is the first one that holds the first image of the
attribute list (so a missing image elsewhere is reported by name, not taken for another layout).
Anything else is one sentence naming what was looked for.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backbone.errors import BadInputError
from datasets.attribute_files import (
    ATTRIBUTE_FILE,
    IMAGE_FOLDER,
    KAGGLE_ATTRIBUTE_FILE,
    KAGGLE_PARTITION_FILE,
    PARTITION_FILE,
    read_attribute_csv,
    read_attribute_file,
    read_partition_csv,
    read_partition_file,
)

Reader = Callable[..., Any]
# (path under the root, its reader), in the order they are looked for.
ATTRIBUTE_LISTS: tuple[tuple[str, Reader], ...] = (
    (ATTRIBUTE_FILE, read_attribute_file),
    (f"Anno/{ATTRIBUTE_FILE}", read_attribute_file),
    (KAGGLE_ATTRIBUTE_FILE, read_attribute_csv),
)
PARTITION_LISTS: tuple[tuple[str, Reader], ...] = (
    (PARTITION_FILE, read_partition_file),
    (f"Eval/{PARTITION_FILE}", read_partition_file),
    (KAGGLE_PARTITION_FILE, read_partition_csv),
)
PNG_FOLDER = "img_align_celeba_png"
# (folder under the root, the suffix its files have in place of the lists' .jpg, or None).
IMAGE_FOLDERS: tuple[tuple[str, str | None], ...] = (
    (IMAGE_FOLDER, None),
    (f"{IMAGE_FOLDER}/{IMAGE_FOLDER}", None),
    (f"Img/{IMAGE_FOLDER}", None),
    (PNG_FOLDER, ".png"),
    (f"Img/{PNG_FOLDER}", ".png"),
)


def _looked_for(paths: Sequence[str]) -> str:
    return ", ".join(paths[:-1]) + f" or {paths[-1]}" if len(paths) > 1 else paths[0]


@dataclass(frozen=True)
class CelebALayout:
    """The files of one CelebA copy: its two lists and its image folder.

    ``image_suffix`` replaces the suffix of the lists' image names (``.png`` for the PNG variant,
    whose lists still say ``.jpg``); None keeps the names as listed.
    """

    root: Path
    attribute_file: Path
    partition_file: Path
    image_folder: Path
    image_suffix: str | None = None

    def image_path(self, name: str) -> Path:
        """The file of the image the lists call ``name``."""
        path = self.image_folder / name
        return path if self.image_suffix is None else path.with_suffix(self.image_suffix)

    def describe(self) -> str:
        """The three places, relative to the root: ``Anno/list_attr_celeba.txt, ... and Img/img_align_celeba/``."""
        files = [p.relative_to(self.root).as_posix() for p in (self.attribute_file, self.partition_file)]
        images = self.image_folder.relative_to(self.root).as_posix() + "/"
        suffix = f" ({self.image_suffix} files for the lists' .jpg names)" if self.image_suffix else ""
        return f"{files[0]}, {files[1]} and {images}{suffix}"


@dataclass(frozen=True)
class CelebA:
    """A CelebA copy read in place: where its files are, and what its two lists say."""

    layout: CelebALayout
    attribute_names: list[str]
    image_names: list[str]
    labels: np.ndarray  # (N, A) 0/1 uint8, rows in image_names' order
    partition: np.ndarray  # (N,) 0 train, 1 val, 2 test


def _first_file(root: Path, candidates: Sequence[tuple[str, Reader]], what: str) -> tuple[Path, Reader]:
    for relative, reader in candidates:
        if (root / relative).is_file():
            return root / relative, reader
    looked = [relative for relative, _ in candidates]
    raise BadInputError(f"The data root {str(root)!r} holds no CelebA {what}; looked for {_looked_for(looked)}.")


def _holds_images(folder: Path, suffix: str) -> bool:
    """Whether ``folder`` directly holds a file ending in ``suffix`` (stops at the first one)."""
    try:
        with os.scandir(folder) as entries:
            return any(entry.name.lower().endswith(suffix) and entry.is_file() for entry in entries)
    except OSError:
        return False


def _image_folder(root: Path, first_image: str | None) -> tuple[Path, str | None]:
    """The first of ``IMAGE_FOLDERS`` holding ``first_image``, else the first holding any image of its
    kind (a missing image is then reported by name when its split is read), else one sentence."""
    candidates = [(root / folder, suffix) for folder, suffix in IMAGE_FOLDERS]
    if first_image is not None:
        for folder, suffix in candidates:
            path = folder / first_image
            if (path if suffix is None else path.with_suffix(suffix)).is_file():
                return folder, suffix
    for folder, suffix in candidates:
        if _holds_images(folder, suffix or Path(first_image or "x.jpg").suffix.lower()):
            return folder, suffix
    shown = [f"{folder}/" for folder, _ in IMAGE_FOLDERS]
    image = f"neither {first_image!r} nor any other CelebA image" if first_image else "no CelebA image"
    raise BadInputError(
        f"The data root {str(root)!r} holds {image} in the image folders looked for: {_looked_for(shown)}."
    )


def read_celeba(root: Path) -> CelebA:
    """The CelebA copy at ``root`` in whichever layout it has (see the module docstring)."""
    attribute_file, read_labels = _first_file(root, ATTRIBUTE_LISTS, "attribute list")
    partition_file, read_partition = _first_file(root, PARTITION_LISTS, "partition list")
    names, images, labels = read_labels(attribute_file)
    partition = read_partition(partition_file, images, attribute_file.name)
    folder, suffix = _image_folder(root, images[0] if images else None)
    layout = CelebALayout(root, attribute_file, partition_file, folder, suffix)
    return CelebA(layout, names, images, labels, partition)
