"""What ``python -m tasks.face_embedding predict`` writes, once, on rank 0, next to ``metrics.json``.

``embeddings.npy``: float32, N x 128 (L2-normalised), one row per image that could be read;
``paths.txt``: the N image paths, one per line, in the same order (the sorted order of the
predicted folder). Both are written atomically; ``index build`` and ``--data.teacher_embeddings``
read this pair.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pytorch_lightning import LightningModule, Trainer

from tasks.callbacks import PredictionWriter
from tasks.outputs import atomic_path, write_text_atomic

EMBEDDINGS_FILE, PATHS_FILE = "embeddings.npy", "paths.txt"


def write_embeddings(folder: Path, paths: list[str], embeddings: np.ndarray) -> None:
    """``folder/embeddings.npy`` and ``folder/paths.txt`` (same order), each written atomically."""
    with atomic_path(folder / EMBEDDINGS_FILE) as tmp:
        with open(tmp, "wb") as handle:  # np.save on a path would append ".npy" to the temporary name
            np.save(handle, np.asarray(embeddings, dtype=np.float32))
    write_text_atomic(folder / PATHS_FILE, "".join(f"{p}\n" for p in paths))


class EmbeddingWriter(PredictionWriter):
    """Writes the embeddings of ``predict`` (see the module docstring)."""

    def write(self, folder: Path, records: list[dict[str, Any]], trainer: Trainer, pl_module: LightningModule) -> None:
        unique = {r["index"]: r for r in records}  # an image seen by two ranks is kept once
        ordered = [unique[i] for i in sorted(unique)]
        size = getattr(pl_module.hparams, "embedding_size", 0)
        vectors = np.stack([r["embedding"] for r in ordered]) if ordered else np.zeros((0, size), np.float32)
        write_embeddings(folder, [r["path"] for r in ordered], vectors)
        print(f"Wrote {len(ordered)} embeddings to {folder / EMBEDDINGS_FILE} and {folder / PATHS_FILE}.", flush=True)
