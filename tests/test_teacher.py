"""One frozen teacher type (``tasks.teacher.FrozenTeacher``) for both distillation tasks.

The teacher is loaded from a checkpoint of the student's task (another task's is refused in one
sentence), answers in eval mode without gradients at its own resolution, follows the batches'
device, and is not part of the student: not in its state_dict, parameters or modules (so neither
trained, saved nor wrapped by DDP)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from pytorch_lightning import LightningModule

from backbone.errors import BadInputError
from tasks.checkpoints import STAMP_KEY
from tasks.face_attributes.module import FaceAttributesModule, view_resolution
from tasks.face_embedding.module import FaceEmbeddingModule
from tasks.teacher import FrozenTeacher

TEACHER_ATTRIBUTES = ["Eyeglasses", "Smiling", "Bangs"]
STUDENT_ATTRIBUTES = ["Bangs", "Eyeglasses"]  # fewer, in another order: matched by name


def save_checkpoint(module: LightningModule, task: str, path: Path) -> Path:
    """A checkpoint as the CLI writes it: weights, hyper-parameters and the task's stamp."""
    hparams = dict(module.hparams)
    stamp = {"task": task, "width": hparams["width"], "resolution": hparams["resolution"]}
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": hparams, STAMP_KEY: stamp}, path)
    return path


def teachers(tmp_path: Path) -> dict[str, tuple[LightningModule, Path]]:
    """A 0.25-48 teacher of each task (random weights, random BN statistics) and its checkpoint."""
    torch.manual_seed(0)
    modules: dict[str, LightningModule] = {
        "face_attributes": FaceAttributesModule(TEACHER_ATTRIBUTES, width=0.25, resolution=48),
        "face_embedding": FaceEmbeddingModule(width=0.25, resolution=48),
    }
    out = {}
    for task, module in modules.items():
        for layer in module.modules():
            if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                layer.running_mean.uniform_(-0.2, 0.2)
                layer.running_var.uniform_(0.5, 1.5)
        out[task] = (module.eval(), save_checkpoint(module, task, tmp_path / f"{task}.ckpt"))
    return out


def student(task: str, teacher: Path | str | None) -> LightningModule:
    if task == "face_attributes":
        return FaceAttributesModule(STUDENT_ATTRIBUTES, teacher=None if teacher is None else str(teacher),
                                    width=0.25, resolution=32)  # fmt: skip
    return FaceEmbeddingModule(width=0.25, resolution=32, teacher=None if teacher is None else str(teacher))


def expected_outputs(task: str, module: Any, images: torch.Tensor) -> torch.Tensor:
    """What the teacher's own module answers on the images resized to its 48 px."""
    resized = torch.nn.functional.interpolate(images, size=(48, 48), mode="bilinear", antialias=True)
    with torch.no_grad():
        out = module.model(resized)
    if task == "face_attributes":
        out = out[:, [TEACHER_ATTRIBUTES.index(name) for name in STUDENT_ATTRIBUTES]]
    return out


@pytest.mark.parametrize("task", ["face_attributes", "face_embedding"])
def test_the_teacher_is_frozen_and_not_part_of_the_student(task: str, tmp_path: Path) -> None:
    module, ckpt = teachers(tmp_path)[task]
    taught, alone = student(task, ckpt), student(task, None)
    teacher = taught.teacher
    assert isinstance(teacher, FrozenTeacher) and teacher.resolution == 48
    # not in the student's state_dict, parameters or modules: not saved, not optimised, not wrapped by DDP
    assert taught.state_dict().keys() == alone.state_dict().keys()
    owned = {id(p) for p in taught.parameters()}
    assert not any(id(p) in owned for p in teacher.net.parameters())
    assert all(m is not teacher.net for m in taught.modules())
    assert not any(p.requires_grad for p in teacher.net.parameters())
    # the student's train() leaves it in eval mode; it answers without gradients, at its own resolution
    taught.train()
    assert not teacher.net.training
    images = torch.randn(3, 3, 32, 32, requires_grad=True)
    out = teacher(images)
    assert not out.requires_grad and out.dtype == torch.float32
    torch.testing.assert_close(out, expected_outputs(task, module, images.detach()), rtol=1e-5, atol=1e-5)


def test_the_teacher_follows_the_batches_device(tmp_path: Path) -> None:
    _, ckpt = teachers(tmp_path)["face_embedding"]
    teacher = student("face_embedding", ckpt).teacher
    assert teacher.device.type == "cpu"
    out = teacher(torch.empty(2, 3, 48, 48, device="meta"))  # any other device than the weights'
    assert teacher.device.type == "meta" and out.shape == (2, 128)


@pytest.mark.parametrize(
    ("task", "other"), [("face_attributes", "face_embedding"), ("face_embedding", "face_attributes")]
)
def test_a_checkpoint_of_the_other_task_is_refused_in_one_sentence(task: str, other: str, tmp_path: Path) -> None:
    _, ckpt = teachers(tmp_path)[other]
    with pytest.raises(BadInputError) as info:
        student(task, ckpt)
    assert str(info.value) == (
        f"The teacher checkpoint {str(ckpt)!r} holds a {other} model, not a {task} one; "
        f"give a checkpoint written by 'python -m tasks.{task} fit'."
    )


def test_a_teacher_without_a_student_attribute_is_refused(tmp_path: Path) -> None:
    _, ckpt = teachers(tmp_path)["face_attributes"]
    with pytest.raises(BadInputError, match=r"trained on 3 attributes without 'Male', which the data has"):
        FaceAttributesModule(["Smiling", "Male"], teacher=str(ckpt), width=0.25, resolution=32)


def test_views_are_made_at_the_larger_of_the_two_resolutions(tmp_path: Path) -> None:
    """face_attributes decides the data's view size from the arguments (a parse-time link)."""
    _, ckpt = teachers(tmp_path)["face_attributes"]
    assert view_resolution(32, str(ckpt)) == 48
    assert view_resolution(64, str(ckpt)) == 64
    assert view_resolution(32, None) == 32
    assert view_resolution(32, str(tmp_path / "missing.ckpt")) == 32  # the model refuses it, in its own sentence
