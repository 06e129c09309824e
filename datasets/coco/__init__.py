"""COCO 2017 (or any COCO-format) detection data: the dataset, SSD's augmentation, the data module.

``--data.root`` holds the public layout unchanged::

    annotations/instances_train2017.json   annotations/instances_val2017.json
    train2017/*.jpg                        val2017/*.jpg

Every annotation file is held to COCO's format, declared once in ``datasets.coco.annotations``
(``INSTANCES``): a departure (a category id given twice, a box written as strings, an annotation of
an unlisted image ...) is refused in one sentence naming the file, the record and the key.

COCO category ids are not contiguous (1..90 with gaps, 80 used); the models want labels 1..K with
0 for background, so the dataset maps ``category_id -> label`` on reading and exposes
``label_to_category_id`` for the evaluator to map detections back. Crowd regions (``iscrowd=1``)
are not training targets (the COCO evaluator handles them itself); images without objects are
kept (they are pure negatives). Degenerate boxes are clipped to the image or dropped when reading,
and counted in one warning per file, so nothing degenerate reaches a loss; the cleaned annotations
are the ground truth evaluation scores against (``CocoDataModule.val_ground_truth``).

A batch from ``collate_detection`` is ``(images, targets)``: ``images`` a float tensor
``(B, 3, R, R)`` in [0, 1] (R = ``resolution``), ``targets`` a list of dicts with ``boxes``
(float ``(N, 4)`` xyxy in the resized image's pixels), ``labels`` (int64 ``(N,)``, 1..K),
``image_id`` (int), ``orig_size`` and ``input_size`` ((h, w) ints) so predictions map back to
original pixels.
"""

from __future__ import annotations

from datasets.coco.datamodule import CocoDataModule
from datasets.coco.dataset import CocoDetection, collate_detection

__all__ = ["CocoDataModule", "CocoDetection", "collate_detection"]
