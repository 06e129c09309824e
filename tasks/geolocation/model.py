"""The geolocation network: a MobileNetV1 trunk and one softmax head per partition of the Earth.

PlaNet classifies a photo into one of the adaptive S2 cells (a single head). GeoEstimation
(Müller-Budack et al., ECCV 2018) trains heads for a coarse, a middle and a fine partition at once
and predicts a fine cell by the product of the probabilities of the cell and of its ancestors in
the coarser partitions; ``hierarchical_log_probs`` is that product, in log space.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from backbone.mobilenet import Activation, MobileNetV1
from backbone.weights import load_backbone_weights


class GeoNet(nn.Module):
    """MobileNetV1 (Table 1) -> average pool -> dropout -> one linear head per partition.

    Args:
        width: the width multiplier alpha.
        num_cells: cells of each partition, coarse to fine (one entry: PlaNet's single head).
        dropout: dropout before the heads.
        activation: ``relu6`` or ``relu``.
        backbone_weights: a checkpoint of any task of this project or a timm state dict.
    """

    def __init__(
        self,
        width: float,
        num_cells: Sequence[int],
        dropout: float = 0.001,
        activation: Activation = "relu6",
        backbone_weights: str | None = None,
    ) -> None:
        super().__init__()
        self.trunk = MobileNetV1(width, num_classes=0, activation=activation)
        if backbone_weights:
            load_backbone_weights(self.trunk, backbone_weights, classifier=False)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleList()
        self.resize_heads(num_cells)

    def resize_heads(self, num_cells: Sequence[int]) -> None:
        """New heads for partitions of ``num_cells`` cells (before loading a checkpoint's)."""
        heads = []
        for n in num_cells:
            head = nn.Linear(self.trunk.num_features, max(int(n), 1))
            nn.init.normal_(head.weight, 0.0, 0.01)  # as MobileNetV1's classifier
            nn.init.zeros_(head.bias)
            heads.append(head)
        self.heads = nn.ModuleList(heads)

    @property
    def num_cells(self) -> list[int]:
        return [head.out_features for head in self.heads]

    def forward(self, images: Tensor) -> list[Tensor]:
        """Logits of every partition, coarse to fine."""
        features = self.dropout(self.trunk(images))
        return [head(features) for head in self.heads]


def hierarchical_log_probs(logits: Sequence[Tensor], parents: Tensor) -> Tensor:
    """Log-probabilities of the fine cells, times those of their ancestors (GeoEstimation).

    Args:
        logits: (B, N_k) logits of each partition, coarse to fine (the last is the fine one).
        parents: (K - 1, N_fine) row of each fine cell's ancestor in each coarser partition.

    Returns:
        (B, N_fine): ``log p_fine(c) + sum_k log p_k(parent_k(c))``; with one partition, its
        log-softmax. The values are unnormalised log-probabilities (the product of probabilities
        of nested cells); their argmax is the predicted cell.
    """
    out = torch.log_softmax(logits[-1].float(), dim=1)
    for level, coarse in enumerate(logits[:-1]):
        out = out + torch.log_softmax(coarse.float(), dim=1)[:, parents[level]]
    return out


def multi_crop_log_probs(logits: Sequence[Tensor], crops: int, parents: Tensor) -> Tensor:
    """GeoEstimation's multi-crop reading of K views of each image (``--data.test_crops``).

    As their ``_multi_crop_inference`` (TIBHannover/GeoEstimation, classification/train_base.py):
    each partition's softmax for every crop, the MAX over the crops of each cell's probability,
    then the product along the hierarchy (``hierarchical_log_probs``, whose renormalisation of
    each partition's maxima shifts an image's scores by a constant: the argmax is theirs).

    Args:
        logits: (B * K, N_k) logits of each partition, the K crops of an image consecutive.
        crops: K.
        parents: as in ``hierarchical_log_probs``.
    """
    best = [torch.log_softmax(out.float(), dim=1).unflatten(0, (-1, crops)).amax(dim=1) for out in logits]
    return hierarchical_log_probs(best, parents)
