"""Shared fixtures: tiny data sets written by the tests in the real public layouts."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

# The demo cache of the test session lives in a temporary folder, never in the user's home.
os.environ.setdefault("MOBILENET_DEMO_DIR", tempfile.mkdtemp(prefix="mobilenet-demo-tests-"))
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI tests pass args in-process; LightningCLI warns if sys.argv holds pytest's own too."""
    monkeypatch.setattr(sys, "argv", ["python"])


@pytest.fixture(scope="session")
def tiny_imagenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ImageNet layout, 3 texture classes, 8 train and 3 val images each, 48 px."""
    from datasets.demo.textures import write_imagenet_demo

    root = tmp_path_factory.mktemp("imagenet")
    write_imagenet_demo(root, per_class_train=8, per_class_val=3, size=48, num_classes=3)
    return root


@pytest.fixture(scope="session")
def tiny_dogs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stanford Dogs layout, 3 breeds, 6 train and 3 test images each (9 test: odd, for DDP)."""
    from datasets.demo.textures import write_dogs_demo

    root = tmp_path_factory.mktemp("dogs")
    write_dogs_demo(root, per_class_train=6, per_class_test=3, num_classes=3)
    return root


@pytest.fixture(scope="session")
def tiny_celeba(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CelebA layout, 10 attributes, 16 train / 7 val / 5 test faces and 6 unlabelled ones (unlabelled/)."""
    from datasets.demo.celeba import write_celeba_demo

    root = tmp_path_factory.mktemp("celeba")
    write_celeba_demo(root, sizes={"train": 16, "val": 7, "test": 5}, unlabelled=6, seed=11)
    return root


@pytest.fixture(scope="session")
def tiny_detector(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A detection checkpoint (one SSD step at 128 px) of the categories ``probes.write_coco`` writes:
    what ``validate``/``test``/``predict`` need (``--ckpt_path``) to reach the data they are probed on."""
    from tasks.detection.task import TASK
    from tests.probes import tiny_run_args, write_coco

    root, runs = write_coco(tmp_path_factory.mktemp("coco"), train=2, val=1), tmp_path_factory.mktemp("detector")
    args = ["--trainer.num_sanity_val_steps", "0", "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0"]
    TASK.main(["fit", *tiny_run_args(root, runs, *args, resolution=128, batch_size=2)])
    return str(runs / "checkpoints" / "last.ckpt")


@pytest.fixture(scope="session")
def session(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Each task's tiny data and reference fit (``tests.tiny_tasks.Session``), shared by every test over all tasks."""
    from tests.tiny_tasks import Session

    return Session(tmp_path_factory)
