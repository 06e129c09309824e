"""The classification demo sets: procedural textures in the ImageNet and Stanford Dogs layouts.

The sets are procedural textures (stripes, checkerboards, dots, rings ...) with random colours,
frequencies and phases: a from-scratch MobileNet can only solve them by learning real filters, and
does so in a few CPU minutes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from datasets.demo.cache import build_once

# The eight texture classes; for the Stanford Dogs demo they play eight "breeds", named in the
# real ``<wnid>-<breed>`` folder style.
TEXTURES = ("stripes", "vertical", "diagonal", "checker", "dots", "rings", "grid", "blobs")
DEMO_BREEDS = tuple((f"n0{2085620 + 17 * i}", name.capitalize() + "_hound") for i, name in enumerate(TEXTURES))


def _grid(size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    # a little rotation so that no class is recognisable from a single pixel row
    jitter = rng.uniform(-0.15, 0.15)
    return yy * np.cos(jitter) + xx * np.sin(jitter) + angle, xx * np.cos(jitter) - yy * np.sin(jitter) + angle


def texture(kind: str, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """An RGB uint8 texture of class ``kind``, with random colours, period and phase."""
    y, x = _grid(size, rng)
    period = rng.uniform(7.0, 16.0)
    f = 2 * np.pi / period
    if kind == "stripes":  # horizontal bands
        mask = np.sin(y * f) > 0
    elif kind == "vertical":
        mask = np.sin(x * f) > 0
    elif kind == "diagonal":  # either diagonal: flips must not change the class
        sign = rng.choice([-1.0, 1.0])
        mask = np.sin((x + sign * y) * f / np.sqrt(2)) > 0
    elif kind == "checker":
        mask = (np.sin(x * f) > 0) ^ (np.sin(y * f) > 0)
    elif kind == "dots":  # round dots on a square lattice (a checkerboard alternates squares)
        mask = np.hypot(np.mod(x, period) - period / 2, np.mod(y, period) - period / 2) < period * 0.22
    elif kind == "rings":
        cy, cx = rng.uniform(0, size[0]), rng.uniform(0, size[1])
        mask = np.sin(np.hypot(y - cy - y.min(), x - cx - x.min()) * f) > 0
    elif kind == "grid":
        mask = (np.abs(np.sin(x * f)) < 0.3) | (np.abs(np.sin(y * f)) < 0.3)
    elif kind == "blobs":  # smooth random blobs: no period at all
        small = rng.random((max(size[0] // 12, 2), max(size[1] // 12, 2)))
        mask = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize(size[::-1], Image.BICUBIC)) > 127
    else:
        raise ValueError(f"unknown texture {kind!r}")
    fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    while np.abs(fg.astype(int) - bg.astype(int)).sum() < 150:  # keep the pattern visible
        fg = rng.integers(0, 256, 3)
    image = np.where(mask[..., None], fg, bg).astype(np.float32)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def save_jpeg(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, quality=90)


def write_imagenet_demo(
    folder: Path, per_class_train: int = 80, per_class_val: int = 20, size: int = 128, num_classes: int = 8
) -> None:
    """ImageNet layout: ``train/<class>/*.jpg`` and ``val/<class>/*.jpg``, up to 8 texture classes."""
    rng = np.random.default_rng(1704_04861)
    for split, count in (("train", per_class_train), ("val", per_class_val)):
        for label, kind in enumerate(TEXTURES[:num_classes]):
            for i in range(count):
                save_jpeg(texture(kind, (size, size), rng), folder / split / f"c{label}_{kind}" / f"{kind}_{i:04d}.jpg")


def ensure_imagenet_demo(root: Path | None = None) -> Path:
    """The ImageNet-style demo set (generated on first use), 640 train and 160 val images."""
    return build_once("imagenet-textures-v3", write_imagenet_demo, root)


def write_dogs_demo(folder: Path, per_class_train: int = 40, per_class_test: int = 15, num_classes: int = 8) -> None:
    """Stanford Dogs layout: ``Images/<wnid>-<breed>/``, ``lists/*.mat`` and ``Annotation/``.

    Each image holds one textured "dog" in a box on a cluttered background, with the box in the
    dataset's PASCAL-VOC-style annotation file, so that the optional crop to the box helps.
    """
    rng = np.random.default_rng(120)
    lists: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for label, ((wnid, breed), kind) in enumerate(zip(DEMO_BREEDS[:num_classes], TEXTURES, strict=False), start=1):
        for i in range(per_class_train + per_class_test):
            split = "train" if i < per_class_train else "test"
            height, width = int(rng.integers(110, 160)), int(rng.integers(110, 160))
            image = np.clip(rng.normal(128, 40, (height, width, 3)), 0, 255).astype(np.uint8)
            bh, bw = int(rng.integers(height // 2, height - 4)), int(rng.integers(width // 2, width - 4))
            y0, x0 = int(rng.integers(0, height - bh)), int(rng.integers(0, width - bw))
            image[y0 : y0 + bh, x0 : x0 + bw] = texture(kind, (bh, bw), rng)
            stem = f"{wnid}_{i:05d}"
            relative = f"{wnid}-{breed}/{stem}.jpg"
            save_jpeg(image, folder / "Images" / relative)
            xml = folder / "Annotation" / f"{wnid}-{breed}" / stem
            xml.parent.mkdir(parents=True, exist_ok=True)
            xml.write_text(
                f"<annotation><folder>{wnid}</folder><filename>{stem}</filename>"
                f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
                f"<object><name>{breed}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                f"<xmax>{x0 + bw - 1}</xmax><ymax>{y0 + bh - 1}</ymax></bndbox></object></annotation>"
            )
            lists[split].append((relative, label))
    (folder / "lists").mkdir(parents=True, exist_ok=True)
    for split, entries in lists.items():
        write_dogs_list(folder / "lists" / f"{split}_list.mat", entries)


def write_dogs_list(path: Path, entries: list[tuple[str, int]]) -> None:
    """A ``lists/*_list.mat`` file as Stanford Dogs ships it: N x 1 cells and 1-based labels."""
    from scipy.io import savemat

    files = np.empty((len(entries), 1), dtype=object)
    annotations = np.empty((len(entries), 1), dtype=object)
    for i, (relative, _) in enumerate(entries):
        files[i, 0] = np.array([relative])
        annotations[i, 0] = np.array([relative.rsplit(".", 1)[0]])
    labels = np.array([[label] for _, label in entries], dtype=np.uint8)
    savemat(path, {"file_list": files, "annotation_list": annotations, "labels": labels})


def ensure_dogs_demo(root: Path | None = None) -> Path:
    """The Stanford-Dogs-layout demo set (generated on first use): 8 breeds, 320 train, 120 test."""
    return build_once("stanford-dogs-textures-v2", write_dogs_demo, root)
