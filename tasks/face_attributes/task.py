"""The face-attributes task, declared once (``tasks.spec.TaskSpec``)."""

from __future__ import annotations

from datasets.celeba import CelebADataModule
from tasks.face_attributes.module import ATTRIBUTE_LINKS, FaceAttributesModule, view_resolution
from tasks.face_attributes.writer import AttributesWriter
from tasks.spec import TaskSpec

TASK = TaskSpec(
    name="face_attributes",
    module=FaceAttributesModule,
    data=CelebADataModule,
    monitor="mean_ap",
    resolution=128,
    # 15 epochs of the demo, the length docs/face_attributes.md was measured at: its 1200 training
    # faces (datasets.demo.celeba.SPLIT_SIZES) at the default batch of 32 make 37 full batches an
    # epoch (the last, partial one is dropped).
    default_steps=555,
    links=ATTRIBUTE_LINKS,
    # The loaders produce views at the larger of the student's and the teacher's resolution, so
    # both networks see the same augmented crop; decided at parse time, before the data is built.
    parse_links=((("resolution", "model.teacher"), "data.view_resolution", view_resolution),),
    callbacks=(AttributesWriter,),
)
