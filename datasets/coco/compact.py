"""A COCO split as flat numpy arrays: what training and evaluation read, and nothing else.

The split is held the way detectron2 holds its datasets (``DatasetFromList(serialize=True)``):
a few arrays with offsets instead of a dict and a list per image and per annotation. On
COCO 2017 train that is about 80 MB instead of the parsed file's 3.5 GB of Python objects, built
in seconds (``datasets.json_columns``), and DataLoader workers forked from the process share the
arrays' pages for the whole run: reading a numpy element touches no reference count, so nothing
is copied on read and the workers do not grow over an epoch.

The cleaning rule is ``clean_boxes``' (``datasets.coco.annotations``), vectorised: a box with no
width or height, or under a pixel once clipped to its image, is dropped; a box sticking out is
clipped; crowd regions stay in the ground truth (the evaluator ignores detections on them) but
are not training targets. ``tests/test_coco_data.py`` holds the two to the same output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backbone.errors import BadInputError
from datasets.json_columns import Columns
from datasets.packed import PackedStrings


@dataclass(frozen=True)
class CompactSplit:
    """One split's images and cleaned annotations (see the module docstring).

    Images are in id order; ``kept_*`` are the cleaned annotations (crowd regions included) in
    image order, the file's order within an image, image ``i``'s being rows
    ``kept_offsets[i]:kept_offsets[i + 1]``; ``boxes`` / ``labels`` are the training targets
    (kept, not crowd) with ``target_offsets``.
    """

    image_ids: np.ndarray
    file_names: PackedStrings
    widths: np.ndarray
    heights: np.ndarray
    kept_offsets: np.ndarray
    kept_ids: np.ndarray
    kept_categories: np.ndarray
    kept_bboxes: np.ndarray  # xywh, float64, clipped
    kept_areas: np.ndarray
    kept_crowd: np.ndarray
    target_offsets: np.ndarray
    boxes: np.ndarray  # xyxy, float32
    labels: np.ndarray  # int64, 1..K
    category_ids: tuple[int, ...]
    category_names: tuple[str, ...]
    n_crowd: int
    n_clipped: int
    n_dropped: int

    def __len__(self) -> int:
        return len(self.image_ids)

    def targets(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``index``'s training boxes (xyxy float32 (N, 4)) and labels (int64 (N,))."""
        start, end = self.target_offsets[index], self.target_offsets[index + 1]
        return self.boxes[start:end], self.labels[start:end]

    def ground_truth(self) -> dict[str, Any]:
        """The split as the COCO dict evaluation indexes: its images, the cleaned annotations
        (with an ``area``, crowd regions included) and the categories. Built when asked, on the
        rank that scores, not held by every process."""
        owner = np.repeat(self.image_ids, np.diff(self.kept_offsets))
        return {
            "images": [
                {"id": int(i), "file_name": self.file_names[k], "width": int(w), "height": int(h)}
                for k, (i, w, h) in enumerate(zip(self.image_ids, self.widths, self.heights, strict=True))
            ],
            "annotations": [
                {
                    "id": int(a),
                    "image_id": int(i),
                    "category_id": int(c),
                    "bbox": b.tolist(),
                    "area": float(s),
                    "iscrowd": int(z),
                }  # fmt: skip
                for a, i, c, b, s, z in zip(
                    self.kept_ids,
                    owner,
                    self.kept_categories,
                    self.kept_bboxes,
                    self.kept_areas,
                    self.kept_crowd,
                    strict=True,
                )
            ],
            "categories": [{"id": c, "name": n} for c, n in zip(self.category_ids, self.category_names, strict=True)],
        }


def _offsets(owner: np.ndarray, count: int) -> np.ndarray:
    offsets = np.zeros(count + 1, np.int64)
    np.cumsum(np.bincount(owner, minlength=count), out=offsets[1:])
    return offsets


def compact_split(tables: Mapping[str, Columns], category_ids: Sequence[int] | None, where: str | Path) -> CompactSplit:
    """``tables`` (a checked COCO instances file's columns, ``read_columns(INSTANCES, ...)``) as a
    ``CompactSplit`` whose labels follow ``category_ids`` (label = index + 1; default: this file's
    categories by id). ``where`` names the file in the one sentence for an unknown category."""
    images, annotations = tables["images"], tables["annotations"]
    categories = tables.get("categories")
    names: dict[int, str] = {}
    if categories is not None:
        names = dict(zip(categories["id"].tolist(), categories["name"].tolist(), strict=True))
    label_ids = np.asarray(sorted(names) if category_ids is None else list(category_ids), np.int64)

    order = np.argsort(images["id"], kind="stable")
    image_ids = images["id"][order]
    widths, heights = images["width"][order], images["height"][order]
    owner = np.searchsorted(image_ids, annotations["image_id"])  # every image_id is listed (checked)
    category = annotations["category_id"]
    known = np.isin(category, label_ids)
    if not known.all():
        unknown = sorted(set(category[~known].tolist()))
        raise BadInputError(
            f"The annotation file {str(where)!r} uses category ids {unknown[:10]} that are not in the category "
            f"list {label_ids[:10].tolist()}...; expected every id to be listed."
        )

    # clean_boxes' rule, on every box at once (same float64 arithmetic, same comparisons)
    x, y, w, h = annotations["bbox"].T
    width, height = widths[owner].astype(np.float64), heights[owner].astype(np.float64)
    x1, y1 = np.maximum(x, 0.0), np.maximum(y, 0.0)
    x2, y2 = np.minimum(x + w, width), np.minimum(y + h, height)
    kept = (w > 0) & (h > 0) & (x2 - x1 >= 1) & (y2 - y1 >= 1)
    clipped = kept & ((x1 != x) | (y1 != y) | (x2 != x + w) | (y2 != y + h))
    crowd = np.zeros(len(x), np.int8)
    if "iscrowd" in annotations.values:
        crowd = annotations["iscrowd"].astype(np.int8) * annotations.present.get("iscrowd", True)
    bbox = np.stack([x1, y1, x2 - x1, y2 - y1], 1)
    area = bbox[:, 2] * bbox[:, 3]
    if "area" in annotations.values:
        given = annotations["area"]
        usable = annotations.present.get("area", np.ones(len(x), bool)) & (given > 0)
        area = np.where(usable, given, area)

    rows = np.flatnonzero(kept)
    rows = rows[np.argsort(owner[rows], kind="stable")]  # image order, the file's order within an image
    train = rows[crowd[rows] == 0]
    sorter = np.argsort(label_ids)  # label_ids is in label order, not necessarily sorted
    label_of = sorter[np.searchsorted(label_ids, category, sorter=sorter)]
    return CompactSplit(
        image_ids=image_ids,
        file_names=images["file_name"].take(order),
        widths=widths.astype(np.int32),
        heights=heights.astype(np.int32),
        kept_offsets=_offsets(owner[rows], len(image_ids)),
        kept_ids=annotations["id"][rows],
        kept_categories=category[rows],
        kept_bboxes=bbox[rows],
        kept_areas=area[rows],
        kept_crowd=crowd[rows],
        target_offsets=_offsets(owner[train], len(image_ids)),
        boxes=np.stack([x1, y1, x2, y2], 1)[train].astype(np.float32),
        labels=(label_of[train] + 1).astype(np.int64),
        category_ids=tuple(int(c) for c in label_ids),
        category_names=tuple(names.get(int(c), str(int(c))) for c in label_ids),
        n_crowd=int((crowd[rows] == 1).sum()),
        n_clipped=int(clipped.sum()),
        n_dropped=int((~kept).sum()),
    )
