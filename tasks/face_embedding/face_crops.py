"""Faces in real photos: the project's own SSD finds them, and each is cropped for the face index.

    detector = FaceDetector.load("runs/detection/.../best.ckpt", score_threshold=0.5)
    faces = faces_in_folder(detector, Path("photos"), resolution=128, largest_only=False)
    for face in faces:                 # FoundFace(path, box, score, crop)
        ...                            # face_batch([face.crop, ...], 128) -> the embedder's input
    faces.no_face                      # photos in which nothing was found, by name

The detector is a ``tasks.detection`` checkpoint trained on faces (``--data.layout wider_face``);
it runs as ``predict`` runs it (the evaluation resize ``datasets.coco.dataset.predict_transform``,
torchvision's postprocessing and NMS inside the model, boxes mapped back by
``tasks.detection.evaluation.to_original_pixels``), in eval mode under ``inference_mode``.

``crop_face`` cuts a square centred on the box, of side ``max(w, h) * (1 + 2 * margin)``,
padded with black where it leaves the image (as insightface's ``norm_crop`` warps with border
value 0), resized to the embedder's resolution. The default margin, 0.15 of the box's longer
side on each side, is what the embedder saw in training and what FaceNet used on LFW: the face
demo's portraits are 1.28x the face's longer side at the median (0.14 per side), and FaceNet's
``align_dataset_mtcnn`` adds 32 px around MTCNN boxes before resizing to 160 px for LFW (16 px
per side on faces of about 110 px in LFW's 250 px photos: 0.15). The crops then go through the
embedder's own ``face_eval_transform`` (``face_batch``), so the index sees what it would see from
a folder of face crops.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader

from backbone.errors import BadInputError
from datasets.coco.dataset import predict_transform
from datasets.face_identities import face_eval_transform
from datasets.images import PredictFolder
from tasks.checkpoints import OUTPUTS_KEY, STAMP_KEY
from tasks.detection.evaluation import to_original_pixels
from tasks.detection.module import build_detector
from tasks.teacher import model_state, read_task_checkpoint

DEFAULT_MARGIN = 0.15  # of the box's longer side, on each side (module docstring)
FACE = "face"  # the category a face detector's checkpoint names (datasets.wider_face)


@dataclass(frozen=True)
class Detection:
    """One face: ``box`` (x1, y1, x2, y2) in the pixels of the image given, and its score."""

    box: tuple[float, float, float, float]
    score: float

    @property
    def area(self) -> float:
        return max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0)


def face_label(path: str | os.PathLike[str], checkpoint: dict[str, Any]) -> int:
    """The label (1..K) of the ``face`` category in a detection checkpoint, or one sentence why not.

    The stamp names the categories as ``face (id 1)``; a checkpoint without names is taken as a
    face detector only when it has a single category.
    """
    names = ((checkpoint.get(STAMP_KEY) or {}).get(OUTPUTS_KEY) or {}).get("categories")
    if names:
        for index, name in enumerate(names):
            if str(name).split(" (id ")[0] == FACE:
                return index + 1
        listed = ", ".join(str(n).split(" (id ")[0] for n in names[:6])
        raise BadInputError(
            f"The checkpoint {str(path)!r} detects {listed}, not faces; give a detector trained with "
            "'python -m tasks.detection fit --data.layout wider_face'."
        )
    if int(checkpoint["hyper_parameters"]["num_classes"]) == 2:
        return 1
    raise BadInputError(
        f"The checkpoint {str(path)!r} names no categories and has more than one; give a detector trained with "
        "'python -m tasks.detection fit --data.layout wider_face'."
    )


class FaceDetector:
    """A face detector of this project, ready for inference (eval mode, no gradients).

    ``model`` is the torchvision detector (``tasks.detection.module.build_detector``), which keeps
    detections scoring at least ``score_threshold`` (its ``score_thresh``, before NMS);
    ``resolution`` its square input; ``label`` the face category's label.
    """

    def __init__(self, model: nn.Module, resolution: int, label: int, score_threshold: float, source: str) -> None:
        self.model = model.eval().requires_grad_(False)
        self.resolution = int(resolution)
        self.label = int(label)
        self.score_threshold = float(score_threshold)
        self.source = source
        self.transform = predict_transform(self.resolution)  # PIL image -> the detector's input

    @classmethod
    def load(cls, path: str | os.PathLike[str], score_threshold: float = 0.5) -> FaceDetector:
        """The face detector in the ``tasks.detection`` checkpoint ``path``; a checkpoint of another
        task, or a detector of other things than faces, is refused in one sentence."""
        if not 0.0 <= score_threshold < 1.0:
            raise BadInputError(f"The face score threshold {score_threshold} is out of range; expected [0, 1).")
        checkpoint = read_task_checkpoint(path, "detection", needs=("num_classes", "arch"))
        label = face_label(path, checkpoint)
        hp = checkpoint["hyper_parameters"]
        try:
            model = build_detector(
                str(hp["arch"]),
                float(hp.get("width", 1.0)),
                int(hp["num_classes"]),
                int(hp.get("resolution", 300)),
                freeze_bn=bool(hp.get("freeze_bn", False)),
                score_thresh=score_threshold,
            )
            model.load_state_dict(model_state(checkpoint))
        except (RuntimeError, KeyError) as error:  # load_state_dict's size/key mismatch
            reason = str(error).strip().splitlines()[0][:160]
            raise BadInputError(
                f"The checkpoint {str(path)!r} does not fit its own hyper-parameters ({reason})."
            ) from None
        return cls(model, int(hp.get("resolution", 300)), label, score_threshold, str(path))

    @torch.inference_mode()
    def detect_batch(self, inputs: Tensor, sizes: Sequence[tuple[int, int]]) -> list[list[Detection]]:
        """Faces in a batch of ``transform``-ed images whose original sizes are ``sizes`` ((h, w)),
        best first, boxes in original pixels."""
        if self.model.training:
            self.model.eval()
        outputs = self.model(list(inputs))
        found = []
        for output, size in zip(outputs, sizes, strict=True):
            keep = (output["labels"] == self.label) & (output["scores"] >= self.score_threshold)
            boxes = to_original_pixels(output["boxes"][keep].float().numpy(), size, inputs.shape[-2:])
            scores = output["scores"][keep].tolist()
            found.append([Detection(tuple(b), s) for b, s in zip(boxes.tolist(), scores, strict=True)])  # type: ignore[arg-type]
        return found

    def detect(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """Faces in each of ``images`` (PIL, any sizes), run as one batch."""
        if not images:
            return []
        inputs = torch.stack([self.transform(image.convert("RGB")) for image in images])
        return self.detect_batch(inputs, [(image.height, image.width) for image in images])


def crop_face(image: Image.Image, box: Sequence[float], resolution: int, margin: float = DEFAULT_MARGIN) -> Image.Image:
    """The square around ``box`` (x1, y1, x2, y2) of side ``max(w, h) * (1 + 2 * margin)``, centred
    on it, black where it leaves the image, resized (antialiased) to ``resolution`` squared."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1) or margin < 0:
        raise BadInputError(
            f"The face box {list(box)} is empty or the margin {margin} is negative; expected x2 > x1, y2 > y1 "
            "and a margin of at least 0."
        )
    side = max(1, round(max(x2 - x1, y2 - y1) * (1 + 2 * margin)))
    left, top = round((x1 + x2 - side) / 2), round((y1 + y2 - side) / 2)
    # PIL fills the part of a crop outside the image with zeros: black.
    square = image.convert("RGB").crop((left, top, left + side, top + side))
    return square.resize((resolution, resolution), Image.BILINEAR) if side != resolution else square


def face_batch(crops: Sequence[Image.Image], resolution: int) -> Tensor:
    """Crops as the embedder takes them: the face index's own ``face_eval_transform``."""
    transform = face_eval_transform(resolution)
    return torch.stack([transform(crop) for crop in crops])


@dataclass(frozen=True)
class FoundFace:
    """A face found in a photo: the photo, its box (xyxy, photo pixels), score and crop."""

    path: Path
    box: tuple[float, float, float, float]
    score: float
    crop: Image.Image


def _collate(batch: Sequence[Any]) -> tuple[Tensor, list[Image.Image], list[dict[str, Any]]] | None:
    items = [item for item in batch if item is not None]  # unreadable photos: reported by PredictFolder
    if not items:
        return None
    return torch.stack([item[0][0] for item in items]), [item[0][1] for item in items], [item[1] for item in items]


class FolderFaces:
    """The faces of every photo under ``folder`` (``faces_in_folder``); iterate once.

    After iterating: ``photos`` (readable photos seen), ``no_face`` (names, relative to the
    folder, of photos in which no face scored at least the threshold) and ``unreadable``.
    """

    def __init__(
        self,
        detector: FaceDetector,
        folder: Path,
        resolution: int,
        largest_only: bool,
        batch_size: int = 16,
        num_workers: int = 0,
        margin: float = DEFAULT_MARGIN,
    ) -> None:
        self.detector, self.resolution, self.largest_only, self.margin = detector, resolution, largest_only, margin
        transform = detector.transform
        self.dataset = PredictFolder(folder, lambda image: (transform(image), image))
        self.loader = DataLoader(self.dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
        self.photos = 0
        self.no_face: list[str] = []

    @property
    def unreadable(self) -> int:
        return len(self.dataset) - self.photos

    def __iter__(self) -> Iterator[FoundFace]:
        for batch in self.loader:
            if batch is None:
                continue
            inputs, images, infos = batch
            self.photos += len(images)
            found = self.detector.detect_batch(inputs, [tuple(info["orig_size"]) for info in infos])
            for image, info, faces in zip(images, infos, found, strict=True):
                if not faces:
                    self.no_face.append(info["name"])
                    print(f"No face found in {info['name']!r}.", file=sys.stderr)
                    continue
                if self.largest_only:  # enrolment: the photo's person is its largest face
                    faces = [max(faces, key=lambda face: (face.area, face.score))]
                for face in faces:
                    crop = crop_face(image, face.box, self.resolution, self.margin)
                    yield FoundFace(Path(info["path"]), face.box, face.score, crop)
        if self.no_face:
            print(
                f"No face found in {len(self.no_face)} of {self.photos} photos (score threshold "
                f"{self.detector.score_threshold:g}).",
                file=sys.stderr,
            )


# Every face in every photo under a folder (recursively), cropped for an embedder of ``resolution``:
# the largest of each photo (``largest_only``: enrolment) or all of them (search).
faces_in_folder = FolderFaces
