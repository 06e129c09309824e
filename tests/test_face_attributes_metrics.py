"""What CelebA users report, against scikit-learn: per-attribute accuracy at 0.5 and at thresholds
chosen on validation; and the class weights of ``--model.pos_weight`` against ``BCEWithLogitsLoss``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score

from backbone.errors import BadInputError
from tasks.face_attributes.losses import attribute_loss, auto_pos_weight
from tasks.face_attributes.metrics import AttributeScores, accuracy, best_thresholds

NAMES = [f"a{i}" for i in range(5)]


def scores(seed: int, n: int = 83) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores rounded to 0.05 (many ties) and labels of differing prevalence; one attribute without positives."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, len(NAMES))) < np.array([0.05, 0.2, 0.5, 0.8, 0.0])).astype(np.int64)
    preds = np.round(np.clip(labels * 0.35 + rng.random(labels.shape) * 0.7, 0, 1) * 20) / 20
    return torch.from_numpy(preds.astype(np.float32)), torch.from_numpy(labels)


def test_accuracy_and_tuned_thresholds_match_scikit_learn() -> None:
    """Gathered over several updates; every threshold a brute-force sweep with sklearn could pick does
    no better than the chosen one, and the chosen one scores what sklearn says it scores."""
    preds, labels = scores(0)
    metric = AttributeScores(len(NAMES))
    for start in range(0, len(preds), 20):
        metric.update(preds[start : start + 20], labels[start : start + 20])
    result = metric.compute()
    torch.testing.assert_close(result.scores, preds)
    at_half = accuracy(result.scores, result.labels)
    for j in range(len(NAMES)):
        y, p = labels[:, j].numpy(), preds[:, j].numpy().astype(np.float64)
        assert float(at_half[j]) == pytest.approx(accuracy_score(y, p > 0.5))
    thresholds = best_thresholds(result.scores, result.labels)
    tuned = accuracy(result.scores, result.labels, thresholds)
    for j in range(len(NAMES)):
        y, p = labels[:, j].numpy(), preds[:, j].numpy().astype(np.float64)
        cuts = np.unique(np.concatenate([p, [0.0, 1.0]]))
        candidates = np.concatenate([[1.0], (cuts[1:] + cuts[:-1]) / 2, [-1.0]])
        best = max(accuracy_score(y, p > t) for t in candidates)
        assert float(tuned[j]) == pytest.approx(accuracy_score(y, p > float(thresholds[j])))
        assert float(tuned[j]) == pytest.approx(best) and float(tuned[j]) >= float(at_half[j])
        assert 0.0 <= float(thresholds[j]) <= 1.0
    # No positive at all: "never present" everywhere, at the threshold nearest 0.5 that says so.
    assert float(thresholds[4]) == pytest.approx((1.0 + float(preds[:, 4].max())) / 2)


def test_thresholds_do_not_depend_on_the_order_of_the_images() -> None:
    """What DDP changes: the gathered order (rank 0's images, then rank 1's)."""
    preds, labels = scores(1)
    order = torch.randperm(len(preds), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(best_thresholds(preds, labels), best_thresholds(preds[order], labels[order]))


def test_auto_pos_weight_is_negatives_over_positives_in_bce_with_logits() -> None:
    _, labels = scores(2)
    weights = auto_pos_weight(labels.numpy())
    positives = labels.sum(0).double()
    expected = torch.where(positives > 0, (len(labels) - positives) / positives.clamp(min=1), 1.0)
    torch.testing.assert_close(weights, expected.float())
    logits = torch.randn(labels.shape, generator=torch.Generator().manual_seed(0))
    labelled = torch.ones(len(labels), dtype=torch.bool)
    reference = torch.nn.BCEWithLogitsLoss(pos_weight=weights)(logits, labels.float())
    torch.testing.assert_close(attribute_loss(logits, labels, labelled, None, pos_weight=weights), reference)
    teacher = torch.rand(labels.shape)  # the teacher's term is never weighted
    torch.testing.assert_close(
        attribute_loss(logits, labels, labelled, teacher, 0.0, pos_weight=weights),
        attribute_loss(logits, labels, labelled, teacher, 0.0),
    )


def test_a_pos_weight_list_must_have_one_weight_per_attribute() -> None:
    from tasks.face_attributes.module import FaceAttributesModule

    module = FaceAttributesModule(NAMES, width=0.25, resolution=32, pos_weight=[1.0, 2.0, 3.0, 4.0, 5.0])
    assert module.attribute_pos_weight.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    with pytest.raises(BadInputError, match=r"--model.pos_weight lists 2 weights; expected none, auto or 5"):
        FaceAttributesModule(NAMES, width=0.25, resolution=32, pos_weight=[1.0, 2.0])


def test_thresholds_travel_by_name_in_deploy_metadata_and_old_checkpoints_still_load() -> None:
    from tasks.face_attributes.module import FaceAttributesModule

    module = FaceAttributesModule(NAMES, width=0.25, resolution=32)
    assert module.deploy_metadata()["thresholds"] is None  # never validated: nothing chosen to export
    old = {k: v for k, v in module.state_dict().items() if not k.startswith(("attribute_", "thresholds_"))}
    checkpoint = {"state_dict": dict(old)}
    module.on_load_checkpoint(checkpoint)  # a checkpoint from before the buffers: 0.5, not chosen, weight 1
    module.load_state_dict(checkpoint["state_dict"])
    assert module.attribute_thresholds.tolist() == [0.5] * 5 and not bool(module.thresholds_chosen)
    module.attribute_thresholds.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.9]))
    module.thresholds_chosen.fill_(True)
    metadata = module.deploy_metadata()
    assert metadata["thresholds"] == pytest.approx(dict(zip(NAMES, [0.1, 0.2, 0.3, 0.4, 0.9], strict=True)))
    assert "validation" in metadata["thresholds_chosen"]
