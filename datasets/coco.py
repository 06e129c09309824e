"""COCO 2017 (or any COCO-format) detection data: the dataset, SSD's augmentation, the data module.

``--data.root`` holds the public layout unchanged::

    annotations/instances_train2017.json   annotations/instances_val2017.json
    train2017/*.jpg                        val2017/*.jpg

COCO category ids are not contiguous (1..90 with gaps, 80 used); the models want labels 1..K with
0 for background, so the dataset maps ``category_id -> label`` on reading and exposes
``label_to_category_id`` for the evaluator to map detections back. Crowd regions (``iscrowd=1``)
are not training targets (the COCO evaluator handles them itself); images without objects are
kept (they are pure negatives). Degenerate boxes are clipped to the image or dropped when reading,
and counted in one warning per file, so nothing degenerate reaches a loss.

A batch from ``collate_detection`` is ``(images, targets)``: ``images`` a float tensor
``(B, 3, R, R)`` in [0, 1] (R = ``resolution``), ``targets`` a list of dicts with ``boxes``
(float ``(N, 4)`` xyxy in the resized image's pixels), ``labels`` (int64 ``(N,)``, 1..K),
``image_id`` (int), ``orig_size`` and ``input_size`` ((h, w) ints) so predictions map back to
original pixels.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping, Sequence
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any, Literal

# albumentations asks PyPI for a newer version on import; this project never touches the network
# at run time (and clusters often have none), so switch that off before the import.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.augmentations.crops.transforms import BaseCrop
from pycocotools.coco import COCO
from pytorch_lightning import LightningDataModule
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, get_worker_info

from backbone.errors import BadInputError
from datasets.demo import announce_demo
from datasets.demo_coco import ensure_demo_coco
from datasets.loading import image_files, make_loader

# One OpenCV thread per process: DataLoader workers (and DDP ranks) already use every core, and
# setting this before OpenCV's pool starts is what keeps forked workers from deadlocking.
cv2.setNumThreads(1)

# SSD fills the zoomed-out canvas with the mean pixel (Liu et al. 2016, Section 3.6), RGB 0..255.
MEAN_RGB = (123.675, 116.28, 103.53)
Target = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Reading the annotation file
# --------------------------------------------------------------------------------------------
def read_annotation_json(path: Path) -> dict[str, Any]:
    """Load a COCO annotation file and check the keys this loader relies on.

    Raises ``BadInputError`` (one sentence naming the file) for a missing file, invalid JSON or a
    record without the required keys, instead of a ``KeyError`` deep inside a DataLoader worker.
    """
    if not path.is_file():
        raise BadInputError(
            f"The annotation file {str(path)!r} does not exist; expected a COCO instances JSON file there."
        )
    try:
        with path.open("rb") as handle:
            data = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BadInputError(
            f"The annotation file {str(path)!r} is not valid JSON ({error}); expected a COCO instances file."
        ) from None
    if not isinstance(data, dict):
        raise BadInputError(
            f"The annotation file {str(path)!r} holds a {type(data).__name__}; expected a COCO JSON object."
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise BadInputError(
                f"The annotation file {str(path)!r} has no {key!r} list; expected the COCO instances format."
            )
    _check_records(path, data["images"], ("id", "file_name", "width", "height"), "image")
    _check_records(path, data["annotations"], ("id", "image_id", "category_id", "bbox"), "annotation")
    _check_records(path, data["categories"], ("id", "name"), "category")
    if not data["categories"]:
        raise BadInputError(f"The annotation file {str(path)!r} lists no categories; expected at least one.")
    return data


def _check_records(path: Path, records: list[Any], keys: tuple[str, ...], kind: str) -> None:
    for record in records:
        if not isinstance(record, dict) or any(k not in record for k in keys):
            missing = [k for k in keys if not isinstance(record, dict) or k not in record]
            raise BadInputError(
                f"The annotation file {str(path)!r} has an {kind} record without {missing} "
                f"(record: {str(record)[:80]}); every {kind} needs {list(keys)}."
            )


def coco_from_dict(data: dict[str, Any]) -> COCO:
    """A pycocotools ``COCO`` index over an already-loaded annotation dict (no second JSON read)."""
    coco = COCO()
    coco.dataset = data
    with redirect_stdout(StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    return coco


def read_categories(path: Path) -> list[dict[str, Any]]:
    """The ``categories`` list of an annotation file, sorted by id."""
    return sorted(read_annotation_json(path)["categories"], key=lambda c: int(c["id"]))


def clean_boxes(
    annotations: Sequence[Mapping[str, Any]], width: float, height: float, category_to_label: Mapping[int, int]
) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """Turn one image's COCO annotations into training targets.

    Returns ``(boxes xyxy float32 (N, 4), labels int64 (N,), n_crowd, n_clipped, n_dropped)``.
    Crowd regions are skipped (COCO's evaluator ignores detections matched to them; as training
    targets they would teach the model one box around a whole crowd). Boxes sticking out of the
    image are clipped; boxes with no width/height (before or after clipping, < 1 pixel) or with
    non-finite numbers are dropped, because torchvision's detectors refuse them deep in the loss.
    """
    boxes: list[list[float]] = []
    labels: list[int] = []
    n_crowd = n_clipped = n_dropped = 0
    for ann in annotations:
        if ann.get("iscrowd", 0):
            n_crowd += 1
            continue
        bbox = ann["bbox"]
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            n_dropped += 1
            continue
        if not all(np.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
            n_dropped += 1
            continue
        x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
        if x2 - x1 < 1 or y2 - y1 < 1:  # outside the image, or a sliver once clipped
            n_dropped += 1
            continue
        if (x1, y1, x2, y2) != (x, y, x + w, y + h):
            n_clipped += 1
        boxes.append([x1, y1, x2, y2])
        labels.append(category_to_label[int(ann["category_id"])])
    return (
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(labels, np.int64),
        n_crowd,
        n_clipped,
        n_dropped,
    )


def read_image_rgb(path: Path) -> np.ndarray:
    """Decode an image with OpenCV (several times faster than PIL for JPEG) as RGB uint8 (H, W, 3)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        if not path.exists():
            raise BadInputError(
                f"The image file {str(path)!r} does not exist; expected it next to its annotation file."
            )
        raise BadInputError(f"The image file {str(path)!r} could not be decoded; expected a JPEG or PNG image.")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


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


def train_transform(resolution: int, policy: AugmentPolicy = "ssd") -> A.Compose | None:
    """Training augmentation, then the resize to the model input; None for ``policy="none"``.

    ``ssd``: SSD's augmentation (§2.2 and §3.6), in the reference implementation's order:
    photometric distortion on the original pixels, zoom-out (p=0.5, up to 4x), IoU-constrained
    crop, horizontal flip (p=0.5), resize. It pays off over COCO-length schedules (SSD §3.6:
    +2-3 mAP on small objects) but slows learning many times over in a short run.
    ``light``: the horizontal flip only: the default, for short runs on small custom sets. On the
    demo set (README) SSD's policy trains many times slower, and even its photometric distortion
    alone cost 0.15 mAP@0.5 over 30 epochs: colour can be what tells a custom set's classes apart.

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


# --------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------
class CocoDetection(Dataset[tuple[Tensor, Target]]):
    """A COCO-format detection split: ``image_dir`` + its instances JSON, read with pycocotools.

    Args:
        image_dir: folder holding the images named by ``file_name``.
        annotation_file: the COCO instances JSON of this split.
        resolution: side of the square model input (SSD300: 300).
        augment: the training augmentation policy (``train_transform``); ``none`` resizes only.
        category_ids: the category ids in label order (label = index + 1); defaults to this
            file's categories sorted by id. The data module passes the val file's list to both
            splits so train and val agree on the labels.
    """

    def __init__(
        self,
        image_dir: str | os.PathLike[str],
        annotation_file: str | os.PathLike[str],
        resolution: int = 300,
        augment: AugmentPolicy = "none",
        category_ids: Sequence[int] | None = None,
        annotation_data: dict[str, Any] | None = None,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.annotation_file = Path(annotation_file)
        self.resolution = int(resolution)
        if self.resolution < 32:
            raise BadInputError(f"The resolution {resolution} is too small; expected at least 32 pixels.")
        data = annotation_data if annotation_data is not None else read_annotation_json(self.annotation_file)
        self.coco = coco_from_dict(data)
        names = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        if category_ids is None:
            category_ids = sorted(names)
        self.category_ids: list[int] = [int(c) for c in category_ids]
        self.category_to_label: dict[int, int] = {cid: i + 1 for i, cid in enumerate(self.category_ids)}
        self.label_to_category_id: dict[int, int] = {i + 1: cid for i, cid in enumerate(self.category_ids)}
        self.category_names: list[str] = [names.get(cid, str(cid)) for cid in self.category_ids]

        unknown = {int(a["category_id"]) for a in data["annotations"]} - set(self.category_to_label)
        if unknown:
            raise BadInputError(
                f"The annotation file {str(self.annotation_file)!r} uses category ids {sorted(unknown)[:10]} "
                f"that are not in the category list {self.category_ids[:10]}...; expected every id to be listed."
            )
        if not self.image_dir.is_dir():
            raise BadInputError(
                f"The image folder {str(self.image_dir)!r} does not exist; expected the split's images."
            )
        # One listdir instead of 118k stat calls: a missing file is reported at once, by name.
        present = set(os.listdir(self.image_dir))
        self.image_ids: list[int] = sorted(self.coco.imgs)
        for image_id in self.image_ids:
            name = self.coco.imgs[image_id]["file_name"]
            if name not in present and not (self.image_dir / name).is_file():
                raise BadInputError(
                    f"The image file {str(self.image_dir / name)!r} listed in {str(self.annotation_file)!r} "
                    "does not exist; expected every listed image in the image folder."
                )
        # Clean every image's targets once, here, so the count is reported once per dataset.
        self.targets: list[tuple[np.ndarray, np.ndarray]] = []
        n_crowd = n_clipped = n_dropped = 0
        for image_id in self.image_ids:
            info = self.coco.imgs[image_id]
            boxes, labels, c, k, d = clean_boxes(
                self.coco.imgToAnns.get(image_id, []),
                float(info["width"]),
                float(info["height"]),
                self.category_to_label,
            )
            self.targets.append((boxes, labels))
            n_crowd, n_clipped, n_dropped = n_crowd + c, n_clipped + k, n_dropped + d
        self.n_crowd, self.n_clipped, self.n_dropped = n_crowd, n_clipped, n_dropped
        if n_clipped or n_dropped:
            rank_zero_warn(
                f"{self.annotation_file}: dropped {n_dropped} degenerate boxes (no width/height or outside the image) "
                f"and clipped {n_clipped} boxes to their image."
            )
        self.transform: A.Compose | None = train_transform(self.resolution, augment)

    @property
    def num_classes(self) -> int:
        """Foreground categories + 1 for background (torchvision's convention)."""
        return len(self.category_ids) + 1

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        image_id = self.image_ids[index]
        image = read_image_rgb(self.image_dir / self.coco.imgs[image_id]["file_name"])
        orig_h, orig_w = image.shape[:2]
        boxes, labels = self.targets[index]
        if self.transform is not None:
            out = self.transform(image=image, bboxes=boxes, labels=labels)
            image, boxes, labels = out["image"], np.asarray(out["bboxes"]), np.asarray(out["labels"])
        else:
            image, boxes = resize_only(image, boxes, self.resolution)
        height, width = image.shape[:2]
        box_tensor, label_tensor = finalize_boxes(boxes, labels, height, width)
        target: Target = {
            "boxes": box_tensor,
            "labels": label_tensor,
            "image_id": int(image_id),
            "orig_size": (int(orig_h), int(orig_w)),
            "input_size": (int(height), int(width)),
        }
        return to_tensor(image), target


class ImageFolderPredict(Dataset[tuple[Tensor, Target]]):
    """Every ``*.jpg``/``*.png`` of a folder (sorted), resized for the model, for ``predict``.

    The target dict carries ``file_name``, ``orig_size`` and ``input_size`` so that predicted
    boxes map back to the original pixels, and ``image_id`` = the index in the sorted list.
    """

    def __init__(self, folder: str | os.PathLike[str], resolution: int = 300) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise BadInputError(
                f"The prediction folder {str(self.folder)!r} does not exist; expected a folder of images."
            )
        self.files = image_files(self.folder)
        if not self.files:
            raise BadInputError(f"The prediction folder {str(self.folder)!r} holds no .jpg/.png images.")
        self.resolution = int(resolution)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        image = read_image_rgb(self.files[index])
        orig_h, orig_w = image.shape[:2]
        image, _ = resize_only(image, np.zeros((0, 4), np.float32), self.resolution)
        target: Target = {
            "image_id": index,
            "file_name": self.files[index].name,
            "orig_size": (int(orig_h), int(orig_w)),
            "input_size": (self.resolution, self.resolution),
        }
        return to_tensor(image), target


def collate_detection(batch: Sequence[tuple[Tensor, Target]]) -> tuple[Tensor | list[Tensor], list[Target]]:
    """``(images, targets)``: images stacked to ``(B, 3, H, W)`` when they share a size (always,
    after the resize), else a list; torchvision's detectors accept either. Targets stay a list."""
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    if all(img.shape == images[0].shape for img in images):
        return torch.stack(images), targets
    return images, targets


def worker_init(worker_id: int) -> None:
    """Give each DataLoader worker (and each DDP rank) its own augmentation stream.

    albumentations' Compose draws from its own ``random.Random``/numpy generators, created in the
    parent process: without re-seeding, every forked worker would replay the same augmentations.
    OpenCV's thread count is *not* set here: calling ``cv2.setNumThreads`` in a forked worker
    whose parent already started OpenCV's thread pool deadlocks (the child destroys a condition
    variable the parent's pool threads were waiting on). It is set once, in the parent, when this
    module is imported (below the imports), and forked workers inherit it.
    """
    info = get_worker_info()
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)))
    seed = (torch.initial_seed() + 1_000_003 * rank) % 2**32
    random.seed(seed)
    np.random.seed(seed)
    dataset = info.dataset if info is not None else None
    transform = getattr(dataset, "transform", None)
    if isinstance(transform, A.Compose):
        transform.set_random_seed(seed)


# --------------------------------------------------------------------------------------------
# The data module
# --------------------------------------------------------------------------------------------
class CocoDataModule(LightningDataModule):
    """COCO 2017 detection (any COCO-format set in the same layout), or the built-in demo.

    Args:
        root: folder with ``annotations/instances_{train,val}2017.json``, ``train2017/`` and
            ``val2017/``; None uses the built-in demo set (generated once into the cache).
        resolution: side of the square model input (linked from ``--resolution``; SSD300: 300).
        batch_size: images per batch and per process.
        num_workers: DataLoader worker processes.
        augment: training augmentation: ``light`` (horizontal flip, the default for short runs),
            ``ssd`` (SSD's full zoom-out + IoU crop, as the paper rows' configs use) or ``none``.
        predict_dir: a folder of images for ``predict``; default the val images.

    ``test`` uses the val split: COCO test-dev's labels are not public (its results are scored
    by the evaluation server), so the val2017 numbers are the ones a local run can report.
    """

    def __init__(
        self,
        root: str | None = None,
        resolution: int = 300,
        batch_size: int = 16,
        num_workers: int = 2,
        augment: AugmentPolicy = "light",
        predict_dir: str | None = None,
    ) -> None:
        super().__init__()
        if root is None:
            self.root = ensure_demo_coco()
            announce_demo(self.root)
        else:
            self.root = Path(root).expanduser()
            if not self.root.is_dir():
                raise BadInputError(f"The data root {str(self.root)!r} does not exist; expected a COCO 2017 folder.")
        for needed in (self.train_annotations, self.val_annotations, self.root / "train2017", self.root / "val2017"):
            if not needed.exists():
                raise BadInputError(
                    f"The COCO file {str(needed)!r} is missing; expected annotations/instances_{{train,val}}2017.json, "
                    "train2017/ and val2017/ under --data.root."
                )
        self.resolution = resolution
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augment = augment
        self.predict_dir = predict_dir
        # The val file is small (25 MB for COCO) and defines the label order for both splits;
        # read once here so num_classes is known when the CLI links it into the model.
        self._val_json = read_annotation_json(self.val_annotations)
        categories = sorted(self._val_json["categories"], key=lambda c: int(c["id"]))
        self.category_ids: list[int] = [int(c["id"]) for c in categories]
        self.category_names: list[str] = [str(c["name"]) for c in categories]
        self.label_to_category_id: dict[int, int] = {i + 1: cid for i, cid in enumerate(self.category_ids)}
        self.train_set: CocoDetection | None = None
        self.val_set: CocoDetection | None = None
        self.predict_set: Dataset | None = None

    @property
    def train_annotations(self) -> Path:
        return self.root / "annotations" / "instances_train2017.json"

    @property
    def val_annotations(self) -> Path:
        return self.root / "annotations" / "instances_val2017.json"

    @property
    def num_classes(self) -> int:
        """Foreground categories + 1 for background; the CLI links it into ``--model.num_classes``."""
        return len(self.category_ids) + 1

    @property
    def val_coco(self) -> COCO:
        """The val split's pycocotools ``COCO`` object (ground truth for the evaluator)."""
        if self.val_set is None:
            self.setup("validate")
        assert self.val_set is not None
        return self.val_set.coco

    def setup(self, stage: str) -> None:
        """``fit``: train + val; ``validate``/``test``: val; ``predict``: ``predict_dir`` or val."""
        if stage == "fit" and self.train_set is None:
            self.train_set = CocoDetection(
                self.root / "train2017", self.train_annotations, self.resolution, self.augment, self.category_ids
            )
        if stage in ("fit", "validate", "test") and self.val_set is None:
            self.val_set = CocoDetection(
                self.root / "val2017", self.val_annotations, self.resolution, "none", self.category_ids, self._val_json
            )
        if stage == "predict" and self.predict_set is None:
            if self.predict_dir is not None:
                self.predict_set = ImageFolderPredict(self.predict_dir, self.resolution)
            else:
                self.predict_set = CocoDetection(
                    self.root / "val2017",
                    self.val_annotations,
                    self.resolution,
                    "none",
                    self.category_ids,
                    self._val_json,
                )

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        return make_loader(
            dataset,
            train=train,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            trainer=getattr(self, "trainer", None),
            collate_fn=collate_detection,
            worker_init_fn=worker_init,
        )

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        assert self.train_set is not None
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        assert self.val_set is not None
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        if self.predict_set is None:
            self.setup("predict")
        assert self.predict_set is not None
        return self._loader(self.predict_set, train=False)
