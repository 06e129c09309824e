"""The one reader of the text files users bring: UTF-8, with or without a byte-order mark.

Every text format the project reads (COCO JSON, CelebA lists, geotagged CSVs, ``cells.csv``,
``pairs.txt``, teacher outputs, index sidecars) comes through ``read_text``, so a file saved in
another encoding (Latin-1, UTF-16 from a spreadsheet, a binary file under a text name) is refused
in one sentence naming the file, the byte and where it is, not a ``UnicodeDecodeError`` traceback
or a silently mis-parsed row. The BOM Excel and Notepad write is dropped (``utf-8-sig``).

``read_text`` / ``read_lines`` / ``read_json`` read a whole file; ``read_blocks`` reads a big one
(a 4.7M-photo CSV) in blocks of whole lines, each checked the same way, so a parser as fast as
numpy's can take over. Lines end at ``\\n``, ``\\r\\n`` or ``\\r`` only (``split_lines``). The
formats themselves are declared in ``datasets.schema``, whose ``Format`` reads through here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backbone.errors import BadInputError

UTF8_BOM = b"\xef\xbb\xbf"


def _decode(data: bytes, path: Path, kind: str, expected: str, first_line: int = 1) -> str:
    """``data`` (lines of ``path`` from ``first_line`` on) as text, or one sentence naming the line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = first_line + data.count(b"\n", 0, error.start)
        raise BadInputError(
            f"The {kind} {str(path)!r} is not UTF-8 text (byte 0x{data[error.start]:02x} on line {line}); "
            f"expected {expected}, saved as UTF-8."
        ) from None
    nul = text.find("\x00")
    if nul >= 0:
        line = first_line + text.count("\n", 0, nul)
        raise BadInputError(
            f"The {kind} {str(path)!r} holds a NUL byte on line {line}, so it is not a text file; expected {expected}."
        )
    return text


def decode_text(data: bytes, path: str | os.PathLike[str], kind: str, expected: str) -> str:
    """Bytes read from ``path`` some other way (a part of a binary file) as UTF-8 text, with or
    without BOM, or the same one sentence ``read_text`` gives."""
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    return _decode(data, Path(path), kind, expected)


def _existing_file(path: str | os.PathLike[str], kind: str, expected: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise BadInputError(f"The {kind} {str(path)!r} {what}; expected {expected} there.")
    return path


def read_text(path: str | os.PathLike[str], kind: str, expected: str) -> str:
    """The text of ``path`` (a ``kind`` such as "attribute file"), or one sentence saying why not.

    ``expected`` says what the file should hold; it ends the sentence of every refusal.
    """
    path = _existing_file(path, kind, expected)
    data = path.read_bytes()
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    return _decode(data, path, kind, expected)


def split_lines(text: str) -> list[str]:
    """``text`` split at ``\\n``, ``\\r\\n`` or ``\\r``, without line ends.

    Only these: ``str.splitlines`` also splits at form feeds, ``\\x1c``-``\\x1e``, U+0085 and
    U+2028, which would shift every later line number and cut a field in two.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def read_lines(path: str | os.PathLike[str], kind: str, expected: str) -> list[str]:
    """``read_text`` split into lines (``split_lines``)."""
    return split_lines(read_text(path, kind, expected))


def read_blocks(
    path: str | os.PathLike[str], kind: str, expected: str, block_bytes: int = 1 << 22
) -> Iterator[tuple[int, str]]:
    """The text of ``path`` in blocks of whole lines (about ``block_bytes`` each), each with the
    number of its first line: for files too big to hold twice (a 4.7M-photo CSV). The same checks
    as ``read_text``, block by block: a block is cut after a ``\\n``, so no character is cut."""
    path = _existing_file(path, kind, expected)
    number = 1
    rest = b""
    with path.open("rb") as handle:
        while True:
            data = handle.read(block_bytes)
            if number == 1 and not rest and data.startswith(UTF8_BOM):
                data = data[len(UTF8_BOM) :]
            if not data:
                block, rest = rest, b""
            else:
                data = rest + data
                cut = data.rfind(b"\n") + 1
                if cut == 0:  # no line end yet: read on
                    rest = data
                    continue
                block, rest = data[:cut], data[cut:]
            if not block:
                return
            text = _decode(block, path, kind, expected, number)
            yield number, text
            number += text.count("\n") + (0 if text.endswith("\n") else 1)


def read_line_chunks(
    path: str | os.PathLike[str], kind: str, expected: str, block_bytes: int = 1 << 22
) -> Iterator[tuple[int, list[str]]]:
    """``read_blocks`` split into lines (``split_lines``), each chunk with its first line's number."""
    for number, text in read_blocks(path, kind, expected, block_bytes):
        yield number, split_lines(text)


def read_json(path: str | os.PathLike[str], kind: str, expected: str) -> Any:
    """The JSON value in ``path`` (through ``read_text``), or one sentence naming file and line."""
    text = read_text(path, kind, expected)
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as error:
        raise BadInputError(
            f"The {kind} {str(path)!r} is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}); "
            f"expected {expected}."
        ) from None
    except ValueError as error:  # NaN / Infinity: not JSON, and never a valid value here
        raise BadInputError(
            f"The {kind} {str(path)!r} holds {error}, which is not JSON; expected {expected}."
        ) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"the non-finite number {name}")
