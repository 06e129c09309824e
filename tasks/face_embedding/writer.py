"""What ``python -m tasks.face_embedding predict`` writes, once, on rank 0, next to ``metrics.json``.

``embeddings.npy``: float32, N x 128 (L2-normalised), one row per image that could be read;
``paths.txt``: the N image paths, one per line, in the same order (the sorted order of the
predicted folder); ``embeddings.json``: which model wrote them (checkpoint, its SHA-256, ``flip_test``,
embedding size), so ``index build|add|search --embeddings`` can refuse another model's vectors. All
are written atomically; ``index`` and ``--data.teacher_embeddings`` read the pair.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pytorch_lightning import LightningModule, Trainer

from backbone.checkpoint_reader import file_sha256
from backbone.ranges import PositiveInt
from datasets.schema import Field, Format
from tasks.callbacks import PredictionWriter
from tasks.outputs import atomic_path, write_json_atomic, write_text_atomic

EMBEDDINGS_FILE, PATHS_FILE = "embeddings.npy", "paths.txt"


def write_embeddings(
    folder: Path, paths: list[str], embeddings: np.ndarray, record: dict[str, Any] | None = None
) -> None:
    """``folder/embeddings.npy`` and ``folder/paths.txt`` (same order), and ``record`` as
    ``embeddings.json`` (``embeddings_record``), each written atomically."""
    with atomic_path(folder / EMBEDDINGS_FILE) as tmp:
        with open(tmp, "wb") as handle:  # np.save on a path would append ".npy" to the temporary name
            np.save(handle, np.asarray(embeddings, dtype=np.float32))
    write_text_atomic(folder / PATHS_FILE, "".join(f"{p}\n" for p in paths))
    if record is not None:
        write_json_atomic(folder / RECORD_FILE, record)
    else:  # an older record beside new embeddings would vouch for the wrong model
        (folder / RECORD_FILE).unlink(missing_ok=True)


class EmbeddingWriter(PredictionWriter):
    """Writes the embeddings of ``predict`` (see the module docstring)."""

    def write(self, folder: Path, records: list[dict[str, Any]], trainer: Trainer, pl_module: LightningModule) -> None:
        unique = {r["index"]: r for r in records}  # an image seen by two ranks is kept once
        ordered = [unique[i] for i in sorted(unique)]
        size = getattr(pl_module.hparams, "embedding_size", 0)
        vectors = np.stack([r["embedding"] for r in ordered]) if ordered else np.zeros((0, size), np.float32)
        # flip_test is an inference option (not in hparams): the run's own setting
        setting = {**pl_module.hparams, "flip_test": getattr(pl_module, "flip_test", True)}
        record = embeddings_record(getattr(trainer, "ckpt_path", None), setting)
        write_embeddings(folder, [r["path"] for r in ordered], vectors, record)
        print(f"Wrote {len(ordered)} embeddings to {folder / EMBEDDINGS_FILE} and {folder / PATHS_FILE}.", flush=True)


# The record of which model wrote a pair (``embeddings.json``), declared once (``datasets.schema``).
RECORD_FILE = "embeddings.json"
RECORD_FORMAT = Format(
    "embeddings record",
    "embeddings.json: the checkpoint, sha256 (or null), flip_test and embedding_size of the model that wrote the "
    "embeddings.npy beside it",
    (
        Field("checkpoint", str, noun="a checkpoint path"),
        Field("sha256", str, pattern=r"[0-9a-f]{64}", pattern_words="64 hexadecimal digits", noun="a SHA-256"),
        Field.ranged("embedding_size", PositiveInt),
    ),
    record="key",
)


def embeddings_record(ckpt: str | None, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """What ``embeddings.json`` says: the checkpoint predicted with (None: random weights) and its setting."""
    path = Path(ckpt).expanduser() if ckpt else None
    known = path is not None and path.is_file()
    return {
        "checkpoint": str(path.resolve()) if known else str(ckpt or ""),
        "sha256": file_sha256(path) if known else None,
        "flip_test": bool(hparams.get("flip_test", True)),
        "embedding_size": int(hparams.get("embedding_size", 0)),
    }


def read_embeddings_record(folder: Path) -> dict[str, Any] | None:
    """The ``embeddings.json`` in ``folder`` checked against ``RECORD_FORMAT``; None if there is none."""
    path = folder / RECORD_FILE
    if not path.is_file():
        return None
    fmt = RECORD_FORMAT
    record = fmt.read_json(path)
    if not isinstance(record, dict):
        raise fmt.error(path, None, f"it holds a JSON {type(record).__name__}; expected {fmt.layout}")
    for key in ("checkpoint", "sha256", "flip_test", "embedding_size"):
        if key not in record:
            raise fmt.error(path, None, f"it has no key {key!r}; expected {fmt.layout}")
    for key in ("checkpoint", "embedding_size"):
        fmt.value(path, None, key, record[key])
    if record["sha256"] is not None:
        fmt.value(path, None, "sha256", record["sha256"])
    if not isinstance(record["flip_test"], bool):
        raise fmt.bad(path, None, "flip_test", record["flip_test"], "true or false")
    return record
