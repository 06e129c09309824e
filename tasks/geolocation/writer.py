"""What geolocation writes: ``predictions.csv`` (predict), ``error_curve.png`` (test), ``cells.csv``.

``predictions.csv``: one row per image, ``path,lat,lon`` (the predicted location) then
``cell_1,prob_1 ... cell_k,prob_k`` (the k most likely S2 cells as tokens, with their
probabilities), in the order of the images. ``error_curve.png``: the share of test photos within
d km against d on a log axis, with the five Im2GPS scales marked, the way geolocation papers plot
it. ``cells.csv``: the partition (``token,count,lat,lon,center_lat,center_lon``), as the
``partition`` command writes it. On request (``--model.write_probabilities``),
``probabilities.npy``: every cell's probability for every image, float16, images x cells, rows in
the order of ``predictions.csv``, column c the cell on row c of ``probabilities_cells.csv``
(``token,lat,lon,center_lat,center_lon``: its training-photo centroid and its center); and
(``--model.world_maps N``) ``world_maps/<row>_<image>.png`` (``tasks.geolocation.maps``). Every
file is written atomically.
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
from tasks.geolocation.maps import write_world_map
from tasks.geolocation.metrics import EARTH_RADIUS_KM, THRESHOLDS_KM
from tasks.outputs import atomic_path


def write_cells_csv(partition: Partition, path: str | os.PathLike[str]) -> Path:
    """Write ``cells.csv`` atomically."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        partition.write_csv(handle)
    return Path(path)


def write_error_curve(errors_km: np.ndarray, path: str | os.PathLike[str], title: str = "") -> Path:
    """Plot the share of photos within d km against d (log scale) to a PNG, atomically
    (``title``: the test set's name, if any)."""
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
    axes.set_title(f"Geolocation error curve{f' on {title}' if title else ''} ({len(ordered)} photos)")
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
        if getattr(pl_module, "write_probabilities", False) and ordered:
            write_probabilities(folder, ordered, pl_module)
        maps = ordered[: getattr(pl_module, "world_maps", 0)]
        centroids = pl_module.cell_centroids.cpu().numpy() if maps else None
        for row, r in enumerate(maps, start=1):
            truth = tuple(r["truth"]) if r.get("truth") is not None else None
            name = Path(r["path"]).stem
            path = folder / "world_maps" / f"{row:04d}_{name}.png"
            write_world_map(path, name, r["cells"], r["probs"], (r["lat"], r["lon"]), truth, centroids)
        if maps:
            print(f"Drew the top cells of {len(maps)} images on world maps in {folder / 'world_maps'}.", flush=True)


def write_probabilities(folder: Path, ordered: list[dict[str, Any]], pl_module: LightningModule) -> None:
    """``probabilities.npy`` (images x cells, float16) and ``probabilities_cells.csv``, atomically.

    The matrix is filled row by row into a memory-mapped file: no second copy of it in memory.
    """
    cells = len(ordered[0]["all_probs"])
    with atomic_path(folder / "probabilities.npy") as tmp:
        matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(len(ordered), cells))
        for row, record in enumerate(ordered):
            matrix[row] = record["all_probs"]
        matrix.flush()
        del matrix
    tokens = pl_module.cell_tokens(range(cells))
    centroids, centers = pl_module.cell_centroids.tolist(), pl_module.cell_centers.tolist()
    with atomic_path(folder / "probabilities_cells.csv") as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["token", "lat", "lon", "center_lat", "center_lon"])
        for token, (lat, lon), (c_lat, c_lon) in zip(tokens, centroids, centers, strict=True):
            writer.writerow([token, f"{lat:.6f}", f"{lon:.6f}", f"{c_lat:.6f}", f"{c_lon:.6f}"])
    print(f"Wrote every cell's probability ({len(ordered)} images x {cells} cells) to {folder / 'probabilities.npy'}.")
