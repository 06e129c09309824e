"""The project's own count of each paper row's network, through the counters the tests use.

Each ``backbone.paper_tables.Model`` kind is built by its task's own builder and counted by the
project's one counter (``backbone.count_complexity``, or ``detection_complexity`` for whole
detectors), on the meta device: counting costs no memory for activations and no arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from torch import nn

from backbone import Complexity, MobileNetV1, count_complexity
from backbone.paper_tables import Model, ModelKind


def _classifier(model: Model) -> nn.Module:
    # The classification / fine-grained task's network (tasks/classification/module.py).
    return MobileNetV1(model.width, model.num_classes, full_conv=model.full_conv, shallow=model.shallow)


def _attributes(model: Model) -> nn.Module:
    from tasks.face_attributes.model import build_attribute_net

    return build_attribute_net(model.width, model.num_classes)


def _face_embedder(model: Model) -> nn.Module:
    from tasks.face_embedding.model import FaceEmbedder

    return FaceEmbedder(model.width)


def _ssd300(model: Model) -> nn.Module:
    from tasks.detection.ssd import build_ssd300

    return build_ssd300(model.width, num_classes=model.num_classes, resolution=model.resolution)


def _faster_rcnn(model: Model) -> nn.Module:
    from tasks.detection.faster_rcnn import build_faster_rcnn

    return build_faster_rcnn(model.width, num_classes=model.num_classes, resolution=model.resolution)


BUILDERS: dict[ModelKind, Callable[[Model], nn.Module]] = {
    "classifier": _classifier,
    "attributes": _attributes,
    "face_embedder": _face_embedder,
    "ssd300": _ssd300,
    "faster_rcnn": _faster_rcnn,
}


@cache
def project_complexity(model: Model) -> Complexity:
    """Mult-adds for one ``model.resolution`` image and parameters of the project's network (cached:
    Tables 4, 6, 7 and 8 share 1.0 MobileNet-224)."""
    network = BUILDERS[model.kind](model)
    if model.kind in ("ssd300", "faster_rcnn"):
        from tasks.detection.complexity import detection_complexity

        return detection_complexity(network, model.resolution)
    return count_complexity(network, model.resolution)
