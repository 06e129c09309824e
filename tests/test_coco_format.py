"""COCO's instances JSON as a declared format: every departure refused in one sentence naming the file,
the record and the key (issue 16).

Each damage below used to end otherwise: a category id given twice in an IndexError traceback from
the evaluator, a box or an id written as a string accepted without a word (and then coerced by
``float()``/``int()``), an annotation of an unlisted image dropped with a warning, a box of 3
numbers dropped silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from backbone.errors import BadInputError
from datasets.coco.image_info import read_image_info_json
from tasks.detection.task import TASK as detection
from tests.probes import (
    COCO_CATEGORIES,
    expect_one_sentence,
    metrics_files,
    one_torch_thread,
    tiny_run_args,
    write_coco,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

Data = dict[str, Any]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


def _set(table: str, index: int, **values: Any) -> Callable[[Data], None]:
    return lambda data: data[table][index].update(values)


def _drop(table: str, index: int, key: str) -> Callable[[Data], None]:
    return lambda data: data[table][index].pop(key)


# name -> (the change to the file (the val split's: 3 images 1001-1003, one box each, categories
# 3 and 7), what the one sentence must say after "The annotation file '<path>' ").
DAMAGES: dict[str, tuple[Callable[[Data], None], str]] = {
    "category_id_twice": (
        lambda data: data["categories"].append({"id": 3, "name": "another square"}),
        r"has categories\[2\] with 'id' 3, which categories\[0\] already has; expected unique category ids",
    ),
    "annotation_id_twice": (
        _set("annotations", 2, id=1001),
        r"has annotations\[2\] with 'id' 1001, which annotations\[0\] already has; expected unique annotation ids",
    ),
    "bbox_of_strings": (
        _set("annotations", 1, bbox=["5", "6", "48", "40"]),
        r"has annotations\[1\] \(id 1002\) with 'bbox' \[\"5\", \"6\", \"48\", \"40\"\]; "
        r"expected a list of 4 JSON numbers",
    ),
    "bbox_of_3_numbers": (
        _set("annotations", 1, bbox=[5.0, 6.0, 48.0]),
        r"has annotations\[1\] \(id 1002\) with 'bbox' \[5.0, 6.0, 48.0\]; expected a list of 4 JSON numbers",
    ),
    "bbox_not_a_list": (
        _set("annotations", 0, bbox="4 6 48 40"),
        r"has annotations\[0\] \(id 1001\) with 'bbox' \"4 6 48 40\"; expected a list of 4 JSON numbers",
    ),
    "category_id_a_string": (
        _set("annotations", 0, category_id="3"),
        r"has annotations\[0\] \(id 1001\) with 'category_id' \"3\"; expected an integer",
    ),
    "image_id_of_no_image": (
        _set("annotations", 2, image_id=999),
        r"has annotations\[2\] \(id 1003\) with 'image_id' 999, which no image in 'images' has",
    ),
    "category_id_of_no_category": (
        _set("annotations", 2, category_id=12),
        r"has annotations\[2\] \(id 1003\) with 'category_id' 12, which no category in 'categories' has",
    ),
    "iscrowd_a_string": (
        _set("annotations", 0, iscrowd="0"),
        r"has annotations\[0\] \(id 1001\) with 'iscrowd' \"0\"; expected one of 0, 1",
    ),
    "area_a_string": (
        _set("annotations", 0, area="1920"),
        r"has annotations\[0\] \(id 1001\) with 'area' \"1920\"; expected a JSON number of at least 0",
    ),
    "width_zero": (
        _set("images", 1, width=0),
        r"has images\[1\] \(id 1002\) with 'width' 0; expected an integer above 0",
    ),
    "height_a_string": (
        _set("images", 1, height="80"),
        r"has images\[1\] \(id 1002\) with 'height' \"80\"; expected an integer above 0",
    ),
    "image_id_a_fraction": (
        _set("images", 0, id=1001.5),
        r"has images\[0\] with 'id' 1001.5; expected an integer",
    ),
    "image_without_file_name": (
        _drop("images", 2, "file_name"),
        r"has images\[2\] \(id 1003\) without 'file_name'; expected every image to have 'file_name'",
    ),
    "annotation_without_bbox": (
        _drop("annotations", 1, "bbox"),
        r"has annotations\[1\] \(id 1002\) without 'bbox'; expected every annotation to have 'bbox'",
    ),
    "category_not_an_object": (
        lambda data: data["categories"].append("person"),
        r"has categories\[2\] holding a string; expected a JSON object",
    ),
}


def _damage(path: Path, change: Callable[[Data], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_departure_from_the_format_is_one_sentence_naming_file_record_and_key(
    damage: str, tiny_detector: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change, pattern = DAMAGES[damage]
    root = write_coco(tmp_path / "coco", train=2, val=3)
    path = root / "annotations" / "instances_val2017.json"
    _damage(path, change)
    runs = tmp_path / "runs"
    args = ["validate", *tiny_run_args(root, runs, "--ckpt_path", tiny_detector, resolution=128, batch_size=2)]
    expect_one_sentence(
        detection.main, args, rf"^error: The annotation file '{re.escape(str(path))}' {pattern}", capsys
    )
    assert not metrics_files(runs)


def test_the_train_file_is_held_to_the_same_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_coco(tmp_path / "coco", train=2, val=3)
    path = root / "annotations" / "instances_train2017.json"
    _damage(path, _set("annotations", 1, bbox=[4, 6, "48", 40]))
    runs = tmp_path / "runs"
    args = ["fit", *tiny_run_args(root, runs, "--trainer.max_steps", "1", resolution=128, batch_size=2)]
    pattern = rf"^error: The annotation file '{re.escape(str(path))}' "
    pattern += r"has annotations\[1\] \(id 2\) with 'bbox' \[4, 6, \"48\", 40\]"
    expect_one_sentence(detection.main, args, pattern, capsys)


IMAGE_INFO_DAMAGES: dict[str, tuple[Callable[[Data], None], str]] = {
    "image_id_twice": (_set("images", 1, id=1001), r"has images\[1\] with 'id' 1001, which images\[0\] already has"),
    "image_id_a_string": (_set("images", 0, id="1001"), r"has images\[0\] with 'id' \"1001\"; expected an integer"),
    "category_not_an_object": (
        lambda data: data["categories"].append(7),
        r"has categories\[2\] holding an integer; expected a JSON object",
    ),
}


@pytest.mark.parametrize("damage", sorted(IMAGE_INFO_DAMAGES))
def test_an_image_info_file_is_held_to_its_format(damage: str, tmp_path: Path) -> None:
    change, pattern = IMAGE_INFO_DAMAGES[damage]
    images = [{"id": 1001 + i, "file_name": f"{1001 + i:012d}.jpg", "width": 96, "height": 80} for i in range(3)]
    path = tmp_path / "image_info_test-dev2017.json"
    path.write_text(json.dumps({"images": images, "categories": [dict(c) for c in COCO_CATEGORIES]}))
    _damage(path, change)
    with pytest.raises(BadInputError, match=rf"^The image-info file '{re.escape(str(path))}' {pattern}"):
        read_image_info_json(path, [c["id"] for c in COCO_CATEGORIES])
