"""The classification LightningModule (``tasks.classification`` and ``tasks.fine_grained``).

Logs ``top1`` and ``top5`` (the README's metric names). The code defaults are a recipe that works on a small
custom set (AdamW, warm-up + cosine); the paper's ImageNet recipe (RMSprop,
decay every two epochs) lives in ``configs/classification/imagenet.yaml``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from backbone.mobilenet import Activation, MobileNetV1
from backbone.ranges import NonNegativeFloat, PositiveInt, Share
from backbone.weights import load_backbone_weights
from tasks.base import TaskModule

# The classifier's width of output is read from the data (the class folders, the breeds).
CLASS_LINKS = (("data.num_classes", "model.num_classes"),)


class ClassificationModule(TaskModule):
    """MobileNetV1 + softmax classifier, with top-1/top-5 accuracy over the whole eval set.

    Args (beyond ``TaskModule``'s: width, resolution, optimizer, schedule):
        num_classes: number of classes (linked from the data module).
        dropout: dropout before the classifier.
        activation: ``relu6`` or ``relu``.
        full_conv: Conv MobileNet (Table 4).
        shallow: Shallow MobileNet (Table 5).
        label_smoothing: off in the paper's recipe.
        weight_decay: L2 on conv/FC weights (0.01 suits the default AdamW); never on depthwise
            filters, BN or biases (Section 3.4).
        backbone_weights: a checkpoint of any task of this project, or a timm ``mobilenetv1_100``
            state dict, to start from (the classifier is kept only if its shape fits).
    """

    renamed_prefixes = {"backbone.": "model."}  # checkpoints written before the rename

    def __init__(
        self,
        num_classes: PositiveInt = 1000,
        dropout: Share = 0.001,
        activation: Activation = "relu6",
        full_conv: bool = False,
        shallow: bool = False,
        label_smoothing: Share = 0.0,
        weight_decay: NonNegativeFloat = 0.01,
        backbone_weights: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(weight_decay=weight_decay, **kwargs)
        self.model = MobileNetV1(
            self.hparams.width,
            num_classes,
            dropout=dropout,
            activation=activation,
            full_conv=full_conv,
            shallow=shallow,
        )
        if backbone_weights:
            load_backbone_weights(self.model, backbone_weights)
        top5 = min(5, num_classes)
        self.metrics = torch.nn.ModuleDict(
            {
                "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
                "top5": MulticlassAccuracy(num_classes, top_k=top5, average="micro"),
            }
        )
        # Batch means weighted by their image counts and summed over every rank: the whole eval
        # set's mean loss under DDP (Lightning's sync_dist averaged the ranks' means).
        self.eval_loss = MeanMetric()

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    def deploy_metadata(self) -> dict[str, Any]:
        return {"reading": "logits over the classes of output_names; softmax gives their probabilities"}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        accuracy = (logits.argmax(1) == labels).float().mean()
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_acc", accuracy, prog_bar=True)
        return loss

    def _eval_step(self, batch: tuple[Tensor, Tensor]) -> None:
        images, labels = batch
        logits = self(images)
        self.eval_loss.update(F.cross_entropy(logits, labels), weight=len(labels))
        self.log("loss", self.eval_loss)
        for name, metric in self.metrics.items():
            metric.update(logits, labels)
            # torchmetrics sums correct/total over every rank before dividing: an exact
            # whole-dataset accuracy under DDP, not a mean of per-rank means.
            self.log(name, metric, prog_bar=name == "top1")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch)

    def predict_records(self, batch: tuple[Tensor, Any]) -> list[Tensor]:
        return list(self(batch[0]).softmax(1).cpu())
