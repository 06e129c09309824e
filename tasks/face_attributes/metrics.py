"""What CelebA users report, computed once over the whole split across DDP ranks: mean AP, and the
per-attribute accuracy at 0.5 and at thresholds chosen on the validation split.

``AttributeScores`` is torchmetrics' ``MultilabelAveragePrecision`` (exact: every score is kept,
``thresholds=None``; its states are lists that torchmetrics gathers from every rank before
``compute``, so a 2-process run scores the same set as a 1-process run). Its ``compute`` returns,
besides the per-attribute AP, the gathered scores and labels themselves, so the accuracies and the
thresholds below are computed from the whole split on every rank alike, never averaged per rank.

* AP: torchmetrics gives an attribute with no positive example an AP of 0, which would drag the
  mean down for a property of the split, not of the model. Such attributes are left out of
  ``mean_ap`` and reported by name instead (``summarise``).
* Accuracy (``accuracy``): an attribute is predicted present when its probability is above the
  threshold; the accuracy is the share of images where that matches the label. Every attribute
  counts, with or without positives (CelebA papers average the 40 accuracies).
* Thresholds (``best_thresholds``): per attribute, the one that maximises that attribute's accuracy
  on the validation split; the test split is then scored with them (``mean_accuracy_tuned``). The
  sweep is exact: every cut between two distinct scores is tried and the threshold is placed
  midway between them. On the validation split itself the tuned accuracy is in-sample (optimistic).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torchmetrics.classification import MultilabelAveragePrecision
from torchmetrics.utilities import dim_zero_cat


class SplitScores(NamedTuple):  # a tuple: torchmetrics maps over compute()'s result, refusing frozen dataclasses
    """A whole split's results: ``ap`` and ``positives`` per attribute, and the ``scores`` (N, A)
    probabilities and ``labels`` (N, A) 0/1 of every image of every rank."""

    ap: Tensor
    positives: Tensor
    scores: Tensor
    labels: Tensor


class AttributeScores(MultilabelAveragePrecision):
    """Per-attribute AP over everything seen (all ranks), with the gathered scores and labels."""

    def __init__(self, num_attributes: int) -> None:
        super().__init__(num_labels=num_attributes, average=None, thresholds=None)

    def compute(self) -> SplitScores:  # type: ignore[override]
        scores, labels = dim_zero_cat(self.preds), dim_zero_cat(self.target)
        with warnings.catch_warnings():  # reported once, by name, by the caller instead
            warnings.filterwarnings("ignore", message="No positive samples found in target")
            ap = super().compute()
        return SplitScores(ap, (labels == 1).sum(dim=0), scores, labels)


def summarise(ap: Tensor, positives: Tensor, names: Sequence[str]) -> tuple[dict[str, float], float, list[str]]:
    """``({name: AP} of the scored attributes, their mean, the attributes left out for lack of positives)``."""
    rows = list(zip(names, ap.tolist(), positives.tolist(), strict=True))
    scored = {name: float(value) for name, value, count in rows if count > 0}
    left_out = [name for name, _, count in rows if count == 0]
    mean = float(torch.tensor(list(scored.values()), dtype=torch.float64).mean()) if scored else float("nan")
    return scored, mean, left_out


def accuracy(scores: Tensor, labels: Tensor, thresholds: Tensor | float = 0.5) -> Tensor:
    """Per attribute (A,), the share of images whose ``scores > thresholds`` matches ``labels``.

    Written out because torchmetrics' multilabel accuracy takes one threshold for every label;
    the comparison (strictly above) is torchmetrics' and the one ``predict --model.predict_labels``
    writes.
    """
    predicted = scores.double() > torch.as_tensor(thresholds, dtype=torch.float64, device=scores.device)
    return (predicted == labels.bool()).double().mean(dim=0)


def best_thresholds(scores: Tensor, labels: Tensor) -> Tensor:
    """Per attribute, the threshold (float64, in [0, 1]) that maximises its accuracy on (scores, labels).

    Predicting the top k scores present is possible for k = 0 and wherever the k-th and (k+1)-th
    scores differ; each such cut is scored exactly (true positives among the top k, true negatives
    below) and the threshold goes midway between the two scores. Ties between cuts go to the
    threshold nearest 0.5, the untuned choice. Sorting makes it independent of the images' order,
    so every rank and a 1-process run choose the same thresholds.
    """
    count, width = scores.shape
    options = {"dtype": torch.float64, "device": scores.device}
    if count == 0:
        return torch.full((width,), 0.5, **options)
    ordered, order = torch.sort(scores.double(), dim=0, descending=True)
    positive = torch.gather(labels.double(), 0, order)
    true_pos = torch.cat([torch.zeros(1, width, **options), positive.cumsum(0)])  # (count + 1, A): top k
    false_pos = torch.arange(count + 1, **options)[:, None] - true_pos
    correct = true_pos + (count - true_pos[-1] - false_pos)
    above = torch.cat([torch.ones(1, width, **options), ordered])  # the k-th score (1 above the first)
    below = torch.cat([ordered, torch.zeros(1, width, **options)])  # the (k+1)-th score (0 below the last)
    possible = above > below
    possible[0] = True  # nothing predicted present: threshold 1 when the top score is 1
    thresholds = (above + below) / 2
    correct = torch.where(possible, correct, torch.full_like(correct, -1.0))
    best = correct == correct.max(dim=0, keepdim=True).values
    distance = torch.where(best, (thresholds - 0.5).abs(), torch.full_like(thresholds, float("inf")))
    return thresholds.gather(0, distance.argmin(dim=0, keepdim=True))[0]
