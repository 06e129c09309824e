"""ImageNet-style classification: pretraining the MobileNetV1 backbone (Tables 4-9).

    python -m tasks.classification fit --backbone 0.5 --resolution 128      # built-in demo
    python -m tasks.classification fit --config configs/classification/imagenet.yaml \
        --data.root /data/imagenet                                          # the paper's recipe
    python -m tasks.classification test --ckpt_path runs/classification/checkpoints/last.ckpt

The task is declared in ``task.py``; the LightningModule lives in ``module.py``.
"""

from __future__ import annotations

# Saved configs and checkpoints written before the package split name the class
# tasks.classification.ClassificationModule: it stays importable from here.
from tasks.classification.module import CLASS_LINKS, ClassificationModule

__all__ = ["CLASS_LINKS", "ClassificationModule"]
