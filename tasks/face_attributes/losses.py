"""The distillation loss of Table 12: per-attribute binary cross-entropy to the teacher's probabilities.

Each attribute is an independent yes/no (a sigmoid, not a softmax over attributes), so the
student matches the teacher attribute by attribute: the binary cross-entropy between the
teacher's probability and the student's, averaged over attributes and images. With a
temperature T both sides are softened as sigmoid(logit / T) and the loss is scaled by T^2, which
keeps its gradients the size of the T = 1 loss (Hinton et al., 2015, Section 2). It can be mixed
with the hard labels of the labelled images (``hard_label_weight``); unlabelled images only ever
contribute the teacher's term.

``pos_weight`` (A,) weighs the positive term of the label loss per attribute, as
``BCEWithLogitsLoss``'s ``pos_weight`` does (``--model.pos_weight auto``: negatives / positives of
the training labels, so a rare attribute's few positives count as much as its many negatives). The
teacher's term is left unweighted: the student is to copy the teacher's probabilities, and a weight
would bias them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

# Probabilities read from a file are clamped this far from 0 and 1 before taking their logit.
PROBABILITY_EPS = 1e-6


def soften(probs: Tensor, temperature: float) -> Tensor:
    """Teacher probabilities at ``temperature``: sigmoid(logit(p) / T)."""
    if temperature == 1.0:
        return probs
    return torch.sigmoid(torch.logit(probs, eps=PROBABILITY_EPS) / temperature)


def distillation_loss(student_logits: Tensor, teacher_probs: Tensor, temperature: float = 1.0) -> Tensor:
    """Mean per-attribute BCE between the softened teacher and student, times T^2."""
    target = soften(teacher_probs.float(), temperature)
    loss = F.binary_cross_entropy_with_logits(student_logits.float() / temperature, target)
    return loss * temperature**2


def hard_label_loss(logits: Tensor, labels: Tensor, labelled: Tensor, pos_weight: Tensor | None = None) -> Tensor:
    """Mean per-attribute BCE to the 0/1 labels of the labelled images (0 if there are none), the
    positive term of attribute j weighted by ``pos_weight[j]`` when given."""
    if not bool(labelled.any()):
        return logits.sum() * 0.0  # keeps the graph (DDP expects every parameter to get a gradient)
    return F.binary_cross_entropy_with_logits(logits[labelled].float(), labels[labelled].float(), pos_weight=pos_weight)


def per_image_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Per image, the binary cross-entropy to ``targets`` (labels, or a teacher's probabilities)
    averaged over attributes. Averaged over images against the teacher, this is the paper's
    emulation quality (Table 12's footnote): ``emulation_ce``."""
    per_attribute = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    return per_attribute.mean(dim=1)


def attribute_loss(
    logits: Tensor,
    labels: Tensor,
    labelled: Tensor,
    teacher_probs: Tensor | None,
    hard_label_weight: float = 0.0,
    temperature: float = 1.0,
    pos_weight: Tensor | None = None,
) -> Tensor:
    """The training loss: hard labels alone without a teacher, else (1 - w) * teacher + w * labels."""
    hard = hard_label_loss(logits, labels, labelled, pos_weight)
    if teacher_probs is None:
        return hard
    soft = distillation_loss(logits, teacher_probs, temperature)
    return (1.0 - hard_label_weight) * soft + hard_label_weight * hard


def auto_pos_weight(labels: np.ndarray) -> Tensor:
    """``--model.pos_weight auto``: per attribute, negatives / positives among the training ``labels``
    (N, A) 0/1. An attribute with no positive gets 1: its positive term never occurs, so any weight
    leaves the loss unchanged."""
    positives = labels.sum(axis=0, dtype=np.float64)
    negatives = len(labels) - positives
    return torch.as_tensor(np.where(positives > 0, negatives / np.maximum(positives, 1), 1.0), dtype=torch.float32)
