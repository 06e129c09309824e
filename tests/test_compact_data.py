"""Compact datasets (issue 20): a COCO split read straight into flat arrays gives what the dict
reader gave, and the fast path words nothing itself (every departure is the checker's sentence,
``tests/test_coco_format.py`` runs them all through it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import datasets.json_columns as json_columns
from backbone.errors import BadInputError
from datasets.coco.annotations import INSTANCES, clean_boxes
from datasets.coco.compact import compact_split
from datasets.json_columns import columns_from_records, read_columns
from datasets.packed import PackedStrings


def _quirky_file() -> dict[str, Any]:
    """Images listed out of id order, boxes outside / across / on the edge of their image, a crowd
    region, areas missing and zero, an image without annotations, unsorted annotation ids."""
    images = [
        {"id": 30, "file_name": "c.jpg", "width": 40, "height": 30},
        {"id": 10, "file_name": "a é.jpg", "width": 64, "height": 48},
        {"id": 20, "file_name": "b.jpg", "width": 20, "height": 20},
    ]
    boxes = [
        (7, 30, 9, [1.5, 2.0, 10.0, 8.0], 0, 40.0),
        (3, 10, 5, [-4.0, 3.0, 20.0, 10.0], 0, None),  # clipped on the left
        (9, 10, 2, [60.0, 40.0, 10.0, 10.0], 1, 0.0),  # crowd, clipped, area 0 -> w x h
        (4, 10, 2, [70.0, 10.0, 5.0, 5.0], 0, 25.0),  # outside: dropped
        (5, 30, 2, [5.0, 5.0, 0.0, 3.0], 0, 1.0),  # no width: dropped
        (6, 30, 5, [39.5, 1.0, 4.0, 4.0], 0, 16.0),  # a sliver once clipped: dropped
        (8, 10, 9, [0.0, 0.0, 64.0, 48.0], 0, 3072.0),
    ]
    annotations = []
    for ann_id, image_id, category, bbox, crowd, area in boxes:
        record: dict[str, Any] = {"id": ann_id, "image_id": image_id, "category_id": category, "bbox": bbox}
        record |= {"iscrowd": crowd} if crowd else {}
        record |= {"area": area} if area is not None else {}
        annotations.append(record)
    categories = [{"id": 9, "name": "nine"}, {"id": 2, "name": "two"}, {"id": 5, "name": "five"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def test_the_compact_split_equals_the_per_image_cleaning(tmp_path: Path) -> None:
    data = _quirky_file()
    label_order = [5, 9, 2]  # label order is the caller's, not the ids' order
    split = compact_split(columns_from_records(INSTANCES, data), label_order, tmp_path / "x.json")
    to_label = {cid: i + 1 for i, cid in enumerate(label_order)}
    kept_all: list[dict[str, Any]] = []
    counts = np.zeros(3, int)
    for index, image in enumerate(sorted(data["images"], key=lambda i: i["id"])):
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        boxes, labels, kept, *n = clean_boxes(anns, image["width"], image["height"], to_label)
        got_boxes, got_labels = split.targets(index)
        np.testing.assert_array_equal(got_boxes, boxes)
        np.testing.assert_array_equal(got_labels, labels)
        assert split.file_names[index] == image["file_name"] and split.image_ids[index] == image["id"]
        kept_all += kept
        counts += n
    assert (split.n_crowd, split.n_clipped, split.n_dropped) == tuple(counts) == (1, 2, 3)
    truth = split.ground_truth()
    expected = [{k: a[k] for k in ("id", "image_id", "category_id", "bbox", "area")} | {"iscrowd": a.get("iscrowd", 0)}
                for a in kept_all]  # fmt: skip
    assert truth["annotations"] == expected
    assert [c["id"] for c in truth["categories"]] == label_order


def test_the_fast_path_reads_a_valid_file_without_the_dict_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _quirky_file()
    data["annotations"][0]["segmentation"] = [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]  # undeclared: skipped
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data), encoding="utf-8")

    def refuse(*args: Any) -> None:
        raise AssertionError("the dict reader ran on a valid file")

    monkeypatch.setattr(json_columns, "read_json", refuse)
    fast = read_columns(INSTANCES, path)
    slow = columns_from_records(INSTANCES, data)
    for table, columns in slow.items():
        for key, values in columns.values.items():
            if isinstance(values, PackedStrings):
                assert fast[table][key].tolist() == values.tolist()
            else:
                np.testing.assert_array_equal(fast[table][key], values)
        for key, mask in columns.present.items():
            np.testing.assert_array_equal(fast[table].present[key], mask)


@pytest.mark.parametrize(
    "change",
    ["id as true", "bbox as strings", "width 0", "iscrowd 2", "unknown image", "NaN area", "not an object"],
)
def test_a_file_the_fast_path_refuses_gets_the_checkers_sentence(change: str, tmp_path: Path) -> None:
    data: Any = _quirky_file()
    ann, image = data["annotations"][0], data["images"][0]
    if change == "id as true":
        ann["id"] = True
    elif change == "bbox as strings":
        ann["bbox"] = ["1", 2, 3, 4]
    elif change == "width 0":
        image["width"] = 0
    elif change == "iscrowd 2":
        ann["iscrowd"] = 2
    elif change == "unknown image":
        ann["image_id"] = 99
    elif change == "NaN area":
        ann["area"] = float("nan")
    else:
        data = [data]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(BadInputError) as fast:
        read_columns(INSTANCES, path)
    with pytest.raises(BadInputError) as slow:
        json_columns.check(INSTANCES, json_columns.read_json(path, INSTANCES.kind, INSTANCES.expected), path)
    assert str(fast.value) == str(slow.value)


def test_the_data_benchmark_probes_both_holdings_on_a_small_synthetic_split(tmp_path: Path) -> None:
    """The ``data`` section's measurement, in-process on 40 images: both ways of holding the split
    read the same targets, and the probe reports set-up, PSS and the workers it measured."""
    from benchmarks.data_probe import DictReference, probe
    from benchmarks.data_synthetic import write_coco_split
    from datasets.coco.dataset import CocoDetection

    annotations = write_coco_split(tmp_path, images=40)
    compact = CocoDetection(tmp_path / "train2017", annotations, 64)
    anchor = DictReference(tmp_path / "train2017", annotations)
    for index in (0, 17, 39):
        np.testing.assert_array_equal(compact.split.targets(index)[0], anchor.targets[index][0])
    assert len(compact.split.ground_truth()["annotations"]) == len(anchor.ground_truth["annotations"])
    row = probe("coco", tmp_path, batches=3, workers=1)
    assert row["setup_s"] > 0 and 0 < row["pss_main_gb"] <= row["pss_all_end_gb"] and row["workers"] == 1


def test_a_packed_identity_tree_reads_as_the_path_lists(tmp_path: Path) -> None:
    """The face identities as packed paths give the anchor's images and labels, and the probe runs."""
    from benchmarks.data_probe import PathListReference, probe
    from benchmarks.data_synthetic import write_identity_tree
    from datasets.face_identities import identity_images

    root = write_identity_tree(tmp_path, identities=7, images=40)
    packed = identity_images(root)
    anchor = PathListReference(root)
    assert [p for files in packed.values() for p in files] == anchor.paths
    assert sum(map(len, packed.values())) == 40 and len(packed) == 7
    row = probe("faces", tmp_path, batches=2, workers=0)
    assert row["setup_s"] > 0 and row["pss_all_end_gb"] > 0


def test_packed_views_and_concatenation_keep_every_string() -> None:
    from datasets.packed import PackedPaths

    words = ["a", "", "héllo", "x" * 300, "b/c"]
    packed = PackedStrings.from_list(words)
    view = packed.slice(1, 4)
    assert view.tolist() == words[1:4] and view.data is packed.data  # a view, no copy
    assert PackedStrings.concat([view, packed.slice(0, 1), packed]).tolist() == words[1:4] + words[:1] + words
    paths = PackedPaths.of(["/r/a/1.jpg", "/r/b/2.jpg", "/r/a/3.jpg"])
    assert paths.folders == ("/r/a", "/r/b") and paths.folder_of.tolist() == [0, 1, 0]
    joined = PackedPaths.concat([paths.slice(1, 3), PackedPaths.in_folder("/s", ["z.png"])])
    assert [str(p) for p in joined] == ["/r/b/2.jpg", "/r/a/3.jpg", "/s/z.png"]
