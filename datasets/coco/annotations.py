"""Reading a COCO instances JSON: the checked records, the cleaned boxes, the pycocotools index."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from backbone.errors import BadInputError

Target = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Reading the annotation file
# --------------------------------------------------------------------------------------------
def read_json_object(path: Path, expected: str, kind: str = "annotation file") -> dict[str, Any]:
    """The JSON object in ``path``, or one sentence naming the file and ``expected``."""
    if not path.is_file():
        raise BadInputError(f"The {kind} {str(path)!r} does not exist; expected {expected} there.")
    try:
        with path.open("rb") as handle:
            data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadInputError(f"The {kind} {str(path)!r} is not valid JSON ({error}); expected {expected}.") from None
    if not isinstance(data, dict):
        raise BadInputError(f"The {kind} {str(path)!r} holds a {type(data).__name__}; expected a COCO JSON object.")
    return data


def read_annotation_json(path: Path) -> dict[str, Any]:
    """Load a COCO annotation file and check the keys this loader relies on.

    Raises ``BadInputError`` (one sentence naming the file) for a missing file, invalid JSON or a
    record without the required keys, instead of a ``KeyError`` deep inside a DataLoader worker.
    """
    data = read_json_object(path, "a COCO instances JSON file")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise BadInputError(
                f"The annotation file {str(path)!r} has no {key!r} list; expected the COCO instances format."
            )
    _check_records(path, data["images"], ("id", "file_name", "width", "height"), "image")
    _check_records(path, data["annotations"], ("id", "image_id", "category_id", "bbox"), "annotation")
    _check_records(path, data["categories"], ("id", "name"), "category")
    if not data["categories"]:
        raise BadInputError(f"The annotation file {str(path)!r} lists no categories; expected at least one.")
    if not data["images"]:
        raise BadInputError(f"The annotation file {str(path)!r} lists no images; expected at least one.")
    seen: set[int] = set()
    for info in data["images"]:
        if int(info["id"]) in seen:
            raise BadInputError(
                f"The annotation file {str(path)!r} lists image id {info['id']} twice; expected unique image ids."
            )
        seen.add(int(info["id"]))
    return data


def _check_records(path: Path, records: list[Any], keys: tuple[str, ...], kind: str) -> None:
    for record in records:
        if not isinstance(record, dict) or any(k not in record for k in keys):
            missing = [k for k in keys if not isinstance(record, dict) or k not in record]
            raise BadInputError(
                f"The annotation file {str(path)!r} has an {kind} record without {missing} "
                f"(record: {str(record)[:80]}); every {kind} needs {list(keys)}."
            )


def coco_from_dict(data: dict[str, Any], coco_cls: type = COCO) -> Any:
    """A ``COCO`` index (pycocotools', or faster-coco-eval's ``coco_cls``) over an already-loaded
    annotation dict: no second JSON read, and without the "creating index..." prints."""
    coco = coco_cls()
    coco.dataset = data
    with redirect_stdout(StringIO()):
        coco.createIndex()
    return coco


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
    """Turn one image's COCO annotations into training targets and the ground truth to score.

    Returns ``(boxes xyxy float32 (N, 4), labels int64 (N,), kept annotations, n_crowd, n_clipped,
    n_dropped)``. Crowd regions are not training targets (they would teach the model one box
    around a whole crowd) but stay in the ground truth, where COCO's evaluator ignores detections
    matched to them. Boxes sticking out of the image are clipped; boxes with no width/height
    (before or after clipping, < 1 pixel) or with non-finite numbers are dropped, because
    torchvision's detectors refuse them deep in the loss. The kept annotations (clipped, with an
    ``area``) are what evaluation scores against, so a model is never scored on a box it was
    never shown as valid.
    """
    boxes: list[list[float]] = []
    labels: list[int] = []
    kept: list[dict[str, Any]] = []
    n_crowd = n_clipped = n_dropped = 0
    for ann in annotations:
        try:
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (TypeError, ValueError):
            n_dropped += 1
            continue
        if not all(np.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
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
