"""Strings and paths packed into flat numpy arrays, for lists of millions shared by loader workers.

A list of a million ``str`` (or ``Path``) objects is a million reference counts: every read by a
forked DataLoader worker writes one, so the pages holding them are copied into the worker, and an
epoch over the list ends with each worker holding its own copy (the growth detectron2's
``DatasetFromList(serialize=True)`` and PyTorch's issue #13246 describe). Two numpy arrays (the
UTF-8 bytes and the offsets) have no per-item object: workers read them and share every page.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class PackedStrings:
    """Strings as one UTF-8 byte buffer + offsets: two arrays instead of a Python object per string,
    so forked loader workers share them without copy-on-read (reading a ``str`` in a list touches
    its reference count, and so its page)."""

    data: np.ndarray  # uint8
    offsets: np.ndarray  # int64, len + 1

    @classmethod
    def from_list(cls, values: Sequence[str]) -> PackedStrings:
        encoded = [value.encode("utf-8") for value in values]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), np.uint8).copy(), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> str:
        return self.data[self.offsets[index] : self.offsets[index + 1]].tobytes().decode("utf-8")

    def take(self, rows: np.ndarray) -> PackedStrings:
        return PackedStrings.from_list([self[int(i)] for i in rows])

    def tolist(self) -> list[str]:
        return [self[i] for i in range(len(self))]

    @classmethod
    def concat(cls, parts: Sequence[PackedStrings]) -> PackedStrings:
        """The strings of every part, in order."""
        if not parts:
            return cls.from_list([])
        sizes = np.cumsum([0] + [len(p.data) for p in parts[:-1]])
        offsets = np.concatenate(
            [parts[0].offsets[:1]] + [p.offsets[1:] + size for p, size in zip(parts, sizes, strict=True)]
        )
        return cls(np.concatenate([p.data for p in parts]), offsets.astype(np.int64))


class PackedPaths(Sequence[Path]):
    """A sequence of paths held as ``PackedStrings`` (see the module docstring); items are ``Path`` s."""

    def __init__(self, strings: PackedStrings) -> None:
        self.strings = strings

    @classmethod
    def of(cls, paths: Iterable[str | os.PathLike[str]]) -> PackedPaths:
        return cls(PackedStrings.from_list([os.fspath(p) for p in paths]))

    @classmethod
    def concat(cls, parts: Sequence[PackedPaths]) -> PackedPaths:
        return cls(PackedStrings.concat([p.strings for p in parts]))

    def __len__(self) -> int:
        return len(self.strings)

    def __getitem__(self, index: int) -> Path:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        return Path(self.strings[index % len(self)])

    def __iter__(self) -> Iterator[Path]:
        return (Path(self.strings[i]) for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    __hash__ = None  # type: ignore[assignment]
