"""Fine-grained recognition on Stanford Dogs (Table 10): 120 breeds, ``top1``/``top5``.

    python -m tasks.fine_grained fit --backbone 0.5 --resolution 128          # built-in demo
    python -m tasks.fine_grained fit --config configs/fine_grained/dogs_1.0_224.yaml \
        --data.root /data/StanfordDogs --model.backbone_weights imagenet.ckpt
    python -m tasks.fine_grained test --data.root /data/StanfordDogs --ckpt_path last

Fine-tuning from a pretrained backbone is the normal path (the paper fine-tunes an ImageNet
MobileNet): ``--model.backbone_weights`` takes a checkpoint of ``tasks.classification`` or a
timm ``mobilenetv1_100`` state dict; the 1000-way classifier is replaced by a 120-way one.
The model is the same as ``tasks.classification``'s; only the data differ.
"""

from __future__ import annotations

from tasks.classification import CLASS_LINKS, ClassificationModule


def main(args: list[str] | None = None) -> None:
    """Entry point of ``python -m tasks.fine_grained``."""
    from datasets.stanford_dogs import StanfordDogsDataModule
    from tasks.cli import main as cli_main

    cli_main(
        ClassificationModule,
        StanfordDogsDataModule,
        task="fine_grained",
        monitor="top1",
        default_steps=200,  # 20 epochs of the 320-image demo at batch 32
        links=CLASS_LINKS,
        args=args,
    )


if __name__ == "__main__":
    # Re-enter through the package so that classes are named tasks.fine_grained.*, not __main__.*,
    # in saved configs and checkpoints.
    from tasks.fine_grained import main as package_main

    package_main()
