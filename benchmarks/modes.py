"""How a classifier is run and timed: eager, BN folded, channels_last, compiled, micro-batched.

The modes are the optimisations of ``backbone/inference.py``, each on its own switch so that the
backbone section's ablation can measure what each one contributes.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from backbone.inference import MicroBatched, compile_for_inference, prepare_for_inference
from benchmarks.common import time_call


@dataclass(frozen=True)
class Mode:
    """How a model is run: BN folding, memory format, torch.compile, micro-batching."""

    name: str
    fuse: bool = False
    channels_last: bool = False
    compile: bool = False
    micro_batch: int | None = None


EAGER = Mode("eager fp32")


def optimised_mode(compile_: bool, micro_batch: int | None) -> Mode:
    """The default optimised mode: the best combination measured on the development machine."""
    parts = ["BN-fused", "channels_last"] + (["compiled"] if compile_ else [])
    if micro_batch:
        parts.append(f"micro-batch {micro_batch}")
    return Mode(" + ".join(parts), fuse=True, channels_last=True, compile=compile_, micro_batch=micro_batch)


def apply_mode(model: nn.Module, mode: Mode) -> nn.Module:
    """A module that runs ``model`` (eval mode) the way ``mode`` says; ``model`` itself is untouched."""
    if mode.fuse or mode.channels_last:
        runner = prepare_for_inference(model, channels_last=mode.channels_last, fuse=mode.fuse)
    else:
        runner = model.eval()
    if mode.compile:
        runner = compile_for_inference(runner)
    if mode.micro_batch:
        runner = MicroBatched(runner, mode.micro_batch)
    return runner


def _first_call(model: nn.Module, mode: Mode, image: torch.Tensor) -> tuple[nn.Module, float, str]:
    """Build the runner and make its first call, which compiles: timed apart from the warm-up.

    A broken compiler toolchain must not kill the benchmark: the uncompiled model is timed
    instead, and the error is kept for the JSON.
    """
    runner = apply_mode(model, mode)
    if not mode.compile:
        return runner, 0.0, ""
    start = time.perf_counter()
    error = ""
    try:
        runner(image)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        warnings.warn(f"torch.compile failed ({error}); timing the uncompiled model instead.", stacklevel=3)
        runner = apply_mode(model, replace(mode, compile=False))
    return runner, time.perf_counter() - start, error


def time_classifier(
    model: nn.Module, mode: Mode, resolution: int, batch: int, mult_adds: int, peak_gflops: float, budget_s: float
) -> dict[str, Any]:
    """Time one (model, mode, resolution, batch); return ms/image, GFLOP/s and the fraction of the peak."""
    image = torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(1))
    if mode.channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        runner, compile_s, error = _first_call(model, mode, image)
        # Batch 1 is cheap and noisy: many repeats. Batch 32 at 224 px is costly per call: few.
        timing = time_call(lambda: runner(image), budget_s=budget_s)
    if mode.compile and hasattr(torch, "_dynamo"):
        torch._dynamo.reset()  # forget compiled graphs: caches and recompile limits would grow over the grid
    seconds = timing.median / batch
    gflops = 2.0 * mult_adds / seconds / 1e9
    result: dict[str, Any] = {
        "ms_per_image": seconds * 1e3,
        "best_ms_per_image": timing.best / batch * 1e3,
        "gflops": gflops,
        "peak_fraction": gflops / peak_gflops,
        "ns_per_mult_add": seconds / mult_adds * 1e9,
        "repeats": timing.repeats,
        "compile_s": compile_s,
    }
    if error:
        result["compile_error"] = error
    return result
