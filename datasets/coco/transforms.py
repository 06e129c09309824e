"""Detection transforms: SSD's box-aware augmentation, the resize to the model input, worker seeding.

The policies (``detection_transform``): ``ssd`` is SSD's full augmentation (Liu et al. 2016, §2.2
and §3.6: photometric distortion, zoom-out, IoU-constrained crop, flip), ``light`` the flip only
(the default for short runs on small sets, see docs/detection.md), ``none`` a plain resize.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any, Literal

# albumentations asks PyPI for a newer version on import; this project never touches the network
# at run time (and clusters often have none), so switch that off before the import.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.augmentations.crops.transforms import BaseCrop
from torch import Tensor
from torch.utils.data import get_worker_info

from backbone.errors import BadInputError

# One OpenCV thread per process: DataLoader workers (and DDP ranks) already use every core, and
# setting this before OpenCV's pool starts is what keeps forked workers from deadlocking.
cv2.setNumThreads(1)

# SSD fills the zoomed-out canvas with the mean pixel (Liu et al. 2016, Section 3.6), RGB 0..255.
MEAN_RGB = (123.675, 116.28, 103.53)


def to_tensor(image: np.ndarray) -> Tensor:
    """RGB uint8 (H, W, 3) -> float (3, H, W) in [0, 1]; torchvision's detectors normalise themselves."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def resize_only(image: np.ndarray, boxes: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation transform: resize to ``resolution``² (SSD's fixed input) and scale the boxes."""
    height, width = image.shape[:2]
    resized = cv2.resize(image, (resolution, resolution), interpolation=cv2.INTER_LINEAR)
    scale = np.array([resolution / width, resolution / height] * 2, np.float32)
    return resized, boxes * scale


# --------------------------------------------------------------------------------------------
# SSD's box-aware augmentation (Liu et al. 2016, "SSD: Single Shot MultiBox Detector", §2.2)
# --------------------------------------------------------------------------------------------
def _iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


class SSDRandomIoUCrop(BaseCrop):
    """SSD's patch sampling (§2.2): the whole image, or a patch whose IoU with some object is at
    least one of {0.1, 0.3, 0.5, 0.7, 0.9}, or an unconstrained random patch.

    albumentations 2.0.8 has no equivalent: ``RandomSizedBBoxSafeCrop``/``BBoxSafeRandomCrop``
    always keep *every* box (no small patches that zoom in on one object), and
    ``AtLeastOneBBoxRandomCrop`` has no IoU constraint. Hence this small ``DualTransform``,
    following the reference Caffe sampler: patch sides in [min_scale, 1] of the image, aspect
    ratio in [1/2, 2], up to ``trials`` tries per drawn constraint, and only boxes whose *centre*
    lies in the patch are kept (the others are collapsed to zero area so the Compose's bbox filter
    drops them; the rest are clipped to the patch by the same filter).
    """

    MIN_IOUS: tuple[float | None, ...] = (None, 0.0, 0.1, 0.3, 0.5, 0.7, 0.9)  # None: whole image

    def __init__(self, min_scale: float = 0.3, max_aspect: float = 2.0, trials: int = 50, p: float = 1.0) -> None:
        # The paper writes [0.1, 1] for the patch size; the released Caffe training script (and
        # torchvision's RandomIoUCrop) use [0.3, 1], the default here.
        super().__init__(p=p)
        self.min_scale = min_scale
        self.max_aspect = max_aspect
        self.trials = trials

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        bboxes = data.get("bboxes")
        boxes = np.asarray(bboxes, np.float32)[:, :4] if bboxes is not None and len(bboxes) else np.zeros((0, 4))
        boxes = boxes * np.array([width, height, width, height], np.float32)  # normalised -> pixels
        whole = (0, 0, width, height)
        for _ in range(10):  # redraw the constraint a few times before giving up on cropping
            min_iou = self.py_random.choice(self.MIN_IOUS)
            if min_iou is None:
                return {"crop_coords": whole}
            for _ in range(self.trials):
                w = self.py_random.uniform(self.min_scale, 1.0) * width
                h = self.py_random.uniform(self.min_scale, 1.0) * height
                if not 1.0 / self.max_aspect <= (w / h) <= self.max_aspect:
                    continue
                left = self.py_random.uniform(0, width - w)
                top = self.py_random.uniform(0, height - h)
                crop = np.array([left, top, left + w, top + h], np.float32)
                coords = (int(left), int(top), max(int(left + w), int(left) + 1), max(int(top + h), int(top) + 1))
                if len(boxes) == 0:  # an empty image: any patch is a valid negative
                    return {"crop_coords": coords}
                cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
                inside = (cx > crop[0]) & (cx < crop[2]) & (cy > crop[1]) & (cy < crop[3])
                if not inside.any():
                    continue
                if _iou_one_to_many(crop, boxes).max() >= min_iou:
                    return {"crop_coords": coords}
        return {"crop_coords": whole}

    def apply_to_bboxes(self, bboxes: np.ndarray, crop_coords: tuple[int, int, int, int], **params: Any) -> np.ndarray:
        if not len(bboxes):
            return bboxes
        height, width = params["shape"][:2]
        cx = (bboxes[:, 0] + bboxes[:, 2]) / 2 * width
        cy = (bboxes[:, 1] + bboxes[:, 3]) / 2 * height
        x1, y1, x2, y2 = crop_coords
        outside = ~((cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2))
        cropped = super().apply_to_bboxes(bboxes, crop_coords, **params).copy()
        cropped[outside, 2] = cropped[outside, 0]  # zero area: removed by the bbox filter
        cropped[outside, 3] = cropped[outside, 1]
        return cropped

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("min_scale", "max_aspect", "trials")


class SSDZoomOut(A.DualTransform):
    """SSD's "expansion" / zoom-out (Liu et al. 2016, §3.6 "Data augmentation for small object
    accuracy"): place the image at a random position on a canvas ``ratio`` ∈ [1, max_ratio] times
    larger, filled with the mean pixel, which creates small objects for the random crop to find.

    albumentations 2.0.8 has no equivalent: ``Affine(scale<1)`` keeps the canvas size and its
    translation is independent of the scale (the image could leave the canvas), and
    ``PadIfNeeded``/``CropAndPad`` pad to fixed sizes or change the aspect ratio per side.
    """

    def __init__(self, max_ratio: float = 4.0, fill: Sequence[float] = MEAN_RGB, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.max_ratio = max_ratio
        self.fill = tuple(float(v) for v in fill)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        ratio = self.py_random.uniform(1.0, self.max_ratio)
        canvas_h, canvas_w = int(height * ratio), int(width * ratio)
        top = int(self.py_random.uniform(0, canvas_h - height))
        left = int(self.py_random.uniform(0, canvas_w - width))
        return {"canvas": (canvas_h, canvas_w), "offset": (top, left)}

    def apply(self, img: np.ndarray, canvas: tuple[int, int], offset: tuple[int, int], **params: Any) -> np.ndarray:
        out = np.empty((canvas[0], canvas[1], img.shape[2]), img.dtype)
        out[...] = np.asarray(self.fill[: img.shape[2]], np.float32).astype(img.dtype)
        top, left = offset
        out[top : top + img.shape[0], left : left + img.shape[1]] = img  # a memcpy, not a warp
        return out

    def apply_to_bboxes(
        self, bboxes: np.ndarray, canvas: tuple[int, int], offset: tuple[int, int], **params: Any
    ) -> np.ndarray:
        if not len(bboxes):
            return bboxes
        height, width = params["shape"][:2]
        out = bboxes.copy()
        # normalised in the old image -> pixels -> shifted -> normalised in the canvas
        out[:, [0, 2]] = (bboxes[:, [0, 2]] * width + offset[1]) / canvas[1]
        out[:, [1, 3]] = (bboxes[:, [1, 3]] * height + offset[0]) / canvas[0]
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("max_ratio", "fill")


AugmentPolicy = Literal["ssd", "light", "none"]


def detection_transform(resolution: int, policy: AugmentPolicy = "ssd") -> A.Compose | None:
    """Training augmentation, then the resize to the model input; None for ``policy="none"``.

    ``ssd``: SSD's augmentation (§2.2 and §3.6), in the reference implementation's order:
    photometric distortion on the original pixels, zoom-out (p=0.5, up to 4x), IoU-constrained
    crop, horizontal flip (p=0.5), resize. It pays off over COCO-length schedules (SSD §3.6:
    +2-3 mAP on small objects) but slows learning many times over in a short run.
    ``light``: the horizontal flip only: the default, for short runs on small custom sets, where
    SSD's policy and even its photometric distortion alone cost accuracy (colour can be what tells
    a custom set's classes apart): see docs/detection.md, Code defaults.

    Boxes are re-filtered after every step (``check_each_transform``): clipped to the image and
    dropped when under 1 pixel wide or high, so every box that comes out is valid.
    """
    if policy == "none":
        return None
    steps: list[A.BasicTransform] = []
    if policy == "ssd":
        steps += [
            # SSD's photometric distortions (brightness ±32/255, contrast and saturation 0.5-1.5,
            # hue ±18°; Howard 2013) as one ColorJitter.
            A.ColorJitter(
                brightness=(0.875, 1.125), contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=(-0.05, 0.05), p=0.5
            ),
            SSDZoomOut(max_ratio=4.0, p=0.5),
            SSDRandomIoUCrop(),
        ]
    elif policy != "light":
        raise BadInputError(f"The augmentation policy must be 'ssd', 'light' or 'none'; got {policy!r}.")
    steps += [A.HorizontalFlip(p=0.5), A.Resize(resolution, resolution, interpolation=cv2.INTER_LINEAR)]
    return A.Compose(
        steps,
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"], min_width=1, min_height=1, clip=True),
    )


def finalize_boxes(boxes: np.ndarray, labels: np.ndarray, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Clip to the image and drop boxes under one pixel: a last guard before the loss."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
    return torch.from_numpy(boxes[keep].copy()), torch.from_numpy(labels[keep].copy())


def augmentation_seed() -> int:
    """The seed of this process's augmentation stream, drawn from nothing (no RNG is consumed).

    ``torch.initial_seed()`` is the run's seed (``--seed_everything``) in the main process and
    that of the DataLoader worker (the loader's base seed + worker id) in a worker; the DDP rank
    is mixed in so ranks do not replay each other's augmentations.
    """
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)))
    return (torch.initial_seed() + 1_000_003 * rank) % 2**32


def seed_augmentation(transform: Any) -> None:
    """Seed ``transform`` (an albumentations ``Compose``; anything else is left alone) from
    ``augmentation_seed``.

    albumentations' Compose draws from its own ``random.Random``/numpy generators, seeded from
    the operating system's entropy when it is built: unseeded, a run with ``--data.num_workers 0``
    (augmenting in the main process) flipped other images on every run, so the same command and
    seed trained another model each time.
    """
    if isinstance(transform, A.Compose):
        transform.set_random_seed(augmentation_seed())


def worker_init(worker_id: int) -> None:
    """Give each DataLoader worker (and each DDP rank) its own augmentation stream.

    Without re-seeding, every forked worker would replay the augmentations of the parent's
    generators. OpenCV's thread count is *not* set here: calling ``cv2.setNumThreads`` in a forked
    worker whose parent already started OpenCV's thread pool deadlocks (the child destroys a
    condition variable the parent's pool threads were waiting on). It is set once, in the parent,
    when this module is imported (below the imports), and forked workers inherit it.
    """
    info = get_worker_info()
    seed = augmentation_seed()
    random.seed(seed)
    np.random.seed(seed)
    seed_augmentation(getattr(info.dataset if info is not None else None, "transform", None))
