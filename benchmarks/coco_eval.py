"""COCO evaluation time: faster-coco-eval against pycocotools on the same synthetic detections.

Part of the ``detection`` section: the project evaluates with faster-coco-eval by default
(``--model.eval_backend``), which is only sound if it is faster *and* gives pycocotools' stats.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from benchmarks.common import markdown_table, print_heading
from tasks.detection.evaluation import STAT_NAMES, evaluate_detections, load_ground_truth

BACKENDS = {"faster": "faster-coco-eval", "pycocotools": "pycocotools"}  # backend name -> label
STAT_TOLERANCE = 1e-12  # "identical" COCO stats: equal up to double rounding
# COCO's 80 category ids (1..90 with gaps), for the synthetic evaluation set.
COCO_CATEGORY_IDS = tuple(i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83})


def _ground_truth_box(rng: np.random.Generator, width: int, height: int) -> list[float]:
    """An object box: area log-uniform from 8² to 400² px (all three COCO area ranges), aspect 1:2..2:1."""
    side = float(np.exp(rng.uniform(np.log(8), np.log(400))))
    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    w, h = min(side * aspect**0.5, width - 1), min(side / aspect**0.5, height - 1)
    return [float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h)), w, h]


def _synthetic_image(
    rng: np.random.Generator, image_id: int, annotations: list[dict[str, Any]]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One image: its entry, its objects (appended to ``annotations``) and its top-100 detections."""
    width, height = (640, 480) if rng.random() < 0.7 else (480, 640)
    detections = []
    for _ in range(int(rng.integers(0, 15))):
        x, y, w, h = _ground_truth_box(rng, width, height)
        category = int(rng.choice(COCO_CATEGORY_IDS))
        crowd = int(rng.random() < 0.01)
        annotation = {"id": len(annotations) + 1, "image_id": image_id, "category_id": category}
        annotations.append({**annotation, "bbox": [x, y, w, h], "area": w * h, "iscrowd": crowd})
        if crowd or rng.random() > 0.85:
            continue
        jitter = rng.normal(0.0, 0.1, 4) * [w, h, w, h]
        box = [x + jitter[0], y + jitter[1], max(w + jitter[2], 1.0), max(h + jitter[3], 1.0)]
        label = category if rng.random() < 0.9 else int(rng.choice(COCO_CATEGORY_IDS))
        detections.append(
            {"image_id": image_id, "category_id": label, "bbox": box, "score": float(rng.uniform(0.3, 1))}
        )
    for _ in range(int(rng.integers(5, 25))):
        w, h = float(rng.uniform(8, 300)), float(rng.uniform(8, 300))
        box = [float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h)), w, h]
        category = int(rng.choice(COCO_CATEGORY_IDS))
        detections.append(
            {"image_id": image_id, "category_id": category, "bbox": box, "score": float(rng.uniform(0, 0.6))}
        )
    detections.sort(key=lambda d: -d["score"])
    entry = {"id": image_id, "width": width, "height": height, "file_name": f"{image_id:012d}.jpg"}
    return entry, detections[:100]


def synthetic_coco(num_images: int, seed: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A COCO-like ground truth and detections on it, for timing the evaluators.

    Ground truth: 640x480 or 480x640 images, 0..14 objects each over COCO's 80 category ids, 1%
    crowd regions. Detections: 85% of the objects found with jittered boxes (10% with the wrong
    class), plus 5..24 false positives per image, at most 100 per image: a mid-quality detector.
    """
    rng = np.random.default_rng(seed)
    images, annotations, detections = [], [], []
    for index in range(num_images):
        entry, found = _synthetic_image(rng, index + 1, annotations)
        images.append(entry)
        detections.extend(found)
    categories = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in COCO_CATEGORY_IDS]
    ground_truth = {"info": {}, "licenses": [], "images": images, "annotations": annotations, "categories": categories}
    return ground_truth, detections


def time_backend(
    backend: str, ground_truth: dict[str, Any], detections: list[dict[str, Any]], repeats: int
) -> dict[str, Any]:
    """Indexing the ground truth once, then ``repeats`` evaluations of the detections, with one backend."""
    start = time.perf_counter()
    index = load_ground_truth(ground_truth, backend)
    index_s = time.perf_counter() - start
    samples, stats = [], {}
    for _ in range(repeats):
        start = time.perf_counter()
        stats = evaluate_detections(index, detections, backend=backend)
        samples.append(time.perf_counter() - start)
    return {
        "index_s": index_s,
        "evaluate_s": statistics.median(samples),
        "best_evaluate_s": min(samples),
        "repeats": repeats,
        "stats": stats,
    }


def measure_coco_eval(num_images: int, repeats: int) -> dict[str, Any]:
    """faster-coco-eval vs pycocotools on the same synthetic ground truth and detections."""
    ground_truth, detections = synthetic_coco(num_images)
    backends = {backend: time_backend(backend, ground_truth, detections, repeats) for backend in BACKENDS}
    diff = max(abs(backends["faster"]["stats"][k] - backends["pycocotools"]["stats"][k]) for k in STAT_NAMES)
    return {
        "images": num_images,
        "annotations": len(ground_truth["annotations"]),
        "detections": len(detections),
        "backends": backends,
        "max_abs_stat_diff": diff,
        # Both libraries sum in double precision, in a different order: equal up to rounding.
        "stats_identical": diff <= STAT_TOLERANCE,
        "speedup": backends["pycocotools"]["evaluate_s"] / backends["faster"]["evaluate_s"],
    }


def judge(coco_eval: dict[str, Any]) -> dict[str, Any]:
    """The targets' entries of the evaluation: how much faster, and whether the stats agree."""
    return {"coco_eval_speedup": coco_eval["speedup"], "coco_eval_stats_identical": coco_eval["stats_identical"]}


def print_coco_eval(coco_eval: dict[str, Any]) -> None:
    """The timing table of both backends and the line comparing their 12 stats."""
    print_heading(
        f"COCO evaluation time ({coco_eval['images']} synthetic images, {coco_eval['annotations']} objects, "
        f"{coco_eval['detections']} detections)"
    )
    reference = coco_eval["backends"]["pycocotools"]["evaluate_s"]
    rows = []
    for name, label in BACKENDS.items():
        entry = coco_eval["backends"][name]
        rows.append(
            [label, f"{entry['index_s']:.3f}", f"{entry['evaluate_s']:.3f}", f"{entry['best_evaluate_s']:.3f}"]
            + [f"{reference / entry['evaluate_s']:.2f}×"]
        )
    print(markdown_table(["backend", "index GT s", "evaluate s (median)", "evaluate s (best)", "speed-up"], rows))
    print()
    stats = coco_eval["backends"]["faster"]["stats"]
    agreement = "identical up to double rounding" if coco_eval["stats_identical"] else "NOT identical"
    print(
        f"12 COCO stats, max |faster − pycocotools| = {coco_eval['max_abs_stat_diff']:.2e} ({agreement}); "
        f"mAP {stats['mAP']:.4f}, mAP50 {stats['mAP50']:.4f}, AR100 {stats['AR100']:.4f}."
    )
    print()
