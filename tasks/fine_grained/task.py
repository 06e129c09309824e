"""The fine-grained task, declared once: classification's declaration on Stanford Dogs.

The model, monitor and links are classification's; only the data, the name (the run folder and
the task a checkpoint is stamped with) and the default length (of the smaller demo) differ.
"""

from __future__ import annotations

import dataclasses

from datasets.stanford_dogs import StanfordDogsDataModule
from tasks.classification.task import TASK as CLASSIFICATION

TASK = dataclasses.replace(
    CLASSIFICATION,
    name="fine_grained",
    data=StanfordDogsDataModule,
    default_steps=200,  # 20 epochs of the 320-image demo at batch 32
)
