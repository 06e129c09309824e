"""The built-in face demo: synthetic "faces" whose identity is a visible, learnable pattern.

``ensure_demo_faces()`` writes (once, through a temporary folder and a rename, see
``datasets.demo.build_once``) four sets in the real public layouts::

    faces-v1/identities/<identity>/*.jpg     training identities (the VGGFace2 / CASIA layout)
    faces-v1/lfw/lfw/<Name>/<Name>_0001.jpg  unseen identities in LFW's layout, with
    faces-v1/lfw/pairs.txt                   its own 10-fold pairs file (header "10 <n>")
    faces-v1/gallery/<identity>/*.jpg        unseen identities for the face index demo ...
    faces-v1/queries/<identity>/*.jpg        ... and other photos of them, plus strangers

An identity is a set of continuous face parameters (face shape, skin, hair colour and style, eye
spacing/size/colour, brows, nose, mouth, glasses, beard, a mole); every photo of it adds nuisance
that a face model must ignore: position, scale, in-plane rotation, expression, lighting, colour
cast, background and sensor noise. Identities of the LFW, gallery and query sets never occur in
training, so verification measures generalisation to new people, as LFW does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from datasets.demo.cache import build_once

DEMO_NAME = "faces-v1"
IMAGE_SIZE = 96  # stored size of every demo photo (px, square)
SUPERSAMPLE = 2  # drawn at 2x then downsampled: antialiased edges, like a real photo
TRAIN_IDENTITIES, TRAIN_PHOTOS = 240, 8
# LFW's 10 sets are person-disjoint; each demo set draws its pairs from its own 12 people.
LFW_SETS, LFW_PAIRS_PER_SET, LFW_PEOPLE_PER_SET, LFW_PHOTOS = 10, 30, 12, 4
INDEX_IDENTITIES, GALLERY_PHOTOS, QUERY_PHOTOS, STRANGERS = 40, 3, 2, 10


@dataclass(frozen=True)
class Face:
    """The identity: what stays the same in every photo of one person (fractions of the image)."""

    face_w: float
    face_h: float
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: int  # 0 short, 1 tall, 2 side part, 3 bald
    hair_h: float
    eye_dx: float
    eye_y: float
    eye_r: float
    iris: tuple[int, int, int]
    brow_slant: float
    brow_w: float
    nose_len: float
    nose_w: float
    mouth_w: float
    mouth_y: float
    smile: float
    glasses: bool
    beard: bool
    mole: tuple[float, float] | None


def _colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(low, high, 3))  # type: ignore[return-value]


def random_face(rng: np.random.Generator) -> Face:
    """A new person."""
    tone = rng.uniform(0.25, 1.0)  # a skin-tone axis plus a little free colour
    skin = tuple(int(np.clip(c * tone + rng.normal(0, 18), 30, 255)) for c in (235, 190, 160))
    mole = (float(rng.uniform(-0.6, 0.6)), float(rng.uniform(-0.2, 0.6))) if rng.random() < 0.5 else None
    return Face(
        face_w=float(rng.uniform(0.26, 0.38)),
        face_h=float(rng.uniform(0.34, 0.44)),
        skin=skin,  # type: ignore[arg-type]
        hair=_colour(rng, 0, 230),
        hair_style=int(rng.integers(0, 4)),
        hair_h=float(rng.uniform(0.05, 0.16)),
        eye_dx=float(rng.uniform(0.09, 0.17)),
        eye_y=float(rng.uniform(-0.14, -0.02)),
        eye_r=float(rng.uniform(0.025, 0.05)),
        iris=_colour(rng, 0, 200),
        brow_slant=float(rng.uniform(-0.03, 0.03)),
        brow_w=float(rng.uniform(0.008, 0.025)),
        nose_len=float(rng.uniform(0.05, 0.14)),
        nose_w=float(rng.uniform(0.02, 0.06)),
        mouth_w=float(rng.uniform(0.07, 0.18)),
        mouth_y=float(rng.uniform(0.17, 0.27)),
        smile=float(rng.uniform(-1.0, 1.0)),
        glasses=bool(rng.random() < 0.25),
        beard=bool(rng.random() < 0.2),
        mole=mole,
    )


def _background(size: int, rng: np.random.Generator) -> Image.Image:
    """A random smooth colour field with a few blobs: a different scene in every photo."""
    coarse = rng.integers(0, 256, (3, 3, 3)).astype(np.uint8)
    image = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 4))):
        x, y, r = (float(v) for v in rng.uniform(0, size, 3) * (1, 1, 0.25))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=_colour(rng))
    return image


def draw_photo(face: Face, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """One photo of ``face`` (RGB uint8, size x size) with this photo's pose, light and scene."""
    return render_face(face, rng, size)[0]


def render_face(face: Face, rng: np.random.Generator, size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``draw_photo``'s photo and its masks (size x size x 2, uint8 0..255): channel 0 the head
    with its hair (what to paste into a scene), channel 1 the face's skin (the extent a face box
    annotates). Drawing the masks takes nothing from ``rng``: the photo is ``draw_photo``'s."""
    s = size * SUPERSAMPLE
    image = _background(s, rng)
    draw = ImageDraw.Draw(image)
    head, skin = Image.new("L", (s, s), 0), Image.new("L", (s, s), 0)
    head_draw, skin_draw = ImageDraw.Draw(head), ImageDraw.Draw(skin)
    scale = s * rng.uniform(0.88, 1.12)
    cx, cy = s / 2 + rng.normal(0, 0.04) * s, s / 2 + rng.normal(0, 0.04) * s

    def box(x: float, y: float, rx: float, ry: float) -> tuple[float, float, float, float]:
        return (cx + (x - rx) * scale, cy + (y - ry) * scale, cx + (x + rx) * scale, cy + (y + ry) * scale)

    def point(x: float, y: float) -> tuple[float, float]:
        return cx + x * scale, cy + y * scale

    fw, fh = face.face_w, face.face_h
    # hair behind the head, then the head
    if face.hair_style != 3:
        tall = face.hair_h * (1.6 if face.hair_style == 1 else 1.0)
        draw.ellipse(box(0, -fh * 0.35, fw * 1.08, fh * 0.65 + tall / 2), fill=face.hair)
        head_draw.ellipse(box(0, -fh * 0.35, fw * 1.08, fh * 0.65 + tall / 2), fill=255)
    draw.ellipse(box(0, 0, fw, fh), fill=face.skin)
    head_draw.ellipse(box(0, 0, fw, fh), fill=255)
    skin_draw.ellipse(box(0, 0, fw, fh), fill=255)
    if face.hair_style == 2:  # side part: a fringe over one side of the forehead
        draw.pieslice(box(-fw * 0.3, -fh * 0.75, fw * 0.8, fh * 0.4), 0, 180, fill=face.hair)
    elif face.hair_style == 0:
        draw.chord(box(0, -fh * 0.78, fw * 0.9, fh * 0.3), 0, 180, fill=face.hair)
    if face.beard:
        draw.chord(box(0, fh * 0.35, fw * 0.85, fh * 0.55), 0, 180, fill=face.hair)
    # eyes (a blink sometimes), brows, glasses
    open_ = 1.0 if rng.random() > 0.1 else 0.25
    for side in (-1, 1):
        ex, ey, r = side * face.eye_dx, face.eye_y, face.eye_r
        draw.ellipse(box(ex, ey, r * 1.5, r * open_), fill=(245, 245, 245))
        draw.ellipse(box(ex, ey, r * 0.7, r * 0.7 * open_), fill=face.iris)
        brow_y = ey - r * 2.2
        draw.line(
            (
                point(ex - r * 1.6, brow_y + side * face.brow_slant),
                point(ex + r * 1.6, brow_y - side * face.brow_slant),
            ),
            fill=face.hair,
            width=max(1, round(face.brow_w * scale)),
        )
        if face.glasses:
            draw.ellipse(box(ex, ey, r * 2.2, r * 1.9), outline=(20, 20, 20), width=max(1, round(0.012 * scale)))
    # nose, mouth (the expression moves the smile a little), mole
    nose_tip = face.eye_y + face.nose_len + 0.05
    dark = tuple(int(c * 0.7) for c in face.skin)
    draw.polygon([point(0, face.eye_y + 0.03), point(-face.nose_w, nose_tip), point(face.nose_w, nose_tip)], fill=dark)
    smile = face.smile + rng.normal(0, 0.25)
    depth = 0.04 * abs(smile) + 0.005
    mouth = box(0, face.mouth_y - (depth if smile > 0 else -depth), face.mouth_w, depth * 2)
    draw.arc(
        mouth, 0 if smile > 0 else 180, 180 if smile > 0 else 360, fill=(150, 40, 50), width=max(1, round(0.02 * scale))
    )
    if face.mole is not None:
        mx, my = face.mole
        draw.ellipse(box(mx * fw, my * fh, 0.018, 0.018), fill=(60, 30, 20))
    # pose, light, noise
    angle = float(rng.uniform(-12, 12))
    image = image.rotate(angle, resample=Image.BILINEAR, center=(cx, cy))
    image = image.resize((size, size), Image.LANCZOS).filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.6)))
    pixels = np.asarray(image, dtype=np.float32) * rng.uniform(0.7, 1.25) + rng.normal(0, 12, 3)
    pixels += rng.normal(0, 5, pixels.shape)
    masks = [np.asarray(m.rotate(angle, resample=Image.BILINEAR, center=(cx, cy)).resize((size, size), Image.BILINEAR))
             for m in (head, skin)]  # fmt: skip
    return np.clip(pixels, 0, 255).astype(np.uint8), np.stack(masks, axis=-1)


def _save(pixels: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=92)


# Draws one photo of a face (``draw_photo``, or a harder variant: datasets/demo/faces_second.py).
Drawer = Callable[[Face, np.random.Generator, int], np.ndarray]


def write_identities(
    folder: Path, identities: int, photos: int, seed: int, size: int = IMAGE_SIZE, draw: Drawer = draw_photo
) -> None:
    """``folder/<identity>/*.jpg``: ``identities`` people with ``photos`` photos each."""
    rng = np.random.default_rng(seed)
    for i in range(identities):
        face = random_face(rng)
        for j in range(photos):
            _save(draw(face, rng, size), folder / f"id{i:05d}" / f"{j:04d}.jpg")


def write_lfw(
    folder: Path,
    sets: int = LFW_SETS,
    pairs_per_set: int = LFW_PAIRS_PER_SET,
    people_per_set: int = LFW_PEOPLE_PER_SET,
    photos: int = LFW_PHOTOS,
    seed: int = 2007,
    size: int = IMAGE_SIZE,
    draw: Drawer = draw_photo,
    different_photos: int = 2,
) -> None:
    """LFW's layout: ``lfw/<Name>/<Name>_0001.jpg`` and ``pairs.txt`` with ``sets`` person-disjoint
    sets of ``pairs_per_set`` same-person then ``pairs_per_set`` different-person pairs."""
    rng = np.random.default_rng(seed)
    lines = [f"{sets}\t{pairs_per_set}"]
    for k in range(sets):
        names = [f"Demo_Person_{k * people_per_set + i:04d}" for i in range(people_per_set)]
        for name in names:
            face = random_face(rng)
            for j in range(1, photos + 1):
                _save(draw(face, rng, size), folder / "lfw" / name / f"{name}_{j:04d}.jpg")
        same = [(n, a, b) for n in names for a in range(1, photos + 1) for b in range(a + 1, photos + 1)]
        shown = range(1, different_photos + 1)  # the photos different-person pairs draw from
        different = [(a, i, b, j) for a in names for b in names if a < b for i in shown for j in shown]
        for index in rng.choice(len(same), pairs_per_set, replace=False):
            name, a, b = same[index]
            lines.append(f"{name}\t{a}\t{b}")
        for index in rng.choice(len(different), pairs_per_set, replace=False):
            lines.append("\t".join(str(v) for v in different[index]))
    (folder / "pairs.txt").write_text("\n".join(lines) + "\n")


def write_index_sets(folder: Path, seed: int = 128) -> None:
    """``gallery/<identity>`` and ``queries/<identity>`` (other photos of the same people, plus
    ``STRANGERS`` people who are not in the gallery, whose best match should be ``unknown``)."""
    rng = np.random.default_rng(seed)
    for i in range(INDEX_IDENTITIES + STRANGERS):
        face = random_face(rng)
        name = f"person{i:03d}" if i < INDEX_IDENTITIES else f"stranger{i - INDEX_IDENTITIES:03d}"
        if i < INDEX_IDENTITIES:
            for j in range(GALLERY_PHOTOS):
                _save(draw_photo(face, rng), folder / "gallery" / name / f"{j:04d}.jpg")
        for j in range(QUERY_PHOTOS):
            _save(draw_photo(face, rng), folder / "queries" / name / f"q{j:04d}.jpg")


def write_demo_faces(folder: Path) -> None:
    write_identities(folder / "identities", TRAIN_IDENTITIES, TRAIN_PHOTOS, seed=1503_03832)
    write_lfw(folder / "lfw")
    write_index_sets(folder)


def ensure_demo_faces(root: Path | None = None) -> Path:
    """The face demo sets (generated on first use): see the module docstring."""
    return build_once(DEMO_NAME, write_demo_faces, root)
