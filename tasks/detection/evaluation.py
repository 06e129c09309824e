"""COCO box mAP for a LightningModule: collect detections per rank, evaluate once over the union.

Usage from a LightningModule::

    self.evaluator = CocoEvaluator(datamodule.val_ground_truth, datamodule.label_to_category_id)
    # validation_step:  self.evaluator.update(model(images), targets)
    # on_validation_epoch_end:  self.log_dict(self.evaluator.compute()); self.evaluator.reset()

``update`` turns the model's outputs (boxes xyxy in the *input* pixels, contiguous labels 1..K)
into COCO result records: the original category id, an xywh box in the ORIGINAL image's pixels
(scaled by ``orig_size / input_size`` from the target), and the score. ``compute`` gathers the
records and the ids of every image seen from all DDP ranks (``all_gather_object``), keeps each
image once (the first rank that saw it), and runs the COCO evaluation once, on rank 0, over just
the images seen, so a run limited to part of val (``limit_val_batches``) is scored correctly. The
12 numbers (and on request ``AP/<category name>``, read from COCOeval's precision array) are then
broadcast so every rank logs the same values.

What is scored is what is written: ``result_records`` gives every detection the precision of the
results file (boxes to 0.01 px, scores as the model's float32 value, shortest form) and the
evaluator scores those very records, in the order ``detections.json`` lists them (by image id).
So pycocotools' ``COCOeval`` on the written file gives the reported figures (to the last bit
with ``--model.eval_backend pycocotools``; faster-coco-eval's C++ sums in another order, which
moves a figure by about 1e-16).

The ground truth is the data module's annotation dict (``CocoDataModule.val_ground_truth``); the
evaluator indexes it once, with the library that scores it, and reuses the index.

Backend: faster-coco-eval (a C++ port that gives the same numbers as pycocotools, several times
faster on COCO val), falling back to pycocotools if it cannot be imported.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from datasets.coco.annotations import read_annotation_json
from tasks.distributed import broadcast_from_zero, gather_objects, global_rank
from tasks.outputs import write_json_atomic

# The 12 stats of COCOeval.summarize(), in its order, under the project's stable names.
STAT_NAMES: tuple[str, ...] = (
    "mAP",
    "mAP50",
    "mAP75",
    "mAP_small",
    "mAP_medium",
    "mAP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


def _gt_dataset(coco_gt: Any) -> dict[str, Any]:
    """The ground-truth annotation dict from a COCO object (either library), a dict, a path, or a
    call that builds the dict (``CocoDataModule.val_ground_truth``: built only where it is scored)."""
    if callable(coco_gt) and not hasattr(coco_gt, "dataset"):
        coco_gt = coco_gt()
    if isinstance(coco_gt, Mapping):
        return dict(coco_gt)
    if isinstance(coco_gt, (str, os.PathLike)):
        return read_annotation_json(coco_gt)
    dataset = getattr(coco_gt, "dataset", None)
    if not isinstance(dataset, Mapping):
        raise TypeError(f"Expected a COCO object, an annotation dict or a path for the ground truth, got {coco_gt!r}.")
    return dict(dataset)


def _backend(name: str) -> tuple[type, type]:
    """(COCO, COCOeval) classes of the requested backend ("faster", "pycocotools" or "auto")."""
    if name in ("auto", "faster"):
        try:
            from faster_coco_eval import COCO, COCOeval_faster

            return COCO, COCOeval_faster
        except ImportError:
            if name == "faster":
                raise
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval


def load_ground_truth(coco_gt: Any, backend: str = "auto") -> Any:
    """The ground truth as a ``COCO`` index of ``backend``'s library: the one place an index is
    built (from the annotation dict, without a second JSON read or the "creating index" prints)."""
    coco_cls, _ = _backend(backend)
    if isinstance(coco_gt, coco_cls):
        return coco_gt
    index = coco_cls()
    index.dataset = _gt_dataset(coco_gt)
    with contextlib.redirect_stdout(io.StringIO()):
        index.createIndex()
    return index


@dataclass(frozen=True)
class CocoResult:
    """One COCO box evaluation: the 12 stats, the AP of each category and the PR curves.

    ``precision`` is COCOeval's precision at the 101 recall points of ``RECALL_POINTS``, for all
    areas and 100 detections, as ``(IoU thresholds 0.50:0.05:0.95, 101, categories)``; -1 where a
    category has no ground truth (COCO's convention). ``category_names[k]`` names column ``k``.
    """

    stats: dict[str, float]
    per_category: dict[str, float]
    precision: np.ndarray
    category_names: tuple[str, ...]


RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCOeval's params.recThrs


def category_names(gt: Any, category_ids: Sequence[int]) -> tuple[str, ...]:
    """The names of ``category_ids`` in ``gt``; a name shared by two ids gets its id appended."""
    names = [str(gt.cats[c].get("name", c)) for c in category_ids]
    return tuple(f"{n} ({c})" if names.count(n) > 1 else n for n, c in zip(names, category_ids, strict=True))


def per_category_ap(precision: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """``AP/<name>``: the mean over IoU thresholds and recall points of one category's precision,
    as ``COCOeval.summarize`` computes mAP over all of them (-1 without ground truth)."""
    out: dict[str, float] = {}
    for k, name in enumerate(names):
        valid = precision[:, :, k][precision[:, :, k] > -1]
        out[f"AP/{name}"] = float(valid.mean()) if valid.size else -1.0
    return out


def coco_evaluation(
    coco_gt: Any,
    detections: Sequence[Mapping[str, Any]],
    image_ids: Iterable[int] | None = None,
    backend: str = "auto",
) -> CocoResult:
    """COCO box evaluation of ``detections`` (COCO result dicts) over ``image_ids``.

    Args:
        coco_gt: ground truth: a pycocotools/faster-coco-eval ``COCO``, its dict, or a JSON path
            (pass ``load_ground_truth(...)`` to index it once for many evaluations).
        detections: ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` records.
        image_ids: the images to score (default: every ground-truth image). Images listed here
            but without detections count as misses, as they should.
        backend: "auto" (faster-coco-eval, else pycocotools), "faster" or "pycocotools".

    With no detections at all every stat and every category's AP is 0.0 (pycocotools cannot
    load an empty result list). Otherwise a number is -1.0 where COCO's own convention says so:
    no ground-truth object in that area range, or of that category.
    """
    _, eval_cls = _backend(backend)
    gt = load_ground_truth(coco_gt, backend)
    category_ids = sorted(gt.getCatIds())
    names = category_names(gt, category_ids)
    ids = sorted(set(int(i) for i in image_ids)) if image_ids is not None else sorted(gt.getImgIds())
    unknown = set(ids) - set(gt.getImgIds())
    if unknown:
        raise ValueError(f"Image ids {sorted(unknown)[:5]} are not in the ground truth; expected val image ids.")
    if not detections:
        empty = np.zeros((10, len(RECALL_POINTS), len(names)))
        return CocoResult(dict.fromkeys(STAT_NAMES, 0.0), dict.fromkeys((f"AP/{n}" for n in names), 0.0), empty, names)
    # loadRes adds keys to the records it is given: hand it copies.
    records = [dict(d, bbox=list(d["bbox"])) for d in detections]
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(records)
        kwargs: dict[str, Any] = {}
        if eval_cls.__module__.startswith("faster_coco_eval"):
            kwargs["print_function"] = lambda *args, **kw: None
        evaluator = eval_cls(gt, dt, "bbox", **kwargs)
        evaluator.params.imgIds = ids
        evaluator.params.catIds = category_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = np.asarray(evaluator.stats, dtype=np.float64)[: len(STAT_NAMES)]
    # (T, R, K, areas, max detections): area "all" is index 0, 100 detections the last.
    precision = np.asarray(evaluator.eval["precision"], dtype=np.float64)[:, :, :, 0, -1]
    return CocoResult(
        {name: float(value) for name, value in zip(STAT_NAMES, stats, strict=True)},
        per_category_ap(precision, names),
        precision,
        names,
    )


def evaluate_detections(
    coco_gt: Any,
    detections: Sequence[Mapping[str, Any]],
    image_ids: Iterable[int] | None = None,
    backend: str = "auto",
) -> dict[str, float]:
    """The 12 COCO stats under ``STAT_NAMES`` (see ``coco_evaluation`` for the arguments)."""
    return coco_evaluation(coco_gt, detections, image_ids, backend).stats


BOX_DECIMALS = 2  # boxes are written (and scored) to 0.01 pixel


def result_record(image_id: Any, category_id: Any, bbox: Sequence[Any], score: Any) -> dict[str, Any]:
    """One COCO result record, as the results files hold it and as it is scored.

    The box is rounded to 0.01 pixel (``BOX_DECIMALS``); the score keeps the model's float32 value
    in its shortest decimal form (``0.8734521``): two scores tie in the file only when the model
    gave them the same float32, so the ranking COCO's evaluator sees is the model's (rounding the
    scores to 5 decimals made 1,300 of 2,334 demo detections tie and moved mAP by 0.0005). Every
    value is a float that JSON writes and reads back unchanged, so scoring these records and
    scoring the file that holds them is the same computation.
    """
    return {
        "image_id": int(image_id),
        "category_id": int(category_id),
        "bbox": [round(float(v), BOX_DECIMALS) for v in bbox],
        "score": float(str(np.float32(score))),
    }


def result_records(detections: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``result_record`` of each detection (a dict with ``image_id``, ``category_id``, ``bbox``, ``score``)."""
    return [result_record(d["image_id"], d["category_id"], d["bbox"], d["score"]) for d in detections]


def write_results_json(detections: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write detections as a standard COCO results JSON (a list of ``result_record`` s), atomically."""
    return write_json_atomic(path, result_records(detections), indent=None)


def to_original_pixels(boxes: np.ndarray, orig_size: Sequence[float], input_size: Sequence[float]) -> np.ndarray:
    """Boxes xyxy in the model input's pixels -> the original image's pixels, clipped to it.

    ``orig_size`` and ``input_size`` are (h, w): the detectors see the image resized to the input.
    """
    oh, ow = (float(v) for v in orig_size)
    ih, iw = (float(v) for v in input_size)
    out = np.asarray(boxes, np.float64).reshape(-1, 4) * np.array([ow / iw, oh / ih, ow / iw, oh / ih])
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, ow)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, oh)
    return out


def _as_list(value: Any) -> list[float]:
    if isinstance(value, Tensor):
        return [float(v) for v in value.tolist()]
    return [float(v) for v in value]


class CocoEvaluator:
    """Accumulates detections over an epoch and returns the 12 COCO stats (see module docstring).

    Args:
        coco_gt: the ground truth: a call building the annotation dict
            (``CocoDataModule.val_ground_truth``), an annotation dict, a ``COCO`` index of the
            backend's library, or a path; built and indexed once, on rank 0's first compute.
        label_to_category_id: contiguous label (1..K) -> COCO category id
            (``CocoDataModule.label_to_category_id``); a sequence means label i+1 -> seq[i].
        backend: "auto", "faster" or "pycocotools".
    """

    def __init__(
        self,
        coco_gt: Any,
        label_to_category_id: Mapping[int, int] | Sequence[int],
        backend: str = "auto",
    ) -> None:
        self.coco_gt = coco_gt
        if isinstance(label_to_category_id, Mapping):
            self.label_to_category_id = {int(k): int(v) for k, v in label_to_category_id.items()}
        else:
            self.label_to_category_id = {i + 1: int(c) for i, c in enumerate(label_to_category_id)}
        self.backend = backend
        self._gt_index: Any = None  # the backend's COCO index, built on first compute()
        self.last_result: CocoResult | None = None  # rank 0: the last compute()'s evaluation
        self.reset()

    def reset(self) -> None:
        """Forget the detections and images of the previous epoch."""
        self._rows: list[np.ndarray] = []  # (N, 7): image_id, category_id, x, y, w, h, score
        self._seen: set[int] = set()

    def update(self, predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]) -> None:
        """Add one batch: ``predictions[i]`` (boxes xyxy in input pixels, scores, labels 1..K)
        belongs to ``targets[i]`` (``image_id``; ``orig_size`` and ``input_size`` as (h, w), used
        to map boxes to the original pixels; without them boxes are taken as original pixels)."""
        if len(predictions) != len(targets):
            raise ValueError(f"Got {len(predictions)} predictions for {len(targets)} targets; expected one per image.")
        for pred, target in zip(predictions, targets, strict=True):
            image_id = int(target["image_id"])
            self._seen.add(image_id)
            boxes = pred["boxes"]
            boxes = boxes.detach().float().cpu().numpy() if isinstance(boxes, Tensor) else np.asarray(boxes, np.float32)
            boxes = boxes.reshape(-1, 4).astype(np.float64)
            scores = np.asarray(_as_list(pred["scores"]), np.float64)
            labels = np.asarray(_as_list(pred["labels"]), np.int64)
            if len(boxes) == 0:
                continue
            if "orig_size" in target and "input_size" in target:
                boxes = to_original_pixels(boxes, _as_list(target["orig_size"]), _as_list(target["input_size"]))
            known = np.array([int(lab) in self.label_to_category_id for lab in labels], bool)  # skips background 0
            category = np.array([self.label_to_category_id.get(int(lab), -1) for lab in labels], np.float64)
            rows = np.stack(
                [
                    np.full(len(boxes), image_id, np.float64),
                    category,
                    boxes[:, 0],
                    boxes[:, 1],
                    boxes[:, 2] - boxes[:, 0],
                    boxes[:, 3] - boxes[:, 1],
                    scores,
                ],
                axis=1,
            )[known]
            self._rows.append(rows)

    def local_detections(self) -> list[dict[str, Any]]:
        """This rank's detections as COCO result records."""
        return _records(self._local_array())

    def _local_array(self) -> np.ndarray:
        return np.concatenate(self._rows) if self._rows else np.zeros((0, 7))

    def gather(self) -> tuple[list[int], list[dict[str, Any]]]:
        """The union over all ranks: (sorted image ids seen, detections), each image kept once.

        A ``DistributedSampler`` that pads ranks can show an image to two ranks; the first rank
        that saw it keeps its detections, so padding never counts an image twice. The detections
        are ``result_record`` s, ordered by image id: what ``compute`` scores and writes.
        """
        parts = gather_objects((sorted(self._seen), self._local_array()))
        owner: dict[int, int] = {}
        for rank, (ids, _) in enumerate(parts):
            for image_id in ids:
                owner.setdefault(int(image_id), rank)
        kept = [
            rows[np.array([owner[int(i)] == rank for i in rows[:, 0]], bool)]
            for rank, (_, rows) in enumerate(parts)
            if len(rows)
        ]
        array = np.concatenate(kept) if kept else np.zeros((0, 7))
        # By image id, each image's detections in the model's order: the same list (and so the same
        # tie order for COCO's evaluator) whatever the number of ranks.
        array = array[np.argsort(array[:, 0], kind="stable")]
        return sorted(owner), _records(array)

    def compute(
        self, results_path: str | os.PathLike[str] | None = None, per_category: bool = False
    ) -> dict[str, float]:
        """Gather from every rank, evaluate once (rank 0), broadcast: the 12 stats as floats.

        ``results_path``: also write the gathered detections there as a COCO results JSON.
        ``per_category``: also return ``AP/<category name>`` for every category. On rank 0 the
        whole evaluation (with the PR curves) is kept in ``last_result``. Every rank must call
        this (it is a collective under DDP).
        """
        image_ids, detections = self.gather()
        stats: dict[str, float] | None = None
        self.last_result = None
        if global_rank() == 0:
            if results_path is not None:  # the very records scored below
                write_results_json(detections, results_path)
            if image_ids or per_category:
                if self._gt_index is None:
                    self._gt_index = load_ground_truth(self.coco_gt, self.backend)
                # no image seen at all: score nothing (every number 0.0), not the whole val set
                result = coco_evaluation(self._gt_index, detections if image_ids else [], image_ids, self.backend)
                self.last_result = result
                stats = result.stats | (result.per_category if per_category else {})
            else:
                stats = dict.fromkeys(STAT_NAMES, 0.0)
        return dict(broadcast_from_zero(stats))


def _records(array: np.ndarray) -> list[dict[str, Any]]:
    """Rows (image_id, category_id, x, y, w, h, score) as ``result_record`` s."""
    return [result_record(row[0], row[1], row[2:6], row[6]) for row in array]


__all__ = [
    "RECALL_POINTS",
    "STAT_NAMES",
    "CocoEvaluator",
    "CocoResult",
    "coco_evaluation",
    "per_category_ap",
    "evaluate_detections",
    "load_ground_truth",
    "result_record",
    "result_records",
    "to_original_pixels",
    "write_results_json",
]
