"""The shared task CLI end to end on classification: fit, test, metrics.json, checkpoints, bad input.

Resume after a kill, DDP equality and the other contracts run on every task in
``tests/test_task_contract.py``; these are the classification-specific checks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tasks.classification.task import TASK as CLASSIFICATION
from tasks.fine_grained.task import TASK as FINE_GRAINED
from tests.probes import expect_one_sentence, read_metrics, tiny_run_args


def test_fit_then_test_writes_metrics_config_and_checkpoints(tiny_imagenet: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    CLASSIFICATION.main(["fit", *tiny_run_args(tiny_imagenet, runs, "--trainer.max_epochs", "2")])
    fitted = read_metrics(runs)
    assert fitted["stage"] == "validate" and fitted["global_step"] == 6  # 2 epochs x 24/8 batches
    assert set(fitted["metrics"]) >= {"top1", "top5"} and 0 <= fitted["metrics"]["top1"] <= 1
    assert fitted["metrics"]["top5"] == 1.0  # 3 classes: the top 3 always hold the label
    assert (runs / "checkpoints" / "last.ckpt").is_file()
    assert len(list((runs / "checkpoints").glob("best-*.ckpt"))) == 1
    config = yaml.safe_load(next(runs.glob("lightning_logs/version_0/config.yaml")).read_text())
    assert config["backbone"] == 0.25 and config["resolution"] == 64
    hparams = yaml.safe_load(next(runs.glob("lightning_logs/version_0/hparams.yaml")).read_text())
    assert hparams["num_classes"] == 3 and hparams["width"] == 0.25  # linked from data / --backbone

    CLASSIFICATION.main(["test", *tiny_run_args(tiny_imagenet, runs, "--ckpt_path", "last")])
    tested = read_metrics(runs)
    assert tested["stage"] == "test" and tested["checkpoint"].endswith("last.ckpt")
    # The test run scores the same weights on the same val images as the last validation.
    assert tested["metrics"]["top1"] == pytest.approx(fitted["metrics"]["top1"])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--backbone", "0"], r"width multiplier must be in \(0, 1\] .*; got 0.0"),
        (["--backbone", "1.5"], r"width multiplier must be in \(0, 1\]"),
        (["--resolution", "16"], r"resolution must be .* at least 32 .*; got 16"),
        (["--data.root", "/no/such/folder"], r"data root '/no/such/folder' does not exist"),
        (["--ckpt_path", "/no/such.ckpt"], r"^error: The checkpoint '/no/such.ckpt' does not exist.$"),
        (["--model.backbone_weights", "/no/w.pt"], r"^error: The checkpoint '/no/w.pt' does not exist.$"),
    ],
)
def test_bad_input_is_one_sentence(
    extra: list[str], message: str, tiny_imagenet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expect_one_sentence(CLASSIFICATION.main, ["fit", *tiny_run_args(tiny_imagenet, tmp_path, *extra)], message, capsys)
    assert not (tmp_path / "checkpoints").exists()


def test_missing_split_file_is_named(tiny_dogs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    copy = tmp_path / "dogs"
    shutil.copytree(tiny_dogs, copy)
    (copy / "lists" / "train_list.mat").unlink()
    with pytest.raises(SystemExit):
        FINE_GRAINED.main(["fit", *tiny_run_args(copy, tmp_path / "runs")])
    assert "train_list.mat' does not exist" in capsys.readouterr().err


def test_fine_tune_from_a_classification_checkpoint(tiny_imagenet: Path, tiny_dogs: Path, tmp_path: Path) -> None:
    """A backbone trained by one task is the starting point of another (3 -> 3 classes here)."""
    CLASSIFICATION.main(["fit", *tiny_run_args(tiny_imagenet, tmp_path / "a", "--trainer.max_epochs", "1")])
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    # Fitted (one step), not validated: scoring the textures' classifier on breeds would score nothing
    # meaningful, and is refused (tests/test_guards.py).
    args = tiny_run_args(tiny_dogs, tmp_path / "b", "--model.backbone_weights", str(ckpt), "--trainer.max_steps", "1")
    FINE_GRAINED.main(["fit", *args])
    assert "top1" in read_metrics(tmp_path / "b")["metrics"]
