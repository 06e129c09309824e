"""The paper's Figures 4 and 5: ImageNet top-1 against mult-adds and against parameters, log x-axis.

Drawn with matplotlib's Agg canvas directly (no global backend switch, no display needed) and
written atomically (``tasks.outputs.atomic_path``): a killed run leaves the old PNG or the new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tasks.outputs import atomic_path


@dataclass(frozen=True)
class Point:
    """One model on a figure: its label ("0.75-192"), mult-adds (M), parameters (M), top-1 (%)."""

    label: str
    mult_adds_m: float
    params_m: float
    top1: float


FIGURES = {
    "mult_adds_m": (
        "figure4_accuracy_vs_mult_adds.png",
        "Figure 4: ImageNet accuracy vs mult-adds",
        "Million mult-adds",
    ),
    "params_m": ("figure5_accuracy_vs_params.png", "Figure 5: ImageNet accuracy vs parameters", "Million parameters"),
}


def draw(axis: str, series: Sequence[tuple[str, Sequence[Point]]], folder: Path, source: str) -> Path:
    """Draw top-1 against ``axis`` (``mult_adds_m`` or ``params_m``) for each named series of points
    into ``folder``; return the PNG's path. ``source`` is printed under the plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    name, title, xlabel = FIGURES[axis]
    figure = Figure(figsize=(7, 5), dpi=120)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for index, ((label, points), marker) in enumerate(zip(series, ("o", "s", "^"), strict=False)):
        if not points:
            continue
        xs = [getattr(p, axis) for p in points]
        ax.scatter(xs, [p.top1 for p in points], marker=marker, label=label, zorder=3)
        for point, x in zip(points, xs, strict=True):
            ax.annotate(
                point.label, (x, point.top1), fontsize=7, xytext=(3, 3 - 12 * index), textcoords="offset points"
            )
    ax.set_xscale("log")
    # Plain numbers on a 1-2-5 grid: matplotlib's minor log labels (3x10^1, 4x10^1) overlap.
    xs_all = [getattr(p, axis) for _, points in series for p in points]
    ticks = [
        m * 10.0**e for e in range(-2, 6) for m in (1, 2, 5) if min(xs_all) / 1.5 <= m * 10.0**e <= max(xs_all) * 1.5
    ]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xticks([], minor=True)
    ax.set_xlabel(f"{xlabel} (log scale)")
    ax.set_ylabel("ImageNet top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    figure.text(0.01, 0.01, f"Published points: {source}", fontsize=5, wrap=True)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    path = folder / name
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path
