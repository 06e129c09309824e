"""The calibrated match threshold: the cosine similarity at which "same person" is decided.

At every validation the module calibrates, on all pairs of the validation identities (identities
held out of training, never the test pairs), the smallest cosine threshold whose false accept
rate is at most ``--model.far`` (default 1e-3), and the true accept rate it gives. The value
travels with the weights it was calibrated for: in every checkpoint (``checkpoint["face_threshold"]``),
in ``metrics.json`` (``threshold``, ``threshold_far``, ``threshold_tar``), in a deploy folder and in
the face index's metadata, where ``index search --threshold auto`` (the default) uses it.

Accept a pair when ``similarity >= cosine``. With ``n`` negative pairs, at most ``k = floor(far *
n)`` may be accepted, so the threshold is just above the (k+1)-th largest negative similarity (the
pair matrix is never materialised, and under DDP every rank scans its share: ``pairs.py``). With
fewer than ``1 / far`` negative pairs no false accept is allowed, and the threshold is the
largest negative similarity's next float; the sentence ``Calibration.describe`` gives says how
many pairs it rests on.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from backbone.errors import BadInputError
from backbone.ranges import float_range
from tasks.distributed import global_rank
from tasks.face_embedding.pairs import (
    TAR_FAR,
    PairScan,
    keep_for,
    pair_counts,
    rates,
    scan_pairs,
    spread_rates,
    spread_scan,
    threshold_at,
)

THRESHOLD_KEY = "face_threshold"  # the checkpoint's entry
DEFAULT_FAR = 1e-3
FalseAcceptRate = float_range(0, 1, low_open=True, high_open=True)


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


def calibration_from(scan: PairScan, far: float) -> Calibration:
    """The calibration at ``far`` from a scan of the pairs (``pairs.scan_pairs`` / ``spread_scan``)
    that kept at least ``floor(far * negatives) + 1`` negatives."""
    cosine = threshold_at(scan, far)
    tar, far_reached = rates(scan, cosine)
    return Calibration(cosine, float(far), tar, far_reached, scan.positive_count, scan.negative_count)


def calibrate(embeddings: np.ndarray, labels: np.ndarray, far: float = DEFAULT_FAR) -> Calibration | None:
    """The threshold at ``far`` over all pairs i < j of unit-length ``embeddings`` (see the module
    docstring); None without a same-identity and a different-identity pair."""
    positives, negatives = pair_counts(labels)
    if positives == 0 or negatives == 0:
        return None
    return calibration_from(scan_pairs(embeddings, labels, keep_for(labels, [far])), far)


def rates_at(embeddings: np.ndarray, labels: np.ndarray, cosine: float) -> tuple[float, float] | None:
    """(TAR, FAR) over all pairs i < j when accepting ``similarity >= cosine``; None without both kinds.
    Under DDP every rank counts its share of the pairs (a collective: every rank calls it)."""
    positives, negatives = pair_counts(labels)
    if positives == 0 or negatives == 0:
        return None
    return spread_rates(embeddings, labels, cosine)


class PairMetrics(NamedTuple):
    """What one scan of all pairs of the evaluation identities gives (``pair_metrics_spread``)."""

    tar_at_far: float  # tar_at_far_1e-4
    calibration: Calibration | None  # validation: the threshold calibrated at --model.far
    rates: tuple[float, float] | None  # test: (TAR, FAR) at the checkpoint's threshold


def pair_metrics_spread(
    embeddings: np.ndarray, labels: np.ndarray, calibrate_far: float | None, checkpoint: Calibration | None
) -> PairMetrics | None:
    """``tar_at_far_1e-4`` over all pairs, with the threshold calibrated at ``calibrate_far``
    (validation) or the rates at the ``checkpoint`` threshold (test). The pairs grow with the
    square of the images, so every rank scans its share (``pairs.py``): a collective that every rank
    calls with the same arguments; the result on rank 0, None on the others."""
    positives, negatives = pair_counts(labels)
    if positives == 0 or negatives == 0:
        return PairMetrics(float("nan"), None, None) if global_rank() == 0 else None
    fars = [TAR_FAR] if calibrate_far is None else [TAR_FAR, calibrate_far]
    scan = spread_scan(embeddings, labels, keep_for(labels, fars))
    at = (
        None if calibrate_far is not None or checkpoint is None else spread_rates(embeddings, labels, checkpoint.cosine)
    )
    if scan is None:
        return None
    calibration = None if calibrate_far is None else calibration_from(scan, calibrate_far)
    return PairMetrics(rates(scan, threshold_at(scan, TAR_FAR))[0], calibration, at)


def checkpoint_calibration(checkpoint: dict[str, Any], path: str | os.PathLike[str]) -> Calibration | None:
    """The calibration a face_embedding checkpoint carries (None: written before calibration existed,
    or by a run with nothing to calibrate on)."""
    value = checkpoint.get(THRESHOLD_KEY)
    return None if value is None else Calibration.from_dict(value, f"The checkpoint {str(path)!r}")
