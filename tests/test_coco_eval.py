"""The COCO evaluator against pycocotools' own COCOeval, and its label/box mapping and DDP union."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tasks.detection.evaluation import STAT_NAMES, CocoEvaluator, evaluate_detections, write_results_json

CATEGORY_IDS = [3, 8, 21]  # non-contiguous on purpose: labels 1, 2, 3


def make_gt(n_images: int = 12, seed: int = 0) -> dict[str, Any]:
    """A small COCO ground truth with small, medium and large boxes and one crowd region."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, n_images + 1):
        width, height = int(rng.integers(200, 400)), int(rng.integers(200, 400))
        images.append({"id": image_id * 7, "file_name": f"{image_id}.jpg", "width": width, "height": height})
        for _ in range(int(rng.integers(0, 5))):
            side = float(rng.choice([20.0, 60.0, 150.0])) * rng.uniform(0.8, 1.2)
            w, h = side * rng.uniform(0.7, 1.3), side * rng.uniform(0.7, 1.3)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id * 7,
                    "category_id": int(rng.choice(CATEGORY_IDS)),
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    annotations.append(
        {
            "id": len(annotations) + 1,
            "image_id": 7,
            "category_id": 3,
            "bbox": [0, 0, 100, 100],
            "area": 1e4,
            "iscrowd": 1,
        }
    )
    categories = [{"id": c, "name": f"c{c}"} for c in CATEGORY_IDS]
    return {"images": images, "annotations": annotations, "categories": categories}


def noisy_detections(gt: dict[str, Any], seed: int = 1) -> list[dict[str, Any]]:
    """Jittered true boxes (some with the wrong class) plus random false positives."""
    rng = np.random.default_rng(seed)
    dets = []
    for ann in gt["annotations"]:
        if ann["iscrowd"] or rng.random() < 0.15:  # some misses
            continue
        x, y, w, h = ann["bbox"]
        jitter = rng.normal(0, 0.12, 4) * [w, h, w, h]
        cat = ann["category_id"] if rng.random() > 0.1 else int(rng.choice(CATEGORY_IDS))
        box = [x + jitter[0], y + jitter[1], max(w + jitter[2], 1.0), max(h + jitter[3], 1.0)]
        dets.append({"image_id": ann["image_id"], "category_id": cat, "bbox": box, "score": float(rng.random())})
    for image in gt["images"]:
        for _ in range(int(rng.integers(0, 4))):
            w, h = rng.uniform(10, 120, 2)
            x, y = rng.uniform(0, image["width"] - w), rng.uniform(0, image["height"] - h)
            dets.append(
                {
                    "image_id": image["id"],
                    "category_id": int(rng.choice(CATEGORY_IDS)),
                    "bbox": [x, y, w, h],
                    "score": float(rng.random()) * 0.8,
                }
            )
    return dets


def pycocotools_stats(gt: dict[str, Any], dets: list[dict[str, Any]], image_ids: list[int] | None = None) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(copy.deepcopy(dets)), "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = image_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_stats_equal_pycocotools(backend: str) -> None:
    gt = make_gt()
    dets = noisy_detections(gt)
    expected = pycocotools_stats(gt, dets)
    got = evaluate_detections(copy.deepcopy(gt), dets, backend=backend)
    assert list(got) == list(STAT_NAMES)
    assert 0.1 < got["mAP"] < 0.95  # a non-trivial case
    for name, value in zip(STAT_NAMES, expected, strict=True):
        assert abs(got[name] - value) < 1e-6, name


def test_only_seen_images_are_scored() -> None:
    gt = make_gt()
    dets = noisy_detections(gt)
    seen = [7, 14, 21, 28, 35]
    expected = pycocotools_stats(gt, dets, seen)
    got = evaluate_detections(gt, [d for d in dets if d["image_id"] in seen], image_ids=seen)
    assert np.allclose([got[n] for n in STAT_NAMES], expected, atol=1e-6)


def test_ground_truth_as_detections_scores_one() -> None:
    gt = make_gt()
    dets = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in gt["annotations"]
        if not a["iscrowd"]
    ]
    got = evaluate_detections(gt, dets)
    assert got["mAP"] == pytest.approx(1.0) and got["mAP50"] == pytest.approx(1.0)
    assert got["AR100"] == pytest.approx(1.0)


def test_zero_detections_give_zero(tmp_path: Path) -> None:
    gt = make_gt()
    assert evaluate_detections(gt, []) == dict.fromkeys(STAT_NAMES, 0.0)
    evaluator = CocoEvaluator(gt, CATEGORY_IDS)
    assert evaluator.compute() == dict.fromkeys(STAT_NAMES, 0.0)  # nothing seen at all
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    evaluator.update([empty], [{"image_id": 7}])
    assert evaluator.compute(results_path=tmp_path / "dets.json") == dict.fromkeys(STAT_NAMES, 0.0)
    assert json.loads((tmp_path / "dets.json").read_text()) == []


def _predictions_from_gt(gt: dict[str, Any], input_size: int = 300) -> tuple[list[dict], list[dict]]:
    """GT boxes expressed the way a model returns them: xyxy in the resized input, labels 1..K."""
    label_of = {c: i + 1 for i, c in enumerate(CATEGORY_IDS)}
    preds, targets = [], []
    for image in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == image["id"] and not a["iscrowd"]]
        sx, sy = input_size / image["width"], input_size / image["height"]
        boxes = [
            [
                a["bbox"][0] * sx,
                a["bbox"][1] * sy,
                (a["bbox"][0] + a["bbox"][2]) * sx,
                (a["bbox"][1] + a["bbox"][3]) * sy,
            ]
            for a in anns
        ]
        preds.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
                "scores": torch.ones(len(anns)),
                "labels": torch.tensor([label_of[a["category_id"]] for a in anns], dtype=torch.int64),
            }
        )
        targets.append(
            {
                "image_id": image["id"],
                "orig_size": (image["height"], image["width"]),
                "input_size": (input_size, input_size),
            }
        )
    return preds, targets


def test_labels_and_boxes_map_back_to_coco() -> None:
    gt = make_gt()
    preds, targets = _predictions_from_gt(gt)
    # a background/unknown label is skipped, not turned into a bogus category
    preds[0] = {
        "boxes": torch.cat([preds[0]["boxes"], torch.tensor([[1.0, 1.0, 50.0, 50.0]], dtype=torch.float64)]),
        "scores": torch.cat([preds[0]["scores"], torch.tensor([0.5])]),
        "labels": torch.cat([preds[0]["labels"], torch.tensor([0])]),
    }
    evaluator = CocoEvaluator(gt, {1: 3, 2: 8, 3: 21})
    for i in range(0, len(preds), 5):  # a few "batches"
        evaluator.update(preds[i : i + 5], targets[i : i + 5])
    records = evaluator.local_detections()  # boxes to 0.01 px, as the results file holds them
    by_key = {(r["image_id"], r["category_id"], round(r["bbox"][0])): r for r in records}
    for ann in gt["annotations"]:
        if ann["iscrowd"]:
            continue
        record = by_key[(ann["image_id"], ann["category_id"], round(ann["bbox"][0]))]
        assert np.allclose(record["bbox"], ann["bbox"], atol=0.005 + 1e-9)
    assert {r["category_id"] for r in records} <= set(CATEGORY_IDS)
    assert evaluator.compute()["mAP"] == pytest.approx(1.0)


def test_results_json_is_standard_and_atomic(tmp_path: Path) -> None:
    gt = make_gt()
    dets = noisy_detections(gt)
    path = write_results_json(dets, tmp_path / "out" / "detections.json")
    assert [p.name for p in path.parent.iterdir()] == ["detections.json"]  # no temporary file left
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        assert len(coco.loadRes(str(path)).getAnnIds()) == len(dets)


def test_two_process_union_equals_one_process() -> None:
    gt = make_gt()
    preds, targets = _predictions_from_gt(gt)
    # Drop all boxes of a few images so that the score is below 1 and depends on every image.
    for i in (1, 4, 9):
        preds[i] = {k: v[:0] for k, v in preds[i].items()}
    single = CocoEvaluator(gt, CATEGORY_IDS)
    single.update(preds, targets)
    expected = single.compute()
    assert expected["mAP"] < 1.0

    # Rank 1 also sees image 0 again (padding by a DistributedSampler): it must count once.
    chunks = [list(range(0, 12, 2)), [0, *range(1, 12, 2)]]
    gt_for_workers = copy.deepcopy(gt)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = 29500 + os.getpid() % 1000
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, gt_for_workers, chunks, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert results[0] == results[1]
    for name in STAT_NAMES:
        assert results[0][name] == pytest.approx(expected[name], abs=1e-9), name


def _ddp_worker(rank: int, world: int, port: int, gt: dict, chunks: list[list[int]], queue: Any) -> None:
    """Like the single-process run: images 1, 4 and 9 have no detections."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        preds, targets = _predictions_from_gt(gt)
        for i in (1, 4, 9):
            preds[i] = {k: v[:0] for k, v in preds[i].items()}
        evaluator = CocoEvaluator(gt, CATEGORY_IDS)
        evaluator.update([preds[i] for i in chunks[rank]], [targets[i] for i in chunks[rank]])
        queue.put((rank, evaluator.compute()))
    finally:
        dist.destroy_process_group()
