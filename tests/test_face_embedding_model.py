"""Face embedding: the network, the triplet and distillation losses, the verification metrics,
each against an independent brute-force / scikit-learn computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.interpolate import interp1d
from sklearn.metrics import roc_curve
from sklearn.model_selection import KFold

from tasks.face_embedding import metrics, pairs
from tasks.face_embedding.losses import distillation_loss, triplet_semihard_loss
from tasks.face_embedding.model import FaceEmbedder


def test_embeddings_are_128_d_and_unit_length() -> None:
    model = FaceEmbedder(0.25).train()  # batch statistics: an untrained net's eval-mode outputs vanish
    out = model(torch.randn(3, 3, 64, 64))
    assert out.shape == (3, 128)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


# --- triplet loss ---------------------------------------------------------------------------


def brute_force_semihard(embeddings: np.ndarray, labels: np.ndarray, margin: float) -> float:
    """TF-Addons' rule written as the plain loop over (anchor, positive) pairs."""
    n = len(labels)
    d = ((embeddings[:, None, :] - embeddings[None, :, :]) ** 2).sum(-1)
    total, count = 0.0, 0
    for a in range(n):
        negatives = [d[a, k] for k in range(n) if labels[k] != labels[a]]
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            farther = [v for v in negatives if v > d[a, p]]
            if farther:
                negative = min(farther)  # semi-hard: the closest negative farther than the positive
            elif negatives:
                negative = max(negatives)  # none: the farthest negative
            else:
                negative = d[a].min()  # no negative at all: TF-Addons' masked max of an empty row
            total += max(d[a, p] - negative + margin, 0.0)
            count += 1
    return total / count if count else 0.0  # no positive pair at all: 0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shape", [(3, 2), (4, 3), (2, 5), (5, 1)])
def test_semihard_loss_matches_brute_force(seed: int, shape: tuple[int, int]) -> None:
    identities, per_identity = shape
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(identities), per_identity)
    if seed % 2:  # an uneven batch: one identity with a single image, a stray label
        labels = np.concatenate([labels, [identities + 7]])
    x = rng.normal(size=(len(labels), 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ours = triplet_semihard_loss(torch.from_numpy(x), torch.from_numpy(labels), margin=0.2)
    assert ours.item() == pytest.approx(brute_force_semihard(x, labels, 0.2), rel=1e-6, abs=1e-9)


def test_semihard_loss_single_identity_and_gradient() -> None:
    x = torch.nn.functional.normalize(torch.randn(4, 8, dtype=torch.float64), dim=1).requires_grad_()
    labels = torch.zeros(4, dtype=torch.long)
    loss = triplet_semihard_loss(x, labels)
    assert loss.item() == pytest.approx(brute_force_semihard(x.detach().numpy(), labels.numpy(), 0.2))
    x2 = torch.nn.functional.normalize(torch.randn(6, 8, dtype=torch.float64), dim=1).requires_grad_()
    triplet_semihard_loss(x2, torch.tensor([0, 0, 1, 1, 2, 2])).backward()
    assert torch.isfinite(x2.grad).all()


def test_distillation_loss_is_mean_squared_difference() -> None:
    student, teacher = torch.randn(5, 128), torch.randn(5, 128)
    expected = np.mean([np.sum((s - t) ** 2) for s, t in zip(student.numpy(), teacher.numpy(), strict=True)])
    assert distillation_loss(student, teacher).item() == pytest.approx(expected, rel=1e-5)


# --- LFW protocol -----------------------------------------------------------------------------


def facenet_reference(distances: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """facenet.calculate_roc / calculate_val re-typed: per-threshold loops, sklearn's KFold(10)."""
    thresholds = np.arange(0, 4, 0.01)
    accuracy, val = np.zeros(10), np.zeros(10)
    for fold, (train, test) in enumerate(KFold(n_splits=10, shuffle=False).split(np.arange(len(same)))):
        train_acc = [np.mean((distances[train] < t) == same[train]) for t in thresholds]
        best = thresholds[int(np.argmax(train_acc))]
        accuracy[fold] = np.mean((distances[test] < best) == same[test])
        fine = np.arange(0, 4, 0.001)
        far = np.array([np.sum((distances[train] < t) & ~same[train]) / np.sum(~same[train]) for t in fine])
        if far.max() >= 1e-3:
            j = max(i for i in range(len(fine)) if far[i] <= 1e-3)
            if far[j] == 1e-3 or j + 1 == len(fine):
                threshold = fine[j]
            else:
                threshold = fine[j] + (1e-3 - far[j]) * (fine[j + 1] - fine[j]) / (far[j + 1] - far[j])
        else:
            threshold = 0.0
        accepted = distances[test] < threshold
        val[fold] = np.sum(accepted & same[test]) / np.sum(same[test])
    return accuracy, val


def synthetic_lfw(seed: int, per_set: int = 30, spread: float = 0.6) -> tuple[np.ndarray, ...]:
    """Embeddings of 10 sets of per_set same + per_set different pairs, in pairs.txt's order."""
    rng = np.random.default_rng(seed)
    first, second, same, fold, vectors = [], [], [], [], []
    for k in range(10):
        for is_same in (True, False):
            for _ in range(per_set):
                a = rng.normal(size=16)
                b = a + rng.normal(scale=spread, size=16) if is_same else rng.normal(size=16)
                for v in (a, b):
                    vectors.append(v / np.linalg.norm(v))
                first.append(len(vectors) - 2)
                second.append(len(vectors) - 1)
                same.append(is_same)
                fold.append(k)
    return (np.asarray(vectors, np.float32), *(np.asarray(v) for v in (first, second, same, fold)))


@pytest.mark.parametrize("seed", range(3))
def test_lfw_folds_match_the_facenet_reference(seed: int) -> None:
    embeddings, first, second, same, fold = synthetic_lfw(seed, per_set=60)
    result = metrics.lfw_metrics(embeddings, first, second, same, fold)
    distances = ((embeddings[first].astype(np.float64) - embeddings[second]) ** 2).sum(1)
    accuracy, val = facenet_reference(distances, same)
    np.testing.assert_array_equal(result.accuracy, accuracy)
    np.testing.assert_allclose(result.val, val)
    assert 0.6 < result.accuracy.mean() < 1.0  # a case where thresholds matter
    assert result.tpr.shape == result.fpr.shape == metrics.ACCURACY_THRESHOLDS.shape


def test_threshold_search_where_scipy_interp1d_fails() -> None:
    """FAR repeats values over the threshold grid: SciPy >= 1.9's interp1d raises, ours interpolates."""
    thresholds = np.arange(0, 1, 0.1)
    far = np.array([0, 0, 0, 0.0005, 0.0005, 0.002, 0.002, 0.5, 1, 1])
    with pytest.raises(ValueError):
        interp1d(far, thresholds, kind="slinear")(1e-3)
    # between the last threshold at FAR 0.0005 (0.4) and the first at 0.002 (0.5): one third of the way
    assert metrics.threshold_at_far(thresholds, far, 1e-3) == pytest.approx(0.4 + 0.1 / 3)
    assert metrics.threshold_at_far(thresholds, far, 0.002) == pytest.approx(0.6)  # on a plateau: its last
    assert metrics.threshold_at_far(thresholds, np.zeros(10), 1e-3) == 0.0  # never reached (as the reference)


# --- TAR at FAR over all pairs ---------------------------------------------------------------


@pytest.mark.parametrize(("far", "block"), [(1e-4, 4_000_000), (1e-2, 500), (0.05, 97)])
def test_tar_at_far_matches_sklearn_roc(far: float, block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pairs, "PAIR_BLOCK", block)  # also exercise the chunked path
    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(30), 5)
    centres = rng.normal(size=(30, 16))
    x = centres[labels] + rng.normal(scale=0.7, size=(len(labels), 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    i, j = np.triu_indices(len(labels), 1)
    distances = ((x[i] - x[j]) ** 2).sum(1)
    fpr, tpr, _ = roc_curve(labels[i] == labels[j], -distances)
    expected = tpr[fpr <= far].max()
    assert metrics.tar_at_far(x, labels, far) == pytest.approx(expected, abs=1e-12)
    assert 0 < expected < 1
