"""The ``deploy`` section: MobileNetV1 in PyTorch and in the deployed runtimes, fp32 and int8, in one run.

For each width x resolution model (``--deploy-models``, default the 16 released ones) and batch
(``--deploy-batches``), timed interleaved (``backbone.pick.interleaved_seconds``: every path of a
model in turn, ``--deploy-rounds`` rounds, the median of the rounds' medians):

* PyTorch eager fp32 and the project's optimised path (``benchmarks.modes.optimised_mode``: BN
  folded, channels_last, compiled, micro-batched; the backbone section's ``--no-compile`` and
  ``--micro-batch`` apply);
* the model exported through ``deploy.runtime.export_network``, fp32 and int8 (post-training,
  calibrated on random images), in ``--deploy-runtime`` (default: the project's default runtime),
  and in the other runtime too for the models in ``--deploy-both-runtimes`` (default 1.0-224);

each as ms/image, the speed-up over the optimised path, and a share of the machine's limit
measured in the same run: fp32 paths against the fp32 ``torch.mm`` peak (``measure_mm_peak``,
the backbone section's ``--mm-size``), int8 paths against the int8 GEMM limit
(``benchmarks.deploy_limits``: ONNX Runtime ``MatMulInteger`` and ``torch._int_mm``). Targets at
1.0-224, batch 32: the fastest fp32 export >= 1.4x the optimised path, the fastest int8 >= 5x.
The int8 target needs int8 arithmetic several times faster than fp32 (AVX-512 VNNI or AMX);
the limits' ratio printed beside it says whether this CPU has it.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch

from backbone.complexity import count_complexity
from backbone.errors import BadInputError
from backbone.pick import MODEL_KEYS, build_classifier, export_classifier, interleaved_seconds, model_key, parse_model
from benchmarks.common import (
    Option,
    Section,
    fmt,
    markdown_table,
    measure_mm_peak,
    print_heading,
    progress,
    register,
    verdict,
)
from benchmarks.deploy_limits import Int8Limit, cpu_flags, measure_int8_limit
from benchmarks.modes import EAGER, _first_call, optimised_mode

TARGET = ("1.0-224", 32)
TARGET_FP32_SPEEDUP = 1.4
TARGET_INT8_SPEEDUP = 5.0
RUNTIMES = ("openvino", "onnxruntime")


@dataclass
class Row:
    """One (model, batch): {path name: numbers} for every path measured."""

    model: str
    batch: int
    mult_adds: int
    results: dict[str, dict[str, float]] = field(default_factory=dict)


def path_names(runtimes: list[str]) -> list[str]:
    return ["eager", "optimised"] + [f"{runtime} {precision}" for runtime in runtimes for precision in ("fp32", "int8")]


def measure_model(args: argparse.Namespace, key: str, runtimes: list[str], scratch: Path) -> list[Row]:
    """Export ``key`` to every runtime and precision, then time every path at every batch, interleaved."""
    from deploy.runtime import Runner

    width, resolution = parse_model(key, released_only=False)
    model = build_classifier(width, resolution)
    mult_adds = count_complexity(model, resolution).mult_adds
    runners = {}
    for runtime in runtimes:
        for int8 in (False, True):
            name = f"{runtime} {'int8' if int8 else 'fp32'}"
            folder = export_classifier(model, resolution, scratch / key / name.replace(" ", "-"), runtime, int8,
                                       args.deploy_calibration)  # fmt: skip
            runners[name] = Runner(folder, runtime, torch.get_num_threads())
    optimised = optimised_mode(not args.no_compile, args.micro_batch or None)
    rows = []
    for batch in args.deploy_batches:
        images = torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(2))
        last = images.contiguous(memory_format=torch.channels_last)
        array = images.numpy()
        with torch.inference_mode():
            eager, _, _ = _first_call(model, EAGER, images)
            fast, compile_s, _ = _first_call(model, optimised, last)
            calls = {"eager": partial(eager, images), "optimised": partial(fast, last)}
            calls.update({name: partial(runner, array) for name, runner in runners.items()})
            seconds = interleaved_seconds(calls, args.deploy_rounds, args.budget)
        if hasattr(torch, "_dynamo"):
            torch._dynamo.reset()  # forget compiled graphs: caches and recompile limits would grow over the grid
        row = Row(key, batch, mult_adds)
        for name, value in seconds.items():
            row.results[name] = {"ms_per_image": 1e3 * value / batch, "gops": 2.0 * mult_adds * batch / value / 1e9}
        row.results["optimised"]["compile_s"] = compile_s
        rows.append(row)
        times = ", ".join(f"{name} {result['ms_per_image']:.2f}" for name, result in row.results.items())
        progress(f"  {key} batch {batch:>2}: {times} ms/img")
    return rows


def add_ratios(rows: list[Row], fp32_gflops: float, int8_gops: float) -> None:
    """Speed-up over the optimised path and share of the machine's fp32 or int8 limit, per path."""
    for row in rows:
        base = row.results["optimised"]["ms_per_image"]
        for name, result in row.results.items():
            result["speedup_vs_optimised"] = base / result["ms_per_image"]
            limit = int8_gops if name.endswith("int8") else fp32_gflops
            result["limit_share"] = result["gops"] / limit


def judge(rows: list[Row], limits: tuple[float, Int8Limit]) -> dict[str, Any]:
    """The two targets at 1.0-224 batch 32 (else the largest model and batch measured)."""
    if not rows:
        return {}
    row = next((r for r in rows if (r.model, r.batch) == TARGET), None)
    row = row or max(rows, key=lambda r: (r.mult_adds, r.batch))
    fp32 = {n: r["speedup_vs_optimised"] for n, r in row.results.items() if n.endswith("fp32")}
    int8 = {n: r["speedup_vs_optimised"] for n, r in row.results.items() if n.endswith("int8")}
    best_fp32, best_int8 = max(fp32, key=fp32.__getitem__), max(int8, key=int8.__getitem__)
    fp32_limit, int8_limit = limits
    return {
        "configuration": f"MobileNetV1 {row.model} batch {row.batch}",
        "fastest_fp32": best_fp32,
        "fp32_speedup": fp32[best_fp32],
        "fp32_met": fp32[best_fp32] >= TARGET_FP32_SPEEDUP,
        "fastest_int8": best_int8,
        "int8_speedup": int8[best_int8],
        "int8_met": int8[best_int8] >= TARGET_INT8_SPEEDUP,
        "int8_over_fp32_limit": int8_limit.gops / fp32_limit,
        # What the limits allow: the optimised path already runs at this share of the fp32 limit, so an
        # fp32 path can be at most 1/share faster, an int8 one at most (int8 limit / fp32 limit) / share.
        "optimised_limit_share": row.results["optimised"]["limit_share"],
        "fp32_ceiling": 1.0 / row.results["optimised"]["limit_share"],
        "int8_ceiling": int8_limit.gops / fp32_limit / row.results["optimised"]["limit_share"],
        "cpu_flags": cpu_flags(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def cell(result: dict[str, float] | None) -> str:
    if result is None:
        return "–"
    return (
        f"{fmt(result['ms_per_image'], '.2f')} · {fmt(result['speedup_vs_optimised'], '.2f')}× · "
        f"{fmt(100 * result['limit_share'], '.0f')}%"
    )


def report(rows: list[Row], limits: tuple[float, Int8Limit], args: argparse.Namespace, targets: dict[str, Any]) -> None:
    fp32_limit, int8 = limits
    print_heading(
        f"Deployed MobileNetV1: PyTorch vs {' / '.join(RUNTIMES)}, fp32 and int8 ({torch.get_num_threads()} threads)"
    )
    torch_int_mm = "failed" if int8.torch_int_mm_gops is None else f"{int8.torch_int_mm_gops:.1f} GOP/s"
    print(
        f"Limits measured in this run: fp32 `torch.mm` {args.mm_size}² {fp32_limit:.1f} GFLOP/s (larger of start and "
        f"end); int8 GEMM {int8.gops:.1f} GOP/s (larger of start and end) from {int8.kernel} "
        f"({int8.size}²: onnxruntime MatMulInteger "
        f"{int8.onnxruntime_gops:.1f} GOP/s, torch._int_mm {torch_int_mm}); int8/fp32 = {int8.gops / fp32_limit:.2f}. "
        f"CPU flags: {', '.join(cpu_flags()) or 'unknown'}."
    )
    others = [m for m in args.deploy_both_runtimes if m in {r.model for r in rows}]
    optimised = optimised_mode(not args.no_compile, args.micro_batch or None).name
    print(
        f"Each cell: ms/image (median of {args.deploy_rounds} interleaved rounds' medians) · speed-up over the "
        f"optimised path ({optimised}) · share of the fp32 limit "
        f"(eager, optimised, fp32) or of the int8 limit (int8). {args.deploy_runtime} for every model; "
        f"the other runtime for {', '.join(others) or 'none'} only (–: not measured). Random weights, BN calibrated; "
        f"int8 calibrated on {args.deploy_calibration} random images."
    )
    print()
    names = path_names(list(RUNTIMES))
    header = ["model", "batch", "M mult-adds", *names]
    lines = [
        [r.model, str(r.batch), f"{r.mult_adds / 1e6:.0f}", *(cell(r.results.get(n)) for n in names)] for r in rows
    ]
    print(markdown_table(header, lines))
    print()
    if not targets:
        return
    share = 100 * targets["optimised_limit_share"]
    ceiling = (
        f" The optimised path already runs at {share:.0f}% of the fp32 limit, so no fp32 path can beat it by more "
        f"than {targets['fp32_ceiling']:.2f}× here."
    )
    print(
        f"Target 1 — {targets['configuration']}: fastest fp32 export ≥ {TARGET_FP32_SPEEDUP}× the optimised path: "
        f"{targets['fastest_fp32']} {targets['fp32_speedup']:.2f}× → {verdict(targets['fp32_met'])}."
        + ("" if targets["fp32_met"] else ceiling)
    )
    why = ""
    if not targets["int8_met"]:
        has_vnni = any(f in targets["cpu_flags"] for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
        why = (
            f" Why: the int8 GEMM limit is {targets['int8_over_fp32_limit']:.2f}× the fp32 one on this CPU "
            + (
                "(no int8 dot-product instruction: no AVX-512 VNNI, AVX-VNNI or AMX, so each int8 multiply-add "
                "takes AVX2's vpmaddubsw + vpmaddwd; VNNI does it in one instruction)"
                if not has_vnni
                else "(it has an int8 dot-product instruction)"
            )
            + f", and with the optimised path at {share:.0f}% of the fp32 limit, int8 can be at most "
            f"{targets['int8_ceiling']:.2f}× faster here."
        )
        if targets["int8_speedup"] > targets["int8_ceiling"]:
            why += (
                " (The int8 paths beat that ceiling: the runtime's int8 convolution kernels outpace the int8 GEMM "
                "measured, or load lowered its measurement; read the int8 limit as a lower bound.)"
            )
    print(
        f"Target 2 — {targets['configuration']}: fastest int8 ≥ {TARGET_INT8_SPEEDUP:g}× the optimised path: "
        f"{targets['fastest_int8']} {targets['int8_speedup']:.2f}× → {verdict(targets['int8_met'])}.{why}"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.deploy_runtime not in RUNTIMES:
        raise BadInputError(f"--deploy-runtime is {args.deploy_runtime!r}; expected one of {', '.join(RUNTIMES)}.")
    keys = list(dict.fromkeys(model_key(*parse_model(k, released_only=False)) for k in args.deploy_models))
    both = [model_key(*parse_model(k, released_only=False)) for k in args.deploy_both_runtimes]
    args.deploy_both_runtimes = both
    other = next(r for r in RUNTIMES if r != args.deploy_runtime)
    progress(f"torch {torch.__version__}, {torch.get_num_threads()} threads; limits first")
    start = measure_mm_peak(args.mm_size)
    int8_start = measure_int8_limit(args.deploy_int8_size, torch.get_num_threads())
    progress(f"fp32 mm {start.gflops_median:.1f} GFLOP/s, int8 GEMM {int8_start.gops:.1f} GOP/s ({int8_start.kernel})")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="mobilenet-deploy-") as scratch:
        for key in keys:
            runtimes = [args.deploy_runtime] + ([other] if key in both else [])
            rows += measure_model(args, key, runtimes, Path(scratch))
    end = measure_mm_peak(args.mm_size)
    int8_end = measure_int8_limit(args.deploy_int8_size, torch.get_num_threads())
    fp32_limit = max(start.gflops_median, end.gflops_median)
    # Both limits: the larger of the start and end measurements (a burst of load on a shared machine
    # during one of them would otherwise lower the limit and inflate every share).
    int8 = max(int8_start, int8_end, key=lambda limit: limit.gops)
    add_ratios(rows, fp32_limit, int8.gops)
    targets = judge(rows, (fp32_limit, int8))
    report(rows, (fp32_limit, int8), args, targets)
    return {
        "threads": torch.get_num_threads(),
        "limits": {
            "fp32_start": asdict(start),
            "fp32_end": asdict(end),
            "fp32_gflops": fp32_limit,
            "int8_start": asdict(int8_start),
            "int8_end": asdict(int8_end),
            "int8": asdict(int8),
        },
        "rows": [{"model": r.model, "batch": r.batch, "mult_adds": r.mult_adds, **r.results} for r in rows],
        "targets": targets,
    }


SECTION = register(
    Section(
        "deploy",
        run,
        options=(
            Option("--deploy-models", list(MODEL_KEYS), quick=["0.25-64"], nargs="+", help="ALPHA-RES models"),
            Option("--deploy-batches", [1, 32], quick=[1, 2], type=int, nargs="+"),
            Option(
                "--deploy-runtime", "openvino", quick="openvino", help="runtime of every model (openvino|onnxruntime)"
            ),
            Option(
                "--deploy-both-runtimes", ["1.0-224"], quick=["0.25-64"], nargs="*", help="models also run in the other"
            ),
            Option("--deploy-calibration", 32, quick=4, type=int, help="random images of int8 calibration"),
            Option("--deploy-int8-size", 2048, quick=256, type=int, help="side of the int8 GEMM of the int8 limit"),
            Option("--deploy-rounds", 3, quick=1, type=int, help="interleaved timing rounds"),
        ),
    )
)
