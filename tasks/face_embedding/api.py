"""Search a face index from Python: the index and its model loaded once, searched many times.

    from tasks.face_embedding.api import FaceSearch

    faces = FaceSearch.open("faces.index")              # threshold="auto": the model's calibrated one
    for match in faces.search_images(["visitor.jpg"], k=3)[0]:
        print(match.identity, match.similarity)         # identity "unknown" under the threshold
    faces.search_embeddings(vectors, k=5)               # rows of predict's embeddings.npy

``index search`` is this class with files around it. The threshold (``auto``, ``none`` or a
cosine) is resolved once at open (``resolve_threshold``); ``faces.threshold`` says which and why.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from backbone.errors import BadInputError
from backbone.ranges import float_range
from datasets.face_identities import face_eval_transform
from datasets.images import read_rgb
from tasks.face_embedding.index import FaceIndex
from tasks.face_embedding.index_file import Face
from tasks.face_embedding.index_inputs import index_model
from tasks.face_embedding.model import FaceEmbedder, embed
from tasks.face_embedding.threshold import Calibration

UNKNOWN = "unknown"
# --threshold: compared with cosine similarities; any finite number is meaningful (float32 rounding
# puts an image's similarity with itself at 1.0000001, and a threshold above it rejects every match).
Cosine = float_range()
ThresholdSetting = str | float | None  # "auto", "none" (or None), or a cosine


def threshold_option(text: str) -> str | float:
    """``--threshold``: ``auto``, ``none`` or a number."""
    if text.strip().lower() in ("auto", "none"):
        return text.strip().lower()
    try:
        return float(Cosine(text))
    except (argparse.ArgumentTypeError, ValueError):
        raise argparse.ArgumentTypeError(f"is {text!r}; expected auto, none or a cosine similarity") from None


@dataclass(frozen=True)
class Threshold:
    """The threshold in use (None: none) and where it came from, in words."""

    value: float | None
    source: str


def resolve_threshold(setting: ThresholdSetting, face_index: FaceIndex, path: str | os.PathLike[str]) -> Threshold:
    """``auto``: the calibration stored in the index (one sentence if there is none); a number
    overrides it; ``none`` (or None) disables it."""
    if setting is None or setting == "none":
        return Threshold(None, "none (--threshold none): every query gets its k nearest faces")
    if setting != "auto":
        return Threshold(float(setting), f"{float(setting):g}, given with --threshold")
    stored = face_index.meta.get("threshold")
    if stored is None:
        raise BadInputError(
            f"The face index {str(path)!r} has no calibrated threshold: its model "
            f"{face_index.meta['model']['checkpoint']!r} was trained before calibration existed or without validation "
            "identities; pass --threshold NUMBER (a cosine similarity) or --threshold none."
        )
    calibration = Calibration.from_dict(stored, f"The face index {str(path)!r}")
    return Threshold(calibration.cosine, f"the model's calibrated {calibration.describe()}")


@dataclass(frozen=True)
class Match:
    """One answer to a query: a face of the index (``id`` >= 0), or ``unknown`` (id -1) under the threshold."""

    identity: str
    path: str
    similarity: float
    id: int


def matches(
    faces: dict[int, Face], similarities: np.ndarray, ids: np.ndarray, threshold: float | None
) -> list[list[Match]]:
    """Per query, its matches best first; a query whose best similarity is under ``threshold`` gets
    one ``unknown`` match carrying that best similarity."""
    answers: list[list[Match]] = []
    for row_sims, row_ids in zip(similarities, ids, strict=True):
        found = [(float(s), int(i)) for s, i in zip(row_sims, row_ids, strict=True) if i >= 0]
        if threshold is not None and (not found or found[0][0] < threshold):
            answers.append([Match(UNKNOWN, "", found[0][0] if found else float("nan"), -1)])
        else:
            answers.append([Match(faces[i].identity, faces[i].path, s, i) for s, i in found])
    return answers


class FaceSearch:
    """A loaded face index, its threshold and (loaded at the first image search) its model."""

    def __init__(self, face_index: FaceIndex, path: Path, threshold: Threshold, ckpt: str | None = None) -> None:
        self.index, self.path, self.threshold, self.ckpt = face_index, path, threshold, ckpt
        self._model: FaceEmbedder | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        ckpt: str | os.PathLike[str] | None = None,
        threshold: ThresholdSetting = "auto",
        mmap: bool = False,
    ) -> FaceSearch:
        """The index at ``path`` (``mmap``: its vectors left on disk); ``ckpt``: its model, if the
        recorded checkpoint moved (it must be the same file, by SHA-256)."""
        face_index = FaceIndex.load(path, mmap=mmap)
        return cls(face_index, Path(path), resolve_threshold(threshold, face_index, path), ckpt and str(ckpt))

    @property
    def model(self) -> FaceEmbedder:
        if self._model is None:
            self._model = index_model(self.index, self.ckpt, self.path)
        return self._model

    def search_embeddings(self, vectors: np.ndarray, k: int = 5) -> list[list[Match]]:
        """Matches of each row of ``vectors`` (unit-length embeddings of the index's model)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        size = self.index.meta["model"]["embedding_size"]
        if vectors.ndim != 2 or vectors.shape[1] != size:
            raise BadInputError(f"The query embeddings have shape {vectors.shape}; expected N x {size}.")
        similarities, ids = self.index.search(vectors, k)
        return matches(self.index.faces, similarities, ids, self.threshold.value)

    def embed_images(self, images: Sequence[str | os.PathLike[str] | Image.Image], batch_size: int = 64) -> np.ndarray:
        """The embeddings of ``images`` (files or PIL images), as the index embedded its gallery."""
        record: dict[str, Any] = self.index.meta["model"]
        transform = face_eval_transform(int(record["resolution"]))
        rows = [np.zeros((0, record["embedding_size"]), np.float32)]
        model = self.model.eval()
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                chunk = images[start : start + batch_size]
                batch = torch.stack([transform(i if isinstance(i, Image.Image) else read_rgb(i)) for i in chunk])
                rows.append(embed(model, batch, record["flip_test"]).float().numpy())
        return np.concatenate(rows)

    def search_images(self, images: Sequence[str | os.PathLike[str] | Image.Image], k: int = 5) -> list[list[Match]]:
        """Matches of each image (an unreadable file is one sentence naming it)."""
        return self.search_embeddings(self.embed_images(images), k)
