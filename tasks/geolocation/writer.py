"""What geolocation writes: ``predictions.csv`` (predict), ``error_curve.png`` (test), ``cells.csv``.

``predictions.csv``: one row per image, ``path,lat,lon`` (the predicted location) then
``cell_1,prob_1 ... cell_k,prob_k`` (the k most likely S2 cells as tokens, with their
probabilities), in the order of the images. ``error_curve.png``: the share of test photos within
d km against d on a log axis, with the five Im2GPS scales marked, the way geolocation papers plot
it. ``cells.csv``: the partition (``token,count,lat,lon,center_lat,center_lon``), as the
``partition`` command writes it. Every file is written atomically.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
from pytorch_lightning import LightningModule, Trainer

from datasets.geo_partition import Partition
from tasks.callbacks import PredictionWriter
from tasks.geolocation.metrics import EARTH_RADIUS_KM, THRESHOLDS_KM
from tasks.outputs import atomic_path


def write_cells_csv(partition: Partition, path: str | os.PathLike[str]) -> Path:
    """Write ``cells.csv`` atomically."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        partition.write_csv(handle)
    return Path(path)


def write_error_curve(errors_km: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Plot the share of photos within d km against d (log scale) to a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on training machines
    import matplotlib.pyplot as plt

    half_circumference = np.pi * EARTH_RADIUS_KM  # the largest possible error
    distances = np.logspace(-1, np.log10(half_circumference), 400)
    ordered = np.sort(errors_km)
    share = np.searchsorted(ordered, distances, side="right") / max(len(ordered), 1)
    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    axes.plot(distances, share, color="tab:blue")
    for km in THRESHOLDS_KM.values():
        value = float((ordered <= km).mean()) if len(ordered) else 0.0
        axes.axvline(km, color="grey", linewidth=0.6, linestyle=":")
        below = (3, -10) if value > 0.1 else (3, 4)  # clear of the x-axis labels
        axes.annotate(f"{value:.0%}", (km, value), textcoords="offset points", xytext=below, fontsize=8)
        axes.plot([km], [value], "o", color="tab:blue", markersize=3)
    axes.set_xscale("log")
    axes.set_xlim(distances[0], distances[-1])
    axes.set_ylim(0, 1)
    axes.set_xlabel("great-circle distance d (km)")
    axes.set_ylabel("share of photos within d")
    axes.set_title(f"Geolocation error curve ({len(ordered)} photos)")
    axes.grid(True, which="major", alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return Path(path)


class GeolocationWriter(PredictionWriter):
    """Writes ``predictions.csv`` for ``predict`` (see the module docstring)."""

    def write(self, folder: Path, records: list[dict[str, Any]], trainer: Trainer, pl_module: LightningModule) -> None:
        ordered = sorted({r["index"]: r for r in records}.values(), key=lambda r: r["index"])
        k = max((len(r["cells"]) for r in ordered), default=0)
        header = ["path", "lat", "lon"] + [f"{name}_{i}" for i in range(1, k + 1) for name in ("cell", "prob")]
        with atomic_path(folder / "predictions.csv") as tmp, tmp.open("w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            for r in ordered:
                top = [v for cell, p in zip(r["cells"], r["probs"], strict=True) for v in (cell, f"{p:.6f}")]
                writer.writerow([r["path"], f"{r['lat']:.6f}", f"{r['lon']:.6f}", *top])
        print(f"Wrote the predicted locations of {len(ordered)} images to {folder / 'predictions.csv'}.", flush=True)
