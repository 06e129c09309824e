"""The Trainer of every task: Lightning's, plus ``export`` and ``test --deployed``.

LightningCLI turns each Trainer method it is told about into a subcommand whose options are the
method's arguments, so ``export`` is a method here and ``--deployed`` an argument of ``test``:
both then take ``--config``, ``--data.*``, ``--ckpt_path last`` like every other subcommand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytorch_lightning import LightningDataModule, LightningModule, Trainer

from backbone.ranges import PositiveInt
from deploy.runtime import DEFAULT_RUNTIME, Runtime

CALIBRATION_IMAGES = 300  # NNCF's default subset size; ONNX Runtime's docs suggest a few hundred too


class TaskTrainer(Trainer):
    """``Trainer`` with the deploy subcommands (``tasks.export``)."""

    def export(
        self,
        model: LightningModule,
        datamodule: LightningDataModule,
        ckpt_path: str,
        out: str,
        runtime: Runtime = DEFAULT_RUNTIME,
        int8: bool = False,
        calibration: PositiveInt = CALIBRATION_IMAGES,
        overwrite: bool = False,
    ) -> Path:
        """Write the inference model of a checkpoint and ``deploy.json`` to the folder ``out``.

        Args:
            ckpt_path: the checkpoint (``last``, ``best`` or a file) to export.
            out: the deploy folder to write (refused if it exists, unless ``overwrite``).
            runtime: ``openvino`` (``model.xml`` + ``model.bin``) or ``onnxruntime`` (``model.onnx``).
            int8: post-training static int8 quantisation, calibrated on ``calibration`` training images.
            calibration: training images the int8 ranges are calibrated on.
            overwrite: replace an existing ``out`` folder.
        """
        from tasks.export import export_task

        folder = export_task(model, datamodule, ckpt_path, out, runtime, int8, calibration, overwrite)
        print(f"Exported {ckpt_path} to {folder} ({runtime}, {'int8' if int8 else 'fp32'}).")
        return folder

    def test(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        ckpt_path: str | Path | None = None,
        verbose: bool = True,
        datamodule: LightningDataModule | None = None,
        weights_only: bool | None = None,
        deployed: str | None = None,
    ) -> Any:
        """Lightning's ``test``; ``deployed``: score the exported model of that deploy folder instead
        of a checkpoint (the task's own metric, ``metrics.json`` as ``test`` writes it).

        Args:
            deployed: a folder written by ``export``; its model is scored in place of ``--ckpt_path``.
        """
        if deployed is not None:
            from tasks.export import attach_deployed

            attach_deployed(model, datamodule, deployed)
        return super().test(model, dataloaders, ckpt_path, verbose, datamodule, weights_only)
