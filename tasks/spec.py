"""Each task of the suite, declared once.

A task is one frozen ``TaskSpec``: ``TASK`` in its package's ``task.py`` (``tasks/geolocation/task.py``
is a full example: classes, monitor, default length, links, prediction writer and an extra
``partition`` command). Everything else reads it:

* ``python -m tasks.<task>``: its ``__main__`` imports ``TASK`` through the package (so saved
  configs and checkpoints name the classes by their modules, never ``__main__``) and calls
  ``TASK.main()``;
* the shared CLI (``tasks.cli.TaskCLI``): the ``--resolution`` default, the checkpoint's monitor,
  the links, the callbacks, the default run length;
* the contract test (``tests/test_task_contract.py``), which runs every contract on every
  declaration of ``all_tasks()``.

A new task inherits run length, resume, signals, checkpoint refusals, seeds, ``metrics.json`` and
DDP equality by being declared and listed in ``all_tasks()`` (and given tiny test data in
``tests/tiny_tasks.py``).

No string registry: ``all_tasks()`` imports the six declarations, and only when called, so
``import tasks`` stays free of the task stacks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from pytorch_lightning import Callback, LightningDataModule, LightningModule


@dataclass(frozen=True, eq=False)  # one object per task: compared and hashed by identity
class TaskSpec:
    """One task: what ``python -m tasks.<name>`` runs and the contract test checks.

    Args:
        name: the package under ``tasks/``, the default run folder ``runs/<name>`` and the task
            stamped in every checkpoint (``tasks.checkpoints.TaskStamp``).
        module: the ``TaskModule`` subclass (``--model.*``).
        data: the ``TaskDataModule`` subclass (``--data.*``).
        monitor: the metric that picks the best checkpoint, and ``mode`` its direction.
        default_steps: the run length, in optimizer steps, when the user gives none of
            ``--trainer.max_steps`` / ``max_epochs`` / ``max_time`` (steps fit a set of any size).
        resolution: the ``--resolution`` default, linked into the model and the data module;
            the one place a task's default input size is written.
        links: ``(source, target)`` pairs linked when the classes are instantiated, e.g.
            ``("data.num_classes", "model.num_classes")``: a data module attribute read after its
            ``__init__``.
        callbacks: factories (usually classes) of the callbacks every run of the task gets, such
            as its prediction writer; called once per run.
        commands: subcommands that are not Lightning's (``partition``, ``index``): name -> a
            function of the remaining arguments.
        parse_links: options decided from other options when the command line is parsed, as
            jsonargparse links ``(sources, target, compute_fn)``: what one object needs from
            another's arguments is settled before either is built, never by one rewriting the
            other (face attributes: the data's view size from the student's and the teacher's).
        monitor_for: the metric that picks the best checkpoint for the parsed data options, when
            it cannot be ``monitor`` (face embeddings without LFW); None keeps ``monitor``.
    """

    name: str
    module: type[LightningModule]
    data: type[LightningDataModule]
    monitor: str
    default_steps: int
    resolution: int = 224
    mode: Literal["max", "min"] = "max"
    links: tuple[tuple[str, str], ...] = ()
    callbacks: tuple[Callable[[], Callback], ...] = ()
    commands: Mapping[str, Callable[[list[str]], None]] = field(default_factory=dict)
    parse_links: tuple[tuple[tuple[str, ...], str, Callable[..., Any]], ...] = ()
    monitor_for: Callable[[Mapping[str, Any]], str | None] | None = None

    def __post_init__(self) -> None:
        if self.default_steps < 1:
            raise ValueError(f"{self.name}: default_steps must be a positive step count, not {self.default_steps}.")
        # Frozen all the way down: a declaration is shared by every run of the process.
        object.__setattr__(self, "commands", MappingProxyType(dict(self.commands)))
        object.__setattr__(self, "links", tuple(tuple(link) for link in self.links))
        object.__setattr__(self, "callbacks", tuple(self.callbacks))
        object.__setattr__(self, "parse_links", tuple(self.parse_links))

    def main(self, args: Sequence[str] | None = None, callbacks: Sequence[Callback] = ()) -> None:
        """``python -m tasks.<name> ...`` (``args`` None reads ``sys.argv``); ``callbacks`` are
        added to the task's own (a benchmark's clock, a test's probe)."""
        from tasks.cli import main

        main(self, args, callbacks)


def all_tasks() -> tuple[TaskSpec, ...]:
    """Every task's declaration, in the README's order (imports the six task stacks)."""
    from tasks.classification.task import TASK as classification
    from tasks.detection.task import TASK as detection
    from tasks.face_attributes.task import TASK as face_attributes
    from tasks.face_embedding.task import TASK as face_embedding
    from tasks.fine_grained.task import TASK as fine_grained
    from tasks.geolocation.task import TASK as geolocation

    return (classification, fine_grained, detection, face_attributes, geolocation, face_embedding)
