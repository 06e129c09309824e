"""The one command line shared by every task: ``python -m tasks.<name> fit|validate|test|predict``.

It is Lightning's ``LightningCLI`` (typed ``__init__`` arguments become the config, ``--config``
takes the YAMLs in ``configs/``, optimizers are injectable) with what every task of this project
needs on top:

* ``--backbone ALPHA`` (the width multiplier, Section 3.3) and ``--resolution PX`` (the
  resolution multiplier, Section 3.4), linked into the model and the data module;
* the links a task declares (``links``): e.g. ``data.num_classes -> model.num_classes`` for the
  classifiers and detectors, applied once the data module has read its dataset;
* the callbacks a task declares (``callbacks``), e.g. its ``PredictionWriter``;
* checkpoints (last + best by the task's main metric) in ``<default_root_dir>/checkpoints``,
  so that ``--ckpt_path last`` resumes a killed run from there;
* the resolved config saved beside each run (Lightning's ``SaveConfigCallback``) and
  ``metrics.json`` written by every validate/test run (``tasks.callbacks.MetricsJSON``);
* bad input ends with one sentence on stderr and exit status 2, not a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning import Callback, LightningDataModule, LightningModule, Trainer
from pytorch_lightning.cli import ArgsType, LightningArgumentParser, LightningCLI

from backbone.errors import BadInputError
from backbone.mobilenet import check_resolution, check_width
from backbone.ranges import Resolution, Width, option_sentence, refuse
from datasets.text import read_text
from tasks.callbacks import MetricsJSON, ValidationPlan
from tasks.checkpoints import AtomicCheckpointIO, TaskCheckpoint, TaskStamp, check_checkpoint, resolve_ckpt_path
from tasks.outputs import ensure_folder

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
        model_class: the task's ``TaskModule``; its ``__init__`` takes ``width`` and ``resolution``.
        datamodule_class: the task's ``TaskDataModule``; it takes ``resolution``.
        task: the task's name, used for the default run folder ``runs/<task>``.
        monitor: the metric that picks the best checkpoint (``top1``, ``mAP`` ...).
        resolution: the default input size of the task.
        links: ``(source, target)`` pairs linked when the classes are instantiated, e.g.
            ``("data.num_classes", "model.num_classes")``: the source is an attribute of the
            data module, read after its ``__init__``.
        callbacks: callbacks the task always adds (its prediction writer ...).
        args: command-line arguments (``None`` reads ``sys.argv``), as in LightningCLI.
    """

    def __init__(
        self,
        model_class: type[LightningModule],
        datamodule_class: type[LightningDataModule],
        *,
        task: str,
        monitor: str,
        resolution: int = 224,
        mode: str = "max",
        links: Sequence[tuple[str, str]] = (),
        callbacks: Sequence[Callback] = (),
        default_steps: int = 1000,
        args: Sequence[str] | dict[str, Any] | None = None,
        run: bool = True,
        **kwargs: Any,
    ) -> None:
        self.task = task
        self.monitor = monitor
        self.mode = mode
        self.default_resolution = resolution
        self.links = tuple(links)
        self.default_steps = default_steps
        self.validation_plan = ValidationPlan()
        trainer_defaults = {
            "default_root_dir": f"runs/{task}",
            "callbacks": [MetricsJSON(), TaskStamp(task), self.validation_plan, *callbacks],
            "log_every_n_steps": 10,
        }
        trainer_defaults.update(kwargs.pop("trainer_defaults", {}))
        super().__init__(
            model_class,
            datamodule_class,
            save_config_kwargs={"overwrite": True},
            # Reproducible by default (Lightning's CLI draws a random seed); --seed_everything N changes it.
            seed_everything_default=DEFAULT_SEED,
            auto_configure_optimizers=False,  # optimizers are the model's own --model.optimizer
            trainer_defaults=trainer_defaults,
            args=args,
            run=run,
            **kwargs,
        )

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        # An option outside its declared range (backbone.ranges) ends in one sentence at parse time.
        if self.parser_class is LightningArgumentParser:
            self.parser_class = TaskArgumentParser
        return super().init_parser(**kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--backbone", type=Width, default=DEFAULT_WIDTH, help="MobileNet width multiplier alpha, in (0, 1]."
        )
        parser.add_argument(
            "--resolution", type=Resolution, default=self.default_resolution, help="Input size in pixels (square)."
        )
        parser.link_arguments("backbone", "model.width")
        parser.link_arguments("resolution", "model.resolution")
        parser.link_arguments("resolution", "data.resolution")
        for source, target in self.links:
            parser.link_arguments(source, target, apply_on="instantiate")
        parser.add_lightning_class_args(TaskCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": self.monitor,
                "checkpoint.mode": self.mode,
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
        return Path(config["trainer"].get("default_root_dir") or f"runs/{self.task}")

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
        check_width(config["backbone"])
        check_resolution(config["resolution"])
        folder = self._run_root(config) / "checkpoints"
        ckpt_path = resolve_ckpt_path(config.get("ckpt_path"), folder)
        if ckpt_path in (None, "hpc", "registry"):
            return
        config["ckpt_path"] = ckpt_path
        width, resolution = check_checkpoint(
            ckpt_path,
            self.task,
            config["backbone"],
            config["resolution"],
            DEFAULT_WIDTH,
            self.default_resolution,
            # options of the model, including those linked in from the data at instantiation
            set(vars(config["model"])) | {t.split(".", 1)[1] for _, t in self.links if t.startswith("model.")},
        )
        config["backbone"] = config["model"]["width"] = width
        config["resolution"] = config["model"]["resolution"] = config["data"]["resolution"] = resolution

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
            trainer["max_steps"] = self.default_steps
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


def main(
    model_class: type[LightningModule],
    datamodule_class: type[LightningDataModule],
    *,
    args: Sequence[str] | None = None,
    max_epochs: int | None = None,
    **options: Any,
) -> None:
    """Run the task's ``TaskCLI`` (``options``: task, monitor, resolution, links, callbacks,
    default_steps ...); bad input ends with one clear sentence and exit status 2.

    ``max_epochs`` (transitional, for tasks not yet converted to ``default_steps``) bounds the
    default run in epochs instead of steps.
    """
    try:
        TaskCLI(
            model_class,
            datamodule_class,
            args=args,
            trainer_defaults={"max_epochs": max_epochs} if max_epochs else {},
            **options,
        )
    except (BadInputError, RuntimeError) as error:
        # DataLoader workers re-raise a worker's BadInputError under its own type only when it
        # can be rebuilt from one string; otherwise it arrives wrapped in a RuntimeError.
        if not isinstance(error, BadInputError) and "BadInputError" not in str(error):
            raise
        print(f"error: {_one_sentence(error)}", file=sys.stderr)
        raise SystemExit(2) from None
