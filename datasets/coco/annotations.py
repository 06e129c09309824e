"""Reading a COCO instances JSON: its declared format, the one reader, the cleaned boxes.

The format (``INSTANCES``) is declared once, as data, and every file is held to it by the one
checker (``datasets.json_schema.check``) before anything else reads it: the keys each record needs,
their JSON types (a number written as a string is refused, not coerced), ``bbox`` lists of 4
numbers, image sizes above 0, integer ids, unique ids of images, annotations and categories, and
every annotation's ``image_id`` / ``category_id`` naming a listed image / category. A departure ends
in one sentence naming the file, the record and the key.

What the format does not refuse is a box's geometry: a box with no width or height, or sticking out
of its image, is dropped or clipped when reading and counted in one warning per file, as
torchvision's COCO references do; real COCO 2017 holds a few such boxes. ``clean_boxes`` states
the rule for one image; ``datasets.coco.compact`` applies it to every box of a split at once and is
held to it box for box (``tests/test_compact_data.py``; the data benchmark's anchor uses it too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datasets.json_schema import Field, JsonFormat, Table, check
from datasets.text import read_json

Target = dict[str, Any]

# --------------------------------------------------------------------------------------------
# The format: COCO's "instances" annotation file (https://cocodataset.org/#format-data)
# --------------------------------------------------------------------------------------------
_ID = Field("integer")
_IMAGES = Table(
    "images",
    "image",
    {
        "id": _ID,
        "file_name": Field("string", nonempty=True),
        "width": Field("integer", above=0),
        "height": Field("integer", above=0),
    },
    min_count=1,
)
_CATEGORIES = Table("categories", "category", {"id": _ID, "name": Field("string")}, min_count=1, plural="categories")
INSTANCES = JsonFormat(
    "annotation file",
    "a COCO instances JSON file",
    (
        _IMAGES,
        Table(
            "annotations",
            "annotation",
            {
                "id": _ID,
                "image_id": _ID,
                "category_id": _ID,
                # [x, y, width, height] in the image's pixels; the geometry is cleaned, not refused
                "bbox": Field("list", items="number", length=4),
                "area": Field("number", required=False, at_least=0),
                "iscrowd": Field("integer", required=False, one_of=(0, 1)),
            },
            refs={"image_id": "images", "category_id": "categories"},
        ),
        _CATEGORIES,
    ),
)
# COCO's image-info files (image_info_test-dev2017.json): the images to predict, no annotations.
IMAGE_INFO = JsonFormat(
    "image-info file",
    "a COCO image-info file (such as image_info_test-dev2017.json)",
    (
        Table(
            "images",
            "image",
            {
                "id": _ID,
                "file_name": Field("string", nonempty=True),
                "width": Field("integer", required=False, above=0),
                "height": Field("integer", required=False, above=0),
            },
            min_count=1,
        ),
        Table(
            "categories",
            "category",
            {"id": _ID, "name": Field("string", required=False)},
            required=False,
            plural="categories",
        ),
    ),
)


def read_coco_json(path: str | Path, fmt: JsonFormat = INSTANCES) -> dict[str, Any]:
    """The content of the COCO JSON ``path``, read as UTF-8 (``datasets.text.read_json``) and held
    to ``fmt``; refused in one sentence naming the file, the record and the key otherwise."""
    data = read_json(path, fmt.kind, fmt.expected)
    check(fmt, data, path)
    return data


def read_annotation_json(path: str | Path) -> dict[str, Any]:
    """A COCO instances file, checked against ``INSTANCES`` (see ``read_coco_json``)."""
    return read_coco_json(path, INSTANCES)


# --------------------------------------------------------------------------------------------
# Cleaning the boxes: what training is shown is what evaluation scores against
# --------------------------------------------------------------------------------------------
def _with_area(ann: Mapping[str, Any], bbox: list[float]) -> dict[str, Any]:
    """``ann`` with ``bbox`` and an ``area`` (w x h when missing or zero, as torchvision's
    ``convert_to_coco_api`` does: pycocotools' evaluation needs it to bin small/medium/large)."""
    area = ann.get("area")
    if not isinstance(area, (int, float)) or not area > 0:
        area = bbox[2] * bbox[3]
    return {**ann, "bbox": bbox, "area": float(area)}


def clean_boxes(
    annotations: Sequence[Mapping[str, Any]], width: float, height: float, category_to_label: Mapping[int, int]
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]], int, int, int]:
    """Turn one image's COCO annotations (already checked against ``INSTANCES``) into training
    targets and the ground truth to score.

    Returns ``(boxes xyxy float32 (N, 4), labels int64 (N,), kept annotations, n_crowd, n_clipped,
    n_dropped)``. Crowd regions are not training targets (they would teach the model one box
    around a whole crowd) but stay in the ground truth, where COCO's evaluator ignores detections
    matched to them. Boxes sticking out of the image are clipped; boxes with no width/height
    (before or after clipping, < 1 pixel) are dropped, because torchvision's detectors refuse
    them deep in the loss. The kept annotations (clipped, with an ``area``) are what evaluation
    scores against, so a model is never scored on a box it was never shown as valid.
    """
    boxes: list[list[float]] = []
    labels: list[int] = []
    kept: list[dict[str, Any]] = []
    n_crowd = n_clipped = n_dropped = 0
    for ann in annotations:
        x, y, w, h = (float(v) for v in ann["bbox"])
        if w <= 0 or h <= 0:
            n_dropped += 1
            continue
        x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
        if x2 - x1 < 1 or y2 - y1 < 1:  # outside the image, or a sliver once clipped
            n_dropped += 1
            continue
        if (x1, y1, x2, y2) != (x, y, x + w, y + h):
            n_clipped += 1
        kept.append(_with_area(ann, [x1, y1, x2 - x1, y2 - y1]))
        if ann.get("iscrowd", 0):
            n_crowd += 1
            continue
        boxes.append([x1, y1, x2, y2])
        labels.append(category_to_label[int(ann["category_id"])])
    return (
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(labels, np.int64),
        kept,
        n_crowd,
        n_clipped,
        n_dropped,
    )
