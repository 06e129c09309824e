"""The face-attributes task, declared once (``tasks.spec.TaskSpec``)."""

from __future__ import annotations

from datasets.celeba import CelebADataModule
from tasks.face_attributes.module import ATTRIBUTE_LINKS, FaceAttributesModule
from tasks.face_attributes.writer import AttributesWriter
from tasks.spec import TaskSpec

TASK = TaskSpec(
    name="face_attributes",
    module=FaceAttributesModule,
    data=CelebADataModule,
    monitor="mean_ap",
    resolution=128,
    # 20 epochs of the demo: its 1200 training faces (datasets.demo.celeba.SPLIT_SIZES) at the
    # default batch of 32 make 37 full batches an epoch (the last, partial one is dropped).
    default_steps=740,
    links=ATTRIBUTE_LINKS,
    callbacks=(AttributesWriter,),
)
