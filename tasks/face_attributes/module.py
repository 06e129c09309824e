"""Face attributes by distillation (Table 12), as a LightningModule on the shared task base.

    python -m tasks.face_attributes fit --backbone 0.5 --resolution 128         # supervised (a teacher)
    python -m tasks.face_attributes predict --backbone 0.5 --resolution 128 --ckpt_path last  # attributes.csv
    python -m tasks.face_attributes fit --backbone 0.25 --resolution 64 \
        --data.teacher_outputs runs/face_attributes/lightning_logs/version_1/attributes.csv
    python -m tasks.face_attributes fit --backbone 0.25 --resolution 64 --model.teacher TEACHER.ckpt \
        --data.unlabelled_root FOLDER
    python -m tasks.face_attributes test --data.root /data/celeba --ckpt_path last

Three ways to train, in one module: on the hard labels (no teacher: how a teacher is made); from
a teacher (``--model.teacher CKPT``, run frozen at its own resolution on the student's batches, or
``--data.teacher_outputs FILE``, its ``predict`` output) with the per-attribute cross-entropy of
``tasks.face_attributes.losses``, optionally mixed with the labels (``--model.hard_label_weight``);
and, with a teacher, on extra unlabelled images (``--data.unlabelled_root``).

Validation and test log, over the whole split across ranks (``tasks.face_attributes.metrics``),
``mean_ap`` and ``ap/<attribute>``, ``mean_accuracy`` and ``accuracy/<attribute>`` at 0.5, and
``mean_accuracy_tuned`` and ``accuracy_tuned/<attribute>`` at per-attribute thresholds chosen on the
validation split (each validation chooses them again; they are buffers of the module, so they
travel in the checkpoint and in ``deploy.json``), and, when a teacher is given, ``emulation_ce``;
the best checkpoint is picked by ``mean_ap``. ``predict`` writes ``attributes.csv`` and
``attributes.npy`` (``writer.py``), and with ``--model.predict_labels true`` the yes/no decisions
at those thresholds.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torchmetrics import MeanMetric

from backbone.errors import BadInputError
from backbone.mobilenet import Activation
from backbone.ranges import PositiveFloat, Probability, Share
from tasks.base import TaskModule
from tasks.face_attributes.losses import attribute_loss, auto_pos_weight, per_image_cross_entropy
from tasks.face_attributes.metrics import AttributeScores, accuracy, best_thresholds, summarise
from tasks.face_attributes.model import attribute_teacher_net, build_attribute_net
from tasks.teacher import FrozenTeacher, resize_batch, teacher_resolution

Batch = dict[str, Any]
# The attribute names come from the data (list_attr_celeba.txt's second line).
ATTRIBUTE_LINKS = (("data.attribute_names", "model.attribute_names"),)
TASK = "face_attributes"  # the task a teacher checkpoint must come from
# --model.pos_weight: none, auto (from the training labels), or one positive weight per attribute.
PosWeight = Literal["none", "auto"] | list[PositiveFloat]
# The buffers a checkpoint written before they existed lacks, and what they start as.
THRESHOLDS, CHOSEN, POS_WEIGHT = "attribute_thresholds", "thresholds_chosen", "attribute_pos_weight"


def load_teacher(path: str | os.PathLike[str], attribute_names: Sequence[str]) -> FrozenTeacher:
    """The face-attributes checkpoint at ``path`` (any width and resolution) as the frozen teacher of
    a student of ``attribute_names``; a checkpoint of another task is refused in one sentence."""
    build = attribute_teacher_net(path, attribute_names)
    return FrozenTeacher.load(path, TASK, build, needs=("attribute_names", "width"))


def view_resolution(resolution: int, teacher: str | None) -> int:
    """The size of the views the loaders produce: the larger of the student's and the teacher's
    resolution, so that both networks see the same augmented crop, each resized to its own size."""
    return max(resolution, teacher_resolution(teacher, resolution))


class FaceAttributesModule(TaskModule):
    """MobileNetV1 with one sigmoid output per attribute, trained on labels or from a teacher.

    Args (beyond ``TaskModule``'s: width, resolution, weight_decay, optimizer, schedule):
        attribute_names: the attributes, in the data's order (linked from the data module).
        teacher: a checkpoint of this task (any width and resolution) to distil from; it runs
            frozen in eval mode on every batch, resized to its own resolution. Not saved in the
            student's hyper-parameters: give it again to ``test`` for ``emulation_ce``.
        hard_label_weight: w in (1 - w) * teacher loss + w * label loss; with no teacher the
            labels are the whole loss.
        temperature: softens teacher and student alike (the loss is scaled by T^2).
        dropout: dropout before the attribute layer.
        activation: ``relu6`` or ``relu``.
        backbone_weights: a checkpoint of any task of this project, or a timm ``mobilenetv1_100``
            state dict, to start the trunk from.
        pos_weight: the weight of each attribute's positive term in the label loss (``losses``):
            ``none`` (1), ``auto`` (negatives / positives of the training split's labels, counted when
            ``fit`` starts), or a list of one positive number per attribute. Saved in the
            checkpoint as the buffer ``attribute_pos_weight``.
        predict_labels: ``predict`` also writes ``attribute_labels.csv``: 1 (yes) or 0 (no) per
            attribute, the probability compared with the thresholds chosen on validation.
    """

    not_saved = (*TaskModule.not_saved, "teacher", "predict_labels")

    def __init__(
        self,
        attribute_names: list[str] | None = None,
        teacher: str | None = None,
        hard_label_weight: Probability = 0.0,
        temperature: PositiveFloat = 1.0,
        dropout: Share = 0.001,
        activation: Activation = "relu6",
        backbone_weights: str | None = None,
        pos_weight: PosWeight = "none",
        predict_labels: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not attribute_names:
            raise BadInputError("The face-attributes model needs attribute_names (the data module supplies them).")
        if not 0.0 <= hard_label_weight <= 1.0:
            raise BadInputError(f"--model.hard_label_weight must be in [0, 1]; got {hard_label_weight}.")
        if temperature <= 0:
            raise BadInputError(f"--model.temperature must be positive; got {temperature}.")
        self.attribute_names = list(attribute_names)
        width = self.hparams.width
        self.model = build_attribute_net(width, len(attribute_names), dropout, activation, backbone_weights)
        self.scores = AttributeScores(len(attribute_names))
        count = len(attribute_names)
        if isinstance(pos_weight, list) and len(pos_weight) != count:
            raise BadInputError(
                f"--model.pos_weight lists {len(pos_weight)} weights; expected none, auto or {count}, one per "
                f"attribute of the data ({', '.join(self.attribute_names[:3])}, ...)."
            )
        weights = pos_weight if isinstance(pos_weight, list) else [1.0] * count
        self.register_buffer(POS_WEIGHT, torch.tensor(weights, dtype=torch.float32))
        # float64: a threshold midway between two float32 scores must stay strictly between them.
        self.register_buffer(THRESHOLDS, torch.full((count,), 0.5, dtype=torch.float64))
        self.register_buffer(CHOSEN, torch.tensor(False))
        self.predict_labels = predict_labels
        # Per-image means summed and counted over every rank: exact whole-split averages under DDP.
        self.eval_loss = MeanMetric()
        self.emulation = MeanMetric()
        # A plain attribute, not a submodule (see tasks.teacher): loaded now, so a wrong file fails first.
        self.teacher: FrozenTeacher | None = load_teacher(teacher, attribute_names) if teacher else None
        self._left_out_reported: set[str] = set()
        self._untuned_reported = False

    # ----------------------------------------------------------------------------------------
    # setup: the data must match (the views' size was decided at parse time: view_resolution)
    # ----------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None)
        if data is None:
            return
        if list(data.attribute_names) != self.attribute_names:
            raise BadInputError(
                f"The model predicts the attributes {self.attribute_names[:3]}... but the data has "
                f"{list(data.attribute_names)[:3]}...; test and predict with data of the same attributes."
            )
        if self.teacher is not None and data.teacher_outputs is not None:
            raise BadInputError("Give one teacher: --model.teacher or --data.teacher_outputs, not both.")
        teacher_given = self.teacher is not None or data.teacher_outputs is not None
        if stage == "fit" and data.unlabelled_root is not None and not teacher_given:
            raise BadInputError(
                f"The unlabelled images of {str(data.unlabelled_root)!r} have no labels; they need a teacher "
                "(--model.teacher CKPT or --data.teacher_outputs FILE)."
            )
        if stage == "fit" and self.hparams.pos_weight == "auto":
            labels = data.train_labels()  # the training split only: nothing of val or test leaks in
            weights = auto_pos_weight(labels)
            getattr(self, POS_WEIGHT).copy_(weights)
            rank_zero_info(
                f"--model.pos_weight auto: negatives / positives of the {len(labels)} training images, "
                f"{float(weights.min()):.3g} to {float(weights.max()):.3g} over the {len(weights)} attributes."
            )

    # ----------------------------------------------------------------------------------------
    # forward / training
    # ----------------------------------------------------------------------------------------
    def forward(self, images: Tensor) -> Tensor:
        """Attribute logits for normalised images (resized to this model's resolution)."""
        return self.model(resize_batch(images, self.hparams.resolution))

    def deploy_metadata(self) -> dict[str, Any]:
        chosen = bool(getattr(self, CHOSEN))
        thresholds = getattr(self, THRESHOLDS).tolist() if chosen else None
        return {
            "reading": "one logit per attribute of output_names; sigmoid gives its probability; an attribute is "
            "present when its probability is above its threshold",
            "thresholds": dict(zip(self.attribute_names, thresholds, strict=True)) if thresholds else None,
            "thresholds_chosen": "to maximise each attribute's accuracy on the validation split" if chosen else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint written before the thresholds and class weights existed gets their starting
        values (0.5, not chosen; weight 1), then the shared checks."""
        state = checkpoint.get("state_dict", {})
        for name in (THRESHOLDS, CHOSEN, POS_WEIGHT):
            state.setdefault(name, getattr(self, name).detach().clone())
        super().on_load_checkpoint(checkpoint)

    def teacher_probs(self, batch: Batch) -> Tensor | None:
        """The teacher's probabilities for the batch: from ``--model.teacher`` or the outputs file."""
        if self.teacher is not None:
            return torch.sigmoid(self.teacher(batch["image"]))
        return batch.get("teacher")

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        logits = self(batch["image"])
        loss = attribute_loss(
            logits,
            batch["labels"],
            batch["labelled"],
            self.teacher_probs(batch),
            self.hparams.hard_label_weight,
            self.hparams.temperature,
            None if self.hparams.pos_weight == "none" else getattr(self, POS_WEIGHT),
        )
        self.log("train_loss", loss, prog_bar=True, batch_size=len(logits))
        return loss

    # ----------------------------------------------------------------------------------------
    # evaluation: mean AP and accuracies over the whole split, across ranks
    # ----------------------------------------------------------------------------------------
    def _eval_step(self, batch: Batch) -> None:
        logits = self(batch["image"])
        labels = batch["labels"]
        self.scores.update(torch.sigmoid(logits.float()), labels.long())
        self.eval_loss.update(per_image_cross_entropy(logits, labels))
        teacher = self.teacher_probs(batch)
        if teacher is not None:
            self.emulation.update(per_image_cross_entropy(logits, teacher))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch)

    def _has_teacher(self, split: str) -> bool:
        """Whether ``split`` is scored against a teacher: the same answer on every rank."""
        if self.teacher is not None:
            return True
        dataset = self.trainer.datamodule.dataset(split)
        return getattr(dataset, "teacher", None) is not None

    def _log_values(self, prefix: str, mean_name: str, values: Tensor) -> None:
        """``<prefix>/<attribute>`` for each attribute and their mean as ``mean_name``."""
        for name, value in zip(self.attribute_names, values.tolist(), strict=True):
            self.log(f"{prefix}/{name}", value, sync_dist=False, rank_zero_only=False)
        self.log(mean_name, float(values.mean()), sync_dist=False, rank_zero_only=False)

    def _log_split(self, split: str) -> None:
        # compute() gathers every rank's scores and labels first: every rank logs the same
        # whole-split numbers, so no sync_dist (and ModelCheckpoint sees the true mean_ap).
        result = self.scores.compute()
        self.scores.reset()
        scored, mean, left_out = summarise(result.ap, result.positives, self.attribute_names)
        new = [name for name in left_out if name not in self._left_out_reported]
        if new:
            self._left_out_reported.update(new)
            rank_zero_warn(
                f"mean_ap leaves out {len(new)} attribute(s) with no positive example in the {split} split: "
                f"{', '.join(repr(n) for n in new)} (no ap/<attribute> is logged for them)."
            )
        for name, value in scored.items():
            self.log(f"ap/{name}", value, sync_dist=False, rank_zero_only=False)
        self.log("mean_ap", mean, prog_bar=True, sync_dist=False, rank_zero_only=False)
        self._log_values("accuracy", "mean_accuracy", accuracy(result.scores, result.labels))
        thresholds, chosen = getattr(self, THRESHOLDS), getattr(self, CHOSEN)
        if split == "val" and not self.trainer.sanity_checking:
            # Chosen on every validation, so the checkpoint saved after it holds the thresholds of its weights.
            thresholds.copy_(best_thresholds(result.scores, result.labels))
            chosen.fill_(True)
        if bool(chosen):
            self._log_values(
                "accuracy_tuned", "mean_accuracy_tuned", accuracy(result.scores, result.labels, thresholds)
            )
        elif split == "test" and not self._untuned_reported:
            self._untuned_reported = True
            rank_zero_warn(
                "mean_accuracy_tuned is not computed: this checkpoint was saved before any validation, so it holds no "
                "thresholds chosen on the validation split (fit validates by default); mean_accuracy is at 0.5."
            )
        self.log("loss", self.eval_loss.compute(), sync_dist=False, rank_zero_only=False)
        self.eval_loss.reset()
        if self._has_teacher(split):
            self.log("emulation_ce", self.emulation.compute(), sync_dist=False, rank_zero_only=False)
        self.emulation.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_split("val")

    def on_test_epoch_end(self) -> None:
        self._log_split("test")

    # ----------------------------------------------------------------------------------------
    # predict: one record per image for tasks.face_attributes.writer.AttributesWriter
    # ----------------------------------------------------------------------------------------
    def predict_records(self, batch: Batch | tuple[Tensor, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        if isinstance(batch, dict):
            images, names, indices = batch["image"], batch["name"], batch["index"].tolist()
        else:  # --data.predict_dir: (images, per-image info) from collate_with_info
            images, infos = batch
            names, indices = [i["name"] for i in infos], [i["index"] for i in infos]
        probs = torch.sigmoid(self(images).float()).cpu().numpy()
        return [{"name": n, "index": i, "probs": p} for n, i, p in zip(names, indices, probs, strict=True)]
