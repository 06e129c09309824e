"""``--model.init_from CKPT``: start a detector from another detector of this task, any class count.

The usual fine-tuning of torchvision's references and the TF Object Detection API
(``fine_tune_checkpoint_type: detection``): every weight of a detector trained on one set (COCO,
say) is loaded into a detector for another set, except the layers whose shape depends on the
number of classes, which start fresh. Those are the class predictors only: SSD's box predictors
are class-agnostic, while Faster R-CNN's ``FastRCNNPredictor`` (class scores and per-class box
deltas) is replaced whole, as in torchvision's fine-tuning tutorial.
"""

from __future__ import annotations

import os
from pathlib import Path

from pytorch_lightning.utilities.rank_zero import rank_zero_info
from torch import Tensor, nn

from backbone.errors import BadInputError
from backbone.weights import read_state_dict

# Parameter-name prefixes (inside the torchvision detector) of the class-dependent layers.
CLASS_HEADS: tuple[str, ...] = ("head.classification_head.", "roi_heads.box_predictor.")
MODULE_PREFIX = "model."  # DetectionModule keeps the detector as ``self.model``


def detector_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The detector's own keys: a ``tasks.detection`` checkpoint's ``model.*``, or a bare state dict."""
    if any(k.startswith(MODULE_PREFIX) for k in state):
        return {k[len(MODULE_PREFIX) :]: v for k, v in state.items() if k.startswith(MODULE_PREFIX)}
    return state


def load_detector_weights(model: nn.Module, path: str | os.PathLike[str]) -> list[str]:
    """Load the detector checkpoint at ``path`` into ``model``; return the keys left at their init.

    Class-dependent layers (``CLASS_HEADS``) are loaded when their shapes agree (same class
    count) and skipped otherwise. Anything else missing or of another shape is refused in one
    sentence: the checkpoint is of another architecture or width.
    """
    if not Path(path).is_file():
        raise BadInputError(f"The checkpoint {str(path)!r} given as --model.init_from does not exist.")
    state = detector_state(read_state_dict(path))
    own = model.state_dict()

    def class_head(key: str) -> bool:
        return key.startswith(CLASS_HEADS)

    # A frozen BatchNorm keeps no batch count; a trained one does: neither is a weight.
    missing = [k for k in own if k not in state and not class_head(k) and not k.endswith("num_batches_tracked")]
    if missing:
        raise BadInputError(
            f"The checkpoint {str(path)!r} given as --model.init_from lacks {missing[0]} (and {len(missing) - 1} "
            "more weights of this detector); expected a tasks.detection checkpoint of the same --model.arch."
        )
    for key, value in own.items():
        if key in state and not class_head(key) and tuple(state[key].shape) != tuple(value.shape):
            raise BadInputError(
                f"The checkpoint {str(path)!r} given as --model.init_from holds {key} of shape "
                f"{tuple(state[key].shape)} where this detector has {tuple(value.shape)}; expected the same "
                "--backbone width and --model.arch."
            )
    skipped = [k for k in own if class_head(k) and (k not in state or state[k].shape != own[k].shape)]
    load = {k: v for k, v in state.items() if k in own and k not in skipped}
    model.load_state_dict(load, strict=False)
    fresh = "" if not skipped else f"; the class head ({len(skipped)} tensors) starts fresh for this set's classes"
    rank_zero_info(f"Initialised the detector from {path}: {len(load)} tensors loaded{fresh}.")
    return skipped
