"""Detection recipe fidelity: the lr is stated per 16 images and scaled by the real global batch;
the pretrained trunk's BatchNorm is frozen by default when fine-tuning, and a checkpoint keeps that."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from torchvision.ops.misc import FrozenBatchNorm2d

from backbone.mobilenet import MobileNetV1
from tasks.detection import module as detection
from tasks.detection.task import TASK as DETECTION
from tests.probes import tiny_run_args, write_coco

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_coco(tmp_path_factory.mktemp("coco"), train=8, val=3)


def _args(root: Path, runs: Path, *extra: str) -> list[str]:
    return tiny_run_args(root, runs, "--trainer.num_sanity_val_steps", "0", *extra, batch_size=4)


def _scheduler_base_lrs(runs: Path) -> list[float]:
    checkpoint = torch.load(runs / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return checkpoint["lr_schedulers"][0]["base_lrs"]


def test_global_batch_counts_processes_batch_and_accumulation() -> None:
    trainer = SimpleNamespace(world_size=2, accumulate_grad_batches=3, datamodule=SimpleNamespace(batch_size=4))
    assert detection.global_batch(trainer) == 24  # type: ignore[arg-type]
    assert detection.global_batch(SimpleNamespace(world_size=1, accumulate_grad_batches=1)) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        # the default SGD lr 0.05 is per 16 images: batch 4 x accumulate 2 = 8 images -> 0.025
        (("--trainer.accumulate_grad_batches", "2"), 0.05 * 8 / 16),
        # no scaling asked for: the optimizer's lr as given
        (("--model.lr_base_batch", "null"), 0.05),
    ],
    ids=["scaled", "unscaled"],
)
def test_lr_is_scaled_by_the_global_batch(coco: Path, tmp_path: Path, extra: tuple[str, ...], expected: float) -> None:
    DETECTION.main(["fit", *_args(coco, tmp_path, "--trainer.max_steps", "1", *extra)])
    assert _scheduler_base_lrs(tmp_path) == pytest.approx([expected, expected])


def test_freeze_bn_defaults_on_with_backbone_weights_and_survives_the_checkpoint(coco: Path, tmp_path: Path) -> None:
    weights = tmp_path / "mobilenet.pt"
    torch.save(MobileNetV1(0.25, num_classes=0).state_dict(), weights)
    runs = tmp_path / "runs"
    DETECTION.main(["fit", *_args(coco, runs, "--trainer.max_steps", "1", "--model.backbone_weights", str(weights))])
    checkpoint = torch.load(runs / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["freeze_bn"] is True
    state = checkpoint["state_dict"]
    assert "model.backbone.body.stem.1.running_mean" in state
    assert "model.backbone.body.stem.1.num_batches_tracked" not in state  # frozen: no batch count
    # test from the checkpoint alone (no backbone_weights): the same frozen layers are rebuilt.
    DETECTION.main(["test", *_args(coco, tmp_path / "test", "--ckpt_path", str(runs / "checkpoints" / "last.ckpt"))])
    # from scratch the BN trains
    scratch = detection.DetectionModule(num_classes=3, width=0.25, resolution=64)
    assert scratch.hparams.freeze_bn is False
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in scratch.modules())


@pytest.mark.parametrize("name", ["ssd300", "faster_rcnn_300", "faster_rcnn_600"])
def test_every_config_states_its_lr_per_16_images(name: str) -> None:
    config = yaml.safe_load((ROOT / "configs" / "detection" / f"{name}.yaml").read_text())
    assert config["model"]["lr_base_batch"] == 16
    assert config["model"]["freeze_bn"] is (name != "ssd300")  # TF's SSD config trains BN at batch 24
