"""The calibrated match threshold: the cosine similarity at which "same person" is decided.

At every validation the module calibrates, on all pairs of the validation identities (identities
held out of training, never the test pairs), the smallest cosine threshold whose false accept
rate is at most ``--model.far`` (default 1e-3), and the true accept rate it gives. The value
travels with the weights it was calibrated for: in every checkpoint (``checkpoint["face_threshold"]``),
in ``metrics.json`` (``threshold``, ``threshold_far``, ``threshold_tar``), in a deploy folder and in
the face index's metadata, where ``index search --threshold auto`` (the default) uses it.

Accept a pair when ``similarity >= cosine``. With ``n`` negative pairs, at most ``k = floor(far *
n)`` may be accepted, so the threshold is just above the (k+1)-th largest negative similarity (the
pair matrix is never materialised: only the k+1 largest negatives of each block are kept). With
fewer than ``1 / far`` negative pairs no false accept is allowed, and the threshold is the
largest negative similarity's next float; the sentence ``Calibration.describe`` gives says how
many pairs it rests on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from backbone.errors import BadInputError
from backbone.ranges import float_range

THRESHOLD_KEY = "face_threshold"  # the checkpoint's entry
DEFAULT_FAR = 1e-3
FalseAcceptRate = float_range(0, 1, low_open=True, high_open=True)
PAIR_BLOCK = 4_000_000  # similarities computed at a time (32 MB of float64)


@dataclass(frozen=True)
class Calibration:
    """A cosine threshold and what it gives on the pairs it was calibrated on."""

    cosine: float  # accept when similarity >= cosine
    far: float  # the false accept rate asked for
    tar: float  # the true accept rate at ``cosine`` on the calibration pairs
    far_reached: float  # the false accept rate at ``cosine`` on them (<= far)
    positives: int  # same-identity pairs
    negatives: int  # different-identity pairs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Any, where: str) -> Calibration:
        """A calibration read from a checkpoint or an index's metadata; one sentence if it is not one."""
        names = [f for f in cls.__dataclass_fields__]
        if not isinstance(value, dict) or any(name not in value for name in names):
            raise BadInputError(f"{where} has a face threshold entry {value!r}; expected an object with {names}.")
        cosine = value["cosine"]
        if not isinstance(cosine, int | float) or not np.isfinite(cosine) or not -1.0 <= cosine <= 1.0 + 1e-6:
            raise BadInputError(f"{where} has a face threshold of {cosine!r}; expected a cosine in [-1, 1].")
        return cls(**{name: value[name] for name in names})

    def describe(self) -> str:
        return (
            f"cosine {self.cosine:.4f} (FAR {self.far_reached:.2g} <= {self.far:g}, TAR {self.tar:.3f}, "
            f"on {self.positives} same and {self.negatives} different pairs of the validation identities)"
        )


def _pair_similarities(embeddings: np.ndarray, labels: np.ndarray) -> Iterator[tuple[Tensor, Tensor]]:
    """(same-identity, different-identity) similarities of all pairs i < j, block by block."""
    x = torch.from_numpy(np.asarray(embeddings, dtype=np.float64))
    y = torch.from_numpy(np.asarray(labels))
    n = len(x)
    chunk = max(1, PAIR_BLOCK // max(n, 1))
    for start in range(0, n, chunk):
        similarity = x[start : start + chunk] @ x.T
        upper = torch.arange(start, start + len(similarity))[:, None] < torch.arange(n)[None, :]
        same = y[start : start + len(similarity), None] == y[None, :]
        yield similarity[upper & same], similarity[upper & ~same]


def _pair_counts(labels: np.ndarray) -> tuple[int, int]:
    n = len(labels)
    counts = np.unique(np.asarray(labels), return_counts=True)[1]
    positives = int(sum(c * (c - 1) // 2 for c in counts))
    return positives, n * (n - 1) // 2 - positives


def calibrate(embeddings: np.ndarray, labels: np.ndarray, far: float = DEFAULT_FAR) -> Calibration | None:
    """The threshold at ``far`` over all pairs i < j of unit-length ``embeddings`` (see the module
    docstring); None without a same-identity and a different-identity pair."""
    positives, negatives = _pair_counts(labels)
    if positives == 0 or negatives == 0:
        return None
    allowed = int(np.floor(far * negatives + 1e-9))
    largest = torch.empty(0, dtype=torch.float64)
    same_similarities = []
    for same, different in _pair_similarities(embeddings, labels):
        same_similarities.append(same)
        candidates = torch.cat([largest, different])
        largest = torch.topk(candidates, min(allowed + 1, len(candidates))).values
    # Just above the (allowed + 1)-th largest negative; -1 when every negative may be accepted.
    cosine = -1.0 if len(largest) <= allowed else float(np.nextafter(float(largest.min()), np.inf))
    positive = torch.cat(same_similarities)
    return Calibration(
        cosine=cosine,
        far=float(far),
        tar=float((positive >= cosine).double().mean()),
        far_reached=int((largest >= cosine).sum()) / negatives,
        positives=positives,
        negatives=negatives,
    )


def rates_at(embeddings: np.ndarray, labels: np.ndarray, cosine: float) -> tuple[float, float] | None:
    """(TAR, FAR) over all pairs i < j when accepting ``similarity >= cosine``; None without both kinds."""
    positives, negatives = _pair_counts(labels)
    if positives == 0 or negatives == 0:
        return None
    accepted = [(int((s >= cosine).sum()), int((d >= cosine).sum())) for s, d in _pair_similarities(embeddings, labels)]
    return sum(a for a, _ in accepted) / positives, sum(b for _, b in accepted) / negatives


def checkpoint_calibration(checkpoint: dict[str, Any], path: str | os.PathLike[str]) -> Calibration | None:
    """The calibration a face_embedding checkpoint carries (None: written before calibration existed,
    or by a run with nothing to calibrate on)."""
    value = checkpoint.get(THRESHOLD_KEY)
    return None if value is None else Calibration.from_dict(value, f"The checkpoint {str(path)!r}")
