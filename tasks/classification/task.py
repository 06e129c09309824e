"""The classification task, declared once (``tasks.spec.TaskSpec``)."""

from __future__ import annotations

from datasets.imagenet import ImageFolderDataModule
from tasks.classification.module import CLASS_LINKS, ClassificationModule
from tasks.spec import TaskSpec

TASK = TaskSpec(
    name="classification",
    module=ClassificationModule,
    data=ImageFolderDataModule,
    monitor="top1",
    default_steps=400,  # 20 epochs of the 640-image demo at batch 32
    links=CLASS_LINKS,
)
