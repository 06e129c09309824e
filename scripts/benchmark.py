"""CPU inference benchmark: MobileNetV1 over width x resolution, against torchvision's MobileNets.

Usage::

    python scripts/benchmark.py                      # every section, full grid (several minutes)
    python scripts/benchmark.py --section backbone --json runs/benchmark.json
    python scripts/benchmark.py --quick              # seconds: smoke run on a tiny grid

One run prints:

* the machine's fp32 matrix-multiply peak (``torch.mm`` on large square matrices, median after
  warm-up, measured at the start and at the end of the run; the larger of the two is the
  reference, which makes "% of peak" conservative) and the thread count;
* for every width alpha x resolution x batch, and for torchvision's ``mobilenet_v2`` and
  ``mobilenet_v3_large`` (random weights) in the same run, the time per image in plain eager fp32
  and in the optimised mode, with mult-adds (paper convention, ``count_complexity``), achieved
  GFLOP/s (= 2 x mult-adds / time), the fraction of the mm peak, and the time per mult-add
  relative to ``mobilenet_v2`` at the same batch (and resolution, when measured; else 224);
* an ablation of the optimisations on MobileNetV1 1.0-224 at the largest batch;
* whether the issue's targets are met (1.0-224 at batch 32: at least 60% of the mm peak, and no
  slower per mult-add than mobilenet_v2).

The machine is shared: timings are medians over repeats after warm-up, and the JSON also keeps
the best repeat. Sections are registered in ``SECTIONS`` so that other parts (detection) add a
function and a name without touching the rest.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

# Running as ``python scripts/benchmark.py`` puts scripts/ (not the project root) on sys.path.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backbone import MobileNetV1, count_complexity  # noqa: E402
from backbone.inference import MicroBatched, compile_for_inference, prepare_for_inference  # noqa: E402

Model = Callable[[Tensor], Tensor]

FULL_WIDTHS = (1.0, 0.75, 0.5, 0.25)
FULL_RESOLUTIONS = (224, 192, 160, 128)
FULL_BATCHES = (1, 32)
TORCHVISION_MODELS = ("mobilenet_v2", "mobilenet_v3_large")
TARGET_PEAK_FRACTION = 0.60


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median (what the tables print) and the best repeat."""

    median: float
    best: float
    repeats: int


def time_call(
    fn: Callable[[], object],
    warmup: int,
    min_repeats: int,
    max_repeats: int,
    budget_s: float,
) -> Timing:
    """Median wall time of ``fn()`` after ``warmup`` calls.

    The number of repeats adapts to the cost of one call (measured during warm-up) so that a
    cheap batch-1 run gets many repeats and a batch-32 run at 224 px only a few, keeping the
    whole grid within minutes: ``budget_s`` of timed calls, clamped to [min, max] repeats.
    """
    last = 0.0
    for _ in range(max(warmup, 1)):
        start = time.perf_counter()
        fn()
        last = time.perf_counter() - start
    repeats = int(min(max_repeats, max(min_repeats, math.ceil(budget_s / max(last, 1e-6)))))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return Timing(median=statistics.median(samples), best=min(samples), repeats=repeats)


@dataclass(frozen=True)
class MatmulPeak:
    """fp32 ``torch.mm`` throughput on ``size`` x ``size`` matrices, GFLOP/s (2 n^3 per mm)."""

    size: int
    threads: int
    gflops_median: float
    gflops_best: float


def measure_mm_peak(size: int, repeats: int = 7) -> MatmulPeak:
    """The machine's practical fp32 compute peak: MKL/oneDNN sgemm on large square matrices.

    A large square GEMM is the most compute-bound, best-tuned kernel PyTorch has; it stands in
    for the peak a convolution could reach on this CPU with this thread count.
    """
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    out = torch.empty(size, size)
    timing = time_call(lambda: torch.mm(a, b, out=out), warmup=2, min_repeats=repeats, max_repeats=repeats, budget_s=0)
    flops = 2.0 * size**3
    return MatmulPeak(size, torch.get_num_threads(), flops / timing.median / 1e9, flops / timing.best / 1e9)


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------
def calibrate_batchnorm(model: nn.Module, resolution: int, batches: int = 2, batch_size: int = 4) -> nn.Module:
    """Give a randomly initialised model's BatchNorms realistic running statistics.

    With fresh statistics (mean 0, variance 1) the activations of an untrained network shrink
    by a constant factor per layer and reach ~1e-18 at the output, where denormal floats can
    slow some kernels; a trained network keeps them O(1). A few training-mode passes on random
    images (cumulative average, ``momentum=None``) restore that, so timings match a trained model.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(batches):
            model(torch.randn(batch_size, 3, resolution, resolution, generator=generator))
    for norm in norms:
        norm.momentum = 0.1
    return model.eval()


def build_model(name: str, width: float) -> nn.Module:
    """``"mobilenet_v1"`` at ``width``, or a torchvision model by name with random weights."""
    if name == "mobilenet_v1":
        return MobileNetV1(width, num_classes=1000)
    import torchvision

    return getattr(torchvision.models, name)(weights=None)


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
    """The benchmark's default optimised mode (the best combination measured on this machine)."""
    parts = ["BN-fused", "channels_last"] + (["compiled"] if compile_ else [])
    if micro_batch:
        parts.append(f"micro-batch {micro_batch}")
    return Mode(" + ".join(parts), fuse=True, channels_last=True, compile=compile_, micro_batch=micro_batch)


def apply_mode(model: nn.Module, mode: Mode) -> Model:
    """Return a callable that runs ``model`` (eval mode) the way ``mode`` says."""
    if mode.fuse or mode.channels_last:
        prepared: nn.Module = prepare_for_inference(model, channels_last=mode.channels_last, fuse=mode.fuse)
    else:
        prepared = model.eval()
    runner: nn.Module = compile_for_inference(prepared) if mode.compile else prepared
    if mode.micro_batch:
        runner = MicroBatched(runner, mode.micro_batch)
    return runner


def reset_compiler() -> None:
    """Forget compiled graphs so caches do not grow (and recompile limits do not hit) over the grid."""
    if hasattr(torch, "_dynamo"):
        torch._dynamo.reset()


# --------------------------------------------------------------------------------------------
# the backbone section
# --------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One measured configuration."""

    model: str
    width: float
    resolution: int
    batch: int
    mult_adds: int
    params: int
    results: dict[str, dict[str, float]] = field(default_factory=dict)  # mode key -> numbers

    @property
    def label(self) -> str:
        return "MobileNetV1" if self.model == "mobilenet_v1" else self.model


def measure(
    model: nn.Module,
    mode: Mode,
    resolution: int,
    batch: int,
    mult_adds: int,
    peak_gflops: float,
    budget_s: float,
) -> dict[str, float]:
    """Time one (model, mode, resolution, batch); return ms/image, GFLOP/s and fraction of peak."""
    runner = apply_mode(model, mode)
    image = torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(1))
    if mode.channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    compile_s = 0.0
    error = ""
    with torch.inference_mode():
        if mode.compile:
            # The first call compiles; time it separately so it does not pollute the warm-up.
            start = time.perf_counter()
            try:
                runner(image)
            except Exception as exc:  # a broken compiler toolchain must not kill the benchmark
                error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
                warnings.warn(f"torch.compile failed ({error}); timing the uncompiled model instead.", stacklevel=2)
                runner = apply_mode(model, Mode(mode.name, mode.fuse, mode.channels_last, False, mode.micro_batch))
            compile_s = time.perf_counter() - start
        # Batch 1 is cheap and noisy: many repeats. Batch 32 at 224 px costs ~1 s a call: few.
        timing = time_call(lambda: runner(image), warmup=2, min_repeats=3, max_repeats=25, budget_s=budget_s)
    if mode.compile:
        reset_compiler()
    seconds = timing.median / batch
    gflops = 2.0 * mult_adds / seconds / 1e9
    result = {
        "ms_per_image": seconds * 1e3,
        "best_ms_per_image": timing.best / batch * 1e3,
        "gflops": gflops,
        "peak_fraction": gflops / peak_gflops,
        "ns_per_mult_add": seconds / mult_adds * 1e9,
        "repeats": timing.repeats,
        "compile_s": compile_s,
    }
    if error:
        result["compile_error"] = error  # type: ignore[assignment]
    return result


def add_v2_ratios(rows: Sequence[Row], mode_keys: Sequence[str]) -> None:
    """Time per mult-add of each row relative to mobilenet_v2 at the same batch and mode.

    The reference is mobilenet_v2 at the same resolution when it was measured, else at 224 (time
    per mult-add depends little on resolution, and measuring every resolution costs time).
    """
    v2 = {(r.resolution, r.batch): r for r in rows if r.model == "mobilenet_v2"}
    for row in rows:
        ref = v2.get((row.resolution, row.batch)) or v2.get((224, row.batch))
        if ref is None:
            ref = next((r for r in rows if r.model == "mobilenet_v2" and r.batch == row.batch), None)
        for key in mode_keys:
            if ref is not None and key in row.results and key in ref.results:
                row.results[key]["ns_per_mult_add_vs_v2"] = (
                    row.results[key]["ns_per_mult_add"] / ref.results[key]["ns_per_mult_add"]
                )


def fmt(value: float | None, spec: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def markdown_table(rows: Sequence[Row]) -> str:
    """The main table: eager and optimised side by side, one line per configuration."""
    head = (
        "| model | α | res | batch | M mult-adds | eager ms/img | eager GFLOP/s | eager ×v2 ns/MAdd "
        "| opt ms/img | opt GFLOP/s | opt % mm peak | opt ×v2 ns/MAdd |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for row in rows:
        eager, opt = row.results.get("eager", {}), row.results.get("optimised", {})
        lines.append(
            f"| {row.label} | {row.width:g} | {row.resolution} | {row.batch} | {row.mult_adds / 1e6:.1f} "
            f"| {fmt(eager.get('ms_per_image'), '.2f')} | {fmt(eager.get('gflops'), '.1f')} "
            f"| {fmt(eager.get('ns_per_mult_add_vs_v2'), '.2f')} "
            f"| {fmt(opt.get('ms_per_image'), '.2f')} | {fmt(opt.get('gflops'), '.1f')} "
            f"| {fmt(100 * opt['peak_fraction'] if 'peak_fraction' in opt else None, '.0f')}% "
            f"| {fmt(opt.get('ns_per_mult_add_vs_v2'), '.2f')} |"
        )
    return "\n".join(lines)


def ablation_table(ablation: Sequence[dict[str, Any]]) -> str:
    """What each optimisation contributes on the target configuration."""
    lines = [
        "| mode | ms/img (median) | ms/img (best) | GFLOP/s | % mm peak | speed-up vs eager |",
        "|---|---|---|---|---|---|",
    ]
    base = ablation[0]["ms_per_image"] if ablation else float("nan")
    for entry in ablation:
        lines.append(
            f"| {entry['mode']} | {entry['ms_per_image']:.2f} | {entry['best_ms_per_image']:.2f} "
            f"| {entry['gflops']:.1f} | {100 * entry['peak_fraction']:.0f}% | {base / entry['ms_per_image']:.2f}× |"
        )
    return "\n".join(lines)


def run_backbone_section(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the mm peak, the MobileNetV1 grid, the torchvision references and the ablation."""
    optimised = optimised_mode(not args.no_compile, args.micro_batch or None)
    modes = {"eager": EAGER, "optimised": optimised}

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"oneDNN {'on' if torch.backends.mkldnn.is_available() else 'off'}",
        flush=True,
    )
    peak_start = measure_mm_peak(args.mm_size)
    print(
        f"fp32 torch.mm peak ({args.mm_size}²): {peak_start.gflops_median:.1f} GFLOP/s median "
        f"({peak_start.gflops_best:.1f} best) with {peak_start.threads} threads",
        flush=True,
    )
    # "% of peak" is computed against this start-of-run peak while the grid runs; the final
    # numbers use the larger of the start and end peaks (conservative on a shared machine).
    peak = peak_start.gflops_median

    configs: list[tuple[str, float, int]] = [("mobilenet_v1", w, r) for w in args.widths for r in args.resolutions]
    configs += [(name, 1.0, r) for name in TORCHVISION_MODELS for r in args.tv_resolutions]
    rows: list[Row] = []
    for name, width, resolution in configs:
        model = calibrate_batchnorm(build_model(name, width), resolution)
        complexity = count_complexity(model, resolution)
        for batch in args.batches:
            row = Row(name, width, resolution, batch, complexity.mult_adds, complexity.params)
            for key, mode in modes.items():
                row.results[key] = measure(model, mode, resolution, batch, complexity.mult_adds, peak, args.budget)
            rows.append(row)
            print(
                f"  {row.label:>18} α={width:<4g} {resolution}px batch {batch:>2}: "
                f"eager {row.results['eager']['ms_per_image']:8.2f} ms/img, "
                f"optimised {row.results['optimised']['ms_per_image']:8.2f} ms/img "
                f"({row.results['optimised']['gflops']:.1f} GFLOP/s)",
                flush=True,
            )

    # Ablation on the target configuration (largest width and resolution, largest batch).
    target_w, target_r, target_b = max(args.widths), max(args.resolutions), max(args.batches)
    model = calibrate_batchnorm(build_model("mobilenet_v1", target_w), target_r)
    mult_adds = count_complexity(model, target_r).mult_adds
    steps = [
        EAGER,
        Mode("channels_last", channels_last=True),
        Mode("BN-fused", fuse=True),
        Mode("BN-fused + channels_last", fuse=True, channels_last=True),
    ]
    if not args.no_compile:
        steps.append(Mode("BN-fused + channels_last + compiled", True, True, True))
        for chunk in args.ablation_micro_batches:
            if chunk < target_b:
                name = f"BN-fused + channels_last + compiled + micro-batch {chunk}"
                steps.append(Mode(name, True, True, True, chunk))
    ablation = []
    for mode in steps:
        result = measure(model, mode, target_r, target_b, mult_adds, peak, args.budget)
        ablation.append({"mode": mode.name, **result})
        print(f"  ablation {mode.name}: {result['ms_per_image']:.2f} ms/img", flush=True)

    peak_end = measure_mm_peak(args.mm_size)
    final_peak = max(peak_start.gflops_median, peak_end.gflops_median)
    for row in rows:
        for result in row.results.values():
            result["peak_fraction"] = result["gflops"] / final_peak
    for entry in ablation:
        entry["peak_fraction"] = entry["gflops"] / final_peak
    add_v2_ratios(rows, list(modes))

    # Targets of the issue, on the optimised mode.
    target_key = ("mobilenet_v1", target_w, target_r, target_b)
    target_row = next((r for r in rows if (r.model, r.width, r.resolution, r.batch) == target_key), None)
    targets: dict[str, Any] = {"configuration": f"MobileNetV1 {target_w:g}-{target_r} batch {target_b}"}
    if target_row is not None:
        opt = target_row.results["optimised"]
        targets["peak_fraction"] = opt["peak_fraction"]
        targets["peak_fraction_met"] = opt["peak_fraction"] >= TARGET_PEAK_FRACTION
        ratio = opt.get("ns_per_mult_add_vs_v2")
        targets["ns_per_mult_add_vs_v2"] = ratio
        targets["not_slower_than_v2_met"] = ratio is not None and ratio <= 1.0
        best_ablation = max(ablation, key=lambda e: e["gflops"]) if ablation else None
        if best_ablation is not None:
            targets["best_mode_in_ablation"] = best_ablation["mode"]
            targets["best_mode_peak_fraction"] = best_ablation["peak_fraction"]

    print()
    print(f"### Backbone CPU inference ({torch.get_num_threads()} threads, fp32)")
    print()
    print(
        f"fp32 `torch.mm` peak, {args.mm_size}×{args.mm_size}: {peak_start.gflops_median:.1f} GFLOP/s at the start, "
        f"{peak_end.gflops_median:.1f} at the end (median of 7 after warm-up); reference peak {final_peak:.1f} "
        f"GFLOP/s with {peak_start.threads} threads."
    )
    print(
        f"Optimised mode: {optimised.name}. Times are medians per image after warm-up; GFLOP/s = 2 × mult-adds / "
        "time; ×v2 ns/MAdd = time per mult-add relative to torchvision mobilenet_v2 at the same batch and mode "
        "(same resolution when measured, else 224). Random weights, BN statistics calibrated."
    )
    print()
    print(markdown_table(rows))
    print()
    print(f"#### Ablation: MobileNetV1 {target_w:g}-{target_r}, batch {target_b}")
    print()
    print(ablation_table(ablation))
    print()
    if target_row is not None:
        met = "MET" if targets["peak_fraction_met"] else "NOT MET"
        print(
            f"Target 1 — {targets['configuration']} at ≥ {100 * TARGET_PEAK_FRACTION:.0f}% of the mm peak "
            f"(optimised mode): {100 * targets['peak_fraction']:.0f}% → {met}."
        )
        ratio = targets["ns_per_mult_add_vs_v2"]
        met = "MET" if targets["not_slower_than_v2_met"] else "NOT MET"
        print(f"Target 2 — no slower per mult-add than mobilenet_v2: ratio {fmt(ratio, '.2f')} → {met}.")
    return {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "mm_peak": {"start": asdict(peak_start), "end": asdict(peak_end), "reference_gflops": final_peak},
        "optimised_mode": optimised.name,
        "rows": [
            {
                "model": r.model,
                "width": r.width,
                "resolution": r.resolution,
                "batch": r.batch,
                "mult_adds": r.mult_adds,
                "params": r.params,
                **r.results,
            }
            for r in rows
        ],
        "ablation": ablation,
        "targets": targets,
    }


# Sections of the benchmark by name; the detection section registers itself here.
SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "backbone": run_backbone_section,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--section", choices=[*SECTIONS, "all"], default="all", help="which section to run")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: tiny grid (α 0.25, 32 px, batch 1 and 2), small mm, no compile, 1 thread",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--widths", type=float, nargs="+", default=None)
    parser.add_argument("--resolutions", type=int, nargs="+", default=None)
    parser.add_argument("--batches", type=int, nargs="+", default=None)
    parser.add_argument(
        "--tv-resolutions",
        type=int,
        nargs="+",
        default=None,
        help="resolutions at which the torchvision references run (default 224)",
    )
    parser.add_argument("--mm-size", type=int, default=None, help="side of the square matrices of the mm peak")
    parser.add_argument("--no-compile", action="store_true", help="optimised mode without torch.compile")
    parser.add_argument(
        "--micro-batch",
        type=int,
        default=None,
        help="optimised mode runs large batches in chunks of this size (default 4; 0 = whole batch)",
    )
    parser.add_argument(
        "--ablation-micro-batches",
        type=int,
        nargs="*",
        default=None,
        help="micro-batch sizes tried in the ablation (default 4 8)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds of timed repeats per measurement (repeats adapt to it, 3..25)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    quick = args.quick
    # Fill unset options from the full or the quick preset.
    defaults: dict[str, Any] = {
        "widths": [0.25] if quick else list(FULL_WIDTHS),
        "resolutions": [32] if quick else list(FULL_RESOLUTIONS),
        "batches": [1, 2] if quick else list(FULL_BATCHES),
        "tv_resolutions": [32] if quick else [224],
        "mm_size": 256 if quick else 2048,
        "ablation_micro_batches": [] if quick else [4, 8],
        "budget": 0.02 if quick else 1.5,
        # Chunks of 4 images keep each layer's output in cache: the fastest setting measured on
        # the 2-core development machine (ablation: 24.8 -> 18.0 ms/img at 1.0-224, batch 32).
        "micro_batch": None if quick else 4,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if quick:
        args.no_compile = True  # compiling takes seconds per shape: too slow for a smoke run
        # Tiny layers on a busy machine: two OpenMP threads mostly wait for each other.
        args.threads = args.threads or 1
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the chosen sections, print their tables, optionally write JSON; return the results."""
    args = parse_args(argv)
    # Denormal floats are orders of magnitude slower on x86; flush them as a deployed model would.
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list(SECTIONS) if args.section == "all" else [args.section]
    results = {name: SECTIONS[name](args) for name in names}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
        print(f"\nwrote {args.json}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
