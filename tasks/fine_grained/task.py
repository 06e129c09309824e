"""The fine-grained task, declared once: the classification model on Stanford Dogs."""

from __future__ import annotations

from datasets.stanford_dogs import StanfordDogsDataModule
from tasks.classification.module import CLASS_LINKS, ClassificationModule
from tasks.spec import TaskSpec

TASK = TaskSpec(
    name="fine_grained",
    module=ClassificationModule,
    data=StanfordDogsDataModule,
    monitor="top1",
    default_steps=200,  # 20 epochs of the 320-image demo at batch 32
    links=CLASS_LINKS,
)
