"""Bad values, data roots and output folders are refused in one sentence (exit status 2) before any work.

Issue 8, "Tracebacks and misleading messages": a resolution that would allocate tens of GB, a
class root with one class, a Stanford Dogs split file that is empty or cut short, a damaged image,
and an output folder that cannot be written.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from datasets.demo.textures import write_imagenet_demo
from tasks.classification.task import TASK as CLASSIFICATION
from tasks.fine_grained.task import TASK as FINE_GRAINED
from tests.probes import expect_one_sentence, one_torch_thread, tiny_run_args, truncate_file


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


def test_a_huge_resolution_is_refused_with_the_reason(
    tiny_imagenet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = tmp_path / "runs"
    args = ["fit", *tiny_run_args(tiny_imagenet, runs, resolution=100000)]
    expect_one_sentence(
        CLASSIFICATION.main, args, r"resolution must be at most 4096 pixels .* MB .*; got 100000", capsys
    )
    assert not runs.exists()  # refused before anything was allocated or written


def test_a_class_root_with_one_class_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "one"
    write_imagenet_demo(root, per_class_train=2, per_class_val=1, size=40, num_classes=1)
    args = ["fit", *tiny_run_args(root, tmp_path / "runs")]
    expect_one_sentence(
        CLASSIFICATION.main, args, rf"{root}' holds 1 class\(es\); a classifier needs at least 2", capsys
    )


@pytest.mark.parametrize("keep", [0.0, 0.5], ids=["zero_bytes", "cut_in_half"])
def test_a_broken_stanford_dogs_split_file_is_named(
    keep: float, tiny_dogs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "dogs"
    shutil.copytree(tiny_dogs, root)
    split_file = truncate_file(root / "lists" / "train_list.mat", keep)
    args = ["fit", *tiny_run_args(root, tmp_path / "runs")]
    expect_one_sentence(FINE_GRAINED.main, args, rf"Stanford Dogs list '{split_file}': it could not be read", capsys)


def test_a_truncated_training_image_is_named(
    tiny_imagenet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The classification reader decodes every image in full: a cut JPEG is refused, by name."""
    root = tmp_path / "imagenet"
    shutil.copytree(tiny_imagenet, root)
    damaged = truncate_file(sorted((root / "train").rglob("*.jpg"))[0])
    args = ["fit", *tiny_run_args(root, tmp_path / "runs", "--trainer.max_epochs", "1", resolution=32)]
    expect_one_sentence(CLASSIFICATION.main, args, rf"image file '{damaged}' could not be read", capsys)


def test_a_run_folder_under_a_regular_file_is_refused(
    tiny_imagenet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where a folder is expected")
    args = ["fit", *tiny_run_args(tiny_imagenet, blocker / "runs")]
    expect_one_sentence(CLASSIFICATION.main, args, rf"--trainer.default_root_dir\) '{blocker}/runs' lies under", capsys)
    args = ["fit", *tiny_run_args(tiny_imagenet, blocker)]
    expect_one_sentence(CLASSIFICATION.main, args, rf"'{blocker}' is a file", capsys)
    assert blocker.read_text() == "a file where a folder is expected"


def test_an_unwritable_run_folder_is_refused(
    tiny_imagenet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = tmp_path / "runs"
    runs.mkdir(mode=0o500)
    if os.access(runs, os.W_OK):
        # Root writes to a read-only folder anyway: give the answer the kernel gives any other user.
        access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != runs and access(path, mode, **kw))
    args = ["fit", *tiny_run_args(tiny_imagenet, runs)]
    expect_one_sentence(CLASSIFICATION.main, args, rf"'{runs}' is not writable", capsys)
