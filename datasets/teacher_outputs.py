"""A teacher's per-image attribute probabilities, read for distillation (``--data.teacher_outputs``).

``python -m tasks.face_attributes predict`` writes the same table twice, next to each other:

* ``attributes.csv`` (``datasets.attribute_files``): one text row per image, for people and
  spreadsheets. Reading it means parsing every number; at web scale that is the cost (see
  ``python -m benchmarks --section face_attributes``).
* ``attributes.npy`` + ``attributes_rows.txt``: the probabilities as an N x A float matrix, and its
  row and column names. Line 1 of ``attributes_rows.txt`` is the CSV's header
  (``image,<attribute>,...``: the matrix's columns), line k + 1 names the image of row k. The
  matrix is memory-mapped (``np.load(mmap_mode="r")``): nothing is parsed, the operating system
  pages rows in when a batch needs them, and the loader workers share those pages. Only the
  image names are read into memory (a dict name -> row, to find each training image's row).

``read_teacher_outputs`` reads either (``.npy`` by its suffix, anything else as the CSV) into a
``TeacherOutputs``: the data's attributes in the data's order whatever the file's column order,
every value a probability in [0, 1] (checked in blocks of rows, the first bad one named by row and
image), each image once.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from datasets.attribute_files import IMAGE_COLUMN, check_attribute_columns, parse_attributes_csv
from datasets.schema import Field, Format

ARRAY_FILE = "attributes.npy"
ROWS_FILE = "attributes_rows.txt"
_CHECK_ROWS = 1 << 18  # rows checked at once: 2^18 x 40 float32 = 40 MB of the memory map

_PROBABILITY = Field("probability", float, low=0.0, high=1.0, noun="a probability")
TEACHER_ARRAY_FORMAT = Format(
    "teacher outputs array",
    f"{ARRAY_FILE}: N rows of A probabilities in [0, 1] (float), with {ROWS_FILE} beside it, as a teacher's "
    "'python -m tasks.face_attributes predict' writes them",
    (_PROBABILITY,),
    record="row",
)
TEACHER_ROWS_FORMAT = Format(
    "teacher outputs rows file",
    f"{ROWS_FILE}: line 1 '{IMAGE_COLUMN},<attribute>,...' naming the columns of {ARRAY_FILE}, then one image "
    f"name per line, line k + 1 naming row k",
    (Field(IMAGE_COLUMN, str, pattern=r".*\S.*", pattern_words="not blank", unique=True, noun="an image name"),),
)


class TeacherOutputs:
    """A teacher's probabilities by image name: ``names`` (row order), ``values`` (N, K) as stored (a
    memory map for ``.npy``), and ``columns``: the column of each of the data's attributes."""

    def __init__(self, path: Path, names: list[str], values: np.ndarray, columns: Sequence[int]) -> None:
        self.path = path
        self.names = names
        self.values = values
        self.columns = np.asarray(columns, dtype=np.int64)
        self.index = dict(zip(names, range(len(names)), strict=True))  # C speed: 3M names in well under 1 s

    def __len__(self) -> int:
        return len(self.names)

    def rows(self, names: Sequence[str]) -> np.ndarray:
        """The row of each of ``names`` (-1 where the file has none)."""
        return np.fromiter(map(self.index.get, names, repeat(-1)), dtype=np.int64, count=len(names))

    def probabilities(self, rows: np.ndarray | int) -> np.ndarray:
        """The probabilities (float32) of ``rows`` (one row, or an array of them) in the data's attribute order."""
        return np.asarray(self.values[rows][..., self.columns], dtype=np.float32)

    def __getstate__(self) -> dict[str, Any]:
        # A memory map would be pickled as a full copy (a spawned loader worker): re-open it instead.
        state = dict(self.__dict__)
        if isinstance(self.values, np.memmap):
            state["values"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.values is None:
            self.values = np.load(self.path, mmap_mode="r", allow_pickle=False)


class TeacherRows:
    """The teacher's probabilities of a dataset's images, item by item: rows of a ``TeacherOutputs``
    (a memory map at web scale, so the dataset holds row numbers, not a copy of the matrix)."""

    def __init__(self, outputs: TeacherOutputs, rows: np.ndarray) -> None:
        self.outputs = outputs
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.outputs.probabilities(int(self.rows[index]))

    def all(self) -> np.ndarray:
        """Every row at once (N, A) float32."""
        return self.outputs.probabilities(self.rows)


def _open_array(path: Path) -> np.ndarray:
    """``path`` memory-mapped, never unpickled; one sentence if it is not an .npy matrix of numbers."""
    fmt = TEACHER_ARRAY_FORMAT
    try:
        values = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:  # numpy falls back to unpickling (never allowed here) for what is not an array
        detail = "reading it would mean unpickling it" if "pickle" in str(error) else str(error)
        raise fmt.error(path, None, f"it is not a NumPy array file ({detail}); expected {fmt.layout}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise fmt.error(path, None, f"it is not a NumPy .npy file ({error}); expected {fmt.layout}") from None
    if not isinstance(values, np.ndarray) or values.ndim != 2 or values.dtype.kind != "f":
        found = f"an array of {values.dtype} of shape {values.shape}" if isinstance(values, np.ndarray) else "an .npz"
        raise fmt.bad(path, None, "the matrix", found, "N x A floating-point probabilities")
    return values


def _read_rows_file(path: Path) -> tuple[list[str], list[str]]:
    """``attributes_rows.txt``: its header (the matrix's columns) and its image names."""
    fmt = TEACHER_ROWS_FORMAT
    fmt.require_file(path, f" (it is written beside {ARRAY_FILE} by the teacher's predict)")
    lines = fmt.read_lines(path)
    header = next(csv.reader(io.StringIO(lines[0]))) if lines else []
    names = lines[1:]
    # map(str.isspace) runs at C speed; an empty name is found by the caller's name -> row table.
    if any(map(str.isspace, names)):
        blank = next(row for row, name in enumerate(names) if name.isspace())
        raise fmt.bad(path, blank + 2, IMAGE_COLUMN, names[blank])
    return header, names


def _check_probabilities(path: Path, values: np.ndarray, names: list[str], header: Sequence[str]) -> None:
    """Every value in [0, 1], a block of rows at a time (the map is never read whole into memory)."""
    for start in range(0, len(values), _CHECK_ROWS):
        block = np.asarray(values[start : start + _CHECK_ROWS])
        bad = np.argwhere(~_PROBABILITY.valid(block))
        if bad.size:
            row, column = int(bad[0][0]) + start, int(bad[0][1])
            raise TEACHER_ARRAY_FORMAT.bad(
                path, f"row {row} ({names[row]!r})", "probability", float(values[row, column]), label=header[column + 1]
            )


def read_teacher_array(path: Path, attribute_names: Sequence[str]) -> TeacherOutputs:
    """``attributes.npy`` (memory-mapped) and the ``attributes_rows.txt`` beside it."""
    fmt = TEACHER_ARRAY_FORMAT
    fmt.require_file(path, "; write it with the teacher's 'python -m tasks.face_attributes predict'")
    values = _open_array(path)
    rows_path = path.with_name(ROWS_FILE)
    header, names = _read_rows_file(rows_path)
    check_attribute_columns(TEACHER_ROWS_FORMAT, rows_path, header, attribute_names)
    if values.shape != (len(names), len(header) - 1):
        raise fmt.error(
            path,
            None,
            f"it holds {values.shape[0]} rows of {values.shape[1]} values but {rows_path.name} names "
            f"{len(names)} images and {len(header) - 1} attributes; expected a row per image, a column per attribute",
        )
    outputs = TeacherOutputs(path, names, values, [header.index(name) - 1 for name in attribute_names])
    if "" in outputs.index:
        raise TEACHER_ROWS_FORMAT.bad(rows_path, outputs.index[""] + 2, IMAGE_COLUMN, "")
    if len(outputs.index) != len(names):  # a repeated name: the first repeat, with its first line
        TEACHER_ROWS_FORMAT.unique(rows_path, IMAGE_COLUMN, names, 2)
    _check_probabilities(path, values, names, header)
    return outputs


def read_teacher_outputs(path: str | Path, attribute_names: Sequence[str]) -> TeacherOutputs:
    """A teacher's outputs from ``attributes.npy`` (by its suffix) or an ``attributes.csv``."""
    path = Path(path).expanduser()
    if path.suffix.lower() == ".npy":
        return read_teacher_array(path, attribute_names)
    names, values = parse_attributes_csv(path, attribute_names)
    return TeacherOutputs(path, names, values, range(len(attribute_names)))
