"""Weight import for MobileNetV1: this project's checkpoints and timm's ``mobilenetv1_*`` dicts.

A backbone trained by one task is the starting point of another (``--model.backbone_weights``),
and an ImageNet-pretrained timm ``mobilenetv1_100`` / ``mobilenetv1_125`` state dict that a user
has on disk can be imported through an explicit key mapping. Nothing is ever downloaded. Files
are opened by ``backbone.checkpoint_reader`` (the one reader, with its one set of refusals);
this module finds the MobileNetV1 inside what it read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from torch import Tensor

from backbone.checkpoint_reader import read_state_dict
from backbone.errors import BadInputError
from backbone.mobilenet import MobileNetV1

__all__ = [
    "extract_backbone_state",
    "is_timm_state_dict",
    "load_backbone_weights",
    "read_state_dict",
    "timm_to_mobilenet",
]

_STEM_KEY = "stem.0.weight"
# A block of the network held outside the trunk's prefix (Faster R-CNN's box head runs conv12-13).
_SPLIT_BLOCK = re.compile(r"(?:^|\.)(blocks\.conv\d+\..+)$")
_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.(conv_dw|bn1|conv_pw|bn2)\.(.+)$")
_TIMM_PARTS = {"conv_dw": "depthwise.0", "bn1": "depthwise.1", "conv_pw": "pointwise.0", "bn2": "pointwise.1"}


def is_timm_state_dict(state: Mapping[str, Tensor]) -> bool:
    """True for a timm ``mobilenetv1_*`` state dict (it names its first conv ``conv_stem``)."""
    return "conv_stem.weight" in state


def timm_to_mobilenet(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map timm's ``mobilenetv1_100``-family keys onto this project's ``MobileNetV1`` keys.

    timm groups the 13 separable blocks into stages (``blocks.<stage>.<index>``); flattened in
    order they are conv1..conv13. ``mobilenetv1_100h`` adds a head conv that Table 1 does not
    have, so it is refused rather than silently half-loaded.
    """
    if "conv_head.weight" in state:
        raise BadInputError(
            "This timm state dict has a 'conv_head' layer (mobilenetv1_100h); only the plain "
            "mobilenetv1_100 / mobilenetv1_125 layout of Table 1 can be imported."
        )
    positions = sorted({(int(m.group(1)), int(m.group(2))) for k in state if (m := _TIMM_BLOCK.match(k))})
    number = {pos: n for n, pos in enumerate(positions, start=1)}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith("conv_stem."):
            out["stem.0." + key[len("conv_stem.") :]] = value
        elif key.startswith("bn1."):
            out["stem.1." + key[len("bn1.") :]] = value
        elif key.startswith("classifier."):
            out[key] = value
        elif m := _TIMM_BLOCK.match(key):
            n = number[(int(m.group(1)), int(m.group(2)))]
            out[f"blocks.conv{n}.{_TIMM_PARTS[m.group(3)]}.{m.group(4)}"] = value
        else:
            raise BadInputError(f"Unexpected key {key!r} in a timm mobilenetv1 state dict.")
    return out


def extract_backbone_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Find the MobileNetV1 inside any state dict of this project (or a timm one).

    A Lightning checkpoint of any task keeps its backbone under some prefix (``backbone.``,
    ``model.backbone.body.`` ...): the prefix is found from the stem's key, so every task's
    checkpoint works without a table of task-specific prefixes. A network split across modules
    (Faster R-CNN runs conv12-conv13 as its box head, under another prefix) is put back together:
    a ``...blocks.convN.*`` key outside the prefix fills that block when the prefix lacks it.
    """
    if is_timm_state_dict(state):
        return timm_to_mobilenet(state)
    prefixes = sorted({k[: -len(_STEM_KEY)] for k in state if k.endswith(_STEM_KEY)}, key=len)
    if not prefixes:
        raise BadInputError("it holds no MobileNetV1 weights (no key ends in 'stem.0.weight')")
    prefix = prefixes[0]
    out = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    for key, value in state.items():
        split = _SPLIT_BLOCK.search(key)
        if split and not key.startswith(prefix):
            out.setdefault(split.group(1), value)
    return out


def load_backbone_weights(
    model: MobileNetV1, path: str | os.PathLike[str], classifier: bool | None = None
) -> list[str]:
    """Load MobileNetV1 weights from ``path`` into ``model`` and return the keys left out.

    Every trunk weight must be present with the right shape (a width mismatch is reported as
    such). The classifier is loaded when ``classifier`` is True, skipped when False, and by
    default loaded only if its shape matches (so an ImageNet backbone fine-tunes on 120 breeds).
    """
    raw = read_state_dict(path)
    try:
        state = extract_backbone_state(raw)
    except BadInputError as error:
        raise BadInputError(f"Cannot load backbone weights from {str(path)!r}: {error}.") from None
    own = model.state_dict()
    skipped: list[str] = []
    for key in list(state):
        if key.startswith("classifier."):
            same_shape = key in own and own[key].shape == state[key].shape
            if classifier is False or (classifier is None and not same_shape):
                skipped.append(key)
                del state[key]
    trunk = [k for k in own if not k.startswith("classifier.")]
    # A frozen BatchNorm (a detector fine-tuned with --model.freeze_bn) keeps no batch count.
    missing = [k for k in trunk if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise BadInputError(
            f"Backbone weights in {str(path)!r} do not fit this MobileNetV1 "
            f"(width={model.width}, full_conv={model.full_conv}, shallow={model.shallow}): "
            f"{len(missing)} weights are missing, the first is {missing[0]!r}."
        )
    for key in trunk:
        if state[key].shape != own[key].shape:
            raise BadInputError(
                f"Backbone weights in {str(path)!r} do not fit this MobileNetV1 (width={model.width}): "
                f"{key!r} has shape {tuple(state[key].shape)}, expected {tuple(own[key].shape)}."
            )
    unexpected = [k for k in state if k not in own]
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=classifier is True)
    return skipped + unexpected
