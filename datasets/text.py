"""The one reader of the text files users bring: UTF-8, with or without a byte-order mark.

Every text format the project reads (COCO JSON, CelebA lists, geotagged CSVs, ``cells.csv``,
``pairs.txt``, teacher outputs, index sidecars) comes through ``read_text``, so a file saved in
another encoding (Latin-1, UTF-16 from a spreadsheet, a binary file under a text name) is refused
in one sentence naming the file, the byte and where it is, not a ``UnicodeDecodeError`` traceback
or a silently mis-parsed row. The BOM Excel and Notepad write is dropped (``utf-8-sig``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from backbone.errors import BadInputError

UTF8_BOM = b"\xef\xbb\xbf"


def read_text(path: str | os.PathLike[str], kind: str, expected: str) -> str:
    """The text of ``path`` (a ``kind`` such as "attribute file"), or one sentence saying why not.

    ``expected`` says what the file should hold; it ends the sentence of every refusal.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise BadInputError(f"The {kind} {str(path)!r} {what}; expected {expected} there.")
    data = path.read_bytes()
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise BadInputError(
            f"The {kind} {str(path)!r} is not UTF-8 text (byte 0x{data[error.start]:02x} on line {line}); "
            f"expected {expected}, saved as UTF-8."
        ) from None
    if "\x00" in text:
        raise BadInputError(f"The {kind} {str(path)!r} holds NUL bytes, so it is not a text file; expected {expected}.")
    return text


def read_lines(path: str | os.PathLike[str], kind: str, expected: str) -> list[str]:
    """``read_text`` split into lines (``\\n``, ``\\r\\n`` or ``\\r``), without line ends."""
    return read_text(path, kind, expected).splitlines()


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
