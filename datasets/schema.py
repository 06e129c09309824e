"""Declared file formats: every file the project reads, its fields written once as data, one checker.

A ``Format`` names a kind of file (``"CelebA attribute file"``), says in one phrase what it holds
(the end of every refusal), and lists its ``Field``\\ s: a name, a type (``int``, ``float``,
``str``), a range or a set of choices, a pattern for text, uniqueness, and the words for what a
field refers to (an image of another list, an attribute of the data). Each reader declares its
format next to its parsing code and leaves every check to the methods here, so all refusals share
one shape, naming the file, the line (or row, entry, key), the field, what was found and what was
expected::

    The geotagged photo CSV '/data/train.csv' line 6: LAT is '123.4'; expected a latitude in [-90, 90].
    The CelebA partition file '/data/list_eval_partition.txt' line 3: image is '999999.jpg'; expected
    an image listed in list_attr_celeba.txt.

Columns are checked whole (numpy, vectorised) and only a column that fails is searched for its
first bad row, so the checks cost little next to parsing (a 4.7M-row CSV: see ``geo_photos``).
Text comes through ``datasets.text`` (UTF-8, with or without BOM); ``FORMATS`` lists every
declared format (imported readers register theirs).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backbone.errors import BadInputError
from backbone.ranges import span
from datasets import text

FORMATS: dict[str, Format] = {}
_SHOWN = 160  # characters of a found value quoted in a sentence (the middle of a longer one is cut)


def show(value: Any) -> str:
    """A found value as a sentence quotes it: numbers bare, text quoted (a long one cut in the middle)."""
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= _SHOWN else value[: _SHOWN // 2 - 3] + "..." + value[-_SHOWN // 2 :])
    return f"a {type(value).__name__}"


@dataclass(frozen=True)
class Field:
    """One field of a format.

    Args:
        name: as the file names it (a column, a key) or as the format's description does.
        type: ``int``, ``float`` or ``str`` (``dict``/``list`` for JSON); numbers must be finite.
        low, high, low_open, high_open: the range of a number (None: unbounded); ``also``: single
            numbers accepted outside it.
        choices: the only values allowed (compared after parsing).
        pattern: a regular expression a text value must match in full; ``pattern_words`` says it.
        unique: each value at most once in the file.
        noun: what a value is (``a latitude``), for the sentence; default from the type.
        expected: the whole expectation, instead of noun + range.
    """

    name: str
    type: type = str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    also: tuple[float, ...] = ()
    choices: tuple[Any, ...] = ()
    pattern: str | None = None
    pattern_words: str = ""
    unique: bool = False
    noun: str | None = None
    expected: str | None = None

    @classmethod
    def ranged(cls, name: str, range_type: type, **kwargs: Any) -> Field:
        """A numeric field with the range of an option (``backbone.ranges``): declared once for both."""
        return cls(
            name,
            int if range_type.integer else float,  # type: ignore[attr-defined]
            range_type.low,  # type: ignore[attr-defined]
            range_type.high,  # type: ignore[attr-defined]
            range_type.low_open,  # type: ignore[attr-defined]
            range_type.high_open,  # type: ignore[attr-defined]
            range_type.also,  # type: ignore[attr-defined]
            **kwargs,
        )

    @property
    def words(self) -> str:
        """What a value must be, in words: ``a latitude in [-90, 90]``, ``-1 or 1``."""
        if self.expected is not None:
            return self.expected
        if self.choices:
            shown = [show(c) if isinstance(c, str) else str(c) for c in self.choices]
            return ", ".join(shown[:-1]) + f" or {shown[-1]}" if len(shown) > 1 else shown[0]
        noun = self.noun or {int: "an integer", float: "a number", str: "a text"}.get(self.type, "a value")
        if self.type is str:
            return noun + (f" ({self.pattern_words})" if self.pattern_words else "")
        limits = span(self.low, self.high, self.low_open, self.high_open)
        limits += "".join(f" or {v:g}" for v in self.also)
        return noun + limits if limits or self.type is int else f"a finite {noun.split(' ', 1)[-1]}"

    def accepts(self, value: Any) -> bool:
        """Whether one parsed value is valid (type, range, choices, pattern)."""
        if self.type is str:
            ok = isinstance(value, str) and (self.pattern is None or re.fullmatch(self.pattern, value) is not None)
            return ok and (not self.choices or value in self.choices)
        if self.type in (dict, list):
            return isinstance(value, self.type)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            return False
        if not math.isfinite(value) or (self.type is int and not float(value).is_integer()):
            return False
        if self.choices:
            return value in self.choices
        if value in self.also:
            return True
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        return low_ok and (self.high is None or (value < self.high if self.high_open else value <= self.high))

    def valid(self, values: np.ndarray) -> np.ndarray:
        """Which of parsed numeric ``values`` are valid, vectorised (bool array)."""
        values = np.asarray(values)
        if values.dtype.kind not in "iuf":
            return np.array([self.accepts(v) for v in values.tolist()], dtype=bool)
        ok = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, dtype=bool)
        if self.type is int and values.dtype.kind == "f":
            ok &= np.floor(values) == values
        if self.choices:
            return ok & np.isin(values, np.asarray(self.choices))
        inside = np.ones(values.shape, dtype=bool)
        with np.errstate(invalid="ignore"):
            if self.low is not None:
                inside &= values > self.low if self.low_open else values >= self.low
            if self.high is not None:
                inside &= values < self.high if self.high_open else values <= self.high
        return ok & (inside | np.isin(values, np.asarray(self.also, dtype=np.float64)))


# Where a record is in a file, for messages: a line number, or any text (``key faces[3]``).
Where = int | str | None
Rows = np.ndarray | Sequence[int] | int | None  # record numbers of values: an array, or the first (consecutive)


@dataclass(frozen=True)
class Format:
    """A file format: its kind, what it holds (``layout``), its fields, and what a record is called.

    ``record`` is ``line`` for text files, ``row`` for arrays, ``entry`` for MATLAB cells.
    """

    kind: str
    layout: str
    fields: tuple[Field, ...]
    record: str = "line"

    def __post_init__(self) -> None:
        FORMATS[self.kind] = self

    def field(self, name: str) -> Field:
        for field in self.fields:
            if field.name == name:
                return field
        raise KeyError(f"{self.kind} declares no field {name!r}")

    # --- reading -----------------------------------------------------------------------------
    def read_text(self, path: str | os.PathLike[str]) -> str:
        return text.read_text(path, self.kind, self.layout)

    def read_lines(self, path: str | os.PathLike[str]) -> list[str]:
        return text.read_lines(path, self.kind, self.layout)

    def read_blocks(self, path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
        return text.read_blocks(path, self.kind, self.layout)

    def read_json(self, path: str | os.PathLike[str]) -> Any:
        return text.read_json(path, self.kind, self.layout)

    def require_file(self, path: str | os.PathLike[str], hint: str = "") -> Path:
        """``path`` if it is a file, else one sentence (``hint``: how to make one)."""
        path = Path(path).expanduser()
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise BadInputError(f"The {self.kind} {str(path)!r} {what}; expected {self.layout} there{hint}.")
        return path

    # --- refusing ----------------------------------------------------------------------------
    def error(self, path: str | os.PathLike[str], where: Where, detail: str) -> BadInputError:
        """``The <kind> '<path>' <record> <where>: <detail>.`` (``where`` None: the whole file)."""
        at = "" if where is None else f" {self.record} {where}" if isinstance(where, int) else f" {where}"
        return BadInputError(f"The {self.kind} {str(path)!r}{at}: {detail.rstrip('.')}.")

    def bad(
        self,
        path: str | os.PathLike[str],
        where: Where,
        name: str,
        found: Any,
        expected: str | None = None,
        label: str | None = None,
    ) -> BadInputError:
        """``... <record> <where>: <field> is <found>; expected <what the field must be>.``

        ``label`` names the field in the sentence when the file names it (an attribute's column).
        """
        words = expected or self.field(name).words
        return self.error(path, where, f"{label or name} is {show(found)}; expected {words}")

    # --- checking ----------------------------------------------------------------------------
    def value(self, path: str | os.PathLike[str], where: Where, name: str, raw: Any) -> Any:
        """One value (text as read, or a JSON value) parsed to its field's type and checked."""
        field = self.field(name)
        value = raw
        if isinstance(raw, str) and field.type is not str:
            value = _parse(raw.strip(), field.type)
        elif field.type is float and isinstance(raw, int) and not isinstance(raw, bool):
            value = float(raw)
        if value is None or not field.accepts(value):
            raise self.bad(path, where, name, raw)
        return int(value) if field.type is int else value

    def column(
        self,
        path: str | os.PathLike[str],
        name: str,
        raw: Sequence[Any] | np.ndarray,
        rows: Rows = 1,
        label: str | None = None,
    ) -> np.ndarray:
        """A column of values (texts as read, or numbers) parsed and checked whole; the first bad one named.

        ``rows``: the record number of each value, or the number of the first when consecutive;
        ``label``: the column's name in the file when it is not the field's (an attribute).
        """
        field = self.field(name)
        array = np.asarray(raw)
        if field.type is not str and array.dtype.kind in "USO":
            dtype = np.int64 if field.type is int else np.float64
            try:
                array = np.char.strip(array.astype(str)).astype(dtype) if len(array) else array.astype(dtype)
            except (ValueError, OverflowError):  # name the first value that is not a number
                parsed = []
                for index, item in enumerate(raw):
                    number = _parse(str(item).strip(), field.type)
                    if number is None:
                        raise self.bad(path, _row(rows, index), name, item, label=label) from None
                    parsed.append(number)
                array = np.asarray(parsed, dtype=dtype)
        bad = np.flatnonzero(~field.valid(array))
        if bad.size:
            raise self.bad(path, _row(rows, int(bad[0])), name, np.asarray(raw)[bad[0]], label=label)
        if field.unique:
            self.unique(path, name, array, rows)
        return array

    def unique(
        self, path: str | os.PathLike[str], name: str, values: Sequence[Any] | np.ndarray, rows: Rows = 1
    ) -> None:
        """Each value at most once: the first repeat is named, with the record of its first use."""
        array = np.asarray(values)
        if len(array) < 2:
            return
        if len(np.unique(array)) == len(array):
            return
        first: dict[Any, int] = {}
        for index, value in enumerate(array.tolist()):
            if value in first:
                earlier = _row(rows, first[value])
                again = f"{self.record} {earlier}" if isinstance(earlier, int) else str(earlier)
                raise self.bad(path, _row(rows, index), name, value, f"each {name} once (it is also on {again})")
            first[value] = index

    def references(
        self,
        path: str | os.PathLike[str],
        name: str,
        values: Iterable[Any],
        known: Callable[[Any], bool] | set[Any] | frozenset[Any] | dict[Any, Any],
        expected: str,
        rows: Rows = 1,
    ) -> None:
        """Every value refers to something that exists (``known``): the first that does not is named."""
        test = known if callable(known) else known.__contains__
        for index, value in enumerate(values):
            if not test(value):
                raise self.bad(path, _row(rows, index), name, value, expected)

    def header(
        self, path: str | os.PathLike[str], names: Sequence[str], required: Sequence[str], line: int = 1
    ) -> dict[str, int]:
        """The position of each ``required`` column in a header row (names compared as given); a
        missing or repeated one is named."""
        seen: dict[str, int] = {}
        for index, column in enumerate(names):
            if column in seen and column in required:  # a repeated column that is not read does no harm
                raise self.error(path, line, f"the column {column!r} appears twice; expected each column once")
            seen.setdefault(column, index)
        for column in required:
            if column not in seen:
                found = ",".join(names)
                raise self.error(
                    path, line, f"the header {show(found)} has no column {column!r}; expected {self.layout}"
                )
        return {column: seen[column] for column in required}


def _parse(raw: str, kind: type) -> int | float | None:
    try:
        if kind is int:
            return int(raw) if re.fullmatch(r"[+-]?\d+", raw) else None
        return float(raw)
    except (ValueError, OverflowError):
        return None


def _row(rows: Rows, index: int) -> Where:
    if rows is None:
        return None
    if isinstance(rows, (int, np.integer)):
        return int(rows) + index
    value = rows[index]
    return value if isinstance(value, str) else int(value)
