"""All pairs of the evaluation identities, scanned once, block by block, spread over every rank.

``tar_at_far_1e-4``, the calibrated threshold (``threshold.py``) and the rates at a threshold are
all functions of two things over the pairs i < j of the images with an identity: the similarities
of the same-identity pairs, and the ``k + 1`` largest similarities of the different-identity pairs,
where ``k = floor(far * negatives)`` is how many false accepts the FAR allows. No pair matrix is
materialised: rows are taken a block at a time (``PAIR_BLOCK`` similarities), and of each block
only the negatives at or above the running cut-off are kept for the running top-k.

The work grows with the square of the images (5% of VGGFace2: 165k images, 1.4e10 pairs), so
under DDP every rank scans its own share of the rows, balanced by pair count (row i has n-1-i
pairs), and rank 0 merges the shares: each rank's top-k holds the global top-k's members from its
rows, so the merge is exact and the metric equals the one-process scan (the 2-process test in
``tests/test_face_pairs.py``). Similarities are float64 dot products of the unit embeddings; a
block's shape can change BLAS's summation order in the last bit (1e-16), which moves a count only
for pairs that close to the threshold.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tasks.distributed import gather_objects, gather_to_zero, global_rank, is_distributed

PAIR_BLOCK = 4_000_000  # similarities computed at a time (32 MB of float64)
TAR_FAR = 1e-4  # the FAR of tar_at_far_1e-4


@dataclass(frozen=True)
class PairScan:
    """Same-identity similarities and the ``keep`` largest different-identity ones (over the rows
    scanned), with the pair counts of the whole set."""

    positives: np.ndarray  # float64, every same-identity pair of the rows scanned
    largest: np.ndarray  # float64, the largest different-identity similarities, descending
    positive_count: int
    negative_count: int


def pair_counts(labels: np.ndarray) -> tuple[int, int]:
    """(same-identity, different-identity) pairs i < j of ``labels``."""
    n = len(labels)
    counts = np.unique(np.asarray(labels), return_counts=True)[1]
    positives = int(sum(int(c) * (int(c) - 1) // 2 for c in counts))
    return positives, n * (n - 1) // 2 - positives


def allowed_false_accepts(far: float, negatives: int) -> int:
    """How many different-identity pairs a false accept rate of ``far`` allows."""
    return int(np.floor(far * negatives + 1e-9))


def row_share(n: int, part: int, parts: int) -> tuple[int, int]:
    """Rows [start, end) of ``part`` out of ``parts``, splitting the n(n-1)/2 pairs i < j evenly."""
    before = np.arange(n, dtype=np.float64) * (n - 1) - np.arange(n, dtype=np.float64) * (np.arange(n) - 1) / 2
    total = n * (n - 1) / 2
    start, end = (int(np.searchsorted(before, total * p / parts)) for p in (part, part + 1))
    return start, (n if part == parts - 1 else end)


def _blocks(x: torch.Tensor, start: int, end: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(first row, similarities of rows [first, last) with columns [first, n)), for the rows
    [start, end): a pair i < j has j >= first, so the columns left of the block are never computed."""
    n = len(x)
    chunk = max(1, PAIR_BLOCK // max(n, 1))
    for first in range(start, end, chunk):
        yield first, x[first : min(first + chunk, end)] @ x[first:].T


def _upper(rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Which (row, column) entries of a block are pairs i < j (both offsets from the block's first row)."""
    return rows < columns


def _positives(x: torch.Tensor, y: np.ndarray, start: int, end: int) -> torch.Tensor:
    """Similarities of the same-identity pairs i < j with i in [start, end), identity by identity:
    their count grows with the images per identity, not with the square of the set."""
    order = np.argsort(y, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(y[order])) + 1)
    found = []
    for members in groups:
        rows = members[(members >= start) & (members < end)]
        if len(members) < 2 or not len(rows):
            continue
        similarity = x[torch.from_numpy(rows)] @ x[torch.from_numpy(members)].T
        found.append(similarity[torch.from_numpy(rows[:, None] < members[None, :])])
    return torch.cat(found) if found else torch.empty(0, dtype=torch.float64)


def scan_pairs(embeddings: np.ndarray, labels: np.ndarray, keep: int, part: int = 0, parts: int = 1) -> PairScan:
    """The scan of this ``part`` of the rows (see the module docstring), keeping ``keep`` negatives.

    Once ``keep`` negatives are held, a block is first compared with the smallest of them: only
    the few entries at or above it are located and sorted into the top-k (most of a block's cost is
    then its matrix product)."""
    x = torch.from_numpy(np.asarray(embeddings, dtype=np.float64))
    y = np.asarray(labels)
    labels_t = torch.from_numpy(y)
    positive_count, negative_count = pair_counts(y)
    start, end = row_share(len(x), part, parts)
    largest = torch.empty(0, dtype=torch.float64)
    for first, similarity in _blocks(x, start, end):
        if len(largest) >= keep:  # only what can still enter the top-k (ties kept)
            rows, columns = (similarity >= largest[-1]).nonzero(as_tuple=True)
        else:
            rows, columns = torch.ones_like(similarity, dtype=torch.bool).nonzero(as_tuple=True)
        pair = _upper(rows, columns) & (labels_t[rows + first] != labels_t[columns + first])
        candidates = torch.cat([largest, similarity[rows[pair], columns[pair]]])
        largest = torch.topk(candidates, min(keep, len(candidates))).values  # sorted, descending
    return PairScan(_positives(x, y, start, end).numpy(), largest.numpy(), positive_count, negative_count)


def merge_scans(scans: Sequence[PairScan], keep: int) -> PairScan:
    """The scan of all rows from the scans of disjoint row shares."""
    largest = np.sort(np.concatenate([s.largest for s in scans]))[::-1][:keep]
    return PairScan(
        np.concatenate([s.positives for s in scans]), largest, scans[0].positive_count, scans[0].negative_count
    )


def spread_scan(embeddings: np.ndarray, labels: np.ndarray, keep: int) -> PairScan | None:
    """``scan_pairs`` over every rank's share (a collective under DDP: every rank calls it with the
    same arguments); the merged scan on rank 0, None on the others."""
    if not is_distributed():
        return scan_pairs(embeddings, labels, keep)
    parts = gather_to_zero(scan_pairs(embeddings, labels, keep, global_rank(), torch.distributed.get_world_size()))
    return None if parts is None else merge_scans(parts, keep)


def threshold_at(scan: PairScan, far: float) -> float:
    """The lowest cosine accepting at most ``floor(far * negatives)`` different-identity pairs:
    just above the (k+1)-th largest negative; -1 when every negative may be accepted."""
    allowed = allowed_false_accepts(far, scan.negative_count)
    if len(scan.largest) <= allowed:
        return -1.0
    return float(np.nextafter(scan.largest[allowed], np.inf))


def rates(scan: PairScan, cosine: float) -> tuple[float, float]:
    """(TAR, FAR) accepting ``similarity >= cosine``; the FAR counts the negatives the scan kept,
    exact whenever ``cosine`` is above its smallest kept one (``threshold_at`` always is)."""
    tar = float(np.count_nonzero(scan.positives >= cosine)) / scan.positive_count
    return tar, float(np.count_nonzero(scan.largest >= cosine)) / scan.negative_count


def keep_for(labels: np.ndarray, fars: Sequence[float]) -> int:
    """How many negatives a scan must keep to answer every FAR of ``fars``."""
    return max(allowed_false_accepts(far, pair_counts(labels)[1]) for far in fars) + 1


def count_accepted(
    embeddings: np.ndarray, labels: np.ndarray, cosine: float, part: int = 0, parts: int = 1
) -> tuple[int, int]:
    """(same-identity, different-identity) pairs of this part's rows with ``similarity >= cosine``."""
    x = torch.from_numpy(np.asarray(embeddings, dtype=np.float64))
    y = torch.from_numpy(np.asarray(labels))
    accepted = [0, 0]
    for first, similarity in _blocks(x, *row_share(len(x), part, parts)):
        rows, columns = (similarity >= cosine).nonzero(as_tuple=True)
        upper = _upper(rows, columns)
        same = y[rows[upper] + first] == y[columns[upper] + first]
        accepted[0] += int(same.sum())
        accepted[1] += int((~same).sum())
    return accepted[0], accepted[1]


def spread_rates(embeddings: np.ndarray, labels: np.ndarray, cosine: float) -> tuple[float, float]:
    """(TAR, FAR) over all pairs at ``cosine``, every rank counting its share (a collective under DDP)."""
    part, parts = (global_rank(), torch.distributed.get_world_size()) if is_distributed() else (0, 1)
    counts = gather_objects(count_accepted(embeddings, labels, cosine, part, parts))
    positives, negatives = pair_counts(labels)
    return sum(c[0] for c in counts) / positives, sum(c[1] for c in counts) / negatives
