"""The two training losses of Table 14: FaceNet's triplet loss and the paper's distillation.

``triplet_semihard_loss`` is TF-Addons' ``triplet_semihard_loss`` (the rule FaceNet's online
mining describes, Section 3.2), ported to PyTorch because neither PyTorch nor torchmetrics ships
it: for every anchor-positive pair (a, p) of the batch (all of them, except a == p), the negative
is the closest one *farther* than the positive (semi-hard: d(a,n) > d(a,p)); when the batch has
none, the farthest negative. Loss = mean over the pairs of max(d(a,p) - d(a,n) + margin, 0),
with squared L2 distances.

``distillation_loss`` is the paper's: the student regresses the teacher's embedding (squared
difference), "the MobileNet student is trained to match the teacher's embeddings".
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from backbone.ranges import float_range

TRIPLET_MARGIN = 0.2  # FaceNet, Section 3.1 (alpha = 0.2)
# Squared distances of unit vectors lie in [0, 4]: a margin above 4 could never be met.
TripletMargin = float_range(0, 4)


def squared_distances(embeddings: Tensor) -> Tensor:
    """Pairwise squared L2 distances, clamped at 0 with an exact 0 diagonal (as TF-Addons)."""
    squared = embeddings.pow(2).sum(1)
    distances = (squared[:, None] + squared[None, :] - 2 * embeddings @ embeddings.T).clamp_min(0.0)
    return distances * (1 - torch.eye(len(embeddings), device=embeddings.device, dtype=embeddings.dtype))


def _masked_max(data: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Max of ``data`` over ``mask`` along ``dim``; with an empty mask, the min of ``data`` (TF-Addons)."""
    low = data.amin(dim, keepdim=True)
    return ((data - low) * mask).amax(dim, keepdim=True) + low


def _masked_min(data: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Min of ``data`` over ``mask`` along ``dim``; with an empty mask, the max of ``data`` (TF-Addons)."""
    high = data.amax(dim, keepdim=True)
    return ((data - high) * mask).amin(dim, keepdim=True) + high


def triplet_semihard_loss(embeddings: Tensor, labels: Tensor, margin: float = TRIPLET_MARGIN) -> Tensor:
    """FaceNet's triplet loss with online semi-hard negative mining (see the module docstring).

    Memory is O(batch^3) booleans (the semi-hard test of every (a, p, n)), fine for FaceNet-size
    batches (a few hundred). A batch without any positive pair gives 0.
    """
    distances = squared_distances(embeddings.float())
    same = labels[:, None] == labels[None, :]
    negative = ~same
    # (a, p, n): n is a negative of a and farther from a than p is
    farther = negative[:, None, :] & (distances[:, None, :] > distances[:, :, None])
    outside = _masked_min(distances[:, None, :].expand_as(farther), farther.float(), dim=2).squeeze(2)
    inside = _masked_max(distances, negative.float(), dim=1)  # (a, 1): the farthest negative
    semi_hard = torch.where(farther.any(2), outside, inside)
    positive = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    losses = (margin + distances - semi_hard).clamp_min(0.0)
    pairs = positive.sum()
    if pairs == 0:
        return embeddings.sum() * 0.0
    return (losses * positive).sum() / pairs


def distillation_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean over the batch of the squared L2 difference between student and teacher embeddings."""
    return (student.float() - teacher.float()).pow(2).sum(1).mean()


# --- margin softmax over the training identities (ArcFace, CosFace) -------------------------------
# The losses face recognition moved to after FaceNet: a softmax over the training identities whose
# target logit is penalised by a margin, so each identity's embeddings gather in a tight cone.
# pytorch-metric-learning implements both (its ``W`` holds one unit vector per identity); the
# class weights are training state only: they live in the loss, never in the embedder that
# predict, export and the face index use.
IdentityLoss = Literal["triplet", "arcface", "cosface"]
# The papers' margins and scale: ArcFace (Deng et al., 2019, Sec. 3.1 / Table 1: m = 0.5 rad,
# s = 64); CosFace (Wang et al., 2018, Sec. 4.1: m = 0.35, s = 64). configs/face_embedding/ has them.
PUBLISHED_MARGIN = {"arcface": 0.5, "cosface": 0.35}
# The defaults, for short runs from scratch on a few hundred identities (docs/face_embedding.md,
# Measured): with the papers' m and s the loss stayed at s * m + log(identities) (nothing learned in
# 150-460 steps, with or without a 300-step margin warm-up); s = 30 (a common choice at small
# scale, e.g. ronghuaiyang/arcface-pytorch's ArcMarginProduct) and m = 0.2 reached over a 100-step
# warm-up learned on the demo and on a second set. CosFace shares m = 0.2: for angles near 90
# degrees, where training starts, cos(theta + m) ~ cos(theta) - m, the same penalty.
DEFAULT_SCALE = 30.0
DEFAULT_MARGIN = 0.2
DEFAULT_MARGIN_WARMUP = 100
# An angular margin of pi/2 or more has no monotone cos(theta + m) left to train on.
SoftmaxMargin = float_range(0, 1.5)


def margin_softmax(kind: str, identities: int, embedding_size: int, scale: float) -> nn.Module:
    """The ArcFace or CosFace loss over ``identities`` classes (built with the paper's margin; the
    module sets the margin it trains with at every step, ``set_margin``)."""
    from pytorch_metric_learning.losses import ArcFaceLoss, CosFaceLoss

    if kind == "arcface":  # pytorch-metric-learning takes ArcFace's margin in degrees
        return ArcFaceLoss(identities, embedding_size, margin=math.degrees(PUBLISHED_MARGIN[kind]), scale=scale)
    if kind == "cosface":
        return CosFaceLoss(identities, embedding_size, margin=PUBLISHED_MARGIN[kind], scale=scale)
    raise ValueError(f"not a margin-softmax loss: {kind!r}")


def set_margin(loss: nn.Module, margin: float) -> None:
    """Set the margin (radians for ArcFace, cosine units for CosFace): the warm-up ramps it."""
    loss.margin = float(margin)  # both losses read ``margin`` at every call (ArcFace after its degree->radian init)
