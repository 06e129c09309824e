"""Frozen BatchNorm for fine-tuning a pretrained trunk at a few images per process.

With 2 images per GPU (Faster R-CNN's recipes) batch statistics are too noisy to train on, so
detectors fine-tuned from ImageNet freeze the trunk's BatchNorm: TF's Object Detection API with
``batch_norm_trainable: false`` and torchvision with ``FrozenBatchNorm2d`` (its detection
backbones' ``norm_layer``). The statistics and the affine terms of the pretrained network are
then constants; only the convolutions are fine-tuned.
"""

from __future__ import annotations

from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` inside ``module`` by a ``FrozenBatchNorm2d`` with its values.

    torchvision ships the frozen layer but no converter (detectron2 has
    ``FrozenBatchNorm2d.convert_frozen_batchnorm``, which this mirrors). Returns ``module``, or
    the frozen layer when ``module`` itself is a ``BatchNorm2d``.
    """
    if isinstance(module, nn.BatchNorm2d):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        if module.affine:
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
        if module.running_mean is not None and module.running_var is not None:
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        replaced = freeze_batchnorm(child)
        if replaced is not child:
            setattr(module, name, replaced)
    return module
