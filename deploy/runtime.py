"""The two inference runtimes a deployed model runs on: OpenVINO and ONNX Runtime, fp32 or int8.

Both are what users of this field already deploy with on CPUs; which one is the default was
chosen by measurement (``docs/deploy.md``; ``python -m benchmarks --section deploy`` measures
both on the user's machine):

* OpenVINO (default): the network is converted straight from PyTorch (``ov.convert_model``) and
  quantised by NNCF, OpenVINO's own post-training quantiser. On a machine with AVX-512 VNNI and
  AMX its int8 ran MobileNet 1.0-224 7.6x faster than the project's compiled PyTorch at batch 32,
  against 3.6x for ONNX Runtime's int8. Converting from an ONNX file instead left the 13 depthwise
  convolutions in bf16 (1.5x slower), so the PyTorch frontend is used.
* ONNX Runtime: ``torch.onnx.export`` (the dynamo exporter) and static QDQ quantisation,
  per-channel weights, calibrated with MinMax (``onnxruntime.quantization.quantize_static``).

OpenVINO runs in bf16 by default on CPUs with AMX: every model here is compiled with
``INFERENCE_PRECISION_HINT=f32``, so an "fp32" model is fp32 on every machine (int8 layers stay
int8). Every exported model takes a dynamic batch.
"""

from __future__ import annotations

import functools
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

Runtime = Literal["openvino", "onnxruntime"]
RUNTIMES: tuple[str, ...] = ("openvino", "onnxruntime")
DEFAULT_RUNTIME: Runtime = "openvino"
# The files each runtime's model is made of, inside a deploy folder.
MODEL_FILES: dict[str, tuple[str, ...]] = {"openvino": ("model.xml", "model.bin"), "onnxruntime": ("model.onnx",)}
INPUT_NAME = "images"
ONNX_OPSET = 18
# int8 is for the arithmetic: the convolutions and matrix multiplies (over 99% of every task's
# mult-adds). What a task appends to its network stays fp32: SSD's box decoding (exp of the
# offsets times anchor sizes of hundreds of pixels) and softmax, the face embedder's L2
# normalisation, geolocation's sum of log-probabilities over the hierarchy. Quantised with the
# rest, detection's boxes moved by 9 px at the median and mAP fell from 0.45 to 0.004 (demo).
INT8_OPS = ("Conv", "MatMul", "Gemm")
FLOAT_TAIL_OPS = {
    # OpenVINO operation types NNCF would otherwise quantise (its eltwise and reduction patterns)
    "openvino": ("Multiply", "Add", "Subtract", "Divide", "Exp", "SoftMax", "LogSoftmax", "Sqrt", "ReduceL2"),
}  # the dynamo exporter's own default opset in torch 2.5+; QDQ per-channel needs >= 13


def _numpy(batch: Tensor | np.ndarray) -> np.ndarray:
    array = batch.detach().cpu().numpy() if isinstance(batch, Tensor) else np.asarray(batch)
    return np.ascontiguousarray(array, dtype=np.float32)


def export_network(
    network: nn.Module,
    example: Tensor,
    folder: Path,
    runtime: Runtime,
    output_names: Sequence[str],
    calibration: Sequence[Tensor] | None = None,
) -> tuple[str, ...]:
    """Write ``network`` (eval mode, one image batch in, ``output_names`` tensors out) into ``folder``.

    ``calibration`` given: int8 post-training static quantisation, calibrated on those batches
    (every image of them). Returns the names of the files written.
    """
    network = network.eval()
    if runtime == "openvino":
        _export_openvino(network, example, folder, output_names, calibration)
    elif runtime == "onnxruntime":
        _export_onnxruntime(network, example, folder, output_names, calibration)
    else:
        raise ValueError(f"Unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}.")
    return MODEL_FILES[runtime]


def _images(calibration: Sequence[Tensor]) -> list[np.ndarray]:
    """One calibration item per image: the quantisers' statistics are per sample."""
    return [_numpy(image[None]) for batch in calibration for image in batch]


def _export_openvino(
    network: nn.Module, example: Tensor, folder: Path, output_names: Sequence[str], calibration: Sequence[Tensor] | None
) -> None:
    import openvino as ov

    openvino_core()  # loaded before NNCF's own Cores come and go (see openvino_core)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape-dependent Python branches
        model = ov.convert_model(network, example_input=example)
    model.reshape({model.inputs[0]: ov.PartialShape([-1, *example.shape[1:]])})
    model.inputs[0].get_tensor().set_names({INPUT_NAME})
    for output, name in zip(model.outputs, output_names, strict=True):
        output.get_tensor().set_names({name})
    if calibration is not None:
        import nncf

        items = _images(calibration)
        # NNCF's defaults for CNNs: min/max per-channel weights, activation ranges from the samples,
        # fast bias correction. subset_size: every calibration image, not NNCF's 300. The task's tail
        # stays fp32 (FLOAT_TAIL_OPS).
        ignored = nncf.IgnoredScope(types=list(FLOAT_TAIL_OPS["openvino"]), validate=False)
        model = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items), ignored_scope=ignored)
    # compress_to_fp16=False: the fp32 model's weights stay fp32 on disk (ov.save_model's default halves them).
    ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)


def _export_onnxruntime(
    network: nn.Module, example: Tensor, folder: Path, output_names: Sequence[str], calibration: Sequence[Tensor] | None
) -> None:
    target = folder / "model.onnx"
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        fp32 = Path(scratch) / "fp32.onnx" if calibration is not None else target
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                network,
                (example,),
                str(fp32),
                input_names=[INPUT_NAME],
                output_names=list(output_names),
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                opset_version=ONNX_OPSET,
                dynamo=True,
                verbose=False,
                external_data=False,
            )
        if calibration is None:
            return
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        class Reader(CalibrationDataReader):
            def __init__(self, items: list[np.ndarray]) -> None:
                self.items = iter(items)

            def get_next(self) -> dict[str, np.ndarray] | None:
                item = next(self.items, None)
                return None if item is None else {INPUT_NAME: item}

        prepared = Path(scratch) / "prepared.onnx"
        # ONNX shape inference + graph fusions, as ORT's docs advise; ORT's own symbolic shape
        # inference is skipped: it fails on the Expand of F.normalize's dynamic-batch graph.
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            Reader(_images(calibration)),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(INT8_OPS),  # the task's tail stays fp32 (FLOAT_TAIL_OPS)
        )


@functools.cache
def openvino_core() -> Any:
    """The process's one ``ov.Core``, kept for the process's life (OpenVINO advises one Core).

    Why kept: a Core that is destroyed can unload the CPU plugin, and a child forked after that (a
    DataLoader worker, a test's forked run) died of SIGSEGV; measured with two Runners in turn, and
    after NNCF's own short-lived Cores. Holding one Core keeps the plugin loaded."""
    import openvino as ov

    return ov.Core()


class Runner:
    """A deployed model loaded in its runtime: ``runner(images)`` -> its outputs, as numpy arrays.

    ``images`` is a float32 (N, 3, H, W) batch, preprocessed as ``deploy.json`` says; ``threads``
    defaults to PyTorch's intra-op thread count (what the checkpoint's runs used).
    """

    def __init__(self, folder: str | Path, runtime: Runtime, threads: int | None = None) -> None:
        self.folder = Path(folder)
        self.runtime = runtime
        self.threads = int(threads or torch.get_num_threads())
        self._run: Callable[[np.ndarray], list[np.ndarray]] = (
            self._openvino() if runtime == "openvino" else self._onnxruntime()
        )

    def _openvino(self) -> Callable[[np.ndarray], list[np.ndarray]]:
        compiled = openvino_core().compile_model(
            str(self.folder / "model.xml"),
            "CPU",
            {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY"},
        )
        request = compiled.create_infer_request()
        outputs = list(compiled.outputs)

        def run(images: np.ndarray) -> list[np.ndarray]:
            result = request.infer({0: images})
            return [np.array(result[output]) for output in outputs]  # copies: the request reuses its buffers

        return run

    def _onnxruntime(self) -> Callable[[np.ndarray], list[np.ndarray]]:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(self.folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(images: np.ndarray) -> list[np.ndarray]:
            return list(session.run(None, {name: images}))

        return run

    def __call__(self, images: Tensor | np.ndarray) -> list[np.ndarray]:
        return self._run(_numpy(images))


class DeployedForward(nn.Module):
    """A deployed model in place of a module's ``forward``: tensors in, tensors out, on the input's device.

    ``single`` returns the first output alone (every task's forward but detection's returns one tensor).
    """

    def __init__(self, runner: Runner, single: bool = True) -> None:
        super().__init__()
        self.runner = runner
        self.single = single

    def forward(self, images: Tensor) -> Tensor | list[Tensor]:
        outputs = [torch.from_numpy(out).to(images.device) for out in self.runner(images)]
        return outputs[0] if self.single else outputs


def runtime_version(runtime: Runtime) -> str:
    """The runtime's package version, for ``deploy.json``."""
    if runtime == "openvino":
        import openvino as ov

        return str(ov.__version__)
    import onnxruntime as ort

    return str(ort.__version__)
