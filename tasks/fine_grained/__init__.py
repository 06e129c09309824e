"""Fine-grained recognition on Stanford Dogs (Table 10): 120 breeds, ``top1``/``top5``.

    python -m tasks.fine_grained fit --backbone 0.5 --resolution 128          # built-in demo
    python -m tasks.fine_grained fit --config configs/fine_grained/dogs_1.0_224.yaml \
        --data.root /data/StanfordDogs --model.backbone_weights imagenet.ckpt
    python -m tasks.fine_grained test --data.root /data/StanfordDogs --ckpt_path last

Fine-tuning from a pretrained backbone is the normal path (the paper fine-tunes an ImageNet
MobileNet): ``--model.backbone_weights`` takes a checkpoint of ``tasks.classification`` or a
timm ``mobilenetv1_100`` state dict; the 1000-way classifier is replaced by a 120-way one.
The model is ``tasks.classification``'s; only the data differ (``task.py``).
"""

from __future__ import annotations

# Importable from here as before the package split.
from tasks.classification.module import CLASS_LINKS, ClassificationModule

__all__ = ["CLASS_LINKS", "ClassificationModule"]
