"""WIDER FACE as downloaded, read in place and handed to the detection data as a COCO dict.

The layout (http://shuoyang1213.me/WIDERFACE/, unchanged)::

    WIDER_train/images/<event>/<name>.jpg        WIDER_val/images/<event>/<name>.jpg
    wider_face_split/wider_face_train_bbx_gt.txt wider_face_split/wider_face_val_bbx_gt.txt

Each ``*_bbx_gt.txt`` lists, per image, a line with its path under ``WIDER_<split>/images``, a
line with its face count N, then N lines ``x1 y1 w h blur expression illumination invalid
occlusion pose`` (the order of the dataset's readme; torchvision's ``WIDERFace`` reads columns
7-9 as occlusion, pose, invalid instead). An image with no face still has one line after its
``0``: ten zeros. Files rewritten without that line are read too (a line of ten numbers cannot be
mistaken for the next image's path). The format is declared once (``BOXES``) and every departure
is one sentence naming the file, the line and what was expected.

Converted to what ``datasets.coco.CocoDetection`` reads (``to_coco``): one category ``face``
(id 1), image ids 1..N in file order, sizes read from the image headers, boxes ``[x1, y1, w, h]``.
Two kinds of box are handled on purpose:

* ``invalid`` = 1 (faces the annotators marked as not recognisable): ``iscrowd`` = 1, i.e.
  ignore regions. They are not training targets, and COCO's evaluator neither rewards nor
  penalises a detection on them, as mmdetection's WIDER FACE reader puts them in
  ``bboxes_ignore``. (torchvision's SSD has no "ignore" label: anchors on them train as background.)
* w or h < 1 pixel (WIDER FACE's train file holds a few zero-size boxes): kept in the dict and
  dropped by ``clean_boxes``, the same rule and the same one warning per file as COCO's
  degenerate boxes, so neither training nor evaluation sees a box without extent.

Evaluation stays COCO mAP. WIDER FACE's own easy/medium/hard AP (its MATLAB/Python toolbox,
PASCAL-style AP at IoU 0.5 over difficulty subsets) is another protocol and is not reproduced.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from backbone.errors import BadInputError
from datasets.schema import Field, Format

CATEGORY_ID, CATEGORY_NAME = 1, "face"
# The columns of a box line, in the readme's order, with the values the readme defines.
BOX_COLUMNS = ("x1", "y1", "w", "h", "blur", "expression", "illumination", "invalid", "occlusion", "pose")
ATTRIBUTES = BOX_COLUMNS[4:]
_BOX_LINE = "'" + " ".join(BOX_COLUMNS) + "'"
_IMAGE_PATTERN = r"\S(.*\S)?\.(jpe?g|png|bmp|JPE?G|PNG|BMP)"

BOXES = Format(
    "WIDER FACE annotation file",
    "wider_face_{train,val}_bbx_gt.txt: per image a line with its path under WIDER_<split>/images, a line with its "
    f"face count N, then N lines {_BOX_LINE} (one line of zeros when N is 0)",
    (
        Field("image path", str, pattern=_IMAGE_PATTERN, pattern_words="such as 0--Parade/0_Parade_1.jpg",
              unique=True, noun="an image path"),
        Field("face count", int, low=0, noun="a number of faces"),
        Field("x1", float, noun="a pixel coordinate"),
        Field("y1", float, noun="a pixel coordinate"),
        Field("w", float, noun="a width in pixels"),
        Field("h", float, noun="a height in pixels"),
        Field("blur", int, choices=(0, 1, 2)),
        Field("expression", int, choices=(0, 1)),
        Field("illumination", int, choices=(0, 1)),
        Field("invalid", int, choices=(0, 1)),
        Field("occlusion", int, choices=(0, 1, 2)),
        Field("pose", int, choices=(0, 1)),
    ),
)  # fmt: skip


def _is_box_line(line: str) -> bool:
    fields = line.split()
    return len(fields) == len(BOX_COLUMNS) and all(re.fullmatch(r"[+-]?[\d.]+", f) for f in fields)


def read_boxes(path: str | os.PathLike[str]) -> tuple[list[tuple[str, int]], np.ndarray, np.ndarray, np.ndarray]:
    """Parse one ``*_bbx_gt.txt`` (checked against ``BOXES``).

    Returns ``(images, boxes, attributes, owner)``: ``images`` the (relative path, line number)
    of each image in file order; ``boxes`` (M, 4) float64 ``x1 y1 w h``; ``attributes`` (M, 6)
    int64 in ``ATTRIBUTES`` order; ``owner`` (M,) the index in ``images`` of each box's image.
    """
    fmt = BOXES
    path = fmt.require_file(path, " (WIDER FACE keeps it in wider_face_split/)")
    lines = fmt.read_lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    images: list[tuple[str, int]] = []
    rows: list[list[str]] = []
    numbers: list[int] = []  # the line number of each box line
    owner: list[int] = []
    at = 0
    while at < len(lines):
        name = lines[at].strip()
        fmt.value(path, at + 1, "image path", name)  # a box line here: the count above it is wrong
        if at + 1 >= len(lines):
            raise fmt.error(path, at + 1, f"the file ends after the image path {name!r}; expected its face count")
        count = fmt.value(path, at + 2, "face count", lines[at + 1])
        at += 2
        images.append((name, at - 1))
        if count == 0:
            if at < len(lines) and _is_box_line(lines[at]):  # the line of zeros of an image without faces
                at += 1
            continue
        for _ in range(count):
            if at >= len(lines):
                raise fmt.error(
                    path, None, f"the file ends inside the {count} box lines of {name!r} (line {images[-1][1]}); "
                    f"expected {count} lines {_BOX_LINE}",
                )  # fmt: skip
            fields = lines[at].split()
            if len(fields) != len(BOX_COLUMNS):
                raise fmt.error(
                    path, at + 1, f"the line {lines[at].strip()!r} has {len(fields)} fields; expected a box line "
                    f"{_BOX_LINE} ({count} follow the count of {name!r} on line {images[-1][1] + 1})",
                )  # fmt: skip
            rows.append(fields)
            numbers.append(at + 1)
            owner.append(len(images) - 1)
            at += 1
    fmt.unique(path, "image path", [n for n, _ in images], np.asarray([line for _, line in images]))
    table = np.asarray(rows, dtype=str).reshape(-1, len(BOX_COLUMNS))
    line_numbers = np.asarray(numbers, dtype=np.int64)
    columns = [fmt.column(path, column, table[:, k], line_numbers) for k, column in enumerate(BOX_COLUMNS)]
    boxes = np.stack(columns[:4], axis=1).astype(np.float64).reshape(-1, 4)
    attributes = np.stack(columns[4:], axis=1).astype(np.int64).reshape(-1, len(ATTRIBUTES))
    return images, boxes, attributes, np.asarray(owner, dtype=np.int64)


def _image_size(image: Path, annotation_file: Path, line: int) -> tuple[int, int]:
    """(width, height) from the image's header (no decode), or one sentence naming both files."""
    try:
        with Image.open(image) as opened:
            return opened.size
    except FileNotFoundError:
        raise BOXES.error(
            annotation_file, line, f"the image {str(image)!r} does not exist; expected every listed image in the "
            "image folder (WIDER_<split>/images, or --data.<split>_images)",
        ) from None  # fmt: skip
    except (UnidentifiedImageError, OSError) as error:
        raise BadInputError(
            f"The image file {str(image)!r} listed in {str(annotation_file)!r} line {line} could not be read as an "
            f"image ({error}); expected a JPEG or PNG."
        ) from None


def to_coco(annotation_file: str | os.PathLike[str], image_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The split as a COCO instances dict (see the module docstring: ``invalid`` -> ``iscrowd``)."""
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    images, boxes, attributes, owner = read_boxes(annotation_file)
    if not image_dir.is_dir():
        raise BadInputError(
            f"The image folder {str(image_dir)!r} of {str(annotation_file)!r} does not exist; expected "
            "WIDER_<split>/images/<event>/*.jpg (or --data.<split>_images naming it)."
        )
    records = []
    for index, (name, line) in enumerate(images):
        width, height = _image_size(image_dir / name, annotation_file, line)
        records.append({"id": index + 1, "file_name": name, "width": width, "height": height})
    invalid = ATTRIBUTES.index("invalid")
    annotations = [
        {
            "id": k + 1,
            "image_id": int(owner[k]) + 1,
            "category_id": CATEGORY_ID,
            "bbox": [float(v) for v in boxes[k]],
            "area": float(max(boxes[k, 2], 0.0) * max(boxes[k, 3], 0.0)),
            "iscrowd": int(attributes[k, invalid]),
            "wider_face": dict(zip(ATTRIBUTES, (int(v) for v in attributes[k]), strict=True)),
        }
        for k in range(len(boxes))
    ]
    return {
        "info": {"description": f"WIDER FACE {annotation_file.name}, read in place"},
        "images": records,
        "annotations": annotations,
        "categories": [{"id": CATEGORY_ID, "name": CATEGORY_NAME, "supercategory": "person"}],
    }
