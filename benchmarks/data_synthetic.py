"""Synthetic full-size splits for the ``data`` section: the sizes users' runs have, no pixels to speak of.

Only the annotation side matters for set-up time and memory, so every image of a split is a
hard link to one of a few small JPEGs (118k links cost no space and a few seconds) whose size the
records state, and the records carry what the real files carry: COCO-2017-like counts (7.3
instances per image, polygons of about 24 points, 80 categories), MP-16-like geotags.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

# COCO 2017 train: 118,287 images, 860,001 instances (7.3 per image), 80 categories, 451 MB JSON.
COCO_TRAIN_IMAGES = 118_287
COCO_INSTANCES_PER_IMAGE = 7.3
# MP-16 (Müller-Budack et al. 2018): 4,723,695 geotagged Flickr photos.
MP16_PHOTOS = 4_723_695
# VGGFace2 (Cao et al. 2018): 9,131 identities, 3.31M images.
VGGFACE2_IDENTITIES = 9_131
VGGFACE2_IMAGES = 3_310_000
_LINKS_PER_FILE = 60_000
# Pixels of the one stored image: small, so an epoch's reads measure the data path, not JPEG decoding.
_W, _H = 64, 48
# Polygon points per instance: 26 bring the JSON to COCO 2017's 451 MB at COCO's counts.
_POLYGON_POINTS = 26


def _link_images(folder: Path, names: list[str]) -> None:
    """``folder/<name>`` (names may hold a subfolder) for every name: hard links to 64x48 JPEGs, a
    new source every ``_LINKS_PER_FILE`` (a file takes about 65,000 links), copies where links fail."""
    folder.mkdir(parents=True, exist_ok=True)
    sources: list[Path] = []
    made: set[Path] = set()
    for index, name in enumerate(names):
        if index % _LINKS_PER_FILE == 0:
            sources.append(folder.parent / f"_one_{len(sources)}.jpg")
            Image.new("RGB", (_W, _H), (120, 90 + len(sources) % 50, 60)).save(sources[-1], quality=90)
        target = folder / name
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        if not target.exists():
            try:
                os.link(sources[-1], target)
            except OSError:
                target.write_bytes(sources[-1].read_bytes())


def write_identity_tree(root: Path, identities: int = VGGFACE2_IDENTITIES, images: int = VGGFACE2_IMAGES) -> Path:
    """``root/<identity>/<n>.jpg`` in the VGGFace2 layout, ``images`` spread evenly over ``identities``."""
    per = np.full(identities, images // identities)
    per[: images - int(per.sum())] += 1
    names = [f"n{i:06d}/{k:04d}_01.jpg" for i in range(identities) for k in range(int(per[i]))]
    _link_images(root / "identities", names)
    return root / "identities"


def write_coco_split(root: Path, images: int = COCO_TRAIN_IMAGES, seed: int = 0) -> Path:
    """``root/annotations/instances_train2017.json`` + ``root/train2017/`` in COCO's layout.

    The JSON is written as text in chunks (json.dump of an 860k-record object would itself need
    the gigabytes the benchmark measures). Returns the annotation file.
    """
    rng = np.random.default_rng(seed)
    names = [f"{i:012d}.jpg" for i in range(1, images + 1)]
    _link_images(root / "train2017", names)
    path = root / "annotations" / "instances_train2017.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = rng.poisson(COCO_INSTANCES_PER_IMAGE, images)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        out.write('{"info": {"description": "synthetic COCO-2017-sized split"}, "licenses": [], "images": [')
        out.write(
            ", ".join(
                f'{{"id": {i + 1}, "file_name": "{name}", "width": {_W}, "height": {_H}, "license": 1}}'
                for i, name in enumerate(names)
            )
        )
        out.write('], "annotations": [')
        ann_id = 0
        first = True
        for image_index in range(images):
            n = int(counts[image_index])
            if n == 0:
                continue
            xy = rng.uniform(0, 1, (n, 4))
            x0, y0 = xy[:, 0] * (_W - 8), xy[:, 1] * (_H - 8)
            w, h = 2 + xy[:, 2] * (_W - x0 - 2), 2 + xy[:, 3] * (_H - y0 - 2)
            w, h = np.minimum(w, _W - x0), np.minimum(h, _H - y0)
            poly = (
                rng.uniform(0, 1, (n, _POLYGON_POINTS, 2)) * np.stack([w, h], 1)[:, None]
                + np.stack([x0, y0], 1)[:, None]
            )
            cats = rng.integers(1, 91, n)
            crowd = rng.random(n) < 0.01
            parts = []
            for k in range(n):
                ann_id += 1
                points = ", ".join(f"{v:.2f}" for v in poly[k].ravel())
                parts.append(
                    f'{{"id": {ann_id}, "image_id": {image_index + 1}, "category_id": {int(cats[k])}, '
                    f'"iscrowd": {int(crowd[k])}, "area": {w[k] * h[k] * 0.6:.2f}, '
                    f'"bbox": [{x0[k]:.2f}, {y0[k]:.2f}, {w[k]:.2f}, {h[k]:.2f}], "segmentation": [[{points}]]}}'
                )
            out.write(("" if first else ", ") + ", ".join(parts))
            first = False
        out.write('], "categories": [')
        out.write(", ".join(f'{{"id": {c}, "name": "category {c}", "supercategory": "thing"}}' for c in range(1, 91)))
        out.write("]}")
    os.replace(tmp, path)
    return path


def write_geotag_split(root: Path, photos: int = MP16_PHOTOS, seed: int = 0) -> Path:
    """``root/train.csv`` in MP-16's columns (``IMG_ID,AUTHOR,LAT,LON``, ids in its ``<hex>/<hex>/``
    folders), located like a photo collection (``benchmarks.geolocation.synthetic_photos``); no images."""
    from benchmarks.geolocation import synthetic_photos

    lat, lon = synthetic_photos(photos, seed)
    path = root / "train.csv"
    root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        out.write("IMG_ID,AUTHOR,LAT,LON\n")
        for start in range(0, photos, 500_000):
            rows = range(start, min(start + 500_000, photos))
            out.write(
                "".join(
                    f"{i % 256:02x}/{i // 256 % 256:02x}/{i:09d}.jpg,author,{lat[i]:.6f},{lon[i]:.6f}\n" for i in rows
                )
            )
    os.replace(tmp, path)
    return path
