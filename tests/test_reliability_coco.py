"""COCO-format data broken the ways real sets are: refused by name, or cleaned once and scored as cleaned.

Issue 8, items 3-6 and the COCO probes: a damaged JPEG, a JSON size that disagrees with the file,
duplicate image ids, an empty image list; ground truth that training dropped must not be scored;
and ``predict`` over a folder tree as a phone or camera leaves it. (Every other departure from
COCO's format is in ``test_coco_format.py``.)
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from datasets.coco import CocoDataModule, CocoDetection
from tasks.detection.evaluation import CocoEvaluator
from tasks.detection.task import TASK as DETECTION
from tests.probes import (
    expect_one_sentence,
    metrics_files,
    one_torch_thread,
    tiny_run_args,
    truncate_file,
    write_coco,
    write_image,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

RESOLUTION = 128  # SSD300's extra layers need at least this much input to keep a 1x1 map


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


@pytest.fixture()
def coco(tmp_path: Path) -> Path:
    """A fresh tiny COCO layout per test (2 train, 3 val images of 96x80), for the test to break."""
    return write_coco(tmp_path / "coco", train=2, val=3)


def val_json(root: Path) -> Path:
    return root / "annotations" / "instances_val2017.json"


def edit_json(path: Path, change: Any) -> None:
    """Rewrite a COCO JSON after ``change(data)`` edited it in place."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def run_args(root: Path, runs: Path, *extra: str) -> list[str]:
    return tiny_run_args(root, runs, "--trainer.num_sanity_val_steps", "0", *extra, resolution=RESOLUTION, batch_size=2)


# --------------------------------------------------------------------------------------------
# Refused, naming the file or the id
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("split", "command"),
    [("train", ["fit", "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0"]), ("val", ["validate"])],
)
def test_a_truncated_jpeg_is_named(
    split: str, command: list[str], coco: Path, tiny_detector: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """OpenCV decoded the first half and filled the rest with grey; the one reader refuses it."""
    damaged = truncate_file(sorted((coco / f"{split}2017").glob("*.jpg"))[-1])
    runs = tmp_path / "runs"
    checkpoint = ["--ckpt_path", tiny_detector] if command[0] == "validate" else []
    args = [command[0], *run_args(coco, runs, *command[1:], *checkpoint)]
    expect_one_sentence(DETECTION.main, args, rf"image file '{damaged}' could not be read as an image", capsys)
    assert not metrics_files(runs)


JSON_FAULTS = {  # name -> (the change to instances_val2017.json, the sentence it must produce)
    # Boxes would be clipped against the wrong size (the file is 96x80).
    "size_disagrees": (
        lambda data: data["images"][1].update(width=120),
        r"image file '.*000000001002\.jpg' is 96x80 pixels but '.*instances_val2017\.json' says 120x80",
    ),
    # One image would disappear and its boxes would go to the other.
    "duplicate_id": (
        lambda data: data["images"][2].update(id=1002),
        r"json' has images\[2\] with 'id' 1002, which images\[1\] already has",
    ),
    # It used to exit 0 with no message and no metrics.
    "no_images": (lambda data: data.update(images=[], annotations=[]), r"json' lists no images"),
}


@pytest.mark.parametrize("fault", sorted(JSON_FAULTS))
def test_a_broken_annotation_file_is_refused_naming_the_fault(
    fault: str, coco: Path, tiny_detector: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change, pattern = JSON_FAULTS[fault]
    edit_json(val_json(coco), change)
    runs = tmp_path / "runs"
    expect_one_sentence(
        DETECTION.main, ["validate", *run_args(coco, runs, "--ckpt_path", tiny_detector)], pattern, capsys
    )
    assert not metrics_files(runs)


def test_exif_orientation_does_not_count_as_another_size(coco: Path) -> None:
    """Annotations refer to the stored pixels (as COCO's do), whatever the EXIF orientation tag says."""
    path = sorted((coco / "val2017").glob("*.jpg"))[0]
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees to display": a viewer shows it 80x96
    Image.open(path).save(path, exif=exif)
    dataset = CocoDetection(coco / "val2017", val_json(coco), RESOLUTION)
    assert dataset[0][1]["orig_size"] == (80, 96)


# --------------------------------------------------------------------------------------------
# Evaluation scores the ground truth that training kept
# --------------------------------------------------------------------------------------------
BROKEN_BOXES = {  # annotation id -> a box the loader drops, as training never sees it
    90: [10.0, 10.0, -5.0, 20.0],  # negative width
    91: [500.0, 10.0, 20.0, 20.0],  # outside the image
    92: [10.0, 10.0, 20.0, 0.0],  # no height
}  # (a NaN or a box of 3 numbers is not the format: refused on reading, see test_coco_format.py)


@pytest.mark.parametrize("with_area", [True, False], ids=["area", "no_area"])
def test_ground_truth_fed_back_as_predictions_scores_1(with_area: bool, coco: Path) -> None:
    """Broken boxes and a box sticking out of the image, with or without COCO's optional ``area``:
    the targets the loader gives, fed back as detections, score mAP 1.0 against ``val_ground_truth``."""

    def break_boxes(data: dict[str, Any]) -> None:
        template = data["annotations"][0]
        data["annotations"] += [{**template, "id": i, "bbox": box} for i, box in BROKEN_BOXES.items()]
        data["annotations"].append({**template, "id": 94, "bbox": [70.0, 50.0, 40.0, 40.0]})  # clipped to 26x30
        data["annotations"].append({**template, "id": 95, "bbox": [0.0, 0.0, 96.0, 80.0], "iscrowd": 1})
        if not with_area:
            for annotation in data["annotations"]:
                annotation.pop("area")

    edit_json(val_json(coco), break_boxes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = CocoDataModule(str(coco), resolution=RESOLUTION, num_workers=0)
        ground_truth = data.val_ground_truth()
    annotations = {ann["id"]: ann for ann in ground_truth["annotations"]}
    assert sorted(annotations) == [94, 95, 1001, 1002, 1003]
    assert annotations[94]["bbox"] == [70.0, 50.0, 26.0, 30.0]
    assert all(ann["area"] > 0 for ann in annotations.values())

    evaluator = CocoEvaluator(ground_truth, data.label_to_category_id)
    for _, target in data.dataset("val"):
        detections = {"boxes": target["boxes"], "labels": target["labels"], "scores": torch.ones(len(target["labels"]))}
        evaluator.update([detections], [target])
    stats = evaluator.compute()
    assert stats["mAP"] == pytest.approx(1.0) and stats["AR100"] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# predict over a folder tree
# --------------------------------------------------------------------------------------------
DRAW = ("--model.draw_predictions", "true")


def test_predict_reads_subfolders_skips_hidden_and_reports_the_unreadable(
    coco: Path, tiny_detector: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    # a.jpg twice, as cameras name; trip/b.png and trip/b.jpg differ only by the extension
    readable = ["a.jpg", "trip/b.png", "trip/day2/c.jpg", "trip/day2/a.jpg", "trip/b.jpg"]
    for index, name in enumerate(readable):
        write_image(photos / name, 64 + 8 * index, 48, seed=index)
    write_image(photos / "trip" / "._a.jpg")  # macOS resource fork: not an image of the set
    write_image(photos / ".thumbnails" / "t.jpg")  # hidden folder
    bad = truncate_file(write_image(photos / "trip" / "broken.jpg", 64, 64, seed=9))
    runs = tmp_path / "runs"

    with pytest.warns(UserWarning, match=rf"Skipped: The image file '{bad}' could not be read"):
        DETECTION.main(
            ["predict", *run_args(coco, runs, "--data.predict_dir", str(photos), "--ckpt_path", tiny_detector, *DRAW)]
        )

    log_dir = max(runs.glob("lightning_logs/version_*"))
    images = json.loads((log_dir / "predictions_images.json").read_text())
    assert sorted(image["file_name"] for image in images) == sorted(readable)
    assert len({image["id"] for image in images}) == len(readable)
    drawn = sorted(p.relative_to(log_dir / "predictions").as_posix() for p in log_dir.rglob("*.png"))
    expected = ["a.png", "trip/b.jpg.png", "trip/b.png.png", "trip/day2/a.png", "trip/day2/c.png"]
    assert drawn == expected  # none drawn over another
    assert "1 of 6 images could not be read and were skipped." in capsys.readouterr().out
