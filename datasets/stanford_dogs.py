"""Stanford Dogs (Khosla et al., 2011) in its public layout, for the paper's Table 10.

``<root>/Images/<wnid>-<breed>/*.jpg``, ``<root>/lists/train_list.mat`` and
``<root>/lists/test_list.mat`` (MATLAB files: ``file_list`` cells of paths relative to
``Images/``, ``labels`` 1-based), and optionally ``<root>/Annotation/<wnid>-<breed>/<image id>``
(PASCAL VOC XML with the dog's bounding box) to crop each image to its dog.

The paper also trained on noisy web images of the breeds before fine-tuning: ``extra_root``
adds a folder of ``<breed>/*.jpg`` (breed matched by its folder name, with or without the wnid)
to the training set.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from backbone.errors import BadInputError
from datasets.demo.textures import ensure_dogs_demo
from datasets.image_list import ImageListDataModule, Sample
from datasets.images import image_files
from datasets.schema import Field, Format

# lists/train_list.mat and test_list.mat, declared once (``datasets.schema``): entries are 1-based.
LIST_FORMAT = Format(
    "Stanford Dogs list",
    "a MATLAB file with the cells 'file_list' (paths under Images/, '<wnid>-<breed>/<image>.jpg') and "
    "'labels' (1-based breed numbers), one entry per image",
    (
        Field(
            "file_list",
            str,
            pattern=r"[^/]+/[^/]+",
            pattern_words="'<breed folder>/<image file>'",
            unique=True,
            noun="a path",
        ),
        Field("labels", int, low=1, noun="a breed number"),
    ),
    record="entry",
)


def _cell_text(cell: object) -> str:
    """The string inside one MATLAB cell as scipy.io.loadmat returns it (nested 1-element arrays)."""
    value = cell
    while isinstance(value, np.ndarray):
        if value.size != 1:
            raise ValueError(f"expected one string per cell, got an array of shape {value.shape}")
        value = value.reshape(-1)[0]
    if not isinstance(value, str):
        raise ValueError(f"expected a string in each cell, got a {type(value).__name__}")
    return value


def read_list(path: Path) -> list[tuple[str, int]]:
    """Read ``train_list.mat`` / ``test_list.mat`` (``LIST_FORMAT``): (relative path, 0-based label) pairs."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    fmt = LIST_FORMAT
    path = fmt.require_file(path)
    try:
        content = loadmat(str(path))
        files = [_cell_text(c) for c in np.asarray(content["file_list"]).reshape(-1)]
        labels = np.asarray(content["labels"]).reshape(-1)
    except (KeyError, ValueError, TypeError, OSError, MatReadError) as error:  # MatReadError: empty or cut short
        raise fmt.error(path, None, f"it could not be read ({error}); expected {fmt.layout}") from None
    if len(files) != len(labels):
        raise fmt.error(path, None, f"it has {len(files)} files but {len(labels)} labels; expected one label per file")
    fmt.column(path, "file_list", files, 1)
    codes = fmt.column(path, "labels", labels, 1)
    return [(f, int(label) - 1) for f, label in zip(files, codes.tolist(), strict=True)]


def read_box(path: Path) -> tuple[int, int, int, int]:
    """The union of the dog boxes in one ``Annotation/`` XML file, as (x0, y0, x1, y1)."""
    try:
        boxes = [
            tuple(int(float(b.findtext(k, ""))) for k in ("xmin", "ymin", "xmax", "ymax"))
            for b in ET.parse(path).getroot().iter("bndbox")
        ]
    except (ET.ParseError, ValueError, OSError) as error:
        raise BadInputError(f"The annotation file {str(path)!r} is not a readable VOC XML box: {error}.") from None
    if not boxes:
        raise BadInputError(f"The annotation file {str(path)!r} holds no <bndbox>.")
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    if x1 <= x0 or y1 <= y0:
        raise BadInputError(f"The annotation file {str(path)!r} has an empty box ({x0}, {y0}, {x1}, {y1}).")
    return x0, y0, x1 + 1, y1 + 1  # VOC boxes are inclusive; PIL's crop box is exclusive


class StanfordDogsDataModule(ImageListDataModule):
    """Stanford Dogs for ``tasks.fine_grained``: the official train/test lists, 120 breeds.

    Args (beyond ``ImageListDataModule``'s):
        crop_to_box: crop every image to its dog's box from ``Annotation/``.
        extra_root: a folder of ``<breed>/*.jpg`` noisy web images added to training.
    """

    layout = "Images/<wnid>-<breed>/*.jpg with lists/train_list.mat and lists/test_list.mat"

    def __init__(
        self, root: str | None = None, crop_to_box: bool = False, extra_root: str | None = None, **kwargs: Any
    ) -> None:
        self.crop_to_box = crop_to_box
        self.extra_root = Path(extra_root).expanduser() if extra_root else None
        super().__init__(root, **kwargs)
        if self.extra_root is not None and not self.extra_root.is_dir():
            raise BadInputError(f"The extra training folder {str(self.extra_root)!r} does not exist.")

    def demo_root(self) -> Path:
        return ensure_dogs_demo()

    def read_classes(self) -> list[str]:
        images = self.root / "Images"
        if not images.is_dir():
            raise BadInputError(
                f"The folder {str(images)!r} does not exist; a Stanford Dogs root holds Images/<wnid>-<breed>/ "
                "and lists/train_list.mat, lists/test_list.mat."
            )
        # Label k (1-based in the lists) is the k-th breed folder in sorted order, as in the
        # official release; checked against the lists when they are read.
        return sorted(p.name for p in images.iterdir() if p.is_dir())

    def _samples(self, split: str) -> list[Sample]:
        samples = []
        list_path = self.root / "lists" / f"{split}_list.mat"
        for entry, (relative, label) in enumerate(read_list(list_path), start=1):
            if label >= self.num_classes:
                raise LIST_FORMAT.bad(
                    list_path, entry, "labels", label + 1, f"a breed number up to {self.num_classes}, the breed folders"
                )
            folder = relative.split("/", 1)[0]
            if folder != self.class_names[label]:
                raise LIST_FORMAT.bad(
                    list_path,
                    entry,
                    "file_list",
                    relative,
                    f"a path under {self.class_names[label]!r}, the folder of its label {label + 1}",
                )
            path = self.root / "Images" / relative
            box = None
            if self.crop_to_box:
                box = read_box(self.root / "Annotation" / relative.rsplit(".", 1)[0])
            samples.append(Sample(path, label, box))
        return samples

    def _extra_samples(self) -> list[Sample]:
        assert self.extra_root is not None
        by_breed = {name.split("-", 1)[-1].lower(): i for i, name in enumerate(self.class_names)}
        by_breed.update({name.lower(): i for i, name in enumerate(self.class_names)})
        samples = []
        for folder in sorted(p for p in self.extra_root.iterdir() if p.is_dir()):
            label = by_breed.get(folder.name.lower())
            if label is None:
                raise BadInputError(
                    f"The extra folder {str(folder)!r} does not name a breed of Images/ "
                    f"(expected e.g. {self.class_names[0]!r} or {self.class_names[0].split('-', 1)[-1]!r})."
                )
            samples.extend(Sample(path, label) for path in image_files(folder))
        return samples

    def train_samples(self) -> list[Sample]:
        samples = self._samples("train")
        if self.extra_root is not None:
            samples += self._extra_samples()
        return samples

    def eval_samples(self) -> list[Sample]:
        return self._samples("test")
