"""ImageNet-style classification: pretraining the MobileNetV1 backbone (Tables 4-9).

    python -m tasks.classification fit --backbone 0.5 --resolution 128      # built-in demo
    python -m tasks.classification fit --config configs/classification/imagenet.yaml \
        --data.root /data/imagenet                                          # the paper's recipe
    python -m tasks.classification test --ckpt_path runs/classification/checkpoints/last.ckpt

Logs ``top1`` and ``top5`` (the README's metric names). The code defaults are a recipe that works on a small
custom set (AdamW, warm-up + cosine); the paper's ImageNet recipe (RMSprop,
decay every two epochs) lives in ``configs/classification/imagenet.yaml``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
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

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

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
        self.log("loss", F.cross_entropy(logits, labels), sync_dist=True)
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


def main(args: list[str] | None = None) -> None:
    """Entry point of ``python -m tasks.classification``."""
    from datasets.imagenet import ImageFolderDataModule
    from tasks.cli import main as cli_main

    cli_main(
        ClassificationModule,
        ImageFolderDataModule,
        task="classification",
        monitor="top1",
        default_steps=400,  # 20 epochs of the 640-image demo at batch 32
        links=CLASS_LINKS,
        args=args,
    )


if __name__ == "__main__":
    # Re-enter through the package so that classes are named tasks.classification.*, not __main__.*,
    # in saved configs and checkpoints.
    from tasks.classification import main as package_main

    package_main()
