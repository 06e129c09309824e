"""The detection task end to end: fit/test/predict through the CLI, results files, bad input, DDP."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
import yaml
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tasks.detection.evaluation import STAT_NAMES
from tasks.detection.task import TASK as DETECTION

ROOT = Path(__file__).resolve().parents[1]
# Non-contiguous category ids, as in COCO: labels 1, 2 map back to ids 3, 7.
CATEGORIES = [{"id": 3, "name": "square"}, {"id": 7, "name": "disc"}]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _write_split(root: Path, split: str, count: int, first_id: int, seed: int) -> None:
    """``count`` 96x80 images with one or two filled squares/discs each (COCO layout)."""
    rng = np.random.default_rng(seed)
    (root / f"{split}2017").mkdir(parents=True)
    (root / "annotations").mkdir(exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        image_id = first_id + index
        image = np.full((80, 96, 3), 90, np.uint8)
        for k in range(1 + index % 2):
            size = int(rng.integers(20, 34))
            x, y = int(rng.integers(0, 96 - size)), int(rng.integers(0, 80 - size))
            cat = CATEGORIES[(index + k) % 2]["id"]
            if cat == 3:
                cv2.rectangle(image, (x, y), (x + size - 1, y + size - 1), (0, 200, 255), -1)
            else:
                cv2.circle(image, (x + size // 2, y + size // 2), size // 2, (255, 60, 0), -1)
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                 "bbox": [x, y, size, size], "area": float(size * size), "iscrowd": 0}
            )  # fmt: skip
        name = f"{image_id:012d}.jpg"
        cv2.imwrite(str(root / f"{split}2017" / name), image)
        images.append({"id": image_id, "file_name": name, "width": 96, "height": 80})
    payload = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(payload))


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 train and 5 val images (5: an odd number, so 2 DDP ranks get unequal shares)."""
    root = tmp_path_factory.mktemp("coco")
    _write_split(root, "train", 8, 1, 0)
    _write_split(root, "val", 5, 1001, 1)
    return root


def fast_args(root: Path, runs: Path, *extra: str) -> list[str]:
    return [
        "--data.root", str(root), "--backbone", "0.25", "--resolution", "128",
        "--data.batch_size", "4", "--data.num_workers", "0",
        "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.default_root_dir", str(runs), *extra,
    ]  # fmt: skip


def newest_log_dir(runs: Path) -> Path:
    return max(runs.glob("lightning_logs/version_*"), key=lambda p: p.stat().st_mtime)


@pytest.fixture(scope="module")
def fitted(tiny_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short fit (2 epochs x 2 steps); returns its run folder."""
    runs = tmp_path_factory.mktemp("runs")
    DETECTION.main(["fit", *fast_args(tiny_coco, runs, "--trainer.max_epochs", "2")])
    return runs


def test_fit_logs_the_12_coco_stats_and_checkpoints(fitted: Path) -> None:
    metrics = json.loads((newest_log_dir(fitted) / "metrics.json").read_text())
    assert metrics["stage"] == "validate" and metrics["global_step"] == 4
    # what the figures depend on beyond the seed, on a CPU
    assert metrics["torch_threads"] == torch.get_num_threads() and metrics["cpu_capability"]
    assert set(STAT_NAMES) <= set(metrics["metrics"])
    assert all(-1.0 <= metrics["metrics"][name] <= 1.0 for name in STAT_NAMES)
    assert (fitted / "checkpoints" / "last.ckpt").is_file()
    assert len(list((fitted / "checkpoints").glob("best-*.ckpt"))) == 1  # picked by mAP
    hparams = yaml.safe_load((newest_log_dir(fitted) / "hparams.yaml").read_text())
    assert hparams["num_classes"] == 3 and hparams["width"] == 0.25 and hparams["arch"] == "ssd300"


def test_test_writes_a_coco_results_file(tiny_coco: Path, fitted: Path, tmp_path: Path) -> None:
    out = tmp_path / "test"
    ckpt = str(fitted / "checkpoints" / "last.ckpt")
    # A low score floor so the barely trained model surely detects something on 5 images.
    DETECTION.main(["test", *fast_args(tiny_coco, out, "--ckpt_path", ckpt, "--model.score_thresh", "0.001")])
    log_dir = newest_log_dir(out)
    metrics = json.loads((log_dir / "metrics.json").read_text())
    assert metrics["stage"] == "test" and set(STAT_NAMES) <= set(metrics["metrics"])
    records = json.loads((log_dir / "detections.json").read_text())
    assert records and set(records[0]) == {"image_id", "category_id", "bbox", "score"}
    gt = COCO(str(tiny_coco / "annotations" / "instances_val2017.json"))
    results = gt.loadRes(str(log_dir / "detections.json"))  # the standard reader accepts it
    assert set(results.getImgIds()) <= {1001, 1002, 1003, 1004, 1005}
    assert {r["category_id"] for r in records} <= {3, 7}  # original COCO ids, not labels
    for r in records:  # xywh in the original 96x80 pixels
        x, y, w, h = r["bbox"]
        assert 0 <= x <= x + w <= 96.01 and 0 <= y <= y + h <= 80.01
    assert not list(log_dir.glob(".*.tmp"))  # atomic: no temporary file left behind


@pytest.mark.parametrize("backend", ["pycocotools", "auto"])
def test_the_reported_figures_are_those_of_the_written_file(
    backend: str, tiny_coco: Path, fitted: Path, tmp_path: Path
) -> None:
    """Issue 16: a user who scores ``detections.json`` with pycocotools gets ``metrics.json``'s figures.

    The file used to round scores to 5 decimals (ties the model never made) while the metric used
    the unrounded values. With the pycocotools backend the figures are equal to the last bit;
    faster-coco-eval (the default) computes the same precision array in C++, in another order of
    summation, so its figures may differ in the 16th digit.
    """
    out = tmp_path / "test"
    ckpt = str(fitted / "checkpoints" / "last.ckpt")
    # A low score floor: a barely trained model's many low, close scores are what rounding tied.
    args = ["--ckpt_path", ckpt, "--model.score_thresh", "0.0001", "--model.eval_backend", backend]
    DETECTION.main(["test", *fast_args(tiny_coco, out, *args)])
    log_dir = newest_log_dir(out)
    reported = json.loads((log_dir / "metrics.json").read_text())["metrics"]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tiny_coco / "annotations" / "instances_val2017.json"))
        evaluation = COCOeval(gt, gt.loadRes(str(log_dir / "detections.json")), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    scored = dict(zip(STAT_NAMES, (float(v) for v in evaluation.stats), strict=True))
    assert scored["mAP"] > 0  # the model found something: the figures are not all zero
    if backend == "pycocotools":
        assert {name: reported[name] for name in STAT_NAMES} == scored
    else:
        for name in STAT_NAMES:
            assert reported[name] == pytest.approx(scored[name], rel=0, abs=1e-12), name


def test_predict_writes_json_and_pngs(tiny_coco: Path, fitted: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.png"):
        image = cv2.imread(str(next((tiny_coco / "val2017").glob("*.jpg"))))
        cv2.imwrite(str(photos / name), cv2.resize(image, (120, 90)))
    out = tmp_path / "predict"
    args = fast_args(tiny_coco, out, "--ckpt_path", str(fitted / "checkpoints" / "last.ckpt"))
    args += ["--data.predict_dir", str(photos), "--model.draw_predictions", "true"]
    args += ["--model.score_thresh", "0.001", "--model.draw_score_thresh", "0.0"]
    DETECTION.main(["predict", *args])
    log_dir = newest_log_dir(out)
    images = json.loads((log_dir / "predictions_images.json").read_text())
    assert [(im["id"], im["file_name"], im["width"], im["height"]) for im in images] == [
        (0, "a.jpg", 120, 90),
        (1, "b.png", 120, 90),
    ]
    records = json.loads((log_dir / "predictions.json").read_text())
    assert records and {r["image_id"] for r in records} <= {0, 1}
    assert {r["category_id"] for r in records} <= {3, 7}
    assert all(r["bbox"][0] + r["bbox"][2] <= 120.01 and r["bbox"][1] + r["bbox"][3] <= 90.01 for r in records)
    for stem in ("a", "b"):
        png = cv2.imread(str(log_dir / "predictions" / f"{stem}.png"))
        assert png is not None and png.shape == (90, 120, 3)  # drawn on the original image


def test_missing_annotation_file_is_one_sentence(
    tiny_coco: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    copy = tmp_path / "coco"
    shutil.copytree(tiny_coco, copy)
    (copy / "annotations" / "instances_val2017.json").unlink()
    with pytest.raises(SystemExit) as exit_info:
        DETECTION.main(["fit", *fast_args(copy, tmp_path / "runs")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "instances_val2017.json" in err[0] and "missing" in err[0]
    assert not (tmp_path / "runs" / "checkpoints").exists()


@pytest.mark.parametrize("name", ["ssd300", "faster_rcnn_300", "faster_rcnn_600"])
def test_configs_parse(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every paper-row config is valid for the CLI (checked by --print_config, nothing built)."""
    with pytest.raises(SystemExit) as exit_info:
        DETECTION.main(["fit", "--config", str(ROOT / "configs" / "detection" / f"{name}.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["max_epochs"] > 0
    assert printed["model"]["arch"] == ("ssd300" if name == "ssd300" else "faster_rcnn")


def test_faster_rcnn_config_trains_one_step(tiny_coco: Path, tmp_path: Path) -> None:
    """The Faster R-CNN paper-row config (SGD + warm-up + MultiStepLR) runs, shrunk to one step."""
    runs = tmp_path / "runs"
    config = ["--config", str(ROOT / "configs" / "detection" / "faster_rcnn_300.yaml")]
    args = fast_args(tiny_coco, runs, "--trainer.max_epochs", "1", "--model.warmup_epochs", "1")
    args += ["--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"]
    DETECTION.main(["fit", *config, *args])
    metrics = json.loads((newest_log_dir(runs) / "metrics.json").read_text())
    assert set(STAT_NAMES) <= set(metrics["metrics"])


def test_ddp_two_processes_give_the_same_stats(tiny_coco: Path, fitted: Path, tmp_path: Path) -> None:
    """2-process CPU DDP (gloo) test of one checkpoint == 1-process test, on 5 (odd) val images
    (the ranks are forked from this process; the metrics of every task: tests/test_task_contract.py)."""
    ckpt = str(fitted / "checkpoints" / "last.ckpt")
    results = {}
    for devices, strategy in (("1", "auto"), ("2", "ddp_fork")):
        out = tmp_path / f"test{devices}"
        args = fast_args(tiny_coco, out, "--ckpt_path", ckpt, "--data.batch_size", "2")
        args += ["--trainer.devices", devices, "--trainer.strategy", strategy]
        DETECTION.main(["test", *args])
        log_dir = newest_log_dir(out)
        results[devices] = (
            json.loads((log_dir / "metrics.json").read_text())["metrics"],
            json.loads((log_dir / "detections.json").read_text()),
        )
    per_category = {"AP/square", "AP/disc"}  # per-category AP is gathered the same way
    assert per_category <= set(results["1"][0])
    for name in (*STAT_NAMES, *per_category):
        assert results["2"][0][name] == pytest.approx(results["1"][0][name], abs=1e-6), name
    # The gathered results file holds every image's detections once, whatever the rank split.
    per_image = [sorted((r["image_id"], r["category_id"]) for r in results[d][1]) for d in ("1", "2")]
    assert per_image[0] == per_image[1]


def test_the_ground_truth_is_indexed_once_by_the_evaluator(
    tiny_coco: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fit with several validations builds one ground-truth index (the evaluator's, with its
    backend); the data side keeps the cleaned annotation dict, no pycocotools index of its own."""
    import faster_coco_eval.core.coco as faster_coco
    import pycocotools.coco as pycoco

    built: list[str] = []
    for module in (pycoco, faster_coco):
        original = module.COCO.createIndex

        def counting(self: Any, *args: Any, _original: Any = original, _name: str = module.__name__) -> Any:
            annotations = self.dataset.get("annotations", [])
            if not any("score" in a for a in annotations):  # loadRes indexes the detections too
                built.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(module.COCO, "createIndex", counting)
    runs = tmp_path / "runs"
    DETECTION.main(["fit", *fast_args(tiny_coco, runs, "--trainer.max_epochs", "3")])
    assert json.loads((newest_log_dir(runs) / "metrics.json").read_text())["global_step"] == 6  # 3 validations
    assert built == ["faster_coco_eval.core.coco"]
