"""The text files of face-attribute data: CelebA's two lists, and per-image attribute probabilities.

CelebA ships (``Anno/`` and ``Eval/`` of the official release, copied into the data root)::

    list_attr_celeba.txt       202599                      <- the number of images
                               5_o_Clock_Shadow Arched_Eyebrows ... Young     <- the 40 names
                               000001.jpg -1  1  1 -1 ...   <- one row per image, -1/1 values,
                                                               padded with a variable number of spaces
    list_eval_partition.txt    000001.jpg 0                 <- 0 train, 1 val, 2 test

``attributes.csv`` is what ``python -m tasks.face_attributes predict`` writes and what a student
reads back with ``--data.teacher_outputs``: a header ``image,<name>,...`` then one row per image
with its probabilities. The key is the image's name as the data module names it (the CelebA file
name, or the path under ``--data.unlabelled_root`` / ``--data.predict_dir``), so a teacher's
``predict`` produces exactly the file a student reads.

torchvision's ``CelebA`` reads the same lists but insists on the MD5 sums of the original archive
files, so a re-packed or subsetted copy is refused; these readers check the content instead and
name the line that is wrong.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from backbone.errors import BadInputError

ATTRIBUTE_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_FOLDER = "img_align_celeba"
# list_eval_partition.txt's codes.
PARTITIONS = {"train": 0, "val": 1, "test": 2}
IMAGE_COLUMN = "image"  # first column of attributes.csv


def _lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise BadInputError(
            f"The {what} {str(path)!r} does not exist; a CelebA root holds {IMAGE_FOLDER}/, "
            f"{ATTRIBUTE_FILE} and {PARTITION_FILE}."
        )
    try:
        return path.read_text().splitlines()
    except UnicodeDecodeError:
        raise BadInputError(f"The {what} {str(path)!r} is not a text file.") from None


def read_attribute_file(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Parse ``list_attr_celeba.txt``: (attribute names, image names, labels (N, A) as 0/1 uint8)."""
    lines = _lines(path, "attribute file")
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise BadInputError(
            f"{str(path)!r} line 1 should be the number of images, then line 2 the attribute names; "
            f"got {lines[0][:40] if lines else 'an empty file'!r}."
        )
    declared = int(lines[0])
    names = lines[1].split()
    if not names or len(set(names)) != len(names):
        raise BadInputError(f"{str(path)!r} line 2 should list distinct attribute names; got {lines[1][:60]!r}.")
    images: list[str] = []
    rows: list[list[str]] = []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()  # the release pads values with one or two spaces
        if not fields:
            continue
        if len(fields) != len(names) + 1:
            raise BadInputError(
                f"{str(path)!r} line {number} has {len(fields) - 1} values for {fields[0]!r}; "
                f"expected {len(names)}, one per attribute of line 2."
            )
        bad = next((v for v in fields[1:] if v not in ("1", "-1")), None)
        if bad is not None:
            raise BadInputError(f"{str(path)!r} line {number} has the value {bad!r}; expected -1 or 1.")
        images.append(fields[0])
        rows.append(fields[1:])
    if len(images) != declared:
        raise BadInputError(f"{str(path)!r} declares {declared} images on line 1 but lists {len(images)}.")
    if len(set(images)) != len(images):
        duplicate = next(name for name, count in Counter(images).items() if count > 1)
        raise BadInputError(f"{str(path)!r} lists the image {duplicate!r} twice.")
    labels = (np.asarray(rows, dtype=np.int8).reshape(len(images), len(names)) > 0).astype(np.uint8)
    return names, images, labels


def read_partition_file(path: Path, images: Sequence[str]) -> np.ndarray:
    """Parse ``list_eval_partition.txt`` into each image's partition (0/1/2), in ``images``' order.

    The file must list exactly the images of the attribute file, each once.
    """
    partition: dict[str, int] = {}
    for number, line in enumerate(_lines(path, "partition file"), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise BadInputError(
                f"{str(path)!r} line {number} should be '<image> 0|1|2' (train/val/test); got {line.strip()[:60]!r}."
            )
        if fields[0] in partition:
            raise BadInputError(f"{str(path)!r} line {number} lists the image {fields[0]!r} a second time.")
        partition[fields[0]] = int(fields[1])
    missing = next((name for name in images if name not in partition), None)
    if missing is not None:
        raise BadInputError(
            f"{str(path)!r} does not match {ATTRIBUTE_FILE}: the image {missing!r} has attributes but no partition."
        )
    if len(partition) != len(images):
        known = set(images)
        extra = next(name for name in partition if name not in known)
        raise BadInputError(
            f"{str(path)!r} does not match {ATTRIBUTE_FILE}: the image {extra!r} has a partition but no attributes."
        )
    return np.array([partition[name] for name in images], dtype=np.int8)


# --- attributes.csv: per-image probabilities -------------------------------------------------
def format_attributes_csv(attribute_names: Sequence[str], rows: Sequence[tuple[str, Sequence[float]]]) -> str:
    """The text of an ``attributes.csv``: header, then ``image,p1,...,pA`` per row (6 decimals)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([IMAGE_COLUMN, *attribute_names])
    for name, probs in rows:
        writer.writerow([name, *(f"{float(p):.6f}" for p in probs)])
    return out.getvalue()


def read_attributes_csv(path: Path, attribute_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Read an ``attributes.csv`` into image name -> probabilities (float32, ``attribute_names`` order).

    The file's columns may come in any order but must name exactly the data's attributes; every
    value must be a probability in [0, 1].
    """
    if not path.is_file():
        raise BadInputError(
            f"The teacher outputs file {str(path)!r} does not exist; write it with the teacher's "
            "'python -m tasks.face_attributes predict' (attributes.csv)."
        )
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if not header or header[0] != IMAGE_COLUMN:
            raise BadInputError(
                f"{str(path)!r} line 1 should start with the column {IMAGE_COLUMN!r} (an attributes.csv written by "
                f"predict); got {','.join(header)[:60]!r}."
            )
        columns = header[1:]
        if sorted(columns) != sorted(attribute_names):
            missing = sorted(set(attribute_names) - set(columns))
            detail = f"it lacks {missing[0]!r}" if missing else f"it has {sorted(set(columns) - set(attribute_names))}"
            raise BadInputError(f"{str(path)!r} does not hold the data's {len(attribute_names)} attributes: {detail}.")
        order = [columns.index(name) for name in attribute_names]
        table: dict[str, np.ndarray] = {}
        for number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise BadInputError(f"{str(path)!r} line {number} has {len(row)} fields; expected {len(header)}.")
            try:
                values = np.array([float(v) for v in row[1:]], dtype=np.float64)
            except ValueError:
                raise BadInputError(f"{str(path)!r} line {number} has a value that is not a number.") from None
            if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
                raise BadInputError(f"{str(path)!r} line {number} has a value outside [0, 1]; expected probabilities.")
            if row[0] in table:
                raise BadInputError(f"{str(path)!r} line {number} lists the image {row[0]!r} a second time.")
            table[row[0]] = values[order].astype(np.float32)
    return table
