"""The built-in geolocation demo: photos whose look depends on where they were "taken".

Written in the real layout (``train.csv``, ``test.csv`` with ``IMG_ID,LAT,LON`` and
``images/<IMG_ID>``) so that ``datasets.geo_photos`` reads it like MP-16. Photos cluster around
a few dozen world cities (more around big ones), scattered a few tens of kilometres, with some
far from any city. What a photo shows is a function of its place:

* the background colour varies smoothly over the globe: hue with longitude (cyclic, so the
  antimeridian is seamless), brightness with latitude, a "sky" band that grows towards the poles;
* each city has its own motif (one of the classification demo's textures in a city colour) on a
  patch of random size and position, so a photo of a city is recognisable, as landmarks and
  architecture make real photos;
* plus pixel noise and random motif phase, so no two photos are alike.

``look="bands"`` draws another style (for a second, differently made test set): latitude sets the
colour, longitude the angle of stripes, and the place motifs are rings of a place-specific period.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datasets.demo.cache import build_once
from datasets.demo.textures import TEXTURES, save_jpeg, texture

# (name, latitude, longitude, relative number of photos): spread over every continent, with
# places near the antimeridian (Suva, Apia, Auckland) and the poles (Longyearbyen, McMurdo).
CITIES: tuple[tuple[str, float, float, float], ...] = (
    ("London", 51.507, -0.128, 3.0),
    ("Paris", 48.857, 2.352, 3.0),
    ("Rome", 41.903, 12.496, 2.0),
    ("Berlin", 52.520, 13.405, 1.5),
    ("Madrid", 40.417, -3.704, 1.5),
    ("Istanbul", 41.008, 28.978, 1.5),
    ("Moscow", 55.756, 37.617, 1.5),
    ("Cairo", 30.044, 31.236, 1.0),
    ("Nairobi", -1.286, 36.817, 1.0),
    ("Cape Town", -33.925, 18.424, 1.0),
    ("Lagos", 6.524, 3.379, 0.7),
    ("Dubai", 25.205, 55.271, 1.0),
    ("Mumbai", 19.076, 72.878, 1.5),
    ("Bangkok", 13.756, 100.502, 1.5),
    ("Beijing", 39.904, 116.407, 1.5),
    ("Tokyo", 35.676, 139.650, 3.0),
    ("Seoul", 37.567, 126.978, 1.0),
    ("Singapore", 1.352, 103.820, 1.0),
    ("Sydney", -33.869, 151.209, 2.0),
    ("Auckland", -36.849, 174.763, 1.0),
    ("Suva", -18.142, 178.442, 0.5),
    ("Apia", -13.833, -171.767, 0.5),
    ("Honolulu", 21.307, -157.858, 1.0),
    ("Anchorage", 61.218, -149.900, 0.5),
    ("San Francisco", 37.775, -122.419, 2.0),
    ("New York", 40.713, -74.006, 3.0),
    ("Mexico City", 19.433, -99.133, 1.5),
    ("Rio de Janeiro", -22.907, -43.173, 1.5),
    ("Buenos Aires", -34.604, -58.382, 1.0),
    ("Lima", -12.046, -77.043, 0.7),
    ("Longyearbyen", 78.223, 15.627, 0.4),
    ("McMurdo Station", -77.846, 166.676, 0.4),
)
CITY_SPREAD_KM = 25.0  # standard deviation of a photo's offset from its city centre
STRAY_SHARE = 0.08  # share of photos taken anywhere on land-or-sea (uniform on the sphere)
KM_PER_DEGREE = 111.195  # one degree of latitude on a sphere of radius 6371 km


def place_photos(
    places: Sequence[tuple[float, float, float]], count: int, rng: np.random.Generator, spread_km: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(place index or -1 for a stray photo, latitude, longitude) of ``count`` photos."""
    weights = np.asarray([w for _, _, w in places], dtype=np.float64)
    place = rng.choice(len(places), size=count, p=weights / weights.sum())
    centre = np.asarray([(lat, lon) for lat, lon, _ in places])[place]
    north, east = rng.normal(0, spread_km, (2, count))
    lat = np.clip(centre[:, 0] + north / KM_PER_DEGREE, -89.9, 89.9)
    lon = centre[:, 1] + east / (KM_PER_DEGREE * np.cos(np.radians(lat)))
    stray = rng.random(count) < STRAY_SHARE
    lat[stray] = np.degrees(np.arcsin(rng.uniform(-1, 1, stray.sum())))
    lon[stray] = rng.uniform(-180, 180, stray.sum())
    place[stray] = -1
    lon = (lon + 180.0) % 360.0 - 180.0
    return place, lat, lon


def _background(lat: float, lon: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth function of the place: hue from longitude, brightness and sky from latitude."""
    angle = np.radians(lon)
    hue = np.array([np.cos(angle), np.cos(angle - 2.1), np.cos(angle + 2.1)])  # cyclic RGB wheel
    light = 0.55 + 0.35 * np.sin(np.radians(lat))
    ground = 255 * np.clip(light * (0.6 + 0.35 * hue), 0, 1)
    sky = np.array([150.0, 190.0, 235.0]) * (0.6 + 0.4 * light)
    horizon = int(size * (0.15 + 0.5 * abs(lat) / 90.0 + rng.uniform(-0.05, 0.05)))
    image = np.empty((size, size, 3), dtype=np.float32)
    image[:] = ground
    image[:horizon] = sky
    return image


def _city_motif(index: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """City ``index``'s motif: its texture kind, with foreground/background from its own palette."""
    kind = TEXTURES[index % len(TEXTURES)]
    palette = np.random.default_rng(1000 + index)  # the same colours for every photo of the city
    colours = palette.integers(0, 256, (2, 3)).astype(np.float32)
    pattern = texture(kind, size, rng).astype(np.float32).mean(axis=2, keepdims=True) / 255.0
    mask = pattern > pattern.mean()
    return np.where(mask, colours[0], colours[1])


def _bands_image(place: int, lat: float, lon: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """The second style: colour from latitude, stripe angle from longitude, place rings."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    colour = 255 * np.clip(np.array([0.5 + lat / 180, 0.5 - lat / 180, 0.5 + 0.4 * np.sin(np.radians(lat) * 3)]), 0, 1)
    angle = np.radians(lon) / 2  # [-pi/2, pi/2]: one stripe angle per longitude
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 0.5 + rng.uniform(0, 6.3)) > 0
    image = np.where(stripes[..., None], colour, 255 - colour).astype(np.float32)
    if place >= 0:
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        period = 3.0 + (place % 7)
        rings = np.sin(np.hypot(yy - cy, xx - cx) * 2 * np.pi / period) > 0
        inside = np.hypot(yy - cy, xx - cx) < size * 0.3
        tint = np.random.default_rng(2000 + place).integers(0, 256, 3)
        image[inside & rings] = tint
    return image


def render(place: int, lat: float, lon: float, size: int, rng: np.random.Generator, look: str) -> np.ndarray:
    """One photo (RGB uint8) taken at (lat, lon), near place ``place`` (-1: none)."""
    if look == "bands":
        image = _bands_image(place, lat, lon, size, rng)
    else:
        image = _background(lat, lon, size, rng)
        if place >= 0:
            side = int(rng.integers(size // 3, size * 2 // 3))
            y0, x0 = rng.integers(0, size - side, 2)
            image[y0 : y0 + side, x0 : x0 + side] = _city_motif(place, (side, side), rng)
    image += rng.normal(0, 10, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_geo_demo(
    folder: Path,
    train: int = 1800,
    test: int = 300,
    size: int = 64,
    places: Sequence[tuple[float, float, float]] | None = None,
    spread_km: float = CITY_SPREAD_KM,
    look: str = "cities",
    seed: int = 2016,
) -> None:
    """The geotagged-photos layout: ``train.csv``, ``test.csv`` and ``images/<IMG_ID>``.

    ``places`` are (lat, lon, weight) triples; default the world cities of ``CITIES``. IMG_IDs
    are MP-16-style relative paths (``<hex>/<hex>/<number>.jpg``) and the CSVs carry an extra
    ``AUTHOR`` column before ``LAT``, as MP-16's do, so the columns are found by name.
    """
    rng = np.random.default_rng(seed)
    places = places if places is not None else [(lat, lon, w) for _, lat, lon, w in CITIES]
    for split, count in (("train", train), ("test", test)):
        place, lat, lon = place_photos(places, count, rng, spread_km)
        rows = []
        for k in range(count):
            number = int(rng.integers(10**9, 10**10))
            img_id = f"{number % 256:02x}/{number // 256 % 256:02x}/{number}.jpg"
            save_jpeg(render(int(place[k]), float(lat[k]), float(lon[k]), size, rng, look), folder / "images" / img_id)
            rows.append((img_id, f"{number % 97}@N0{k % 9}", f"{lat[k]:.6f}", f"{lon[k]:.6f}"))
        with (folder / f"{split}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(("IMG_ID", "AUTHOR", "LAT", "LON"))
            writer.writerows(rows)


def ensure_geo_demo(root: Path | None = None) -> Path:
    """The geolocation demo set (generated on first use): 1800 train and 300 test photos, 64 px."""
    return build_once("geo-cities-v1", write_geo_demo, root)
