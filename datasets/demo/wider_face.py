"""The built-in face-detection demo: scenes with 0-4 synthetic faces, in WIDER FACE's layout.

``ensure_demo_wider_face()`` writes (once, see ``datasets.demo.cache.build_once``) what a WIDER FACE
download holds::

    wider-face-v1/WIDER_train/images/<event>/<name>.jpg       300 scenes
    wider-face-v1/WIDER_val/images/<event>/<name>.jpg          60 scenes
    wider-face-v1/wider_face_split/wider_face_{train,val}_bbx_gt.txt

so ``datasets.wider_face`` reads it with the code that reads the real files. A scene is a
128-192 px background (``faces._background``) with faces of new people (``faces.random_face``),
each drawn by the face demo's own drawer (``faces.render_face``) and pasted by its head-and-hair
mask; its box is the extent of the face's skin, as WIDER FACE boxes cover the face, not the hair.
Featureless skin-coloured ovals are pasted as distractors: a detector must find eyes, nose and
mouth, not a colour. About 8% of the scenes hold no face (written with WIDER FACE's line of zeros),
and 5% of the faces are pasted heavily blurred and marked ``blur 2, invalid 1``, so the reader's
ignore regions are exercised.

``draw_scene(faces, rng, style)`` places given ``Face`` s: a test builds group photos of people it
has enrolled from ``faces.draw_photo`` portraits. ``write_wider_face(folder, style, ...)`` writes a
set in the layout with any ``SceneStyle``; ``SECOND_STYLE`` (other seeds, larger scenes, smaller
faces, more of them) is the generalisation check of docs/detection.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from datasets.demo.cache import build_once
from datasets.demo.coco import box_iou_xywh
from datasets.demo.faces import Face, _background, random_face, render_face

DEMO_NAME = "wider-face-v1"
EVENTS = ("0--Gathering", "1--Portrait", "2--Street")  # WIDER FACE's <index>--<event> folders
EMPTY_EVERY = 12  # every 12th scene holds no face: 8%
INVALID_SHARE = 0.05  # faces pasted heavily blurred and marked invalid


@dataclass(frozen=True)
class SceneStyle:
    """How a set's scenes are drawn: sizes in pixels, counts, the seed of each split.

    ``face_px``: the range of a face's pasted portrait side (its box is about 0.6-0.9 of it),
    drawn log-uniformly; ``face_share``: the largest portrait side as a share of the scene's
    shorter side.
    """

    scene_px: tuple[int, int] = (128, 192)
    face_px: tuple[float, float] = (28.0, 150.0)
    face_share: float = 0.8
    faces: tuple[int, int] = (1, 4)
    distractors: tuple[int, int] = (0, 1)
    seeds: tuple[int, int] = (1511_06523, 1511_06524)  # train, val (arXiv 1511.06523: WIDER FACE)


DEMO_STYLE = SceneStyle()
SECOND_STYLE = SceneStyle(scene_px=(160, 256), face_px=(24.0, 120.0), face_share=0.6, faces=(1, 6),
                          distractors=(0, 2), seeds=(77_001, 77_002))  # fmt: skip


@dataclass(frozen=True)
class PlacedFace:
    """A face in a scene: its box ``[x, y, w, h]`` in the scene's pixels and its WIDER attributes."""

    box: tuple[int, int, int, int]
    blur: int = 0
    occlusion: int = 0
    invalid: int = 0

    def line(self) -> str:
        """The WIDER FACE box line: ``x1 y1 w h blur expression illumination invalid occlusion pose``."""
        return " ".join(str(v) for v in (*self.box, self.blur, 0, 0, self.invalid, self.occlusion, 0))


def _portrait_side(rng: np.random.Generator, style: SceneStyle, width: int, height: int) -> int:
    low, high = style.face_px[0], min(style.face_px[1], style.face_share * min(width, height))
    return int(round(np.exp(rng.uniform(np.log(low), np.log(max(high, low + 1))))))


def _paste(scene: np.ndarray, patch: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend ``patch`` (p x p) into ``scene`` at (x, y), the part inside the scene only."""
    height, width = scene.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + patch.shape[1], width), min(y + patch.shape[0], height)
    if x1 <= x0 or y1 <= y0:
        return
    a = alpha[y0 - y : y1 - y, x0 - x : x1 - x, None].astype(np.float32) / 255.0
    region = scene[y0:y1, x0:x1].astype(np.float32)
    scene[y0:y1, x0:x1] = (region * (1 - a) + patch[y0 - y : y1 - y, x0 - x : x1 - x] * a).astype(np.uint8)


def _distractor(scene: np.ndarray, rng: np.random.Generator, side: int) -> None:
    """A featureless skin-toned oval: a face's colour and shape without its parts."""
    face = random_face(rng)
    layer = Image.new("RGB", (side, side), face.skin)
    mask = Image.new("L", (side, side), 0)
    ImageDraw.Draw(mask).ellipse((side * 0.15, side * 0.05, side * 0.85, side * 0.95), fill=255)
    height, width = scene.shape[:2]
    x, y = int(rng.integers(-side // 4, width - side // 2)), int(rng.integers(-side // 4, height - side // 2))
    _paste(scene, np.asarray(layer), np.asarray(mask), x, y)


def draw_scene(
    faces: Sequence[Face],
    rng: np.random.Generator,
    style: SceneStyle = DEMO_STYLE,
    size: tuple[int, int] | None = None,
    distractors: int | None = None,
) -> tuple[np.ndarray, list[PlacedFace]]:
    """A scene (RGB uint8, ``size`` = (width, height) or drawn from ``style``) holding ``faces``.

    Each face is placed where its box overlaps earlier ones by IoU <= 0.2 (a face with no room
    after 30 tries is left out, so the result may hold fewer faces than given; a test that needs
    them all gives a scene large enough). Faces may be cut by the border (``occlusion`` 1).
    """
    if size is None:
        low, high = style.scene_px
        size = (int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1)))
    width, height = size
    side = max(width, height)
    scene = np.array(_background(side, rng))[:height, :width].copy()
    count = int(rng.integers(style.distractors[0], style.distractors[1] + 1)) if distractors is None else distractors
    for _ in range(count):
        _distractor(scene, rng, _portrait_side(rng, style, width, height))
    placed: list[PlacedFace] = []
    for face in faces:
        for _attempt in range(30):
            p = _portrait_side(rng, style, width, height)
            photo, masks = render_face(face, rng, p)
            ys, xs = np.nonzero(masks[..., 1] > 127)
            if len(xs) == 0:
                continue
            fx0, fy0, fx1, fy1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
            # up to a quarter of the face may leave the scene
            x = int(rng.integers(-fx0 - (fx1 - fx0) // 4, width - fx1 + (fx1 - fx0) // 4 + 1))
            y = int(rng.integers(-fy0 - (fy1 - fy0) // 4, height - fy1 + (fy1 - fy0) // 4 + 1))
            x0, y0 = max(x + fx0, 0), max(y + fy0, 0)
            x1, y1 = min(x + fx1, width), min(y + fy1, height)
            box = (x0, y0, x1 - x0, y1 - y0)
            if box[2] >= 4 and box[3] >= 4 and all(box_iou_xywh(list(box), list(o.box)) <= 0.2 for o in placed):
                break
        else:
            continue
        invalid = int(rng.random() < INVALID_SHARE)
        if invalid:  # unrecognisable: WIDER FACE's annotators mark such faces invalid
            photo = np.asarray(Image.fromarray(photo).filter(ImageFilter.GaussianBlur(max(2.0, p / 12))))
        _paste(scene, photo, masks[..., 0], x, y)
        cut = (x0, y0, x1, y1) != (x + fx0, y + fy0, x + fx1, y + fy1)
        placed.append(PlacedFace(box, blur=2 * invalid, occlusion=int(cut), invalid=invalid))
    return scene, placed


def write_split(folder: Path, split: str, count: int, seed: int, style: SceneStyle = DEMO_STYLE) -> None:
    """``WIDER_<split>/images/<event>/*.jpg`` and ``wider_face_split/wider_face_<split>_bbx_gt.txt``."""
    rng = np.random.default_rng(seed)
    lines: list[str] = []
    for index in range(count):
        event = EVENTS[index % len(EVENTS)]
        name = f"{event}/{event.split('--')[0]}_{event.split('--')[1]}_{split}_{index:04d}.jpg"
        n_faces = 0 if index % EMPTY_EVERY == EMPTY_EVERY - 1 else int(rng.integers(style.faces[0], style.faces[1] + 1))
        scene, placed = draw_scene([random_face(rng) for _ in range(n_faces)], rng, style)
        path = folder / f"WIDER_{split}" / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scene).save(path, quality=92)
        lines += [name, str(len(placed))]
        # WIDER FACE writes a trailing space after every box line, and ten zeros for no face
        lines += [face.line() + " " for face in placed] or ["0 0 0 0 0 0 0 0 0 0 "]
    split_dir = folder / "wider_face_split"
    split_dir.mkdir(parents=True, exist_ok=True)
    (split_dir / f"wider_face_{split}_bbx_gt.txt").write_text("\n".join(lines) + "\n")


def write_wider_face(folder: Path, style: SceneStyle = DEMO_STYLE, train: int = 300, val: int = 60) -> Path:
    """A set of ``train`` / ``val`` scenes in WIDER FACE's layout under ``folder``; returns ``folder``."""
    write_split(folder, "train", train, style.seeds[0], style)
    write_split(folder, "val", val, style.seeds[1], style)
    return folder


def ensure_demo_wider_face(root: Path | None = None) -> Path:
    """The demo set (generated on first use): ``<root or demo cache>/wider-face-v1-<digest>``."""
    return build_once(DEMO_NAME, _write_demo, root)


def _write_demo(folder: Path) -> None:
    write_wider_face(folder)


def ensure_second_wider_face(root: Path | None = None) -> Path:
    """The generalisation check's set (``SECOND_STYLE``), generated once: ``wider-face-second-v1``."""
    return build_once("wider-face-second-v1", _write_second, root)


def _write_second(folder: Path) -> None:
    write_wider_face(folder, SECOND_STYLE)
