"""What every benchmark section shares: timing, the mm peak, BN calibration, printing, JSON, the registry.

The machine the numbers come from is shared and noisy, so every time is a median over repeats
after a warm-up (the best repeat is kept too), and speed is reported as a ratio against anchors
measured in the same run (the ``torch.mm`` peak, a torchvision reference model) rather than as
absolute numbers another run could be compared with.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

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
    warmup: int = 2,
    min_repeats: int = 3,
    max_repeats: int = 25,
    budget_s: float = 1.0,
) -> Timing:
    """Median wall time of ``fn()`` after ``warmup`` calls.

    The number of repeats adapts to the cost of one call (measured during warm-up) so that a
    cheap batch-1 run gets many repeats and a batch-32 run at 224 px only a few, keeping a whole
    grid within minutes: ``budget_s`` of timed calls, clamped to [min, max] repeats.
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


def flush_denormals() -> None:
    """Flush denormal floats to zero, as a deployed model would run.

    Denormals are orders of magnitude slower on x86; an untrained network's tiny activations
    would otherwise time a slow path no trained model takes.
    """
    torch.set_flush_denormal(True)


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


def calibrate_batchnorm(model: nn.Module, inputs: Iterable[object]) -> nn.Module:
    """Give a randomly initialised model's BatchNorms realistic running statistics; return it in eval mode.

    With fresh statistics (mean 0, variance 1) the activations of an untrained network shrink
    by a constant factor per layer and reach ~1e-18 at the output, where denormal floats can
    slow some kernels; a trained network keeps them O(1). Inference passes over ``inputs`` with
    only the BatchNorms in training mode (cumulative averages, ``momentum=None``) restore that,
    so timings match a trained model. Only the norms train because a detector in training mode
    wants targets; for a classifier it is the same (its dropout comes after the last BN).
    """
    model.eval()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    with torch.no_grad():
        for batch in inputs:
            model(batch)
    for norm in norms:
        norm.momentum = 0.1
    return model.eval()


# --------------------------------------------------------------------------------------------
# printing and JSON
# --------------------------------------------------------------------------------------------


def fmt(value: float | None, spec: str) -> str:
    """``value`` formatted by ``spec``, or an en dash where there is no number (not measured, NaN)."""
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def verdict(met: bool) -> str:
    """How a target line ends: the same two words in every section, easy to grep."""
    return "MET" if met else "NOT MET"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table (docs/ pastes them as printed) from a header and rows of cell strings."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def print_heading(title: str, level: int = 3) -> None:
    """A markdown heading with a blank line on each side, as every report block starts."""
    print()
    print(f"{'#' * level} {title}")
    print()


def progress(message: str) -> None:
    """One line of progress while a section measures (flushed: a slow grid shows where it is)."""
    print(message, flush=True)


def row_json(row: Any) -> dict[str, Any]:
    """A measured row (a dataclass with a ``results`` dict: mode -> numbers) as the JSON lists it.

    The per-mode results sit next to the configuration's fields (``{"model": ..., "eager": {...}}``)
    rather than under a ``results`` key, so that a row reads the way the printed table does.
    """
    fields = asdict(row)
    results = fields.pop("results")
    return {**fields, **results}


def write_json(path: Path, results: Mapping[str, Any]) -> None:
    """Write the results of every section that ran to ``path`` (objects JSON lacks as strings)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {path}")


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------


def _show(value: Any) -> str:
    """A preset as the help text shows it: lists space-separated, as they are typed."""
    if value is None:
        return "unset"
    if isinstance(value, list):
        return " ".join(map(str, value)) or "none"
    return str(value)


@dataclass(frozen=True)
class Option:
    """A command-line option with its value in a full run and in a ``--quick`` smoke run.

    The value applies where the user gave none; the help text shows both, so they are written
    once, here. A boolean ``full`` makes a switch (``--no-compile``).
    """

    flag: str
    full: Any
    quick: Any
    help: str = ""
    type: Callable[[str], Any] | None = None
    nargs: str | None = None
    repeatable: bool = False  # the flag may be given again: its values add up (argparse "extend")

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
        """Add the option with default ``None`` (= not given, take the preset), its presets in the help."""
        text = f"{self.help} (full run: {_show(self.full)}; --quick: {_show(self.quick)})".lstrip()
        text = text.replace("%", "%%")  # argparse formats help with %
        if isinstance(self.full, bool):
            parser.add_argument(self.flag, action="store_true", default=None, help=text)
        else:
            action = "extend" if self.repeatable else None
            parser.add_argument(self.flag, type=self.type, nargs=self.nargs, action=action, default=None, help=text)

    def fill(self, args: argparse.Namespace) -> None:
        """Set the full or quick value on ``args`` where the option was not given."""
        if getattr(args, self.dest) is None:
            setattr(args, self.dest, self.quick if args.quick else self.full)


@dataclass(frozen=True)
class Section:
    """One part of the benchmark: ``run(args)`` measures, judges and prints, and returns its JSON.

    ``options`` are the section's own command-line options; ``python -m benchmarks --help`` lists
    them in a group named after the section.
    """

    name: str
    run: Callable[[argparse.Namespace], dict[str, Any]]
    options: Sequence[Option] = ()


# Every registered section by name, in registration (import) order: ``--section all`` runs them so.
SECTIONS: dict[str, Section] = {}


def register(section: Section) -> Section:
    """Add ``section`` to ``SECTIONS`` (a module calls this once, at its end) and return it."""
    if section.name in SECTIONS:
        raise ValueError(f"A benchmark section named {section.name!r} is already registered.")
    SECTIONS[section.name] = section
    return section
