"""The text files of face-attribute data: CelebA's two lists (as released, and as Kaggle copies
them), and per-image attribute probabilities.

CelebA's official release (``Anno/`` and ``Eval/``; ``datasets.celeba_layouts`` finds them there or
in the data root itself)::

    list_attr_celeba.txt       202599                      <- the number of images
                               5_o_Clock_Shadow Arched_Eyebrows ... Young     <- the 40 names
                               000001.jpg -1  1  1 -1 ...   <- one row per image, -1/1 values,
                                                               padded with a variable number of spaces
    list_eval_partition.txt    000001.jpg 0                 <- 0 train, 1 val, 2 test

Kaggle's copy (``jessicali9530/celeba-dataset``) holds the same tables as CSV files::

    list_attr_celeba.csv       image_id,5_o_Clock_Shadow,...,Young     <- a header, no count line
                               000001.jpg,-1,1,1,-1,...
    list_eval_partition.csv    image_id,partition
                               000001.jpg,0

``attributes.csv`` is what ``python -m tasks.face_attributes predict`` writes and what a student
reads back with ``--data.teacher_outputs``: a header ``image,<name>,...`` then one row per image
with its probabilities. The key is the image's name as the data module names it (the CelebA file
name, or the path under ``--data.unlabelled_root`` / ``--data.predict_dir``), so a teacher's
``predict`` produces exactly the file a student reads. At web scale the same table is read from
``attributes.npy`` instead (``datasets.teacher_outputs``).

torchvision's ``CelebA`` reads the official lists but insists on the MD5 sums of the original
archive files, so a re-packed, subsetted or Kaggle copy is refused; these readers check the
content instead and name the line that is wrong.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from datasets.schema import Field, Format

ATTRIBUTE_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IMAGE_FOLDER = "img_align_celeba"
# Kaggle's copy: the same two tables as CSV, keyed by an ``image_id`` column.
KAGGLE_ATTRIBUTE_FILE = "list_attr_celeba.csv"
KAGGLE_PARTITION_FILE = "list_eval_partition.csv"
KAGGLE_IMAGE_COLUMN = "image_id"
# list_eval_partition's codes.
PARTITIONS = {"train": 0, "val": 1, "test": 2}
IMAGE_COLUMN = "image"  # first column of attributes.csv

_IMAGE = Field("image", str, unique=True, noun="an image file name")
_KAGGLE_IMAGE = Field(KAGGLE_IMAGE_COLUMN, str, unique=True, noun="an image file name")
_VALUE = Field("value", int, choices=(-1, 1))
_PARTITION = Field("partition", int, choices=(0, 1, 2))

# The lists, declared once (``datasets.schema``): every refusal names the file, line and field.
ATTRIBUTE_FORMAT = Format(
    "CelebA attribute file",
    f"{ATTRIBUTE_FILE}: the number of images on line 1, the attribute names on line 2, then one line "
    "'<image> <value> ...' per image with one value, -1 or 1, per attribute",
    (
        Field("image count", int, low=0, expected="the number of images listed, a whole number"),
        Field("attribute name", str, unique=True),
        _IMAGE,
        _VALUE,
    ),
)
PARTITION_FORMAT = Format(
    "CelebA partition file",
    f"{PARTITION_FILE}: one line '<image> <partition>' per image of {ATTRIBUTE_FILE}, the partition "
    "0 (train), 1 (val) or 2 (test)",
    (_IMAGE, _PARTITION),
)
KAGGLE_ATTRIBUTE_FORMAT = Format(
    "CelebA attribute CSV",
    f"{KAGGLE_ATTRIBUTE_FILE} (Kaggle's copy of CelebA): a header '{KAGGLE_IMAGE_COLUMN},<attribute>,...', "
    "then one line '<image>,<value>,...' per image with one value, -1 or 1, per attribute",
    (Field("attribute name", str, unique=True), _KAGGLE_IMAGE, _VALUE),
)
KAGGLE_PARTITION_FORMAT = Format(
    "CelebA partition CSV",
    f"{KAGGLE_PARTITION_FILE} (Kaggle's copy of CelebA): a header '{KAGGLE_IMAGE_COLUMN},partition', then one "
    "line '<image>,<partition>' per image of the attribute list, the partition 0 (train), 1 (val) or 2 (test)",
    (_KAGGLE_IMAGE, _PARTITION),
)
_HINT = f" (a CelebA root holds {IMAGE_FOLDER}/, {ATTRIBUTE_FILE} and {PARTITION_FILE})"

Labels = tuple[list[str], list[str], np.ndarray]  # attribute names, image names, (N, A) 0/1 uint8


def _labels(
    fmt: Format,
    path: Path,
    image_field: str,
    names: list[str],
    images: list[str],
    rows: list[list[str]],
    numbers: list[int],
    declared: int | None = None,
) -> Labels:
    """The -1/1 ``rows`` of ``images`` checked (the first other value named) and turned into 0/1;
    ``declared``: the image count the file states, if it states one."""
    values = np.char.strip(np.asarray(rows, dtype=str).reshape(len(images), len(names)))
    wrong = np.argwhere((values != "1") & (values != "-1"))
    if wrong.size:
        row, column = (int(i) for i in wrong[0])
        raise fmt.bad(path, numbers[row], "value", values[row, column], label=f"{names[column]} of {images[row]!r}")
    if declared is not None and len(images) != declared:
        raise fmt.error(path, 1, f"the image count is {declared}; expected {len(images)}, the number of image lines")
    fmt.unique(path, image_field, images, numbers)
    return names, images, (values == "1").astype(np.uint8)


def read_attribute_file(path: Path) -> Labels:
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
    return _labels(fmt, path, "image", names, images, rows, numbers, declared)


def _csv_rows(
    fmt: Format, path: Path, check_header: Callable[[list[str]], list[str]]
) -> tuple[list[str], list[list[str]], list[int]]:
    """A CSV of ``fmt``: its header (``check_header`` of line 1: checked, as the caller reads it), its
    non-blank rows (each as many fields as the header) and their line numbers."""
    reader = csv.reader(io.StringIO(fmt.read_text(path), newline=""))
    header = check_header(next(reader, []))
    rows: list[list[str]] = []
    numbers: list[int] = []
    for row in reader:
        if not row or not any(field.strip() for field in row):
            continue
        if len(row) != len(header):
            raise fmt.error(
                path, reader.line_num, f"there are {len(row)} fields; expected {len(header)}, one per column of line 1"
            )
        rows.append(row)
        numbers.append(reader.line_num)
    return header, rows, numbers


def _kaggle_header(fmt: Format, path: Path, columns: Sequence[str]) -> Callable[[list[str]], list[str]]:
    """The header check of Kaggle's CSVs: stripped, not empty, holding ``columns``."""

    def check(raw: list[str]) -> list[str]:
        header = [column.strip() for column in raw]
        if not header or header == [""]:
            raise fmt.error(path, None, f"the file is empty; expected {fmt.layout}")
        fmt.header(path, header, columns)
        return header

    return check


def read_attribute_csv(path: Path) -> Labels:
    """Parse Kaggle's ``list_attr_celeba.csv`` like ``read_attribute_file`` (same return value)."""
    fmt = KAGGLE_ATTRIBUTE_FORMAT
    fmt.require_file(path)
    header, rows, numbers = _csv_rows(fmt, path, _kaggle_header(fmt, path, [KAGGLE_IMAGE_COLUMN]))
    if header[0] != KAGGLE_IMAGE_COLUMN:
        raise fmt.bad(path, 1, "the first column", header[0], f"{KAGGLE_IMAGE_COLUMN!r} ({fmt.layout})")
    names = header[1:]
    if not names:
        raise fmt.error(path, 1, f"the header names no attribute; expected {fmt.layout}")
    fmt.unique(path, "attribute name", names, ["line 1"] * len(names))
    images = [row[0].strip() for row in rows]
    return _labels(fmt, path, KAGGLE_IMAGE_COLUMN, names, images, [row[1:] for row in rows], numbers)


def _partition_codes(
    fmt: Format,
    path: Path,
    image_field: str,
    entries: list[tuple[int, str, str]],
    images: Sequence[str],
    listed_in: str,
) -> np.ndarray:
    """``entries`` (line, image, code) as each of ``images``' partition, in ``images``' order.

    The file must list exactly the images of the attribute list (``listed_in``), each once.
    """
    known = set(images)
    partition: dict[str, int] = {}
    first_line: dict[str, int] = {}
    for number, name, code in entries:
        if name in partition:
            raise fmt.bad(path, number, image_field, name, f"each image once (it is also on line {first_line[name]})")
        if name not in known:
            raise fmt.bad(path, number, image_field, name, f"an image listed in {listed_in}")
        partition[name] = fmt.value(path, number, "partition", code)
        first_line[name] = number
    missing = next((name for name in images if name not in partition), None)
    if missing is not None:
        raise fmt.error(
            path, None, f"the image {missing!r} of {listed_in} has no line; expected one line per image of {listed_in}"
        )
    return np.array([partition[name] for name in images], dtype=np.int8)


def read_partition_file(path: Path, images: Sequence[str], listed_in: str = ATTRIBUTE_FILE) -> np.ndarray:
    """Parse ``list_eval_partition.txt`` into each image's partition (0/1/2), in ``images``' order.

    The file must list exactly the images of the attribute list (``listed_in``), each once.
    """
    fmt = PARTITION_FORMAT
    fmt.require_file(path, _HINT)
    entries: list[tuple[int, str, str]] = []
    for number, line in enumerate(fmt.read_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise fmt.error(path, number, f"there are {len(fields)} fields; expected '<image> 0|1|2'")
        entries.append((number, fields[0], fields[1]))
    return _partition_codes(fmt, path, "image", entries, images, listed_in)


def read_partition_csv(path: Path, images: Sequence[str], listed_in: str = KAGGLE_ATTRIBUTE_FILE) -> np.ndarray:
    """Parse Kaggle's ``list_eval_partition.csv`` like ``read_partition_file`` (columns found by name)."""
    fmt = KAGGLE_PARTITION_FORMAT
    fmt.require_file(path)
    header, rows, numbers = _csv_rows(fmt, path, _kaggle_header(fmt, path, [KAGGLE_IMAGE_COLUMN, "partition"]))
    at = fmt.header(path, header, [KAGGLE_IMAGE_COLUMN, "partition"])
    entries = [
        (number, row[at[KAGGLE_IMAGE_COLUMN]].strip(), row[at["partition"]])
        for number, row in zip(numbers, rows, strict=True)
    ]
    return _partition_codes(fmt, path, KAGGLE_IMAGE_COLUMN, entries, images, listed_in)


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


def check_attribute_columns(fmt: Format, path: Path, header: Sequence[str], attribute_names: Sequence[str]) -> None:
    """A teacher table's header: ``image`` first, then exactly the data's attributes (any order)."""
    if not header or header[0] != IMAGE_COLUMN:
        raise fmt.bad(path, 1, "the first column", header[0] if header else "", f"{IMAGE_COLUMN!r} ({fmt.layout})")
    fmt.header(path, header, [IMAGE_COLUMN, *attribute_names])
    extra = next((c for c in header[1:] if c not in set(attribute_names)), None)
    if extra is not None:
        raise fmt.bad(
            path, 1, "a column", extra, f"only the data's {len(attribute_names)} attributes of the attribute list"
        )


def parse_attributes_csv(path: Path, attribute_names: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """An ``attributes.csv``'s image names and probabilities (N, A) float32 in ``attribute_names`` order.

    The file's columns may come in any order but must name exactly the data's attributes; every
    value must be a probability in [0, 1].
    """
    fmt = TEACHER_OUTPUTS_FORMAT
    fmt.require_file(path, "; write it with the teacher's 'python -m tasks.face_attributes predict'")

    def check(header: list[str]) -> list[str]:
        check_attribute_columns(fmt, path, header, attribute_names)
        return header

    header, table_rows, numbers = _csv_rows(fmt, path, check)
    names = [row[0] for row in table_rows]
    rows = [row[1:] for row in table_rows]
    fmt.column(path, IMAGE_COLUMN, names, numbers)
    values = np.empty((len(rows), len(header) - 1), dtype=np.float64)
    table = np.asarray(rows, dtype=str).reshape(len(rows), len(header) - 1)
    for column, name in enumerate(header[1:]):
        values[:, column] = fmt.column(path, "probability", table[:, column], numbers, label=name)
    order = [header.index(name) - 1 for name in attribute_names]
    return names, values[:, order].astype(np.float32)


def read_attributes_csv(path: Path, attribute_names: Sequence[str]) -> dict[str, np.ndarray]:
    """An ``attributes.csv`` as image name -> probabilities (float32, ``attribute_names`` order)."""
    names, values = parse_attributes_csv(path, attribute_names)
    return dict(zip(names, values, strict=True))
