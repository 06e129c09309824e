"""A second generated face set, unlike the demo: for checking defaults on data they were not tuned on.

``write_second_face_set(folder)`` writes, in the same public layouts as the demo::

    identities/<identity>/*.jpg     200 training identities x 10 photos (VGGFace2 / CASIA layout)
    lfw/lfw/<Name>/<Name>_0001.jpg  30 unseen people in LFW's layout (10 person-disjoint sets of 3,
    lfw/pairs.txt                   6 photos each) and its 10-fold pairs file

The people are drawn by the demo's face model (``datasets.demo.faces``), but every photo carries
nuisance the demo does not have, of the kinds the issue that asked for it names: a stronger pose
(in-plane rotation up to 20 degrees, off-centre framing, zoom 0.9-1.2, a horizontal squash that
mimics a turned head), lighting that falls off across the face, per-channel colour casts of up to
15%, and, on 30% of photos, an occluder (dark glasses, a scarf over the mouth, or a hand-sized blob).
Photos are stored at 112 px (the demo: 96).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from datasets.demo.faces import Face, draw_photo, write_identities, write_lfw

SECOND_SIZE = 112
SECOND_IDENTITIES, SECOND_PHOTOS = 200, 10
SECOND_LFW = {"sets": 10, "pairs_per_set": 30, "people_per_set": 3, "photos": 6, "different_photos": 6}
OCCLUDED_SHARE = 0.3


def _occlude(image: Image.Image, rng: np.random.Generator) -> None:
    """Dark glasses, a scarf or a blob, drawn in place (positions as shares of the image)."""
    size = image.size[0]
    draw = ImageDraw.Draw(image)
    kind = int(rng.integers(0, 3))
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    if kind == 0:  # dark glasses over both eyes
        y = size * rng.uniform(0.36, 0.46)
        draw.rectangle((size * 0.25, y, size * 0.75, y + size * 0.09), fill=(15, 15, 20))
    elif kind == 1:  # a scarf over the mouth and chin
        y = size * rng.uniform(0.62, 0.72)
        draw.rectangle((size * 0.15, y, size * 0.85, size), fill=colour)
    else:  # a hand-sized blob anywhere on the face
        x, y = size * rng.uniform(0.25, 0.75, 2)
        r = size * rng.uniform(0.08, 0.16)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)


def draw_second_photo(face: Face, rng: np.random.Generator, size: int = SECOND_SIZE) -> np.ndarray:
    """One photo of ``face`` with the second set's nuisance (see the module docstring)."""
    base = Image.fromarray(draw_photo(face, rng, size))
    # pose: a turned head (horizontal squash), zoom, rotation and off-centre framing, one affine map
    angle = np.radians(rng.uniform(-20, 20))
    zoom, squash = rng.uniform(0.9, 1.2), rng.uniform(0.8, 1.0)
    shift = rng.normal(0, 0.07, 2) * size
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    # PIL's affine maps output -> input pixels: [[a, b, c], [d, e, f]]
    a, b, d, e = cos / squash, sin / squash, -sin, cos
    centre = size / 2
    c = centre - a * (centre + shift[0]) - b * (centre + shift[1])
    f = centre - d * (centre + shift[0]) - e * (centre + shift[1])
    fill = tuple(int(v) for v in np.asarray(base).reshape(-1, 3).mean(0))  # uncovered corners: the scene's mean
    image = base.transform((size, size), Image.AFFINE, (a, b, c, d, e, f), Image.BILINEAR, fillcolor=fill)
    if rng.random() < OCCLUDED_SHARE:
        _occlude(image, rng)
    pixels = np.asarray(image, dtype=np.float32)
    # light falling off across the face from a random side, and a strong colour cast
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction)
    ys, xs = np.mgrid[0:size, 0:size] / size - 0.5
    light = 1.0 + rng.uniform(0.1, 0.4) * (xs * direction[0] + ys * direction[1])
    cast = rng.uniform(0.85, 1.15, 3)
    pixels = pixels * light[..., None] * cast + rng.normal(0, 8, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_second_face_set(folder: Path, seed: int = 2024) -> None:
    """``folder/identities`` and ``folder/lfw`` (see the module docstring)."""
    write_identities(
        folder / "identities", SECOND_IDENTITIES, SECOND_PHOTOS, seed=seed, size=SECOND_SIZE, draw=draw_second_photo
    )
    write_lfw(folder / "lfw", seed=seed + 1, size=SECOND_SIZE, draw=draw_second_photo, **SECOND_LFW)
