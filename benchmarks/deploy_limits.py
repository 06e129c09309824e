"""The machine's int8 limit for the deploy section: large int8 matrix multiplies, measured in the same run.

The fp32 limit is ``benchmarks.common.measure_mm_peak`` (sgemm). The int8 one is the best of two
int8 GEMMs on ``size`` x ``size`` matrices (2 n^3 operations each):

* ONNX Runtime's ``MatMulInteger`` (uint8 x int8 -> int32), MLAS's int8 kernel, which is what a
  quantised model's convolutions run on in ONNX Runtime (and OpenVINO's oneDNN int8 kernels use
  the same instructions);
* ``torch._int_mm`` (int8 x int8 -> int32), where this PyTorch has a fast CPU kernel for it (on
  some builds it is a reference loop, a hundred times slower: it is reported, and timed on at most
  512 x 512 matrices so that it costs a second).

Without an int8 dot-product instruction (AVX-512 VNNI, AVX-VNNI or AMX), an int8 multiply-add
is built from ``vpmaddubsw`` + ``vpmaddwd`` (AVX2): measured on the AVX2 development machine
1.1-1.8x the fp32 GEMM (by matrix size and threads), not the ~4x VNNI gives. The ratio of the two
limits says what int8 can gain here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import time_call

# torch._int_mm is a reference loop on some CPU builds (~0.6 GOP/s: 27 s for one 2048^3 call).
TORCH_INT_MM_MAX_SIZE = 512
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16", "avx512f", "avx2")


@dataclass(frozen=True)
class Int8Limit:
    """int8 GEMM throughput (GOP/s, median) of each kernel tried; ``gops`` is the best of them."""

    size: int
    threads: int
    onnxruntime_gops: float
    torch_int_mm_gops: float | None
    gops: float
    kernel: str


def cpu_flags() -> list[str]:
    """The int8/fp-relevant instruction-set flags this CPU reports (Linux ``/proc/cpuinfo``)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [flag for flag in INT8_FLAGS if flag in flags]


def _onnxruntime_int8_gops(size: int, threads: int, repeats: int) -> float:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    a_info = helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size])
    b_info = helper.make_tensor_value_info("b", TensorProto.INT8, [size, size])
    y_info = helper.make_tensor_value_info("y", TensorProto.INT32, [size, size])
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "int8", [a_info, b_info], [y_info]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {
        "a": rng.integers(0, 256, (size, size), dtype=np.uint8),
        "b": rng.integers(-128, 128, (size, size), dtype=np.int8),
    }
    timing = time_call(lambda: session.run(None, feeds), warmup=2, min_repeats=repeats, max_repeats=repeats, budget_s=0)
    return 2.0 * size**3 / timing.median / 1e9


def _torch_int8_gops(size: int, repeats: int) -> float | None:
    size = min(size, TORCH_INT_MM_MAX_SIZE)
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=generator)
    b = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=generator)
    try:
        start = time_call(lambda: torch._int_mm(a, b), warmup=1, min_repeats=1, max_repeats=1, budget_s=0)
        if start.median > 5.0:  # a reference loop: one call is the measurement, more would take minutes
            return 2.0 * size**3 / start.median / 1e9
        timing = time_call(lambda: torch._int_mm(a, b), warmup=1, min_repeats=repeats, max_repeats=repeats, budget_s=0)
    except (RuntimeError, NotImplementedError):
        return None
    return 2.0 * size**3 / timing.median / 1e9


def measure_int8_limit(size: int, threads: int, repeats: int = 7) -> Int8Limit:
    """The best int8 GEMM throughput of ONNX Runtime's ``MatMulInteger`` and ``torch._int_mm``."""
    ort_gops = _onnxruntime_int8_gops(size, threads, repeats)
    torch_gops = _torch_int8_gops(size, repeats)
    if torch_gops is not None and torch_gops > ort_gops:
        return Int8Limit(size, threads, ort_gops, torch_gops, torch_gops, "torch._int_mm")
    return Int8Limit(size, threads, ort_gops, torch_gops, ort_gops, "onnxruntime MatMulInteger (u8 x s8)")
