"""A JSON file format declared as data, and the one checker that holds a file to it.

A format is a ``JsonFormat``: the lists of records it holds (``Table``), each record's keys as
``Field`` s (JSON type, whether required, numeric range, list length, allowed values), which key is
a record's unique id, and which keys must name a record of another list (``refs``). ``check``
walks a parsed file once and refuses the first departure in one sentence naming the file, the
record (``annotations[3] (id 17)``) and the key, with what was expected, e.g.::

    The annotation file 'instances_val2017.json' has annotations[3] (id 17) with 'bbox'
    ['10', 20, 30, 40]; expected a list of 4 JSON numbers.

Types are JSON's, not Python's coercions: a number written as a string (``"10"``) is not a number,
``true`` is not an integer, and an integer is a number without a fraction. The checker knows
nothing of any particular format (``datasets.coco.annotations`` declares COCO's); it is generic so
that it can be merged with the project's other format declarations.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from backbone.errors import BadInputError

JsonType = Literal["integer", "number", "string", "boolean", "list", "object"]

_ARTICLE = {"integer": "an integer", "number": "a JSON number", "string": "a string", "boolean": "true or false",
            "list": "a list", "object": "a JSON object", "null": "null"}  # fmt: skip
_PLURAL = {"integer": "integers", "number": "JSON numbers", "string": "strings", "boolean": "booleans",
           "list": "lists", "object": "JSON objects"}  # fmt: skip


def _is_number(value: Any) -> bool:
    return type(value) is int or (type(value) is float and value - value == 0.0)  # finite: not NaN/inf


# Exact types: ``json.loads`` gives exactly these, and ``bool`` (an ``int`` subclass) is not a number.
_IS: dict[str, Callable[[Any], bool]] = {
    "integer": lambda value: type(value) is int,
    "number": _is_number,
    "string": lambda value: type(value) is str,
    "boolean": lambda value: type(value) is bool,
    "list": lambda value: type(value) is list,
    "object": lambda value: type(value) is dict,
}


def is_json_type(value: Any, kind: JsonType) -> bool:
    """Whether ``value`` (as ``json.loads`` returns it) is of JSON type ``kind``.

    ``true`` is not a number (Python's ``True == 1`` notwithstanding), a number is finite, and an
    integer is an ``int`` (``1.0`` is a float: a tool that writes it means a measurement, not an id).
    """
    return _IS[kind](value)


@dataclass(frozen=True)
class Field:
    """One key of a record.

    Args:
        type: its JSON type.
        required: whether every record must have it.
        above: numbers only: the value must be greater than this.
        at_least: numbers only: the value must be at least this.
        one_of: the only values allowed.
        items: lists only: the JSON type of every element.
        length: lists only: the exact number of elements.
        nonempty: strings only: the empty string is refused.
    """

    type: JsonType
    required: bool = True
    above: float | None = None
    at_least: float | None = None
    one_of: tuple[Any, ...] | None = None
    items: JsonType | None = None
    length: int | None = None
    nonempty: bool = False

    def expected(self) -> str:
        """What the value should be, as the end of a sentence ("an integer above 0")."""
        if self.one_of is not None:
            return "one of " + ", ".join(repr(v) for v in self.one_of)
        if self.type == "list" and self.items is not None:
            count = f"{self.length} " if self.length is not None else ""
            return f"a list of {count}{_PLURAL[self.items]}"
        text = _ARTICLE[self.type]
        if self.type == "string" and self.nonempty:
            text = "a non-empty string"
        if self.above is not None:
            text += f" above {self.above:g}"
        if self.at_least is not None:
            text += f" of at least {self.at_least:g}"
        return text

    @cached_property
    def accepts(self) -> Callable[[Any], bool]:
        """The test of a value, built once (a COCO train file has 860k annotations to test)."""
        is_type, one_of, above, at_least = _IS[self.type], self.one_of, self.above, self.at_least
        nonempty, length = self.nonempty, self.length
        item = _IS[self.items] if self.items is not None else None
        if (one_of, above, at_least, length, item) == (None,) * 5 and not nonempty:
            return is_type

        def accepts(value: Any) -> bool:
            return (
                is_type(value)
                and (one_of is None or value in one_of)
                and (above is None or value > above)
                and (at_least is None or value >= at_least)
                and (not nonempty or bool(value))
                and (length is None or len(value) == length)
                and (item is None or all(map(item, value)))
            )

        return accepts


@dataclass(frozen=True)
class Table:
    """A list of records under ``key`` of the file's top-level object.

    Args:
        key: the top-level key (``"annotations"``).
        record: the word for one record in a sentence (``"annotation"``).
        fields: the record's keys; keys not declared are allowed and not checked.
        unique: the key whose values must differ between records (None: no such key).
        refs: key -> the ``key`` of another table whose ``unique`` values it must be one of.
        required: whether the file must have this list.
        min_count: the fewest records the list may hold.
        plural: the word for several records (default ``record`` + "s").
    """

    key: str
    record: str
    fields: Mapping[str, Field]
    unique: str | None = "id"
    refs: Mapping[str, str] = field(default_factory=dict)
    required: bool = True
    min_count: int = 0
    plural: str = ""

    @property
    def records(self) -> str:
        return self.plural or f"{self.record}s"


@dataclass(frozen=True)
class JsonFormat:
    """A JSON file whose top level is an object holding the lists ``tables``.

    ``kind`` names the file in a sentence ("annotation file"); ``expected`` says what it should
    hold ("a COCO instances JSON file").
    """

    kind: str
    expected: str
    tables: Sequence[Table]


def _show(value: Any, limit: int = 60) -> str:
    """``value`` as the file writes it (JSON), cut to ``limit`` characters."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check(fmt: JsonFormat, data: Any, path: Any) -> None:
    """Hold ``data`` (the parsed content of ``path``) to ``fmt``; one sentence on the first departure."""
    where = f"The {fmt.kind} {str(path)!r}"
    if not isinstance(data, dict):
        raise BadInputError(f"{where} holds {_article(data)}; expected {fmt.expected}.")
    present = [table for table in fmt.tables if table.key in data]
    for table in fmt.tables:  # the file's shape first: every list it must hold
        if table.key not in data and table.required:
            raise BadInputError(f"{where} has no {table.key!r} list; expected {fmt.expected}.")
        if table.key in data and not isinstance(data[table.key], list):
            raise BadInputError(
                f"{where} has {_article(data[table.key])} under {table.key!r}; expected a list of {table.records}."
            )
    ids: dict[str, dict[Any, int]] = {}  # table key -> unique value -> index of its record
    for table in present:
        records = data[table.key]
        if len(records) < table.min_count:
            raise BadInputError(
                f"{where} lists {len(records) or 'no'} {table.records}; expected at least {table.min_count}."
            )
        ids[table.key] = _check_table(where, table, records)
    for table in fmt.tables:
        for key, target in table.refs.items():
            known = ids.get(target, {})
            for index, record in enumerate(data.get(table.key, ())):
                if key in record and record[key] not in known:
                    raise BadInputError(
                        f"{where} has {_name(table, index, record)} with {key!r} {_show(record[key])}, which no "
                        f"{_record_word(fmt, target)} in {target!r} has; expected the id of one of them."
                    )


def _check_table(where: str, table: Table, records: list[Any]) -> dict[Any, int]:
    """Check every record of one list; its ``unique`` values -> the index of their record."""
    checks = [(key, spec, spec.accepts) for key, spec in table.fields.items()]
    unique = table.unique
    seen: dict[Any, int] = {}
    for index, record in enumerate(records):
        if type(record) is not dict:
            raise BadInputError(
                f"{where} has {table.key}[{index}] holding {_article(record)}; "
                f"expected a JSON object ({table.record} record)."
            )
        for key, spec, accepts in checks:
            value = record.get(key, _MISSING)
            if value is _MISSING:
                if spec.required:
                    raise BadInputError(
                        f"{where} has {_name(table, index, record)} without {key!r}; expected every "
                        f"{table.record} to have {key!r} ({spec.expected()})."
                    )
            elif not accepts(value):
                raise BadInputError(
                    f"{where} has {_name(table, index, record)} with {key!r} {_show(value)}; "
                    f"expected {spec.expected()}."
                )
        if unique is not None and unique in record:
            first = seen.setdefault(record[unique], index)
            if first != index:
                raise BadInputError(
                    f"{where} has {table.key}[{index}] with {unique!r} {_show(record[unique])}, which "
                    f"{table.key}[{first}] already has; expected unique {table.record} {unique}s."
                )
    return seen


_MISSING = object()


def _name(table: Table, index: int, record: dict[str, Any]) -> str:
    """``annotations[3] (id 17)``: the record's place in its list, and its id when it has one."""
    if table.unique is not None and is_json_type(record.get(table.unique), "integer"):
        return f"{table.key}[{index}] ({table.unique} {record[table.unique]})"
    return f"{table.key}[{index}]"


def _record_word(fmt: JsonFormat, key: str) -> str:
    return next((t.record for t in fmt.tables if t.key == key), "record")


def _article(value: Any) -> str:
    """ "a string", "a list" ...: what ``value`` is, in JSON's words."""
    return _ARTICLE.get(_json_type(value), "a value")


def _json_type(value: Any) -> str:
    for kind in ("boolean", "integer", "number", "string", "list", "object"):
        if is_json_type(value, kind):  # type: ignore[arg-type]
            return kind
    return "null" if value is None else "value"
