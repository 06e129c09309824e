"""The pair scan of face embedding's evaluation (``tasks/face_embedding/pairs.py``) against the loop it
replaced, on the same synthetic embeddings: pairs per second, and the minutes a validation on 5% of
VGGFace2 (165k images, 1.4e10 pairs) takes at that rate on one rank and spread over 8."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from tasks.face_embedding.metrics import tar_at_far

VGGFACE2_5_PERCENT = 165_000
ANCHOR_BLOCK = 4_000_000


def anchor_tar_at_far(embeddings: np.ndarray, labels: np.ndarray, far: float = 1e-4) -> float:
    """The loop the scan replaced (rank 0 alone): squared distances of every row block to every
    image (both triangles), masks for i < j and same identity, every negative into a running top-k."""
    x = torch.from_numpy(np.asarray(embeddings, dtype=np.float64))
    y = torch.from_numpy(np.asarray(labels))
    n = len(x)
    same_pairs = int(sum(c * (c - 1) // 2 for c in np.unique(labels, return_counts=True)[1]))
    allowed = int(np.floor(far * (n * (n - 1) // 2 - same_pairs) + 1e-9))
    smallest = torch.empty(0, dtype=torch.float64)
    positives = []
    chunk = max(1, ANCHOR_BLOCK // n)
    for start in range(0, n, chunk):
        distances = torch.cdist(x[start : start + chunk], x).pow(2)
        upper = torch.arange(start, start + len(distances))[:, None] < torch.arange(n)[None, :]
        same = y[start : start + len(distances), None] == y[None, :]
        positives.append(distances[upper & same])
        negatives = torch.cat([smallest, distances[upper & ~same]])
        smallest = torch.topk(negatives, min(allowed + 1, len(negatives)), largest=False).values
    return float((torch.cat(positives) < smallest.max()).double().mean())


def measure_pairs(images: int, identities: int, seed: int = 0) -> dict[str, Any]:
    """Both on ``images`` unit embeddings (128-d) of ``identities`` people; equal results required."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, identities, images)
    x = rng.normal(size=(identities, 128))[labels] + rng.normal(scale=1.0, size=(images, 128))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    pairs = images * (images - 1) / 2
    rates, values = {}, {}
    for name, function in (("anchor", anchor_tar_at_far), ("scan", tar_at_far)):
        start = time.perf_counter()
        values[name] = function(x, labels)
        rates[name] = pairs / (time.perf_counter() - start)
    full = VGGFACE2_5_PERCENT * (VGGFACE2_5_PERCENT - 1) / 2
    return {
        "images": images,
        "pairs_per_s": rates,
        "equal": values["anchor"] == values["scan"],
        "minutes_5pct_vggface2": {
            "anchor, rank 0": full / rates["anchor"] / 60,
            "scan, 1 rank": full / rates["scan"] / 60,
            "scan, 8 ranks": full / rates["scan"] / 8 / 60,
        },
    }
