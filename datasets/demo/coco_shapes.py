"""A second COCO-format detection set, unlike the built-in demo, for checking that defaults generalise.

The detection defaults were once tuned on the demo (``datasets.demo.coco``) alone; this set is
what they are also measured on (docs/detection.md, Measured, and the ablation of
``benchmarks/detection_minimal_loop.py``).
It differs from the demo in every way a small custom set might:

=================  ==========================================  ==============================
                   demo (``coco-v1``)                          this set (``coco-shapes-v1``)
=================  ==========================================  ==============================
categories         4: circle, square, triangle, cross          3: star, ring, bar
category ids       1, 3, 7, 12                                 4, 9, 17
image size         320 x 320                                   256..480 x 192..400, not square
objects / image    1..4 (5% empty)                             0..7 (about 10% empty)
object size        30..200 px                                  14..150 px, bars 3:1 long
colours            one hue family per class, saturated         two hue families per class,
                                                               paler; stroke-only rings
background         desaturated 4x4 field + noise + lines       horizontal gradient + blurred
                                                               blobs + noise
=================  ==========================================  ==============================

``write_shapes_set(root)`` writes the COCO 2017 layout (``annotations/instances_{train,val}2017.json``,
``train2017/``, ``val2017/``); ``ensure_shapes_set()`` generates it once into the demo cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from datasets.demo.cache import build_once
from datasets.demo.coco import box_iou_xywh

NAME = "coco-shapes-v1"
# (category id, name, two hues in OpenCV's 0..180 scale). Ids are non-contiguous on purpose.
CATEGORIES: tuple[tuple[int, str, tuple[int, int]], ...] = (
    (4, "star", (150, 20)),  # magenta or orange
    (9, "ring", (90, 0)),  # cyan or red
    (17, "bar", (125, 45)),  # violet or yellow-green
)
SPLITS: dict[str, tuple[int, int, int]] = {"train": (240, 1, 7_001), "val": (60, 500_001, 7_002)}
EMPTY_EVERY = 10  # every 10th image holds no object


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A horizontal colour gradient, a few large blurred blobs and noise (BGR uint8)."""
    left, right = rng.integers(30, 200, 3), rng.integers(30, 200, 3)
    ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    image = np.broadcast_to(left + (right - left) * ramp, (height, width, 3)).astype(np.float32).copy()
    for _ in range(int(rng.integers(2, 6))):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(20, 120)), int(rng.integers(20, 120)))
        colour = tuple(float(v) for v in rng.integers(20, 235, 3))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, thickness=-1)
    image = cv2.GaussianBlur(image, (0, 0), sigmaX=9)
    image += rng.normal(0.0, 10.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _shape_mask(kind: str, cx: float, cy: float, size: float, angle: float, width: int, height: int) -> np.ndarray:
    """A binary mask of one object of outer extent ``size`` centred at (cx, cy)."""
    mask = np.zeros((height, width), np.uint8)
    r = size / 2.0
    if kind == "ring":  # a thick circle outline: the class is its hole
        cv2.circle(mask, (round(cx), round(cy)), round(r), 255, thickness=max(2, round(r / 3)))
        return mask
    if kind == "star":  # five points, inner radius 0.45 of the outer one
        k = np.arange(10)
        radius = np.where(k % 2 == 0, r, 0.45 * r)
        points = np.stack([np.cos(angle + k * np.pi / 5), np.sin(angle + k * np.pi / 5)], 1) * radius[:, None]
    else:  # bar: 3:1, horizontal or vertical (axis-aligned boxes stay tight)
        half = np.array([r, r / 3]) if angle < np.pi / 2 else np.array([r / 3, r])
        points = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
    points = points + np.array([cx, cy])
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 255)
    return mask


def _draw_image(
    rng: np.random.Generator, width: int, height: int, n_objects: int
) -> tuple[np.ndarray, list[tuple[int, list[float], int]]]:
    """One BGR image and its objects as (category id, xywh box, pixel area), overlaps IoU <= 0.1."""
    image = _background(rng, width, height)
    objects: list[tuple[int, list[float], int]] = []
    for _ in range(n_objects):
        for _attempt in range(30):
            cat_id, kind, hues = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
            size = float(rng.uniform(14, min(150, 0.8 * min(width, height))))
            cx, cy = rng.uniform(size / 2, width - size / 2), rng.uniform(size / 2, height - size / 2)
            mask = _shape_mask(kind, float(cx), float(cy), size, float(rng.uniform(0, np.pi)), width, height)
            x, y, w, h = cv2.boundingRect(mask)
            if w < 5 or h < 5:
                continue
            box = [float(x), float(y), float(w), float(h)]
            if all(box_iou_xywh(box, other[1]) <= 0.1 for other in objects):
                break
        else:
            continue
        hue = hues[int(rng.integers(2))] + int(rng.integers(-6, 7))
        hsv = np.uint8([[[hue % 180, int(rng.integers(110, 200)), int(rng.integers(170, 256))]]])
        image[mask > 0] = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
        objects.append((cat_id, box, int(np.count_nonzero(mask))))
    return image, objects


def write_split(root: Path, split: str, count: int, first_id: int, seed: int) -> None:
    """``<split>2017/*.jpg`` and ``annotations/instances_<split>2017.json`` with ``count`` images."""
    rng = np.random.default_rng(seed)
    (root / f"{split}2017").mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in range(count):
        image_id = first_id + index
        width, height = int(rng.integers(256, 481)), int(rng.integers(192, 401))
        n_objects = 0 if index % EMPTY_EVERY == EMPTY_EVERY - 1 else int(rng.integers(1, 8))
        image, objects = _draw_image(rng, width, height, n_objects)
        name = f"{image_id:012d}.jpg"
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok, "OpenCV could not encode a JPEG"
        (root / f"{split}2017" / name).write_bytes(encoded.tobytes())
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for cat_id, box, area in objects:
            annotations.append(
                {"id": len(annotations) + 10 * first_id, "image_id": image_id, "category_id": cat_id,
                 "bbox": box, "area": float(area), "iscrowd": 0}
            )  # fmt: skip
    payload = {
        "info": {"description": "mobilenet-suite second detection set (stars, rings, bars)", "version": NAME},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name, "supercategory": "shape"} for cid, name, _ in CATEGORIES],
    }
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(payload))


def write_shapes_set(root: Path, train: int = 240, val: int = 60) -> Path:
    """Write the set (``train`` / ``val`` images) in the COCO 2017 layout under ``root``; return ``root``."""
    for split, count in (("train", train), ("val", val)):
        _, first_id, seed = SPLITS[split]
        write_split(root, split, count, first_id, seed)
    return root


def ensure_shapes_set(root: Path | None = None) -> Path:
    """The full set (240 train / 60 val), generated once: ``<root or demo cache>/coco-shapes-v1``."""
    return build_once(NAME, _write_full_set, root)


def _write_full_set(folder: Path) -> None:
    write_shapes_set(folder)
