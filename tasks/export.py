"""``python -m tasks.<task> export`` and ``test --deployed``: a task's checkpoint to a deploy folder and back.

Export writes what the task module's ``deploy_network()`` computes (by default its ``forward``:
the network and whatever turns its output into the task's answer, e.g. geolocation's product
over the cell hierarchy, the face embedder's L2 normalisation) with a dynamic batch, checks the
exported model against PyTorch on a real batch of the data, and writes ``deploy.json``
(``deploy.package``). ``test --deployed DIR`` rebuilds the task module from ``deploy.json`` and
runs the task's own ``test`` with the deployed model in place of ``forward``
(``TaskModule.use_deployed``), so the metric, ``metrics.json`` and every output file are the
task's, computed on the exported model's outputs.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import LightningDataModule, LightningModule
from torch import Tensor

from backbone.checkpoint_reader import file_sha256, read_checkpoint
from backbone.errors import BadInputError
from deploy.package import (
    decode_state,
    deploy_folder,
    encode_state,
    max_difference,
    read_deploy,
    write_deploy_json,
)
from deploy.runtime import Runner, Runtime, export_network, runtime_version
from tasks.checkpoints import OUTPUTS_KEY, STAMP_KEY
from tasks.guards import check_output_names

# fp32 export is the same arithmetic in another order: outputs agree to float rounding (1e-7 of
# their scale on trained models; 2e-3 on a 5-step tiny SSD whose fp32 features are 0.1 from fp64).
# A wrong graph, or a layer the runtime reads differently, is off by the output's own scale: beyond
# 1% of it the export is refused, not shipped. (Box outputs are pixels: the scale is their size.)
FP32_TOLERANCE = 1e-2
# The traced example's batch: torch.export specialises a batch of 1 to a constant (its 0/1
# specialisation), which left the ONNX SSD graph fixed at batch 1; two images keep it dynamic.
EXAMPLE_IMAGES = 2


def describe_transform(transform: Any) -> list[dict[str, Any]]:
    """The data's evaluation transform as JSON: each step's class and public settings, in order."""
    steps = getattr(transform, "transforms", [transform])
    described = []
    for step in steps:
        settings = {k: v for k, v in vars(step).items() if not k.startswith("_") and k != "training"}
        described.append({"op": type(step).__name__, **json.loads(json.dumps(settings, default=str))})
    return described


def calibration_batches(module: Any, data: LightningDataModule, count: int) -> list[Tensor]:
    """``count`` training images, as the network takes them, in the data's batches (the last one cut)."""
    data.setup("fit")
    batches, seen = [], 0
    for batch in data.train_dataloader():
        images = module.deploy_inputs(batch)[: count - seen]
        batches.append(images)
        seen += len(images)
        if seen >= count:
            break
    if not batches:
        raise BadInputError("The training split holds no images to calibrate (or check) the export with.")
    return batches


def _load_weights(module: Any, ckpt_path: str) -> dict[str, Any]:
    checkpoint = read_checkpoint(ckpt_path)
    module.on_load_checkpoint(checkpoint)  # renamed keys, geolocation's head sizes, shape checks
    module.load_state_dict(checkpoint["state_dict"])
    return checkpoint


def export_task(
    module: LightningModule,
    data: LightningDataModule,
    ckpt_path: str,
    out: str,
    runtime: Runtime,
    int8: bool,
    calibration: int,
    overwrite: bool,
) -> Path:
    """Export ``module`` with the weights of ``ckpt_path`` into the deploy folder ``out``; return it."""
    module.check_export(runtime, int8)
    checkpoint = _load_weights(module, ckpt_path)
    stamp = checkpoint.get(STAMP_KEY) or {}
    module.eval()
    # The data and the checkpoint must mean the same outputs, as for any use of a checkpoint.
    outputs = stamp.get(OUTPUTS_KEY)
    check_output_names(ckpt_path, outputs, data.output_names("fit"))
    batches = calibration_batches(module, data, calibration if int8 else EXAMPLE_IMAGES)
    network = module.deploy_network().eval()
    example = torch.cat(batches)[:EXAMPLE_IMAGES]
    with torch.no_grad():
        expected = network(example)
    expected = [expected] if isinstance(expected, Tensor) else list(expected)
    names = list(module.deploy_outputs)
    with deploy_folder(out, overwrite) as folder:
        files = export_network(network, example, folder, runtime, names, batches if int8 else None)
        got = Runner(folder, runtime)(example)
        difference, relative = max_difference([e.numpy() for e in expected], got)
        if not int8 and relative > FP32_TOLERANCE:
            raise BadInputError(
                f"The exported {runtime} model differs from the checkpoint by {difference:.3g} on a training batch "
                f"({relative:.2g} of the output's scale, more than {FP32_TOLERANCE}); the export was not written."
            )
        record = {
            "task": stamp.get("task"),
            "runtime": runtime,
            "runtime_version": runtime_version(runtime),
            "precision": "int8" if int8 else "fp32",
            "calibration_images": sum(len(b) for b in batches) if int8 else 0,
            "width": module.hparams.width,
            "resolution": module.hparams.resolution,
            "files": list(files),
            "input": {
                "name": "images",
                "shape": ["batch", *example.shape[1:]],
                "dtype": "float32",
                "layout": "NCHW, RGB",
                "preprocessing": describe_transform(data.predict_transform()),
            },
            "outputs": [
                {"name": name, "shape": ["batch", *e.shape[1:]]} for name, e in zip(names, expected, strict=True)
            ],
            "output_names": outputs,
            "max_abs_difference_to_checkpoint": difference,
            "max_relative_difference_to_checkpoint": relative,
            "checkpoint": {"path": str(ckpt_path), "sha256": file_sha256(ckpt_path)},
            "exported_with": {"torch": torch.__version__, "python": platform.python_version()},
            "hparams": json.loads(json.dumps(dict(module.hparams), default=str)),
            "state": encode_state(module.deploy_state()),
            **module.deploy_metadata(),
        }
        write_deploy_json(folder, record)
    return Path(out).expanduser()


def deploy_hparams(folder: str, task: str) -> dict[str, Any]:
    """The module hyper-parameters a deploy folder was exported with (checked to be ``task``'s)."""
    return dict(read_deploy(folder, task)["hparams"])


def attach_deployed(module: Any, data: LightningDataModule, folder: str, stage: str = "test") -> dict[str, Any]:
    """Make ``module`` run the deployed model of ``folder``; return its ``deploy.json``."""
    record = read_deploy(folder)
    path = Path(folder).expanduser()
    data.setup(stage)
    check_output_names(str(path), record.get("output_names"), data.output_names(stage))
    state = decode_state(record.get("state") or {}, path / "deploy.json")
    own = module.state_dict()
    for name, tensor in state.items():
        if name not in own or tuple(own[name].shape) != tuple(tensor.shape):
            raise BadInputError(f"{str(path)!r} holds state {name!r} that this task's model does not: re-run export.")
    module.load_state_dict(state, strict=False)
    runner = Runner(path, record["runtime"])
    module.use_deployed(module.deployed_forward(runner, record))
    module.deployed = {"folder": str(path), **{k: record[k] for k in ("runtime", "precision")}}
    return record
