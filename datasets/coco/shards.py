"""A COCO split in shards (``datasets.shards``): each image's record is its part of ``CompactSplit``.

The record holds the image's id, file name and size, its cleaned annotations as the evaluator's
ground truth has them (id, category, clipped xywh box, area, crowd) and its training targets (xyxy
boxes, labels 1..K). The split is rebuilt from these columns as they were, not cleaned a second
time: cleaning again recomputes ``x + w`` from a clipped box, which can move a coordinate by one
float64 unit and so the float32 target, and a run from shards must see the same targets as one
from the instances file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datasets.coco.compact import CompactSplit
from datasets.json_columns import PackedStrings
from datasets.shards import ShardSplit


def coco_records(split: CompactSplit, image_dir: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    """Each image's file and record, in the split's (id) order."""
    paths, records = [], []
    for index in range(len(split)):
        kept = slice(split.kept_offsets[index], split.kept_offsets[index + 1])
        boxes, labels = split.targets(index)
        name = split.file_names[index]
        paths.append(image_dir / name)
        records.append(
            {
                "image_id": int(split.image_ids[index]),
                "file_name": name,
                "width": int(split.widths[index]),
                "height": int(split.heights[index]),
                "ann_id": split.kept_ids[kept].tolist(),
                "ann_category": split.kept_categories[kept].tolist(),
                "ann_bbox": split.kept_bboxes[kept].tolist(),
                "ann_area": split.kept_areas[kept].tolist(),
                "ann_crowd": split.kept_crowd[kept].tolist(),
                "boxes": boxes.tolist(),  # float32 values, exact through JSON's float64
                "labels": labels.tolist(),
            }
        )
    return paths, records


def _offsets(lists: list[list[Any]]) -> np.ndarray:
    offsets = np.zeros(len(lists) + 1, np.int64)
    np.cumsum([len(item) for item in lists], out=offsets[1:])
    return offsets


def _flat(lists: list[list[Any]], dtype: Any, width: int = 0) -> np.ndarray:
    values = np.asarray([value for item in lists for value in item], dtype=dtype)
    return values.reshape(-1, width) if width else values


def split_from_shards(shard: ShardSplit, category_ids: list[int], category_names: list[str]) -> CompactSplit:
    """The ``CompactSplit`` whose records ``coco_records`` wrote (nothing dropped or clipped again)."""
    kept_ids = shard.column("ann_id")
    boxes = shard.column("boxes")
    crowd = _flat(shard.column("ann_crowd"), np.int8)
    return CompactSplit(
        image_ids=np.asarray(shard.column("image_id"), np.int64),
        file_names=PackedStrings.from_list(shard.column("file_name")),
        widths=np.asarray(shard.column("width"), np.int32),
        heights=np.asarray(shard.column("height"), np.int32),
        kept_offsets=_offsets(kept_ids),
        kept_ids=_flat(kept_ids, np.int64),
        kept_categories=_flat(shard.column("ann_category"), np.int64),
        kept_bboxes=_flat(shard.column("ann_bbox"), np.float64, 4),
        kept_areas=_flat(shard.column("ann_area"), np.float64),
        kept_crowd=crowd,
        target_offsets=_offsets(boxes),
        boxes=_flat(boxes, np.float32, 4),
        labels=_flat(shard.column("labels"), np.int64),
        category_ids=tuple(category_ids),
        category_names=tuple(category_names),
        n_crowd=int((crowd == 1).sum()),
        n_clipped=0,  # counted and said when the shards were written
        n_dropped=0,
    )
