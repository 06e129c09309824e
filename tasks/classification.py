"""ImageNet-style classification: pretraining the MobileNetV1 backbone (Tables 4-9).

    python -m tasks.classification fit --backbone 0.5 --resolution 128      # built-in demo
    python -m tasks.classification fit --config configs/classification/imagenet.yaml \
        --data.root /data/imagenet                                          # the paper's recipe
    python -m tasks.classification test --ckpt_path runs/classification/checkpoints/last.ckpt

Logs ``top1`` and ``top5`` (DESIGN.md). The code defaults are a recipe that works on a small
custom set (AdamW, warm-up + cosine); the paper's ImageNet recipe (RMSprop,
decay every two epochs) lives in ``configs/classification/imagenet.yaml``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from torch.optim import Optimizer
from torchmetrics.classification import MulticlassAccuracy

from backbone.mobilenet import Activation, MobileNetV1
from backbone.weights import load_backbone_weights
from tasks.common import configure_optimization


def default_optimizer(params: Iterable[Any]) -> Optimizer:
    """AdamW, lr 3e-3: the default for a short from-scratch run on a small set.

    Measured on the built-in demo (README): it reaches a given accuracy in about half the
    epochs that SGD with Nesterov momentum at lr 0.1 needs. Weight decay comes from the
    parameter groups (``weight_decay``), never on depthwise filters (Section 3.4).
    """
    return torch.optim.AdamW(params, lr=3e-3)


class ClassificationModule(LightningModule):
    """MobileNetV1 + softmax classifier, with top-1/top-5 accuracy over the whole eval set.

    Args:
        width: width multiplier alpha (linked from ``--backbone``).
        resolution: input size (linked from ``--resolution``); kept for the record.
        num_classes: number of classes (linked from the data module).
        dropout: dropout before the classifier.
        activation: ``relu6`` or ``relu``.
        full_conv: Conv MobileNet (Table 4).
        shallow: Shallow MobileNet (Table 5).
        label_smoothing: off in the paper's recipe.
        weight_decay: L2 on conv/FC weights; never on depthwise filters, BN or biases (Section 3.4).
        backbone_weights: a checkpoint of any task of this project, or a timm ``mobilenetv1_100``
            state dict, to start from (the classifier is kept only if its shape fits).
        optimizer: any ``torch.optim`` optimizer (``--optimizer RMSprop --optimizer.lr ...``).
        lr_scheduler: a scheduler stepped every ``scheduler_interval``; None means linear
            warm-up over ``warmup_epochs`` then cosine to zero, stepped every batch.
        scheduler_interval: ``epoch`` or ``step``, for a given ``lr_scheduler``.
        warmup_epochs: linear warm-up length, before the cosine or in front of ``lr_scheduler``.
    """

    def __init__(
        self,
        width: float = 1.0,
        resolution: int = 224,
        num_classes: int = 1000,
        dropout: float = 0.001,
        activation: Activation = "relu6",
        full_conv: bool = False,
        shallow: bool = False,
        label_smoothing: float = 0.0,
        weight_decay: float = 0.01,
        backbone_weights: str | None = None,
        optimizer: OptimizerCallable = default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
        warmup_epochs: float = 1.0,
    ) -> None:
        super().__init__()
        # backbone_weights is left out: a checkpoint already holds the weights, and Lightning
        # re-applies saved hyper-parameters on --ckpt_path, which would reload a file that may
        # have moved since.
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", "backbone_weights"])
        self.backbone = MobileNetV1(
            width, num_classes, dropout=dropout, activation=activation, full_conv=full_conv, shallow=shallow
        )
        if backbone_weights:
            load_backbone_weights(self.backbone, backbone_weights)
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        top5 = min(5, num_classes)
        self.metrics = torch.nn.ModuleDict(
            {
                "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
                "top5": MulticlassAccuracy(num_classes, top_k=top5, average="micro"),
            }
        )

    def forward(self, images: Tensor) -> Tensor:
        return self.backbone(images)

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

    def predict_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self(batch[0]).softmax(1)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        return configure_optimization(
            self,
            self.optimizer_factory,
            self.scheduler_factory,
            hp.weight_decay,
            hp.scheduler_interval,
            hp.warmup_epochs,
        )


def main(args: list[str] | None = None) -> None:
    """Entry point of ``python -m tasks.classification``."""
    from datasets.imagenet import ImageFolderDataModule
    from tasks.cli import main as cli_main

    cli_main(
        ClassificationModule, ImageFolderDataModule, task="classification", monitor="top1", max_epochs=20, args=args
    )


if __name__ == "__main__":
    # Re-enter through the package so that classes are named tasks.classification.*, not __main__.*,
    # in saved configs and checkpoints.
    from tasks.classification import main as package_main

    package_main()
