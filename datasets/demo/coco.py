"""The built-in detection demo: coloured shapes on cluttered backgrounds, in the COCO 2017 layout.

``ensure_demo_coco()`` writes (once, through a temporary folder and a rename, see
``datasets.demo.build_once``) exactly what a real COCO download holds::

    coco-v1/annotations/instances_train2017.json   240 images
    coco-v1/annotations/instances_val2017.json      60 images
    coco-v1/train2017/000000000001.jpg ...
    coco-v1/val2017/000000100001.jpg ...

so ``datasets.coco`` reads it with the same code path as the real data. Four classes (circle,
square, triangle, cross) carry the deliberately non-contiguous COCO category ids 1, 3, 7 and 12,
so the contiguous-label mapping is exercised on every demo run. Each class has its own hue
family (with jitter) *and* its own geometry, on desaturated, noisy, cluttered backgrounds: a small
SSD learns it from scratch in a few CPU minutes, yet it is not solvable by a colour threshold
alone because the clutter reuses the same hues. About 5% of the images hold no object (COCO has
such images too and the loader must keep them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from datasets.demo.cache import build_once

DEMO_NAME = "coco-v1"
IMAGE_SIZE = 320  # width = height of every demo image
# (category id, name, hue in OpenCV's 0..180 scale). Ids are non-contiguous on purpose.
CATEGORIES: tuple[tuple[int, str, int], ...] = (
    (1, "circle", 0),  # red
    (3, "square", 30),  # yellow
    (7, "triangle", 60),  # green
    (12, "cross", 115),  # blue
)
SPLITS: dict[str, tuple[int, int, int]] = {
    # split: (number of images, first image id, seed)
    "train": (240, 1, 2017_1),
    "val": (60, 100_001, 2017_2),
}
EMPTY_EVERY = 20  # every 20th image holds no object: 5%


def _background(rng: np.random.Generator) -> np.ndarray:
    """A desaturated low-frequency colour field + noise + a few thin clutter strokes (BGR uint8)."""
    coarse = rng.integers(40, 220, size=(4, 4, 3)).astype(np.float32)
    image = cv2.resize(coarse, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_CUBIC)
    gray = image.mean(axis=2, keepdims=True)
    image = 0.35 * image + 0.65 * gray  # keep backgrounds greyish so objects stand out a little
    image += rng.normal(0.0, 14.0, image.shape).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 7))):  # clutter in any colour, thin: not an object
        p1 = tuple(int(v) for v in rng.integers(0, IMAGE_SIZE, 2))
        p2 = tuple(int(v) for v in rng.integers(0, IMAGE_SIZE, 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.line(image, p1, p2, colour, thickness=int(rng.integers(1, 3)), lineType=cv2.LINE_AA)
    return image


def _shape_mask(kind: str, cx: float, cy: float, size: float, angle: float) -> np.ndarray:
    """A filled binary mask of one shape centred at (cx, cy) with outer extent ``size`` pixels."""
    mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    r = size / 2.0
    if kind == "circle":
        cv2.circle(mask, (round(cx), round(cy)), round(r), 255, thickness=-1, lineType=cv2.LINE_8)
        return mask
    if kind == "square":
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32) * (r / np.sqrt(2) * 1.2)
    elif kind == "triangle":
        corners = np.array([[0, -1], [0.866, 0.5], [-0.866, 0.5]], np.float32) * r
    else:  # cross: a plus sign with arms one third as thick as it is long
        t = 1.0 / 3.0
        corners = (
            np.array(
                [
                    [-t, -1],
                    [t, -1],
                    [t, -t],
                    [1, -t],
                    [1, t],
                    [t, t],
                    [t, 1],
                    [-t, 1],
                    [-t, t],
                    [-1, t],
                    [-1, -t],
                    [-t, -t],
                ],
                np.float32,
            )
            * r
        )
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
    points = corners @ rot.T + np.array([cx, cy], np.float32)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 255, lineType=cv2.LINE_8)
    return mask


def box_iou_xywh(a: list[float], b: list[float]) -> float:
    """IoU of two xywh boxes (the demo sets place their objects with it)."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _draw_image(rng: np.random.Generator, n_objects: int) -> tuple[np.ndarray, list[tuple[int, list[float], int]]]:
    """One BGR image and its objects as (category id, xywh box, pixel area)."""
    image = _background(rng)
    objects: list[tuple[int, list[float], int]] = []
    for _ in range(n_objects):
        for _attempt in range(20):  # place without heavy overlap (IoU <= 0.2 with earlier objects)
            cat_id, kind, hue = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
            size = float(rng.uniform(30, 200)) if rng.random() < 0.5 else float(rng.uniform(30, 90))
            cx, cy = rng.uniform(size / 2, IMAGE_SIZE - size / 2, 2)
            mask = _shape_mask(kind, float(cx), float(cy), size, float(rng.uniform(0, np.pi / 2)))
            x, y, w, h = cv2.boundingRect(mask)
            if w < 8 or h < 8:
                continue
            box = [float(x), float(y), float(w), float(h)]
            if all(box_iou_xywh(box, other[1]) <= 0.2 for other in objects):
                break
        else:
            continue  # no room left for another object in this image
        colour_hsv = np.uint8(
            [[[(hue + int(rng.integers(-8, 9))) % 180, int(rng.integers(170, 256)), int(rng.integers(150, 256))]]]
        )
        colour = cv2.cvtColor(colour_hsv, cv2.COLOR_HSV2BGR)[0, 0]
        image[mask > 0] = colour
        # Later objects may cover a little of earlier ones; overlap is small (IoU <= 0.2), so the
        # earlier box stays the visible extent to within a few pixels.
        objects.append((cat_id, box, int(np.count_nonzero(mask))))
    return image, objects


def write_coco_split(folder: Path, split: str) -> None:
    """Write ``<split>2017/*.jpg`` and ``annotations/instances_<split>2017.json`` of one split."""
    count, first_id, seed = SPLITS[split]
    rng = np.random.default_rng(seed)
    image_dir = folder / f"{split}2017"
    image_dir.mkdir(parents=True, exist_ok=True)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for index in range(count):
        image_id = first_id + index
        n_objects = 0 if index % EMPTY_EVERY == EMPTY_EVERY - 1 else int(rng.integers(1, 5))
        image, objects = _draw_image(rng, n_objects)
        file_name = f"{image_id:012d}.jpg"
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        assert ok, "OpenCV could not encode a JPEG"
        (image_dir / file_name).write_bytes(encoded.tobytes())
        images.append({"id": image_id, "file_name": file_name, "width": IMAGE_SIZE, "height": IMAGE_SIZE})
        for cat_id, box, area in objects:
            annotations.append(
                {
                    "id": len(annotations) + first_id * 10,
                    "image_id": image_id,
                    "category_id": cat_id,
                    "bbox": box,
                    "area": float(area),
                    "iscrowd": 0,
                }
            )
    payload = {
        "info": {"description": "mobilenet-suite built-in detection demo (coloured shapes)", "version": DEMO_NAME},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name, "supercategory": "shape"} for cid, name, _ in CATEGORIES],
    }
    (folder / "annotations").mkdir(parents=True, exist_ok=True)
    (folder / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(payload))


def write_coco_demo(folder: Path) -> None:
    """Write both splits of the demo into ``folder`` (which ``build_once`` then renames)."""
    for split in SPLITS:
        write_coco_split(folder, split)


def ensure_demo_coco(root: Path | None = None) -> Path:
    """The COCO-layout demo set (generated on first use): ``<root or demo cache>/coco-v1``.

    ``root`` is the demo cache folder (default ``$MOBILENET_DEMO_DIR``, else
    ``~/.cache/mobilenet-suite/demo``); the set itself is the ``coco-v1`` folder inside it.
    """
    return build_once(DEMO_NAME, write_coco_demo, root)
