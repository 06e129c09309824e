"""What users of torchvision's references and the TF OD API expect: per-category AP, a PR curve,
annotation/image paths as options, starting from a detector of another class count, and predict
on an image-info JSON (COCO test-dev) keeping its image ids."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
from pathlib import Path

import cv2
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from backbone.errors import BadInputError
from backbone.mobilenet import MobileNetV1
from tasks.detection import module as detection
from tasks.detection.evaluation import STAT_NAMES, CocoEvaluator, coco_evaluation
from tasks.detection.task import TASK as DETECTION
from tests.probes import COCO_CATEGORIES, expect_one_sentence, read_metrics, tiny_run_args, write_coco
from tests.test_coco_eval import CATEGORY_IDS, make_gt, noisy_detections

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _single_category_ap(gt: dict, dets: list[dict], category_id: int) -> float:
    """pycocotools' COCOeval restricted to one category: its mAP is that category's AP."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(copy.deepcopy(dets)), "bbox")
        evaluator.params.catIds = [category_id]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_per_category_ap_equals_a_one_category_evaluation(backend: str) -> None:
    gt = make_gt()
    dets = noisy_detections(gt)
    result = coco_evaluation(copy.deepcopy(gt), dets, backend=backend)
    assert list(result.per_category) == [f"AP/c{c}" for c in CATEGORY_IDS]
    for category_id in CATEGORY_IDS:
        expected = _single_category_ap(gt, dets, category_id)
        assert result.per_category[f"AP/c{category_id}"] == pytest.approx(expected, abs=1e-9)
    # their mean is mAP (every category has ground truth here)
    assert sum(result.per_category.values()) / 3 == pytest.approx(result.stats["mAP"], abs=1e-9)
    evaluator = CocoEvaluator(gt, CATEGORY_IDS, backend=backend)
    assert set(evaluator.compute(per_category=True)) == {*STAT_NAMES, *result.per_category}


# --------------------------------------------------------------------------------------------
# through the CLI, on a tiny set with the categories square (3) and disc (7)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_coco(tmp_path_factory.mktemp("coco"), train=8, val=3)


def _args(root: Path | None, runs: Path, *extra: str) -> list[str]:
    return tiny_run_args(root, runs, "--trainer.num_sanity_val_steps", "0", *extra, batch_size=4)


@pytest.fixture(scope="module")
def checkpoint(coco: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    DETECTION.main(["fit", *_args(coco, runs, "--trainer.max_steps", "2")])
    return runs / "checkpoints" / "last.ckpt"


def _newest_log_dir(runs: Path) -> Path:
    return max(runs.glob("lightning_logs/version_*"), key=lambda p: p.stat().st_mtime)


def test_test_writes_per_category_ap_and_the_pr_curve(coco: Path, checkpoint: Path, tmp_path: Path) -> None:
    args = _args(coco, tmp_path, "--ckpt_path", str(checkpoint), "--model.pr_curve", "true")
    DETECTION.main(["test", *args, "--model.score_thresh", "0.001"])
    metrics = read_metrics(tmp_path)["metrics"]
    assert {"AP/square", "AP/disc"} <= set(metrics) and all(-1 <= metrics[k] <= 1 for k in ("AP/square", "AP/disc"))
    png = cv2.imread(str(_newest_log_dir(tmp_path) / "pr_curve.png"))
    assert png is not None and png.shape[0] > 100 and png.shape[1] > 100


def test_paths_as_options(coco: Path, tmp_path: Path) -> None:
    """A custom layout (other names, images outside the root) needs no renaming."""
    root = tmp_path / "custom"
    (root / "labels").mkdir(parents=True)
    shutil.copy(coco / "annotations" / "instances_train2017.json", root / "labels" / "train.json")
    shutil.copy(coco / "annotations" / "instances_val2017.json", root / "labels" / "val.json")
    shutil.copytree(coco / "train2017", root / "pictures" / "a")
    shutil.copytree(coco / "val2017", tmp_path / "elsewhere")  # absolute path, outside the root
    options = ["--data.train_ann", "labels/train.json", "--data.train_images", "pictures/a"]
    options += ["--data.val_ann", "labels/val.json", "--data.val_images", str(tmp_path / "elsewhere")]
    DETECTION.main(["fit", *_args(root, tmp_path / "runs", "--trainer.max_steps", "1", *options)])
    assert "mAP" in read_metrics(tmp_path / "runs")["metrics"]


def test_a_missing_train_file_named_by_option_is_one_sentence(
    coco: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _args(coco, tmp_path, "--trainer.max_steps", "1", "--data.train_ann", "labels/nope.json")
    expect_one_sentence(DETECTION.main, ["fit", *args], r"nope\.json' is missing.*--data\.train_ann", capsys)


# --------------------------------------------------------------------------------------------
# --model.init_from
# --------------------------------------------------------------------------------------------
def _save_detector(path: Path, **kwargs: object) -> detection.DetectionModule:
    model = detection.DetectionModule(width=0.25, resolution=64, **kwargs)  # type: ignore[arg-type]
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return model


@pytest.mark.parametrize("arch", ["ssd300", "faster_rcnn"])
def test_init_from_loads_everything_but_the_class_head(arch: str, tmp_path: Path) -> None:
    source = _save_detector(tmp_path / "source.ckpt", num_classes=6, arch=arch)
    target = detection.DetectionModule(
        width=0.25, resolution=64, num_classes=3, arch=arch, init_from=str(tmp_path / "source.ckpt")
    )
    head = "model.head.classification_head." if arch == "ssd300" else "model.roi_heads.box_predictor."
    theirs = source.state_dict()
    compared = 0
    for key, value in target.state_dict().items():
        if key.startswith(head):
            assert value.shape != theirs[key].shape  # a fresh head for 3 classes
        else:
            assert torch.equal(value, theirs[key]), key
            compared += 1
    assert compared > 100
    # the same class count: the class head is loaded too
    same = detection.DetectionModule(
        width=0.25, resolution=64, num_classes=6, arch=arch, init_from=str(tmp_path / "source.ckpt")
    )
    assert all(torch.equal(v, theirs[k]) for k, v in same.state_dict().items())


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        ("classifier", r"lacks .*expected a tasks\.detection checkpoint of the same --model\.arch"),
        ("faster_rcnn", r"lacks .*same --model\.arch"),
        ("width", r"holds .* of shape .*same --backbone width"),
        ("missing", r"does not exist"),
    ],
)
def test_init_from_refuses_what_does_not_fit_in_one_sentence(make: str, pattern: str, tmp_path: Path) -> None:
    path = tmp_path / f"{make}.ckpt"
    if make == "classifier":
        torch.save({"state_dict": {f"model.{k}": v for k, v in MobileNetV1(0.25, 10).state_dict().items()}}, path)
    elif make == "faster_rcnn":
        _save_detector(path, num_classes=3, arch="faster_rcnn")
    elif make == "width":
        model = detection.DetectionModule(width=0.5, resolution=64, num_classes=3)
        torch.save({"state_dict": model.state_dict()}, path)
    with pytest.raises(BadInputError, match=pattern) as error:
        detection.DetectionModule(width=0.25, resolution=64, num_classes=3, init_from=str(path))
    assert "\n" not in str(error.value)


def test_init_from_through_the_cli(coco: Path, tmp_path: Path) -> None:
    """Fine-tune from a 5-class detector on the 2-category set; test then needs only the new checkpoint."""
    _save_detector(tmp_path / "five.ckpt", num_classes=6)
    runs = tmp_path / "runs"
    DETECTION.main(
        ["fit", *_args(coco, runs, "--trainer.max_steps", "1", "--model.init_from", str(tmp_path / "five.ckpt"))]
    )
    (tmp_path / "five.ckpt").unlink()  # not needed any more: the checkpoint holds the weights
    DETECTION.main(["test", *_args(coco, tmp_path / "test", "--ckpt_path", str(runs / "checkpoints" / "last.ckpt"))])
    assert "mAP" in read_metrics(tmp_path / "test")["metrics"]


# --------------------------------------------------------------------------------------------
# predict on an image-info JSON (COCO test-dev)
# --------------------------------------------------------------------------------------------
def _image_info(coco: Path, path: Path, categories: list[dict]) -> list[dict]:
    """An image-info file for the val images under new ids (as test-dev's are its own)."""
    images = json.loads((coco / "annotations" / "instances_val2017.json").read_text())["images"]
    info = [dict(im, id=90_000 + 17 * k) for k, im in enumerate(images)]
    path.write_text(json.dumps({"images": info, "categories": categories}))
    return info


def test_predict_ann_keeps_the_image_ids(coco: Path, checkpoint: Path, tmp_path: Path) -> None:
    info = _image_info(coco, tmp_path / "image_info_test-dev2017.json", COCO_CATEGORIES)
    args = _args(coco, tmp_path / "out", "--ckpt_path", str(checkpoint), "--model.score_thresh", "0.001")
    args += ["--data.predict_ann", str(tmp_path / "image_info_test-dev2017.json"), "--data.predict_images", "val2017"]
    DETECTION.main(["predict", *args])
    folder = _newest_log_dir(tmp_path / "out")
    listed = json.loads((folder / "predictions_images.json").read_text())
    assert [(im["id"], im["file_name"]) for im in listed] == [(im["id"], im["file_name"]) for im in info]
    records = json.loads((folder / "predictions.json").read_text())
    assert records and {r["image_id"] for r in records} <= {im["id"] for im in info}
    assert {r["category_id"] for r in records} <= {3, 7}


def test_predict_ann_with_other_categories_is_one_sentence(
    coco: Path, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _image_info(coco, tmp_path / "info.json", [{"id": 1, "name": "person"}])
    args = _args(
        coco, tmp_path / "out", "--ckpt_path", str(checkpoint), "--data.predict_ann", str(tmp_path / "info.json")
    )
    expect_one_sentence(
        DETECTION.main, ["predict", *args, "--data.predict_images", "val2017"], r"category ids \[1\]", capsys
    )
