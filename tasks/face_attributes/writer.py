"""What ``python -m tasks.face_attributes predict`` writes, once, on rank 0: ``attributes.csv``.

A header ``image,<attribute>,...`` then one row per image (in the dataset's order) with the
sigmoid probability of each attribute: the same file a student reads with
``--data.teacher_outputs`` (``datasets.attribute_files``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning import LightningModule, Trainer

from datasets.attribute_files import format_attributes_csv
from tasks.callbacks import PredictionWriter
from tasks.outputs import write_text_atomic

OUTPUT_FILE = "attributes.csv"


class AttributesWriter(PredictionWriter):
    """Writes ``attributes.csv`` in the run's log folder (see the module docstring)."""

    def write(self, folder: Path, records: list[dict[str, Any]], trainer: Trainer, pl_module: LightningModule) -> None:
        rows: dict[str, Any] = {}
        for record in sorted(records, key=lambda r: r["index"]):
            rows.setdefault(record["name"], record["probs"])  # an image seen twice is written once
        text = format_attributes_csv(pl_module.hparams.attribute_names, list(rows.items()))
        path = write_text_atomic(folder / OUTPUT_FILE, text)
        print(f"Wrote the attribute probabilities of {len(rows)} images to {path}.", flush=True)
