"""The one way the project reads images and lists image folders.

``read_rgb`` decodes with PIL and forces the whole decode (``Image.load``), so a truncated or
damaged file fails *here*, naming the file, instead of arriving half-grey in a batch (OpenCV and
libjpeg only print "Premature end of JPEG file" and return the partial image). PIL does not apply
EXIF orientation, which is what annotation files (COCO boxes, CelebA) refer to: the stored pixels.

``PredictFolder`` is the ``predict`` input of every task: every image under a folder, recursively,
hidden files (``.DS_Store``, macOS ``._x.jpg`` forks) ignored; an unreadable file is reported and
skipped (``collate_with_info`` drops it from its batch) rather than ending a long run.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from backbone.errors import BadInputError

# Image files every loader accepts.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def image_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files in ``folder`` (and its subfolders if ``recursive``), sorted, hidden ones left out."""
    if recursive:
        found = [
            Path(dirpath) / name
            for dirpath, dirnames, names in os.walk(folder)
            for name in names
            if not any(part.startswith(".") for part in Path(dirpath).relative_to(folder).parts)
        ]
        return sorted(p for p in found if _is_image(p))
    return sorted(p for p in folder.iterdir() if _is_image(p) and p.is_file())


def read_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Decode ``path`` completely as an RGB PIL image, or raise one sentence naming it."""
    path = Path(path)
    try:
        return _decode(path)
    except FileNotFoundError:
        raise BadInputError(f"The image file {str(path)!r} does not exist.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise BadInputError(
            f"The image file {str(path)!r} could not be read as an image ({error}); expected a complete JPEG or PNG."
        ) from None


def decode_rgb(data: bytes | memoryview, name: str) -> Image.Image:
    """``read_rgb`` for an image file's bytes held elsewhere (a shard): ``name`` says where in the sentence."""
    try:
        return _decode(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise BadInputError(
            f"The image {name} could not be read as an image ({error}); expected a complete JPEG or PNG."
        ) from None


def _decode(source: Path | io.BytesIO) -> Image.Image:
    with Image.open(source) as image:
        image.load()  # decode now: a truncated file raises here, not later as grey pixels
        return image.convert("RGB")


def read_rgb_array(path: str | os.PathLike[str]) -> np.ndarray:
    """``read_rgb`` as an RGB uint8 array (H, W, 3), for OpenCV/albumentations pipelines."""
    return np.asarray(read_rgb(path))


class PredictFolder(Dataset[Any]):
    """Every image under ``folder`` (recursively, sorted) for ``predict``.

    An item is ``(transform(image), info)`` with ``info = {"path", "name", "index", "orig_size": (h, w)}``
    (``name``: the path relative to ``folder``, unique where file names repeat across subfolders),
    or ``None`` for a file that cannot be read (reported once by name; ``collate_with_info`` drops
    it), so one bad photo among thousands does not end the run.
    """

    def __init__(self, folder: str | os.PathLike[str], transform: Callable[[Image.Image], Any]) -> None:
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise BadInputError(
                f"The prediction folder {str(self.folder)!r} does not exist; expected a folder of images."
            )
        self.files = image_files(self.folder, recursive=True)
        if not self.files:
            raise BadInputError(
                f"The prediction folder {str(self.folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})."
            )
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Any, dict[str, Any]] | None:
        path = self.files[index]
        try:
            image = read_rgb(path)
        except BadInputError as error:
            warnings.warn(f"Skipped: {error}", stacklevel=1)
            return None
        name = path.relative_to(self.folder).as_posix()
        info = {"path": str(path), "name": name, "index": index, "orig_size": (image.height, image.width)}
        return self.transform(image), info


def collate_with_info(
    batch: Sequence[tuple[Tensor, dict[str, Any]] | None],
) -> tuple[Tensor, list[dict[str, Any]]] | None:
    """Stack the images, keep the per-image info dicts as a list; unreadable items dropped."""
    items = [item for item in batch if item is not None]
    if not items:
        return None
    return default_collate([item[0] for item in items]), [item[1] for item in items]
