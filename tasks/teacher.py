"""The frozen teacher of the distillation tasks (face attributes, Table 12; face embeddings, Table 14).

A student learns from a trained network of its own task (``--model.teacher CKPT``). The teacher
only answers: ``FrozenTeacher`` holds it in eval mode with no gradients, runs it under
``no_grad`` at its own resolution, and follows the student's batches to their device. It is
deliberately not an ``nn.Module`` attribute of the student's LightningModule, so Lightning never
switches it to train mode (its BatchNorm keeps its running statistics), the optimizer never sees
its weights, DDP does not wrap it, and the student's checkpoint does not hold it.

The checkpoint is read by ``backbone.checkpoint_reader`` (one sentence for a damaged file) and
must be of the student's task (one sentence otherwise, naming the task it holds).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbone.checkpoint_reader import read_checkpoint
from backbone.errors import BadInputError
from tasks.checkpoints import STAMP_KEY

MODULE_PREFIX = "model."  # every task module keeps its network as ``self.model``


def resize_batch(images: Tensor, resolution: int) -> Tensor:
    """``images`` (N, 3, H, W) resized to ``resolution`` squared (antialiased when shrinking)."""
    if images.shape[-2:] == (resolution, resolution):
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)


def checkpoint_task(checkpoint: Mapping[str, Any]) -> str | None:
    """The task that wrote ``checkpoint``: its stamp, else the module's class path; None if unknown."""
    stamped = (checkpoint.get(STAMP_KEY) or {}).get("task")
    if stamped:
        return str(stamped)
    class_path = str((checkpoint.get("hyper_parameters") or {}).get("_class_path", ""))
    parts = class_path.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "tasks" else None


def read_task_checkpoint(
    path: str | os.PathLike[str], task: str, needs: Sequence[str] = (), role: str = "checkpoint"
) -> dict[str, Any]:
    """The checkpoint at ``path``, refused in one sentence unless ``task`` wrote it.

    Its hyper-parameters must also hold every key of ``needs`` (a checkpoint written by hand,
    without a stamp or class path, is recognised by them).
    """
    checkpoint = read_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters") or {}
    saved = checkpoint_task(checkpoint)
    lacking = next((key for key in needs if key not in hparams), None)
    if saved not in (None, task) or lacking is not None:
        held = f"a {saved} model" if saved not in (None, task) else f"a model without {lacking!r}"
        raise BadInputError(
            f"The {role} {str(path)!r} holds {held}, not a {task} one; "
            f"give a checkpoint written by 'python -m tasks.{task} fit'."
        )
    return checkpoint


def model_state(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """The task network's own weights (``self.model``) in a task checkpoint, without the prefix."""
    state = checkpoint["state_dict"]
    return {k[len(MODULE_PREFIX) :]: v for k, v in state.items() if k.startswith(MODULE_PREFIX)}


def teacher_resolution(path: str | None, default: int) -> int:
    """The input size a teacher checkpoint was trained at; ``default`` without a readable one.

    Used when arguments are parsed, before the model refuses a bad file in its own sentence.
    """
    if not path:
        return default
    try:
        return int((read_checkpoint(path).get("hyper_parameters") or {}).get("resolution", default))
    except (BadInputError, TypeError, ValueError):
        return default


class FrozenTeacher:
    """A trained network of the student's task that only answers (see the module docstring).

    ``net`` is put in eval mode without gradients; ``resolution`` is the input size it was
    trained at (each batch is resized to it); ``hparams`` are its checkpoint's hyper-parameters.
    """

    def __init__(self, net: nn.Module, resolution: int, hparams: Mapping[str, Any], source: str) -> None:
        self.net = net.eval().requires_grad_(False)
        self.resolution = resolution
        self.hparams = dict(hparams)
        self.source = source

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        task: str,
        build: Callable[[Mapping[str, Any], dict[str, Tensor]], nn.Module],
        needs: Sequence[str] = (),
    ) -> FrozenTeacher:
        """The teacher in the ``task`` checkpoint at ``path``.

        ``build(hparams, state)`` makes the network from the checkpoint's hyper-parameters and
        loads ``state`` (the network's weights) into it; a state that does not fit is refused.
        """
        checkpoint = read_task_checkpoint(path, task, needs, role="teacher checkpoint")
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        try:
            net = build(hparams, model_state(checkpoint))
        except (RuntimeError, KeyError) as error:  # load_state_dict's size/key mismatch, a missing hparam
            reason = str(error).strip().splitlines()[0][:160]
            raise BadInputError(
                f"The teacher checkpoint {str(path)!r} does not fit its own hyper-parameters ({reason})."
            ) from None
        return cls(net, int(hparams.get("resolution", 224)), hparams, str(path))

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: torch.device | str) -> FrozenTeacher:
        self.net.to(device)
        return self

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        """The teacher's outputs for ``images`` (any size: resized to its resolution), as float32."""
        if self.device != images.device:  # follows the student: a plain attribute is not moved with it
            self.to(images.device)
        if self.net.training:  # never trained, whatever called train() on it
            self.net.eval()
        return self.net(resize_batch(images, self.resolution)).float()
