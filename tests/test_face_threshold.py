"""The calibrated threshold, rank-1 identification and flip-averaged embeddings, against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from backbone.errors import BadInputError
from tasks.face_embedding.metrics import identification_top1
from tasks.face_embedding.model import FaceEmbedder, embed
from tasks.face_embedding.threshold import Calibration, calibrate, rates_at


def unit_vectors(n: int, d: int, identities: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors: each identity a random centre plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, identities, n)
    vectors = rng.normal(size=(identities, d))[labels] + rng.normal(scale=0.9, size=(n, d))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), labels


def brute_pairs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    same, different = [], []
    for i, j in itertools.combinations(range(len(x)), 2):
        (same if y[i] == y[j] else different).append(float(x[i] @ x[j]))
    return np.array(same), np.array(different)


@pytest.mark.parametrize("far", [1e-3, 1e-2, 0.1])
def test_calibration_is_the_lowest_threshold_within_the_far(far: float, monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.face_embedding.pairs as pairs

    monkeypatch.setattr(pairs, "PAIR_BLOCK", 5000)  # several blocks: the running top-k is exercised
    x, y = unit_vectors(150, 8, 12)
    same, different = brute_pairs(x, y)
    found = calibrate(x, y, far)
    assert found is not None and (found.positives, found.negatives) == (len(same), len(different))
    allowed = int(np.floor(far * len(different) + 1e-9))
    # (1e-9: the loop's float64 dot products may differ from the blocks' in the last bit)
    accepted = np.count_nonzero(different >= found.cosine + 1e-9)
    assert accepted <= allowed and found.far_reached == pytest.approx(accepted / len(different))
    # any lower threshold among the negatives accepts more than allowed
    assert np.count_nonzero(different >= np.sort(different)[::-1][allowed] - 1e-9) > allowed
    assert found.tar == pytest.approx(np.mean(same >= found.cosine + 1e-9))
    assert rates_at(x, y, found.cosine) == pytest.approx((found.tar, found.far_reached))


def test_calibration_needs_both_kinds_of_pair() -> None:
    x, _ = unit_vectors(5, 4, 2)
    assert calibrate(x, np.arange(5)) is None and calibrate(x, np.zeros(5, int)) is None
    assert rates_at(x, np.arange(5), 0.5) is None


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"cosine": 0.5}, "expected an object with"),
        ("0.5", "expected an object with"),
        ({"cosine": 7.0, "far": 1e-3, "tar": 0.9, "far_reached": 0.0, "positives": 1, "negatives": 1}, "[-1, 1]"),
    ],
)
def test_a_damaged_calibration_entry_is_one_sentence(entry: object, words: str) -> None:
    with pytest.raises(BadInputError, match=words.replace("[", r"\[")):
        Calibration.from_dict(entry, "The checkpoint 'x.ckpt'")


def test_identification_top1_against_a_loop() -> None:
    x, y = unit_vectors(90, 8, 15, seed=3)
    gallery = [int(np.flatnonzero(y == label)[0]) for label in np.unique(y)]
    hits = []
    for q in range(len(y)):
        if q in gallery:
            continue
        best = max(gallery, key=lambda g: x[q] @ x[g])
        hits.append(y[best] == y[q])
    assert identification_top1(x, y, block=7) == pytest.approx(np.mean(hits))
    assert np.isnan(identification_top1(x[:3], np.arange(3)))  # no queries


def test_flip_test_averages_an_image_and_its_mirror() -> None:
    torch.manual_seed(0)
    model = FaceEmbedder(0.25, 16).eval()
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        both = embed(model, images, flip_test=True)
        expected = F.normalize(model(images) + model(images.flip(-1)), dim=1)
        assert torch.allclose(both, expected) and torch.allclose(embed(model, images, False), model(images))
        # the mirror image has the same embedding: a face and its mirror are one person
        assert torch.allclose(embed(model, images.flip(-1), True), both, atol=1e-6)
