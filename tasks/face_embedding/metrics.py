"""Face verification metrics: LFW's 10-fold protocol and TAR at a fixed FAR over all pairs.

``lfw_accuracy`` / ``lfw_accuracy_std`` / ``val_at_far_1e-3`` follow the FaceNet reference
(davidsandberg/facenet ``lfw.evaluate`` -> ``facenet.calculate_roc`` / ``calculate_val``) exactly:
squared L2 distance between the two embeddings of a pair, "same" predicted when distance <
threshold, thresholds ``arange(0, 4, 0.01)`` (``0.001`` for VAL); for each fold the threshold
with the best accuracy on the other 9 folds (the first one on ties, ``np.argmax``) is applied to
the fold; the metric is the mean over folds and ``std`` is NumPy's population std, as printed by
``validate_on_lfw.py``. The folds are the 10 sets of ``pairs.txt`` (the reference's unshuffled
``KFold(10)`` gives the same folds when no pair is skipped; here none ever is).

VAL at FAR 1e-3: per fold, the threshold whose training-fold FAR equals 1e-3 is interpolated
linearly between the two grid thresholds around it, then VAL (true accept rate) is measured on the
fold. The reference's ``scipy.interpolate.interp1d(far, thresholds, kind='slinear')`` raises on
SciPy >= 1.9 because ``far`` repeats values over the threshold grid; ``threshold_at_far`` does the
same linear interpolation between the last threshold at or under the target FAR and the next one.

``identification_top1``: rank-1 identification with the first image of each identity as the
gallery and the rest as queries (the face index's use).

``tar_at_far_1e-4`` (the paper's "1e-4 accuracy", which 300 negative pairs per LFW fold cannot
resolve): over *all* pairs of a held-out identity set, the largest true accept rate whose false
accept rate is at most 1e-4 (``distance < threshold``), computed without materialising the pair
matrix: only the smallest negative distances a threshold can reach are kept, chunk by chunk.

Written by hand because no library computes LFW's fold protocol; the tests check every function
against an independent scikit-learn / NumPy computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.face_embedding.pairs import TAR_FAR, keep_for, pair_counts, rates, scan_pairs, threshold_at

ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01)  # facenet lfw.evaluate
VAL_THRESHOLDS = np.arange(0, 4, 0.001)
VAL_FAR = 1e-3


def pair_distances(embeddings: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Squared L2 distance of each pair (float64, so comparisons with thresholds are exact)."""
    difference = embeddings[first].astype(np.float64) - embeddings[second].astype(np.float64)
    return np.square(difference).sum(1)


def _rates(thresholds: np.ndarray, distances: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(true accepts, false accepts) at each threshold, accepting ``distance < threshold``."""
    positives, negatives = np.sort(distances[same]), np.sort(distances[~same])
    return np.searchsorted(positives, thresholds, "left"), np.searchsorted(negatives, thresholds, "left")


@dataclass(frozen=True)
class LfwResult:
    accuracy: np.ndarray  # per fold
    val: np.ndarray  # per fold, at FAR = VAL_FAR
    far: np.ndarray  # per fold, the FAR actually reached on the fold
    tpr: np.ndarray  # mean over folds at each ACCURACY_THRESHOLDS (the ROC curve)
    fpr: np.ndarray


def fold_accuracy(distances: np.ndarray, same: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Accuracy of each fold at the threshold chosen on the other folds (``calculate_roc``)."""
    accuracy = np.zeros(int(folds.max()) + 1)
    for fold in range(len(accuracy)):
        train = folds != fold
        tp, fp = _rates(ACCURACY_THRESHOLDS, distances[train], same[train])
        correct = tp + (np.count_nonzero(~same[train]) - fp)
        best = ACCURACY_THRESHOLDS[int(np.argmax(correct))]
        test = ~train
        predicted = distances[test] < best
        accuracy[fold] = np.mean(predicted == same[test])
    return accuracy


def threshold_at_far(thresholds: np.ndarray, far: np.ndarray, target: float) -> float:
    """The threshold where ``far`` (non-decreasing over ``thresholds``) reaches ``target``, linearly
    interpolated; 0.0 when ``target`` is never reached (as the reference)."""
    if far.max() < target:
        return 0.0
    last = int(np.searchsorted(far, target, "right")) - 1  # last grid point with far <= target
    if last < 0:
        return float(thresholds[0])
    if far[last] == target or last + 1 == len(far):
        return float(thresholds[last])
    t0, t1, f0, f1 = thresholds[last], thresholds[last + 1], far[last], far[last + 1]
    return float(t0 + (target - f0) * (t1 - t0) / (f1 - f0))


def fold_val(
    distances: np.ndarray, same: np.ndarray, folds: np.ndarray, far_target: float = VAL_FAR
) -> tuple[np.ndarray, np.ndarray]:
    """Per fold: VAL and FAR on the fold at the threshold giving ``far_target`` on the other folds."""
    count = int(folds.max()) + 1
    val, far = np.zeros(count), np.zeros(count)
    for fold in range(count):
        train, test = folds != fold, folds == fold
        _, fp = _rates(VAL_THRESHOLDS, distances[train], same[train])
        threshold = threshold_at_far(VAL_THRESHOLDS, fp / max(np.count_nonzero(~same[train]), 1), far_target)
        accepted = distances[test] < threshold
        val[fold] = np.count_nonzero(accepted & same[test]) / max(np.count_nonzero(same[test]), 1)
        far[fold] = np.count_nonzero(accepted & ~same[test]) / max(np.count_nonzero(~same[test]), 1)
    return val, far


def roc_curve_folds(distances: np.ndarray, same: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over folds of (TPR, FPR) at each accuracy threshold, as ``calculate_roc`` returns it."""
    tprs, fprs = [], []
    for fold in range(int(folds.max()) + 1):
        test = folds == fold
        tp, fp = _rates(ACCURACY_THRESHOLDS, distances[test], same[test])
        tprs.append(tp / max(np.count_nonzero(same[test]), 1))
        fprs.append(fp / max(np.count_nonzero(~same[test]), 1))
    return np.mean(tprs, 0), np.mean(fprs, 0)


def lfw_metrics(
    embeddings: np.ndarray, first: np.ndarray, second: np.ndarray, same: np.ndarray, folds: np.ndarray
) -> LfwResult:
    """The LFW protocol on the embeddings of ``pairs.txt``'s images."""
    distances = pair_distances(embeddings, first, second)
    val, far = fold_val(distances, same, folds)
    tpr, fpr = roc_curve_folds(distances, same, folds)
    return LfwResult(fold_accuracy(distances, same, folds), val, far, tpr, fpr)


@dataclass(frozen=True)
class PartialScores:
    """The metrics of the images that were embedded, and what that leaves out.

    A run limited to part of the evaluation split (``--trainer.limit_val_batches``,
    ``fast_dev_run``) embeds some images only: LFW is scored on the pairs whose two images were
    embedded, each fold's threshold picked on the other folds that have pairs, so at least 2 such
    folds are needed (NaN otherwise); ``tar_at_far_1e-4`` on the embedded held-out images.
    """

    metrics: dict[str, float]
    lfw_result: LfwResult | None  # None: fewer than 2 folds have pairs (or no LFW)
    pairs_scored: int
    pairs_total: int
    folds_scored: int
    folds_total: int
    heldout_scored: int
    heldout_total: int

    def summary(self, embedded: int, total: int) -> str:
        """One sentence on what a partial evaluation scored."""
        parts = []
        if self.pairs_total:
            share = f"{self.pairs_scored} of {self.pairs_total} pairs ({self.folds_scored} of {self.folds_total} folds)"
            if self.lfw_result is None:
                parts.append(
                    f"the LFW metrics are NaN, as only {share} have both images embedded and each fold's "
                    "threshold is picked on other folds"
                )
            else:
                parts.append(f"LFW is scored on the {share} whose two images were embedded")
        if self.heldout_total:
            parts.append(f"tar_at_far_1e-4 on {self.heldout_scored} of {self.heldout_total} held-out images")
        return (
            f"Only {embedded} of the {total} evaluation images were embedded (a limited evaluation, e.g. "
            f"--trainer.limit_val_batches or fast_dev_run): {'; '.join(parts)}."
        )


def score_embedded(
    embeddings: np.ndarray,
    embedded: np.ndarray,
    lfw_images: np.ndarray | None,
    pairs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None,
    heldout_images: np.ndarray,
    heldout_labels: np.ndarray,
    tar: float | None = None,
) -> PartialScores:
    """Score what was embedded (see ``PartialScores``); with every image embedded it is the full protocol.

    Args:
        embeddings: (N, D) one row per image of the evaluation split (anything where not embedded).
        embedded: (N,) bool, which rows hold an embedding.
        lfw_images: the rows of LFW's images, in ``pairs``' image order; None without LFW.
        pairs: ``(first, second, same, fold)`` of ``pairs.txt`` (indices into ``lfw_images``).
        heldout_images: the rows of the images with an identity (held-out identities, LFW's people);
            ``heldout_labels`` their identity: ``tar_at_far_1e-4`` and ``identification_top1`` over them.
        tar: ``tar_at_far_1e-4`` when the caller has it already (the module scans the pairs spread
            over every rank, ``pairs.spread_scan``); None computes it here.
    """
    metrics: dict[str, float] = {}
    result, pairs_scored, pairs_total, folds_scored, folds_total = None, 0, 0, 0, 0
    if pairs is not None and lfw_images is not None:
        first, second, same, fold = pairs
        present = embedded[lfw_images]
        kept = present[first] & present[second]
        pairs_scored, pairs_total = int(kept.sum()), len(first)
        folds, renumbered = np.unique(fold[kept], return_inverse=True)
        folds_scored, folds_total = len(folds), len(np.unique(fold))
        if folds_scored >= 2:
            vectors = embeddings[lfw_images]
            result = lfw_metrics(vectors, first[kept], second[kept], same[kept], renumbered.reshape(-1))
        metrics["lfw_accuracy"] = float(result.accuracy.mean()) if result else float("nan")
        metrics["lfw_accuracy_std"] = float(result.accuracy.std()) if result else float("nan")
        metrics["val_at_far_1e-3"] = float(result.val.mean()) if result else float("nan")
    held = heldout_images[embedded[heldout_images]]
    if len(heldout_images):
        labels = np.asarray(heldout_labels)[embedded[heldout_images]]
        if tar is None:
            tar = tar_at_far(embeddings[held], labels) if len(held) else float("nan")
        metrics["tar_at_far_1e-4"] = tar
        metrics["identification_top1"] = identification_top1(embeddings[held], labels)
    return PartialScores(
        metrics, result, pairs_scored, pairs_total, folds_scored, folds_total, len(held), len(heldout_images)
    )


def identification_top1(embeddings: np.ndarray, labels: np.ndarray, block: int = 4096) -> float:
    """Rank-1 identification: the gallery is the first image of each identity (in the set's order),
    the queries are the rest; the share of queries whose most similar gallery face (cosine, i.e. the
    dot product of unit vectors) is their own identity. Identities with one image are distractors
    in the gallery. NaN without a query."""
    labels = np.asarray(labels)
    _, first = np.unique(labels, return_index=True)
    gallery = np.sort(first)
    queries = np.setdiff1d(np.arange(len(labels)), gallery)
    if not len(queries):
        return float("nan")
    enrolled = np.asarray(embeddings[gallery], dtype=np.float32)
    hits = 0
    for start in range(0, len(queries), block):  # bounded memory: block x gallery similarities at a time
        rows = queries[start : start + block]
        best = gallery[np.argmax(np.asarray(embeddings[rows], dtype=np.float32) @ enrolled.T, axis=1)]
        hits += int(np.count_nonzero(labels[best] == labels[rows]))
    return hits / len(queries)


def tar_at_far(embeddings: np.ndarray, labels: np.ndarray, far: float = TAR_FAR) -> float:
    """Over all pairs i < j of unit embeddings: the largest TAR with FAR <= ``far``.

    With ``n`` negative pairs at most ``k = floor(far * n)`` may be accepted, so a pair is accepted
    when its similarity is above the (k+1)-th largest negative one (``pairs.threshold_at``; as a
    distance: below the (k+1)-th smallest). One scan of the pairs (``pairs.py``); NaN without both
    kinds of pair.
    """
    positives, negatives = pair_counts(labels)
    if positives == 0 or negatives == 0:
        return float("nan")
    scan = scan_pairs(embeddings, labels, keep_for(labels, [far]))
    return rates(scan, threshold_at(scan, far))[0]
