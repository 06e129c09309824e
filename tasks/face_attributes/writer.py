"""What ``python -m tasks.face_attributes predict`` writes, once, on rank 0, in the run's log folder.

* ``attributes.csv``: a header ``image,<attribute>,...`` then one row per image (in the dataset's
  order) with the sigmoid probability of each attribute;
* ``attributes.npy`` + ``attributes_rows.txt``: the same probabilities as an N x A float32 matrix
  and its row and column names (``datasets.teacher_outputs``), which a student memory-maps at web
  scale instead of parsing the CSV;
* with ``--model.predict_labels true``, ``attribute_labels.csv``: the same header, then 1 (yes) or
  0 (no) per attribute: the probability above the threshold chosen for that attribute on the
  validation split (``tasks.face_attributes.metrics.best_thresholds``, kept in the checkpoint).

``--data.teacher_outputs`` reads ``attributes.csv`` or ``attributes.npy`` back
(``datasets.teacher_outputs``). Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_warn

from backbone.errors import BadInputError
from datasets.attribute_files import IMAGE_COLUMN, format_attributes_csv
from datasets.teacher_outputs import ARRAY_FILE, ROWS_FILE
from tasks.callbacks import PredictionWriter
from tasks.face_attributes.module import CHOSEN, THRESHOLDS
from tasks.outputs import atomic_path, write_text_atomic

OUTPUT_FILE = "attributes.csv"
LABELS_FILE = "attribute_labels.csv"


def _header(attribute_names: Sequence[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([IMAGE_COLUMN, *attribute_names])
    return out.getvalue()


def write_teacher_array(folder: Path, attribute_names: Sequence[str], names: Sequence[str], values: np.ndarray) -> None:
    """``folder/attributes.npy`` (float32, N x A) and ``folder/attributes_rows.txt``, each written atomically."""
    if any("\n" in name or "\r" in name for name in names):  # one name per line: a line break would shift rows
        raise BadInputError(f"An image name holds a line break; {ROWS_FILE} names one image per line.")
    with atomic_path(folder / ARRAY_FILE) as tmp:
        with open(tmp, "wb") as handle:  # np.save on a path would append ".npy" to the temporary name
            np.save(handle, np.asarray(values, dtype=np.float32).reshape(len(names), len(attribute_names)))
    write_text_atomic(folder / ROWS_FILE, _header(attribute_names) + "".join(f"{name}\n" for name in names))


def format_labels_csv(attribute_names: Sequence[str], names: Sequence[str], present: np.ndarray) -> str:
    """The text of ``attribute_labels.csv``: the header, then ``image,1|0,...`` per image."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([IMAGE_COLUMN, *attribute_names])
    for name, row in zip(names, present.astype(np.uint8).tolist(), strict=True):
        writer.writerow([name, *row])
    return out.getvalue()


class AttributesWriter(PredictionWriter):
    """Writes the files of the module docstring in the run's log folder."""

    def write(self, folder: Path, records: list[dict[str, Any]], trainer: Trainer, pl_module: LightningModule) -> None:
        rows: dict[str, Any] = {}
        for record in sorted(records, key=lambda r: r["index"]):
            rows.setdefault(record["name"], record["probs"])  # an image seen twice is written once
        attribute_names = list(pl_module.hparams.attribute_names)
        names = list(rows)
        probs = np.stack(list(rows.values())) if rows else np.zeros((0, len(attribute_names)), np.float32)
        path = write_text_atomic(folder / OUTPUT_FILE, format_attributes_csv(attribute_names, list(rows.items())))
        write_teacher_array(folder, attribute_names, names, probs)
        print(f"Wrote the attribute probabilities of {len(rows)} images to {path} and {ARRAY_FILE}.", flush=True)
        if getattr(pl_module, "predict_labels", False):
            self.write_labels(folder, attribute_names, names, probs, pl_module)

    @staticmethod
    def write_labels(
        folder: Path, attribute_names: list[str], names: list[str], probs: np.ndarray, pl_module: LightningModule
    ) -> None:
        thresholds = getattr(pl_module, THRESHOLDS).detach().cpu().numpy()
        if not bool(getattr(pl_module, CHOSEN)):
            rank_zero_warn(
                f"{LABELS_FILE} compares every probability with 0.5: the checkpoint was saved before any validation, "
                "so it holds no thresholds chosen on the validation split."
            )
        path = write_text_atomic(
            folder / LABELS_FILE, format_labels_csv(attribute_names, names, probs.astype(np.float64) > thresholds)
        )
        print(f"Wrote the yes/no attributes of {len(names)} images to {path}.", flush=True)
