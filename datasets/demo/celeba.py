"""The built-in face-attribute demo: drawn faces whose attributes are visible marks, in CelebA's layout.

``ensure_celeba_demo()`` writes (once, through ``datasets.demo.build_once``) what a CelebA
download holds, at CelebA's aligned image size (178 x 218)::

    celeba-v2/img_align_celeba/000001.jpg ...     1800 faces: 1200 train, 300 val, 300 test
    celeba-v2/list_attr_celeba.txt                count line, 10 names, rows of -1/1 (CelebA's padding)
    celeba-v2/list_eval_partition.txt             0/1/2 per image
    celeba-v2/unlabelled/u00001.jpg ...           1200 more faces without labels (--data.unlabelled_root)

The ten attributes keep CelebA's names and are drawn as marks a small network must find: glasses
(two rims and a bridge), a hat band, a moustache stroke, blond hair, a smiling (curved) mouth,
lipstick (mouth colour), rosy cheeks (faint blobs), earrings (small dots), bangs (hair over the
forehead), pale skin (a lighter tone range that overlaps the others). Each mark has a random
strength, some of them faint, and every face is moved, scaled, rotated, noisy and on clutter, so
the mean AP is not saturated after a few epochs and a narrow, low-resolution student has
something to lose. Prevalences differ (15-50%), as CelebA's do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from datasets.attribute_files import ATTRIBUTE_FILE, IMAGE_FOLDER, PARTITION_FILE, PARTITIONS
from datasets.demo.cache import build_once

DEMO_NAME = "celeba-v2"
UNLABELLED_FOLDER = "unlabelled"
WIDTH, HEIGHT = 178, 218  # CelebA's aligned images
MARGIN = 40  # canvas border (2x pixels) cropped off after the rotation
# (CelebA name, prevalence) of the drawn attributes.
ATTRIBUTES: tuple[tuple[str, float], ...] = (
    ("Bangs", 0.3),
    ("Blond_Hair", 0.25),
    ("Eyeglasses", 0.15),
    ("Mustache", 0.15),
    ("Pale_Skin", 0.15),
    ("Rosy_Cheeks", 0.15),
    ("Smiling", 0.5),
    ("Wearing_Earrings", 0.2),
    ("Wearing_Hat", 0.2),
    ("Wearing_Lipstick", 0.35),
)
SPLIT_SIZES = {"train": 1200, "val": 300, "test": 300}
UNLABELLED_SIZE = 1200
SEED = 1704_04861_12
Colour = tuple[int, int, int]


def _mark_strength(rng: np.random.Generator) -> float:
    """Opacity of a positive mark: mostly clear, one in five faint (0.45-0.65)."""
    return float(rng.uniform(0.45, 0.65) if rng.random() < 0.2 else rng.uniform(0.75, 1.0))


def _background(rng: np.random.Generator) -> Image.Image:
    coarse = rng.integers(30, 230, size=(3, 3, 3)).astype(np.uint8)
    image = Image.fromarray(coarse).resize((WIDTH * 2 + 2 * MARGIN, HEIGHT * 2 + 2 * MARGIN), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 9))):  # clutter in any colour: strokes and blobs
        x0, y0 = (int(v) for v in rng.integers(0, WIDTH * 2 + MARGIN, 2))
        x1, y1 = x0 + int(rng.integers(-60, 60)), y0 + int(rng.integers(-60, 60))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(2, 6)))
        else:
            draw.ellipse((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), outline=colour, width=3)
    return image


@dataclass(frozen=True)
class Face:
    """Where one face's parts lie, in the 2x canvas (``s`` is the face's scale)."""

    cx: float
    cy: float
    s: float

    @property
    def fw(self) -> float:  # half-width
        return 52 * self.s

    @property
    def fh(self) -> float:  # half-height
        return 68 * self.s

    @property
    def eye_y(self) -> float:
        return self.cy - 0.15 * self.fh

    @property
    def eye_dx(self) -> float:
        return 0.42 * self.fw

    @property
    def ear_y(self) -> float:
        return self.cy + 0.05 * self.fh

    @property
    def mouth_y(self) -> float:
        return self.cy + 0.5 * self.fh


def _random_colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> Colour:
    r, g, b = (int(v) for v in rng.integers(low, high, 3))
    return r, g, b


def _scaled(colour: Colour, factor: float) -> Colour:
    r, g, b = (int(min(255, v * factor)) for v in colour)
    return r, g, b


# The overlaid marks: each draws one attribute on the face (blended in at a random strength).
def _rosy_cheeks(draw: ImageDraw.ImageDraw, f: Face, rng: np.random.Generator) -> None:
    colour = (int(rng.uniform(200, 240)), int(rng.uniform(70, 110)), int(rng.uniform(80, 120)))
    for k in (-1, 1):
        x, y = f.cx + k * 0.55 * f.fw, f.cy + 0.12 * f.fh
        draw.ellipse((x - 11 * f.s, y - 7 * f.s, x + 11 * f.s, y + 7 * f.s), fill=colour)


def _mustache(draw: ImageDraw.ImageDraw, f: Face, rng: np.random.Generator) -> None:
    y, half = f.mouth_y - 11 * f.s, 0.36 * f.fw
    draw.line((f.cx - half, y, f.cx + half, y), fill=_random_colour(rng, 10, 60), width=int(7 * f.s))


def _eyeglasses(draw: ImageDraw.ImageDraw, f: Face, rng: np.random.Generator) -> None:
    rim, width = _random_colour(rng, 0, 70), int(4 * f.s)
    for k in (-1, 1):
        x = f.cx + k * f.eye_dx
        draw.rectangle((x - 14 * f.s, f.eye_y - 9 * f.s, x + 14 * f.s, f.eye_y + 9 * f.s), outline=rim, width=width)
    draw.line((f.cx - f.eye_dx + 14 * f.s, f.eye_y, f.cx + f.eye_dx - 14 * f.s, f.eye_y), fill=rim, width=width)


def _earrings(draw: ImageDraw.ImageDraw, f: Face, rng: np.random.Generator) -> None:
    shine = [(250, 215, 60), (235, 235, 245), (60, 200, 230)][int(rng.integers(3))]
    for k in (-1, 1):
        x = f.cx + k * f.fw
        draw.ellipse((x - 5 * f.s, f.ear_y + 13 * f.s, x + 5 * f.s, f.ear_y + 23 * f.s), fill=shine)


def _hat(draw: ImageDraw.ImageDraw, f: Face, rng: np.random.Generator) -> None:
    crown, half = f.cy - f.fh * 1.12, f.fw * 1.15
    draw.rectangle((f.cx - half, crown - 12 * f.s, f.cx + half, crown + 14 * f.s), fill=_random_colour(rng))


MARKS = {
    "Rosy_Cheeks": _rosy_cheeks,
    "Mustache": _mustache,
    "Eyeglasses": _eyeglasses,
    "Wearing_Earrings": _earrings,
    "Wearing_Hat": _hat,
}


def _hair_colour(blond: bool, rng: np.random.Generator) -> Colour:
    if blond:
        return int(rng.uniform(200, 245)), int(rng.uniform(165, 205)), int(rng.uniform(60, 110))
    base = [(25, 22, 20), (95, 60, 35), (140, 60, 30), (150, 150, 150)][int(rng.integers(4))]  # black, brown ...
    r, g, b = (int(np.clip(v + rng.normal(0, 12), 0, 255)) for v in base)
    return r, g, b


def _draw_head(draw: ImageDraw.ImageDraw, f: Face, on: dict[str, bool], rng: np.random.Generator) -> None:
    """Hair, ears, face, bangs, eyes, brows, nose and mouth: the marks that change shape or colour."""
    tone = rng.uniform(222, 252) if on["Pale_Skin"] else rng.uniform(110, 215)
    skin = (int(tone), int(tone * rng.uniform(0.78, 0.88)), int(tone * rng.uniform(0.62, 0.75)))
    hair = _hair_colour(on["Blond_Hair"], rng)
    cx, cy, fw, fh, s = f.cx, f.cy, f.fw, f.fh, f.s
    draw.ellipse((cx - fw * 1.08, cy - fh * 1.12, cx + fw * 1.08, cy + fh * 0.55), fill=hair)  # behind the head
    for k in (-1, 1):
        draw.ellipse((cx + k * fw - 9 * s, f.ear_y - 14 * s, cx + k * fw + 9 * s, f.ear_y + 14 * s), fill=skin)
    draw.ellipse((cx - fw, cy - fh, cx + fw, cy + fh), fill=skin)
    if on["Bangs"]:  # hair over the forehead, down to just above the brows
        fringe = cy - fh * float(rng.uniform(0.35, 0.5))
        draw.rectangle((cx - fw * 0.92, cy - fh * 0.98, cx + fw * 0.92, fringe), fill=hair)
    for k in (-1, 1):
        x = cx + k * f.eye_dx
        draw.ellipse((x - 8 * s, f.eye_y - 4 * s, x + 8 * s, f.eye_y + 4 * s), fill=(245, 245, 240))
        draw.ellipse((x - 3.5 * s, f.eye_y - 3.5 * s, x + 3.5 * s, f.eye_y + 3.5 * s), fill=(40, 30, 25))
        draw.line((x - 9 * s, f.eye_y - 10 * s, x + 9 * s, f.eye_y - 11 * s), fill=hair, width=int(2 * s))
    draw.line((cx, f.eye_y + 6 * s, cx - 4 * s, cy + 0.25 * fh), fill=_scaled(skin, 0.8), width=int(2 * s))
    lipstick = (int(rng.uniform(185, 230)), int(rng.uniform(10, 45)), int(rng.uniform(30, 70)))
    mouth = lipstick if on["Wearing_Lipstick"] else _scaled(skin, 0.72)
    half = 0.36 * fw * float(rng.uniform(0.85, 1.15))
    if on["Smiling"]:
        bend = float(rng.uniform(8, 14)) * s
        box = (cx - half, f.mouth_y - bend * 1.6, cx + half, f.mouth_y + bend)
        draw.arc(box, 15, 165, fill=mouth, width=int(3.5 * s))
    else:
        draw.line((cx - half, f.mouth_y, cx + half, f.mouth_y), fill=mouth, width=int(3.5 * s))


def draw_face(labels: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """One 178 x 218 RGB face with the marks of ``labels`` (0/1 per entry of ``ATTRIBUTES``)."""
    on = {name: bool(v) for (name, _), v in zip(ATTRIBUTES, labels, strict=True)}
    # Drawn at twice the size on a canvas with a margin, then rotated, cropped and reduced.
    image = _background(rng)
    centre = (MARGIN + WIDTH + rng.uniform(-14, 14), MARGIN + HEIGHT * 1.1 + rng.uniform(-14, 14))
    face = Face(*centre, float(rng.uniform(1.7, 2.24)))
    _draw_head(ImageDraw.Draw(image), face, on, rng)
    for name, paint in MARKS.items():
        if on[name]:
            layer = image.copy()
            paint(ImageDraw.Draw(layer), face, rng)
            image = Image.blend(image, layer, _mark_strength(rng))
    image = image.rotate(float(rng.uniform(-8, 8)), resample=Image.BILINEAR, center=(face.cx, face.cy))
    image = image.crop((MARGIN, MARGIN, MARGIN + WIDTH * 2, MARGIN + HEIGHT * 2))  # no rotated corners
    image = image.resize((WIDTH, HEIGHT), Image.LANCZOS)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 1.2))))
    pixels = np.asarray(image, dtype=np.float32) * rng.uniform(0.85, 1.1) + rng.uniform(-15, 15)
    pixels += rng.normal(0, 7, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def draw_labels(count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` label rows (0/1) with each attribute's prevalence; lipstick rarely with a moustache."""
    labels = (rng.random((count, len(ATTRIBUTES))) < np.array([p for _, p in ATTRIBUTES])).astype(np.uint8)
    names = [name for name, _ in ATTRIBUTES]
    moustache, lipstick = names.index("Mustache"), names.index("Wearing_Lipstick")
    labels[(labels[:, moustache] == 1) & (rng.random(count) < 0.8), lipstick] = 0
    return labels


def write_celeba_list(
    folder: Path, names: list[str], attribute_names: list[str], labels: np.ndarray, partitions: list[int]
) -> None:
    """The two CelebA lists, padded as the release pads them (values right-aligned in 2 columns)."""
    rows = [f"{name} " + " ".join(f"{1 if v else -1:2d}" for v in row) for name, row in zip(names, labels, strict=True)]
    (folder / ATTRIBUTE_FILE).write_text("\n".join([str(len(names)), " ".join(attribute_names), *rows]) + "\n")
    lines = [f"{name} {p}" for name, p in zip(names, partitions, strict=True)]
    (folder / PARTITION_FILE).write_text("\n".join(lines) + "\n")


def write_celeba_demo(
    folder: Path, sizes: dict[str, int] | None = None, unlabelled: int = UNLABELLED_SIZE, seed: int = SEED
) -> None:
    """Write the demo set (``SPLIT_SIZES`` images per split, ``unlabelled`` extra faces) into ``folder``."""
    sizes = sizes or SPLIT_SIZES
    rng = np.random.default_rng(seed)
    total = sum(sizes.values())
    labels = draw_labels(total + unlabelled, rng)
    (folder / IMAGE_FOLDER).mkdir(parents=True, exist_ok=True)
    names = [f"{i:06d}.jpg" for i in range(1, total + 1)]  # CelebA's numbering, train first
    for name, row in zip(names, labels[:total], strict=True):
        draw_face(row, rng).save(folder / IMAGE_FOLDER / name, quality=90)
    partitions = [PARTITIONS[split] for split, count in sizes.items() for _ in range(count)]
    write_celeba_list(folder, names, [name for name, _ in ATTRIBUTES], labels[:total], partitions)
    if unlabelled:
        (folder / UNLABELLED_FOLDER).mkdir()
        for i, row in enumerate(labels[total:], start=1):
            draw_face(row, rng).save(folder / UNLABELLED_FOLDER / f"u{i:05d}.jpg", quality=90)


def ensure_celeba_demo(root: Path | None = None) -> Path:
    """The CelebA-layout demo set (generated on first use): ``<root or demo cache>/celeba-v2``."""
    return build_once(DEMO_NAME, write_celeba_demo, root)
