"""The one command line shared by every task: ``python -m tasks.<name> fit|validate|test|predict``.

It is Lightning's ``LightningCLI`` (typed ``__init__`` arguments become the config, ``--config``
takes the YAMLs in ``configs/``, optimizers are injectable) driven by the task's declaration
(``tasks.spec.TaskSpec``), with what every task of this project needs on top:

* ``--backbone ALPHA`` (the width multiplier, Section 3.3) and ``--resolution PX`` (the
  resolution multiplier, Section 3.4; its default is the task's), linked into the model and the
  data module;
* the links a task declares: e.g. ``data.num_classes -> model.num_classes`` for the classifiers
  and detectors, applied once the data module has read its dataset;
* the callbacks a task declares, e.g. its ``PredictionWriter``;
* the run length: whichever of ``--trainer.max_time`` / ``max_steps`` / ``max_epochs`` the user
  gives, else the task's ``default_steps``;
* checkpoints (last + best by the task's main metric) in ``<default_root_dir>/checkpoints``,
  so that ``--ckpt_path last`` resumes a killed run from there;
* the resolved config saved beside each run (Lightning's ``SaveConfigCallback``) and
  ``metrics.json`` written by every validate/test run (``tasks.callbacks.MetricsJSON``);
* ``validate``/``test``/``predict`` score a checkpoint (``--ckpt_path``), never an untrained model,
  and a checkpoint is used only with data whose outputs have the same names (``tasks.guards``);
* bad input ends with one sentence on stderr and exit status 2, not a traceback; a run stopped by
  SIGTERM ends with status 143 and one stopped by Ctrl-C with 130 (128 + the signal, as a shell
  reports it), after saving ``last.ckpt``, so that ``fit && test`` does not go on as if it had
  finished.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning import Callback, LightningModule, Trainer
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities.exceptions import SIGTERMException

from backbone.errors import BadInputError
from backbone.ranges import Resolution, Width, option_sentence, refuse
from datasets.text import read_text
from tasks.callbacks import MetricsJSON, ValidationPlan
from tasks.checkpoints import AtomicCheckpointIO, TaskCheckpoint, TaskStamp, check_checkpoint, resolve_ckpt_path
from tasks.finite import FiniteLoss
from tasks.guards import CheckpointGuard
from tasks.outputs import ensure_folder
from tasks.spec import TaskSpec
from tasks.trainer import TaskTrainer

DEFAULT_WIDTH = 1.0  # --backbone: the paper's base MobileNet
DEFAULT_SEED = 0


class TaskArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, with an out-of-range option refused in one sentence (no usage dump)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        sentence = option_sentence(message)
        if sentence is None or not self.exit_on_error:
            super().error(message, ex)
        refuse(sentence)


class TaskCLI(LightningCLI):
    """LightningCLI for one task of the suite.

    Args:
        spec: the task's declaration: its classes, monitor, default resolution and run length,
            links and callbacks.
        callbacks: callbacks added to the task's own for this run (a benchmark's clock ...).
        args: command-line arguments (``None`` reads ``sys.argv``), as in LightningCLI.
        run, kwargs: as in LightningCLI.
    """

    def __init__(
        self,
        spec: TaskSpec,
        *,
        callbacks: Sequence[Callback] = (),
        args: Sequence[str] | dict[str, Any] | None = None,
        run: bool = True,
        **kwargs: Any,
    ) -> None:
        self.spec = spec
        self.validation_plan = ValidationPlan()
        self.guard = CheckpointGuard()
        task_callbacks = [make() for make in spec.callbacks]
        trainer_defaults = {
            "default_root_dir": f"runs/{spec.name}",
            "callbacks": [
                MetricsJSON(),
                TaskStamp(spec.name),
                self.validation_plan,
                self.guard,
                FiniteLoss(),
                *task_callbacks,
                *callbacks,
            ],
            "log_every_n_steps": 10,
        }
        trainer_defaults.update(kwargs.pop("trainer_defaults", {}))
        super().__init__(
            spec.module,
            spec.data,
            save_config_kwargs={"overwrite": True},
            trainer_class=TaskTrainer,  # adds ``export`` and ``test --deployed`` (tasks.trainer)
            # Reproducible by default (Lightning's CLI draws a random seed); --seed_everything N changes it.
            seed_everything_default=DEFAULT_SEED,
            auto_configure_optimizers=False,  # optimizers are the model's own --model.optimizer
            trainer_defaults=trainer_defaults,
            args=args,
            run=run,
            **kwargs,
        )

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's four, and ``export`` (``TaskTrainer.export``): the model and data come from the config."""
        return {**LightningCLI.subcommands(), "export": {"model", "datamodule"}}

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        # An option outside its declared range (backbone.ranges) ends in one sentence at parse time.
        if self.parser_class is LightningArgumentParser:
            self.parser_class = TaskArgumentParser
        if self.spec.commands:  # the task's own commands are dispatched before this parser: name them in --help
            names = ", ".join(f"'python -m tasks.{self.spec.name} {name} --help'" for name in self.spec.commands)
            kwargs.setdefault("epilog", f"The task's own commands: {names}.")
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--backbone", type=Width, default=DEFAULT_WIDTH, help="MobileNet width multiplier alpha, in (0, 1]."
        )
        parser.add_argument(
            "--resolution", type=Resolution, default=self.spec.resolution, help="Input size in pixels (square)."
        )
        parser.link_arguments("backbone", "model.width")
        parser.link_arguments("resolution", "model.resolution")
        parser.link_arguments("resolution", "data.resolution")
        for source, target in self.spec.links:
            parser.link_arguments(source, target, apply_on="instantiate")
        for sources, target, compute in self.spec.parse_links:
            parser.link_arguments(sources, target, compute_fn=compute, apply_on="parse")
        parser.add_lightning_class_args(TaskCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": self.spec.monitor,
                "checkpoint.mode": self.spec.mode,
                "checkpoint.save_last": True,
                "checkpoint.save_top_k": 1,
                "checkpoint.filename": "best-{epoch}-{step}",
                "checkpoint.auto_insert_metric_name": False,
                # A new run in the folder replaces last.ckpt: with Lightning's version counter it
                # wrote last-v1.ckpt and --ckpt_path last went on finding the previous run's file.
                "checkpoint.enable_version_counter": False,
            }
        )

    def _run_root(self, config: Any) -> Path:
        return Path(config["trainer"].get("default_root_dir") or f"runs/{self.spec.name}")

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        """Parse, then check ``--ckpt_path`` before LightningCLI applies the checkpoint's hparams.

        ``last``/``best`` are resolved in the run's checkpoint folder (refused, naming the folder,
        when there is none: Lightning would go on with random weights); a file that is not a
        checkpoint, or holds another task or size, is refused in one sentence. A ``--config`` file is
        read through the project's text reader first (UTF-8, with or without BOM, else one sentence).
        """
        check_config_files(sys.argv[1:] if args is None else args)
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        monitor = self.spec.monitor_for(config["data"]) if self.spec.monitor_for else None
        if monitor and config.get("checkpoint") is not None and config["checkpoint"]["monitor"] == self.spec.monitor:
            config["checkpoint"]["monitor"] = monitor  # decided before any callback state is restored
        if config.get("deployed") is not None:
            self._apply_deployed(config)
            return
        folder = self._run_root(config) / "checkpoints"
        ckpt_path = resolve_ckpt_path(config.get("ckpt_path"), folder)
        self.guard.check_arguments(subcommand, config, ckpt_path)  # no untrained model is scored
        if ckpt_path in (None, "hpc", "registry"):
            return
        config["ckpt_path"] = ckpt_path
        width, resolution = check_checkpoint(
            ckpt_path,
            self.spec.name,
            config["backbone"],
            config["resolution"],
            DEFAULT_WIDTH,
            self.spec.resolution,
            # options of the model, including those linked in from the data at instantiation
            set(vars(config["model"])) | {t.split(".", 1)[1] for _, t in self.spec.links if t.startswith("model.")},
        )
        set_size(config, width, resolution)

    def _apply_deployed(self, config: Any) -> None:
        """``test --deployed DIR``: the model is the exported one, built with the hyper-parameters
        ``DIR/deploy.json`` saved (as ``--ckpt_path`` applies a checkpoint's)."""
        from tasks.export import deploy_hparams

        if config.get("ckpt_path") is not None:
            raise BadInputError(
                "test takes either --ckpt_path (a checkpoint) or --deployed (an exported model), not both."
            )
        hparams = {k: v for k, v in deploy_hparams(config["deployed"], self.spec.name).items() if not k.startswith("_")}
        subcommand = self.config["subcommand"]
        self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        config = self.config[subcommand]
        width, resolution = hparams["width"], hparams["resolution"]
        set_size(config, width, resolution)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        # Checkpoints live in one fixed folder per run root (not per logger version), so
        # ``--ckpt_path last`` finds the last checkpoint of the previous, interrupted run.
        root = ensure_folder(self._run_root(config), "run folder (--trainer.default_root_dir)")
        trainer = config["trainer"]
        # The run's length is whichever of max_time / max_steps / max_epochs the user gives; the
        # task's default length applies only when none is given, counted in optimizer steps so
        # that it fits a set of any size.
        if trainer.get("max_epochs") is None and trainer.get("max_steps") in (None, -1) and not trainer.get("max_time"):
            trainer["max_steps"] = self.spec.default_steps
        self.validation_plan.enabled = trainer.get("val_check_interval") is None and trainer.get(
            "check_val_every_n_epoch"
        ) in (None, 1)
        if config.get("checkpoint") is not None and config["checkpoint"].get("dirpath") is None:
            config["checkpoint"]["dirpath"] = str(root / "checkpoints")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # keep a user's own plugin
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer


def set_size(config: Any, width: float, resolution: int) -> None:
    """Put a checkpoint's or deployed model's width and resolution into every option that holds them."""
    config["backbone"] = config["model"]["width"] = width
    config["resolution"] = config["model"]["resolution"] = config["data"]["resolution"] = resolution


# Boolean options written as bare flags (``export --int8 --overwrite``); jsonargparse wants a value.
FLAGS = {"export": ("--int8", "--overwrite")}


def bare_flags(argv: list[str]) -> list[str]:
    """``argv`` with each bare flag of its subcommand (``FLAGS``) given the value ``true``."""
    flags = FLAGS.get(argv[0], ()) if argv else ()
    out: list[str] = []
    for index, token in enumerate(argv):
        out.append(token)
        following = argv[index + 1] if index + 1 < len(argv) else None
        if token in flags and (following is None or following.startswith("-")):
            out.append("true")
    return out


def check_config_files(args: ArgsType) -> None:
    """Each ``--config``/``-c`` file among ``args`` is UTF-8 text (jsonargparse reads it as such, and
    a file saved in another encoding ended in a ``UnicodeDecodeError`` traceback)."""
    if not isinstance(args, (list, tuple)):
        return
    for index, token in enumerate(args):
        value = None
        if token in ("-c", "--config") and index + 1 < len(args):
            value = args[index + 1]
        elif isinstance(token, str) and token.startswith("--config="):
            value = token.split("=", 1)[1]
        if isinstance(value, str) and Path(value).expanduser().is_file():
            read_text(Path(value).expanduser(), "config file (--config)", "a YAML config of the task's options")


def _one_sentence(error: BaseException) -> str:
    """The user-facing line of an error, also when a DataLoader worker re-raised it."""
    text = str(error).strip()
    if "Original Traceback" in text:  # re-raised from a worker: the last line is the message
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text


class Interruption(Callback):
    """Remembers the signal that interrupted a run (Ctrl-C, SIGTERM), for the exit status.

    Lightning ends a run interrupted by Ctrl-C with ``sys.exit(1)`` and one stopped by SIGTERM
    with a ``SIGTERMException`` (a ``SystemExit`` of status 0): a script's ``fit && test`` then
    went on to test a half-trained model. Every callback's ``on_exception`` runs before that exit,
    ``TaskCheckpoint``'s (which saves ``last.ckpt``) included.
    """

    def __init__(self) -> None:
        self.signal: signal.Signals | None = None

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.signal = signal.SIGINT
        elif isinstance(exception, SIGTERMException):
            self.signal = signal.SIGTERM


def main(spec: TaskSpec, args: Sequence[str] | None = None, callbacks: Sequence[Callback] = ()) -> None:
    """``python -m tasks.<name> ...``: one of the task's own commands (``spec.commands``, e.g.
    ``partition``) or its ``TaskCLI`` (``args`` None reads ``sys.argv``).

    Bad input ends with one clear sentence and exit status 2. A run stopped by Ctrl-C or SIGTERM
    ends with 128 + the signal's number (130, 143), the status a shell reports for a process the
    signal ended, once ``last.ckpt`` is saved.
    """
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in spec.commands:
        spec.commands[argv[0]](argv[1:])
        return
    interruption = Interruption()
    try:
        TaskCLI(spec, callbacks=[*callbacks, interruption], args=bare_flags(argv))
    except (BadInputError, RuntimeError) as error:
        # DataLoader workers re-raise a worker's BadInputError under its own type only when it
        # can be rebuilt from one string; otherwise it arrives wrapped in a RuntimeError.
        if not isinstance(error, BadInputError) and "BadInputError" not in str(error):
            raise
        print(f"error: {_one_sentence(error)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # Ctrl-C before or after the trainer's own handling
        raise SystemExit(128 + signal.SIGINT) from None
    except SystemExit:
        if interruption.signal is not None:
            raise SystemExit(128 + interruption.signal) from None
        raise
