"""The face-embedding task, declared once (``tasks.spec.TaskSpec``), with its ``index`` command."""

from __future__ import annotations

from datasets.face_identities import FaceDataModule
from tasks.face_embedding import index_cli
from tasks.face_embedding.module import MONITOR, FaceEmbeddingModule, checkpoint_monitor
from tasks.face_embedding.writer import EmbeddingWriter
from tasks.spec import TaskSpec

TASK = TaskSpec(
    name="face_embedding",
    module=FaceEmbeddingModule,
    data=FaceDataModule,
    monitor=MONITOR,
    monitor_for=checkpoint_monitor,
    resolution=128,
    default_steps=540,  # 20 epochs of the demo's 1728 training faces at batch 64
    callbacks=(EmbeddingWriter,),
    commands={"index": index_cli.main},
)
