"""Images listed by a COCO image-info JSON, for ``predict`` (``--data.predict_ann``).

COCO's test-dev labels are not public: its results are scored by the evaluation server, which
wants the ``image_id`` of ``image_info_test-dev2017.json`` on every detection. That file is a COCO
JSON with ``images`` (and ``categories``) but no ``annotations``; this dataset reads it, so
``predict`` keeps its ids and ``predictions.json`` can be submitted as it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor
from torch.utils.data import Dataset

from backbone.errors import BadInputError
from datasets.coco.annotations import IMAGE_INFO, read_coco_json
from datasets.coco.transforms import resize_only, to_tensor
from datasets.images import read_rgb_array


def read_image_info_json(path: Path, category_ids: list[int]) -> list[dict[str, Any]]:
    """The ``images`` of an image-info JSON, held to ``IMAGE_INFO`` (ids unique integers, file
    names, sizes above 0 when given), and its categories (when it lists any) the model's
    ``category_ids``, so the results' category ids mean what the server expects."""
    data = read_coco_json(path, IMAGE_INFO)
    categories = data.get("categories")
    if categories:
        listed = sorted(int(c["id"]) for c in categories)
        if listed != sorted(category_ids):
            raise BadInputError(
                f"The image-info file {str(path)!r} lists category ids {listed[:10]} but the model predicts "
                f"{sorted(category_ids)[:10]}; expected the categories the model was trained on."
            )
    return data["images"]


class CocoImageInfo(Dataset[tuple[Tensor, dict[str, Any]]]):
    """The images of an image-info JSON in ``image_dir``, resized for the model.

    An item is ``(image, info)`` with ``info = {"image_id", "path", "name", "orig_size",
    "input_size"}`` (sizes as (h, w)), what ``DetectionModule.predict_records`` reads.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike[str],
        info_file: str | os.PathLike[str],
        resolution: int,
        category_ids: list[int],
    ) -> None:
        self.image_dir = Path(image_dir)
        self.info_file = Path(info_file)
        self.resolution = resolution
        self.images = read_image_info_json(self.info_file, category_ids)
        if not self.image_dir.is_dir():
            raise BadInputError(
                f"The image folder {str(self.image_dir)!r} does not exist; expected the images "
                f"{str(self.info_file)!r} lists (--data.predict_images)."
            )
        present = set(os.listdir(self.image_dir))
        for info in self.images:
            if info["file_name"] not in present and not (self.image_dir / info["file_name"]).is_file():
                raise BadInputError(
                    f"The image file {str(self.image_dir / info['file_name'])!r} listed in {str(self.info_file)!r} "
                    "does not exist; expected every listed image in the image folder."
                )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        info = self.images[index]
        path = self.image_dir / info["file_name"]
        image = read_rgb_array(path)
        height, width = image.shape[:2]
        listed = (info.get("width"), info.get("height"))
        if None not in listed and (width, height) != (int(listed[0]), int(listed[1])):  # type: ignore[arg-type]
            raise BadInputError(
                f"The image file {str(path)!r} is {width}x{height} pixels but {str(self.info_file)!r} says "
                f"{listed[0]}x{listed[1]}; expected the two to agree."
            )
        resized, _ = resize_only(image, np.zeros((0, 4), np.float32), self.resolution)
        record = {
            "image_id": int(info["id"]),
            "path": str(path),
            "name": str(info["file_name"]),
            "orig_size": (height, width),
            "input_size": tuple(resized.shape[:2]),
        }
        return to_tensor(resized), record
