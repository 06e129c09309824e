"""The attribute network (MobileNetV1 + one logit per attribute), as a student or as a teacher.

Table 12's students are plain MobileNets whose classifier has one output per attribute (40 for
CelebA): 1.0 MobileNet-224 then has 3.2M parameters and 568M mult-adds, as the table prints.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from backbone.errors import BadInputError
from backbone.mobilenet import Activation, MobileNetV1
from backbone.weights import load_backbone_weights


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


def attribute_teacher_net(
    path: str | os.PathLike[str], attribute_names: Sequence[str]
) -> Callable[[Mapping[str, Any], dict[str, Tensor]], MobileNetV1]:
    """How ``FrozenTeacher.load`` builds the teacher at ``path`` for a student of ``attribute_names``.

    The teacher may know more attributes, in any order (matched by name); its classifier keeps the
    rows of the student's attributes, in the student's order, so its outputs line up with the
    student's. A teacher without one of them is refused in one sentence.
    """

    def build(hparams: Mapping[str, Any], state: dict[str, Tensor]) -> MobileNetV1:
        names = list(hparams["attribute_names"])
        unknown = [name for name in attribute_names if name not in names]
        if unknown:
            raise BadInputError(
                f"The teacher checkpoint {str(path)!r} was trained on {len(names)} attributes without {unknown[0]!r}, "
                "which the data has; a teacher must know every attribute of the student's data."
            )
        net = MobileNetV1(hparams["width"], len(names), activation=hparams.get("activation", "relu6"))
        net.load_state_dict(state)
        rows = torch.as_tensor([names.index(name) for name in attribute_names])
        classifier = nn.Linear(net.num_features, len(rows))
        classifier.weight.data.copy_(net.classifier.weight.data[rows])
        classifier.bias.data.copy_(net.classifier.bias.data[rows])
        net.classifier, net.num_classes = classifier, len(rows)
        return net

    return build
