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
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datasets.schema import Field, Format

ATTRIBUTE_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_FOLDER = "img_align_celeba"
# list_eval_partition.txt's codes.
PARTITIONS = {"train": 0, "val": 1, "test": 2}
IMAGE_COLUMN = "image"  # first column of attributes.csv


# The two lists, declared once (``datasets.schema``): every refusal names the file, line and field.
ATTRIBUTE_FORMAT = Format(
    "CelebA attribute file",
    f"{ATTRIBUTE_FILE}: the number of images on line 1, the attribute names on line 2, then one line "
    "'<image> <value> ...' per image with one value, -1 or 1, per attribute",
    (
        Field("image count", int, low=0, expected="the number of images listed, a whole number"),
        Field("attribute name", str, unique=True),
        Field("image", str, unique=True, noun="an image file name"),
        Field("value", int, choices=(-1, 1)),
    ),
)
PARTITION_FORMAT = Format(
    "CelebA partition file",
    f"{PARTITION_FILE}: one line '<image> <partition>' per image of {ATTRIBUTE_FILE}, the partition "
    "0 (train), 1 (val) or 2 (test)",
    (
        Field("image", str, unique=True, noun="an image file name"),
        Field("partition", int, choices=(0, 1, 2)),
    ),
)
_HINT = f" (a CelebA root holds {IMAGE_FOLDER}/, {ATTRIBUTE_FILE} and {PARTITION_FILE})"


def read_attribute_file(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Parse ``list_attr_celeba.txt``: (attribute names, image names, labels (N, A) as 0/1 uint8)."""
    fmt = ATTRIBUTE_FORMAT
    fmt.require_file(path, _HINT)
    lines = fmt.read_lines(path)
    if not lines:
        raise fmt.error(path, None, f"the file is empty; expected {fmt.layout}")
    declared = fmt.value(path, 1, "image count", lines[0])
    names = lines[1].split() if len(lines) > 1 else []
    if not names:
        raise fmt.error(path, 2, "there are no attribute names; expected the attribute names, separated by spaces")
    fmt.unique(path, "attribute name", names, ["line 2"] * len(names))
    images: list[str] = []
    rows: list[list[str]] = []
    numbers: list[int] = []
    for number, line in enumerate(lines[2:], start=3):
        fields = line.split()  # the release pads values with one or two spaces
        if not fields:
            continue
        if len(fields) != len(names) + 1:
            raise fmt.error(
                path,
                number,
                f"{len(fields) - 1} values follow {fields[0]!r}; expected {len(names)}, one per attribute of line 2",
            )
        images.append(fields[0])
        rows.append(fields[1:])
        numbers.append(number)
    values = np.asarray(rows, dtype=str).reshape(len(images), len(names))
    wrong = np.argwhere((values != "1") & (values != "-1"))
    if wrong.size:
        row, column = (int(i) for i in wrong[0])
        raise fmt.bad(path, numbers[row], "value", values[row, column], label=f"{names[column]} of {images[row]!r}")
    if len(images) != declared:
        raise fmt.error(path, 1, f"the image count is {declared}; expected {len(images)}, the number of image lines")
    fmt.unique(path, "image", images, numbers)
    labels = (values == "1").astype(np.uint8)
    return names, images, labels


def read_partition_file(path: Path, images: Sequence[str]) -> np.ndarray:
    """Parse ``list_eval_partition.txt`` into each image's partition (0/1/2), in ``images``' order.

    The file must list exactly the images of the attribute file, each once.
    """
    fmt = PARTITION_FORMAT
    fmt.require_file(path, _HINT)
    known = set(images)
    partition: dict[str, int] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(fmt.read_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise fmt.error(path, number, f"there are {len(fields)} fields; expected '<image> 0|1|2'")
        name, code = fields
        if name in partition:
            raise fmt.bad(path, number, "image", name, f"each image once (it is also on line {first_line[name]})")
        if name not in known:
            raise fmt.bad(path, number, "image", name, f"an image listed in {ATTRIBUTE_FILE}")
        partition[name] = fmt.value(path, number, "partition", code)
        first_line[name] = number
    missing = next((name for name in images if name not in partition), None)
    if missing is not None:
        raise fmt.error(
            path,
            None,
            f"the image {missing!r} of {ATTRIBUTE_FILE} has no line; expected one line per image of {ATTRIBUTE_FILE}",
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


TEACHER_OUTPUTS_FORMAT = Format(
    "teacher outputs file",
    f"an attributes.csv written by a teacher's 'python -m tasks.face_attributes predict': a header "
    f"'{IMAGE_COLUMN},<attribute>,...' naming the data's attributes, then one line "
    "'<image>,<probability>,...' per image",
    (
        Field(IMAGE_COLUMN, str, pattern=r".*\S.*", pattern_words="not blank", unique=True, noun="an image name"),
        Field("probability", float, low=0.0, high=1.0, noun="a probability"),
    ),
)


def read_attributes_csv(path: Path, attribute_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Read an ``attributes.csv`` into image name -> probabilities (float32, ``attribute_names`` order).

    The file's columns may come in any order but must name exactly the data's attributes; every
    value must be a probability in [0, 1].
    """
    fmt = TEACHER_OUTPUTS_FORMAT
    fmt.require_file(path, "; write it with the teacher's 'python -m tasks.face_attributes predict'")
    reader = csv.reader(io.StringIO(fmt.read_text(path), newline=""))
    header = next(reader, [])
    if not header or header[0] != IMAGE_COLUMN:
        raise fmt.bad(path, 1, "the first column", header[0] if header else "", f"{IMAGE_COLUMN!r} ({fmt.layout})")
    fmt.header(path, header, [IMAGE_COLUMN, *attribute_names])
    extra = next((c for c in header[1:] if c not in set(attribute_names)), None)
    if extra is not None:
        raise fmt.bad(
            path, 1, "a column", extra, f"only the data's {len(attribute_names)} attributes of {ATTRIBUTE_FILE}"
        )
    names: list[str] = []
    rows: list[list[str]] = []
    numbers: list[int] = []
    for row in reader:
        if not row or not any(field.strip() for field in row):
            continue
        if len(row) != len(header):
            raise fmt.error(
                path, reader.line_num, f"there are {len(row)} fields; expected {len(header)}, one per column of line 1"
            )
        names.append(row[0])
        rows.append(row[1:])
        numbers.append(reader.line_num)
    fmt.column(path, IMAGE_COLUMN, names, numbers)
    values = np.empty((len(rows), len(header) - 1), dtype=np.float64)
    table = np.asarray(rows, dtype=str).reshape(len(rows), len(header) - 1)
    for column, name in enumerate(header[1:]):
        values[:, column] = fmt.column(path, "probability", table[:, column], numbers, label=name)
    order = [header.index(name) - 1 for name in attribute_names]
    values = values[:, order].astype(np.float32)
    return dict(zip(names, values, strict=True))
