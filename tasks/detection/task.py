"""The detection task, declared once (``tasks.spec.TaskSpec``)."""

from __future__ import annotations

from datasets.coco import CocoDataModule
from tasks.classification.module import CLASS_LINKS
from tasks.detection.module import DetectionModule
from tasks.detection.writer import DetectionWriter
from tasks.spec import TaskSpec

TASK = TaskSpec(
    name="detection",
    module=DetectionModule,
    data=CocoDataModule,
    monitor="mAP",
    resolution=300,  # SSD300; Faster R-CNN runs at --resolution 600
    default_steps=300,  # 20 epochs of the 240-image demo at batch 16
    links=CLASS_LINKS,
    callbacks=(DetectionWriter,),
)
