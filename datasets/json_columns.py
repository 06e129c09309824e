"""A declared JSON format read straight into numpy columns, for files of a million records.

``datasets.json_schema`` declares a format and ``check`` holds a parsed file to it; both walk
Python objects, and a COCO-2017-sized train file (451 MB, 860k annotations with polygons) parsed
by ``json`` is 3.5 GB of dicts and lists in every process that reads it, 25 s to build. Here the
same declaration is turned into msgspec ``Struct`` types holding only the declared keys: msgspec
decodes the file against them in C, skipping every undeclared value (the polygons) without making
objects of them, and the records are then turned into one numpy array per key. What ``check``
tests record by record (ranges, allowed values, unique ids, references) is tested here on the
columns, vectorised.

The fast path never words an error. When msgspec refuses the file, or a column test fails, the
file is read again by the one reader that does (``datasets.text.read_json`` + ``check``), so a
departure is refused in exactly the sentence it always was. Should that reader accept the file
(a file valid JSON-wise that msgspec's stricter typing refuses, e.g. an integer past 64 bits), its
records are turned into the same columns, so the result never depends on which path read it.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from datasets.json_schema import Field, JsonFormat, Table, check
from datasets.packed import PackedStrings
from datasets.text import read_json

# The column dtype and the fill of a missing optional value, by JSON type.
_DTYPE = {"integer": np.int64, "number": np.float64, "boolean": np.bool_}
_FILL = {"integer": 0, "number": np.nan, "boolean": False, "string": ""}


@dataclass(frozen=True)
class Columns:
    """One table's records as columns: ``values[key]`` (numbers: an array, a list of N numbers: an
    (n, N) array, strings: ``PackedStrings``) and, for optional keys, ``present[key]``."""

    values: Mapping[str, Any]
    present: Mapping[str, np.ndarray]
    count: int

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


def _python_type(spec: Field) -> Any:
    if spec.type == "list" and spec.items in _DTYPE and spec.length is not None:
        item = float if spec.items == "number" else int
        return tuple[(item,) * spec.length]  # type: ignore[misc]
    return {"integer": int, "number": float, "string": str, "boolean": bool}.get(spec.type)


def _columnar(table: Table) -> bool:
    """Whether every declared key of ``table`` has a column form (scalars, fixed-length number lists)."""
    return all(_python_type(spec) is not None for spec in table.fields.values())


def _struct_types(fmt: JsonFormat) -> type:
    """The msgspec type of the whole file: a struct of the tables, each a list of record structs."""
    tables = []
    for table in fmt.tables:
        fields = []
        for key, spec in table.fields.items():
            kind = _python_type(spec)
            fields.append((key, kind) if spec.required else (key, kind | msgspec.UnsetType, msgspec.UNSET))
        record = msgspec.defstruct(f"{table.record.title()}Record", fields, forbid_unknown_fields=False)
        kind = list[record]  # type: ignore[valid-type]
        tables.append((table.key, kind) if table.required else (table.key, kind | msgspec.UnsetType, msgspec.UNSET))
    return msgspec.defstruct("File", tables)


def _column(spec: Field, values: list[Any]) -> tuple[Any, np.ndarray | None]:
    """``values`` (one key of every record, ``UNSET``/missing as ``None``) as a column and its mask."""
    present = None
    if not spec.required:
        present = np.fromiter((v is not None for v in values), np.bool_, len(values))
        if not present.all():
            fill = _FILL.get(spec.type, (_FILL.get(spec.items or "", 0),) * (spec.length or 0))
            values = [fill if v is None else v for v in values]
    if spec.type == "string":
        return PackedStrings.from_list(values), present
    if spec.type == "list":
        return np.asarray(values, _DTYPE[spec.items or "number"]).reshape(len(values), spec.length or 0), present
    return np.asarray(values, _DTYPE[spec.type]), present


def _table_columns(table: Table, records: list[Any], get: Any) -> Columns:
    values, present = {}, {}
    for key, spec in table.fields.items():
        column, mask = _column(spec, [get(record, key) for record in records])
        values[key] = column
        if mask is not None:
            present[key] = mask
    return Columns(values, present, len(records))


def _unset_as_none(record: Any, key: str) -> Any:
    value = getattr(record, key)
    return None if value is msgspec.UNSET else value


def _valid(fmt: JsonFormat, tables: Mapping[str, Columns]) -> bool:
    """``check``'s tests, on columns: ranges, allowed values, non-empty strings, unique ids, references."""
    for table in fmt.tables:
        if table.key not in tables:
            continue
        columns = tables[table.key]
        if columns.count < table.min_count:
            return False
        for key, spec in table.fields.items():
            column, mask = columns.values[key], columns.present.get(key)
            if spec.type == "string":
                if spec.nonempty and np.any(np.diff(column.offsets)[mask if mask is not None else slice(None)] == 0):
                    return False
                continue
            data = column if mask is None else column[mask]
            if data.dtype.kind == "f" and not np.isfinite(data).all():
                return False
            if spec.above is not None and not (data > spec.above).all():
                return False
            if spec.at_least is not None and not (data >= spec.at_least).all():
                return False
            if spec.one_of is not None and not np.isin(data, np.asarray(spec.one_of)).all():
                return False
        if table.unique is not None and table.unique in columns.values:
            ids = columns.values[table.unique]
            ids = ids[columns.present[table.unique]] if table.unique in columns.present else ids
            if isinstance(ids, PackedStrings) or len(np.unique(ids)) != len(ids):
                return False
        for key, target in table.refs.items():
            known = tables.get(target)
            wanted = columns.values[key]
            if isinstance(wanted, PackedStrings):
                return False
            if key in columns.present:
                wanted = wanted[columns.present[key]]
            if len(wanted) and (known is None or not np.isin(wanted, known.values[target_key(fmt, target)]).all()):
                return False
    return True


def target_key(fmt: JsonFormat, target: str) -> str:
    """The unique key of the table named ``target`` (what a reference to it names)."""
    return next(t.unique for t in fmt.tables if t.key == target and t.unique is not None)


def columns_from_records(fmt: JsonFormat, data: Mapping[str, Any]) -> dict[str, Columns]:
    """The columns of an already parsed and checked file (``check(fmt, data, path)`` passed)."""
    return {
        table.key: _table_columns(table, data[table.key], lambda record, key: record.get(key))
        for table in fmt.tables
        if table.key in data
    }


def read_columns(fmt: JsonFormat, path: str | os.PathLike[str]) -> dict[str, Columns]:
    """The tables of the JSON file ``path``, held to ``fmt``, as ``Columns`` (see the module docstring).

    Only formats whose keys all have a column form take the fast path; others (and any file the
    fast path does not accept) are read and checked by ``read_json`` + ``check``.
    """
    path = Path(path)
    if all(_columnar(table) for table in fmt.tables):
        try:
            with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                # The file's pages are the page cache's (shared, dropped when unmapped), not a copy.
                parsed = msgspec.json.decode(view, type=_struct_types(fmt))
            tables = {
                table.key: _table_columns(table, getattr(parsed, table.key), _unset_as_none)
                for table in fmt.tables
                if getattr(parsed, table.key) is not msgspec.UNSET
            }
            del parsed
            if _valid(fmt, tables):
                return tables
        except (OSError, msgspec.DecodeError, msgspec.ValidationError, ValueError, OverflowError):
            pass  # worded below, by the reader that words every departure (a missing or empty file too)
    data = read_json(path, fmt.kind, fmt.expected)
    check(fmt, data, path)
    return columns_from_records(fmt, data)
