"""Mean average precision over attributes, computed once over the whole split across DDP ranks.

``AttributeAveragePrecision`` is torchmetrics' ``MultilabelAveragePrecision`` (exact: every
score is kept, ``thresholds=None``; its states are lists that torchmetrics gathers from every
rank before computing, so a 2-process run scores the same set as a 1-process run). It also
returns the number of positives per attribute: torchmetrics gives an attribute with no positive
example an AP of 0, which would drag the mean down for a property of the split, not of the model.
Such attributes are left out of the mean and reported by name instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics.classification import MultilabelAveragePrecision
from torchmetrics.utilities import dim_zero_cat


class AttributeAveragePrecision(MultilabelAveragePrecision):
    """Per-attribute AP over everything seen (all ranks) and each attribute's number of positives."""

    def __init__(self, num_attributes: int) -> None:
        super().__init__(num_labels=num_attributes, average=None, thresholds=None)

    def compute(self) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        positives = (dim_zero_cat(self.target) == 1).sum(dim=0)
        with warnings.catch_warnings():  # reported once, by name, by the caller instead
            warnings.filterwarnings("ignore", message="No positive samples found in target")
            ap = super().compute()
        return ap, positives


def summarise(ap: Tensor, positives: Tensor, names: Sequence[str]) -> tuple[dict[str, float], float, list[str]]:
    """``({name: AP} of the scored attributes, their mean, the attributes left out for lack of positives)``."""
    rows = list(zip(names, ap.tolist(), positives.tolist(), strict=True))
    scored = {name: float(value) for name, value, count in rows if count > 0}
    left_out = [name for name, _, count in rows if count == 0]
    mean = float(torch.tensor(list(scored.values()), dtype=torch.float64).mean()) if scored else float("nan")
    return scored, mean, left_out
