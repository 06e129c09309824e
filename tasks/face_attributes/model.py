"""The attribute network (MobileNetV1 + one logit per attribute) and a frozen teacher loaded from a checkpoint.

Table 12's students are plain MobileNets whose classifier has one output per attribute (40 for
CelebA): 1.0 MobileNet-224 then has 3.2M parameters and 568M mult-adds, as the table prints.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from backbone.errors import BadInputError
from backbone.mobilenet import Activation, MobileNetV1
from backbone.weights import load_backbone_weights

# The class path LightningCLI records in a checkpoint of this task (hyper-parameter ``_class_path``).
TASK_CLASS_PATH = "tasks.face_attributes.module.FaceAttributesModule"


def build_attribute_net(
    width: float,
    num_attributes: int,
    dropout: float = 0.001,
    activation: Activation = "relu6",
    backbone_weights: str | None = None,
) -> MobileNetV1:
    """MobileNetV1 of width ``width`` whose classifier gives one logit per attribute.

    ``backbone_weights`` (any checkpoint of this project, or a timm state dict) starts the trunk;
    a classifier of another size is left out.
    """
    net = MobileNetV1(width, num_attributes, dropout=dropout, activation=activation)
    if backbone_weights:
        load_backbone_weights(net, backbone_weights)
    return net


def resize_batch(images: Tensor, resolution: int) -> Tensor:
    """``images`` (N, 3, H, W) resized to ``resolution`` squared (antialiased when shrinking)."""
    if images.shape[-2:] == (resolution, resolution):
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)


class Teacher:
    """A trained attribute network that only answers: frozen, in eval mode, at its own resolution.

    It is deliberately not an ``nn.Module`` attribute of the student's LightningModule, so it is
    never put in train mode, handed to the optimizer, wrapped by DDP or saved in the student's
    checkpoint.
    """

    def __init__(self, net: MobileNetV1, resolution: int, order: Sequence[int], source: str) -> None:
        self.net = net.eval().requires_grad_(False)
        self.resolution = resolution
        self.order = torch.as_tensor(list(order), dtype=torch.long)  # teacher output index per attribute
        self.source = source

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        """The teacher's logits for ``images`` (any size: resized to its resolution), in the student's order."""
        if next(self.net.parameters()).device != images.device:
            self.net.to(images.device)
            self.order = self.order.to(images.device)
        return self.net(resize_batch(images, self.resolution)).float()[:, self.order]


def _what_it_holds(checkpoint: Any) -> str:
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        return "no Lightning checkpoint (no 'state_dict')"
    hparams = checkpoint.get("hyper_parameters") or {}
    if "_class_path" in hparams:
        return f"a {hparams['_class_path']} model"
    return f"a model with hyper-parameters {', '.join(sorted(hparams)) or 'none'}"


def load_teacher(path: str | os.PathLike[str], attribute_names: Sequence[str]) -> Teacher:
    """The face-attributes checkpoint at ``path`` as a frozen ``Teacher`` for ``attribute_names``.

    Any width and resolution will do; the checkpoint must be one of this task (its attributes are
    matched to the data's by name) and is refused in one sentence otherwise.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise BadInputError(f"The teacher checkpoint {str(path)!r} does not exist.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise BadInputError(f"The teacher checkpoint {str(path)!r} could not be read ({error}).") from None
    hparams = (checkpoint.get("hyper_parameters") or {}) if isinstance(checkpoint, dict) else {}
    if hparams.get("_class_path", TASK_CLASS_PATH) != TASK_CLASS_PATH or "attribute_names" not in hparams:
        raise BadInputError(
            f"The teacher checkpoint {str(path)!r} holds {_what_it_holds(checkpoint)}, not a face-attributes model; "
            "give a checkpoint written by 'python -m tasks.face_attributes fit'."
        )
    names = list(hparams["attribute_names"])
    unknown = [name for name in attribute_names if name not in names]
    if unknown:
        raise BadInputError(
            f"The teacher checkpoint {str(path)!r} was trained on {len(names)} attributes without {unknown[0]!r}, "
            "which the data has; a teacher must know every attribute of the student's data."
        )
    net = MobileNetV1(hparams["width"], len(names), activation=hparams.get("activation", "relu6"))
    state = {k[len("model.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    net.load_state_dict(state)
    return Teacher(net, int(hparams["resolution"]), [names.index(n) for n in attribute_names], str(path))
