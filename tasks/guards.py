"""A checkpoint is used only with data whose outputs mean the same, and an untrained model is never scored.

* Names, not counts. Every checkpoint records what each of its output units means (class names,
  COCO category ids and names, attribute names, the S2 cells of every partition level: the data
  module's ``output_names``, stamped by ``tasks.checkpoints.TaskStamp``). Whenever a checkpoint is
  used (``validate``/``test``/``predict --ckpt_path``, ``fit --ckpt_path``), ``check_loaded_checkpoint``
  (called by ``TaskModule.on_load_checkpoint``) compares them by name with the data's, before the
  weights are loaded or any step runs: a difference in order, set, count or heads is refused in
  one sentence naming the first one. Counting alone let a face-attributes
  model score Bangs against Blond_Hair's labels when two columns were swapped (the data -> model
  link overwrites the checkpoint's names, so the module compared the data with itself), and
  a geolocation run resumed with one more partition level trained its one head on the coarse
  labels. Checkpoints written before names were recorded fall back to the shape check of
  ``tasks.base.TaskModule.on_load_checkpoint``.
* ``validate``/``test``/``predict`` without ``--ckpt_path`` scored random weights in every task
  (``check_arguments``, before anything is built). The one legitimate case is kept: a classifier
  whose every weight comes from ``--model.backbone_weights`` (an ImageNet state dict imported
  from timm, scored on ImageNet val), checked once the model is built: the file must hold the
  classifier of this model's size, and, when it records output names, the data's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pytorch_lightning import Callback, LightningModule, Trainer
from torch import nn

from backbone.checkpoint_reader import read_torch_file
from backbone.errors import BadInputError
from backbone.mobilenet import MobileNetV1
from backbone.weights import extract_backbone_state, read_state_dict
from tasks.checkpoints import OUTPUTS_KEY, STAMP_KEY

EVALUATING = ("validate", "test", "predict")
CKPT_HINT = "pass --ckpt_path last|best|FILE (the run's last or best checkpoint, or a checkpoint file of this task)"

Names = Mapping[str, Sequence[str]]


def _unit(names: Sequence[str], index: int) -> str:
    return repr(names[index]) if index < len(names) else "nothing"


def first_difference(saved: Names, current: Names) -> str | None:
    """The first difference between a checkpoint's output names and the data's, as a clause, or None."""
    for head, names in saved.items():
        if head not in current:
            return f"it has an output head {head!r} ({len(names)} outputs) that the data does not define"
    for head, names in current.items():
        if head not in saved:
            return f"the data defines an output head {head!r} ({len(names)} outputs) that it does not have"
    for head, names in saved.items():
        ours, theirs = list(names), list(current[head])
        if ours == theirs:
            continue
        index = next(
            (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs))
        )
        count = f"it has {len(ours)} {head} where the data has {len(theirs)}, and " if len(ours) != len(theirs) else ""
        return f"{count}its {head} output {index} is {_unit(ours, index)} where the data's is {_unit(theirs, index)}"
    return None


def check_output_names(path: str, saved: Names | None, current: Names | None) -> None:
    """Refuse in one sentence a checkpoint whose recorded output names differ from the data's.

    Nothing to compare (a checkpoint written before names were recorded, or data that does not
    refer to the outputs by index in this stage) passes.
    """
    if saved is None or current is None:
        return
    difference = first_difference(saved, current)
    if difference is not None:
        raise BadInputError(
            f"The checkpoint {path!r} does not fit the data: {difference}; use it with data whose outputs have the "
            "same names in the same order (the same classes, categories, attributes or cells, and --data settings)."
        )


def recorded_output_names(checkpoint: Any) -> Names | None:
    """The output names a loaded checkpoint records, or None (older checkpoints, foreign files)."""
    stamp = checkpoint.get(STAMP_KEY) if isinstance(checkpoint, Mapping) else None
    outputs = stamp.get(OUTPUTS_KEY) if isinstance(stamp, Mapping) else None
    return outputs if isinstance(outputs, Mapping) else None


def _output_names(trainer: Trainer, stage: str) -> Names | None:
    data = trainer.datamodule
    declared = getattr(data, "output_names", None)
    return declared(stage) if callable(declared) else None


def check_loaded_checkpoint(trainer: Trainer | None, checkpoint: Mapping[str, Any]) -> None:
    """Compare the output names ``checkpoint`` records with the run's data (``TaskModule.on_load_checkpoint``:
    every use of a checkpoint by a Trainer, on every rank, before its weights are loaded or any step runs)."""
    if trainer is None or trainer.state.fn is None:
        return  # LightningModule.load_from_checkpoint: no data to compare with
    path = str(trainer.ckpt_path or "given")
    check_output_names(path, recorded_output_names(checkpoint), _output_names(trainer, trainer.state.fn.value))


def classifier_from_file(module: LightningModule, path: str) -> bool:
    """Whether ``path`` gives every weight of ``module``: all of them lie in its MobileNetV1 (``module.model``)
    and the file holds that network's classifier at this size (``load_backbone_weights`` then loaded it)."""
    net = getattr(module, "model", None)
    if not isinstance(net, MobileNetV1) or not isinstance(net.classifier, nn.Linear):
        return False
    if sum(p.numel() for p in module.parameters()) != sum(p.numel() for p in net.parameters()):
        return False  # a head outside the MobileNet: never in a backbone file
    state = extract_backbone_state(read_state_dict(path))
    wanted = net.classifier.state_dict(prefix="classifier.")
    return all(key in state and tuple(state[key].shape) == tuple(value.shape) for key, value in wanted.items())


class CheckpointGuard(Callback):
    """The refusal of untrained evaluation, for one CLI run: ``check_arguments`` at parse time;
    a ``--model.backbone_weights`` file in ``setup`` (the model built, the data read, before any
    step; every rank checks the same file, so under DDP every rank stops)."""

    def __init__(self) -> None:
        self.weights_to_check: str | None = None

    def check_arguments(self, subcommand: str, config: Any, ckpt_path: str | None) -> None:
        """Refuse ``validate``/``test``/``predict`` without a checkpoint, unless the model's weights
        are a file (``--model.backbone_weights``): that one is checked in ``setup``."""
        self.weights_to_check = None
        if subcommand not in EVALUATING or ckpt_path is not None:
            return
        model = config.get("model") or {}
        weights = model.get("backbone_weights") if hasattr(model, "get") else None
        if weights:
            self.weights_to_check = str(weights)
            return
        raise BadInputError(f"{subcommand} without --ckpt_path would score an untrained model; {CKPT_HINT}.")

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage in EVALUATING and self.weights_to_check is not None:
            self._check_weights_file(trainer, pl_module, str(getattr(stage, "value", stage)), self.weights_to_check)

    def _check_weights_file(self, trainer: Trainer, pl_module: LightningModule, stage: str, path: str) -> None:
        if not classifier_from_file(pl_module, path):
            raise BadInputError(
                f"{stage} without --ckpt_path would score an untrained model: --model.backbone_weights {path!r} "
                f"gives it no trained output layer (only a backbone file holding a classifier of this model's size "
                f"does); {CKPT_HINT}."
            )
        # A checkpoint of this project says what its classifier's outputs mean; a plain state dict does not.
        saved = recorded_output_names(read_torch_file(path))
        check_output_names(path, saved, _output_names(trainer, stage))
