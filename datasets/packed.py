"""Strings and paths packed into flat numpy arrays, for lists of millions shared by loader workers.

A list of a million ``str`` (or ``Path``) objects is a million reference counts: every read by a
forked DataLoader worker writes one, so the pages holding them are copied into the worker, and an
epoch over the list ends with each worker holding its own copy (the growth detectron2's
``DatasetFromList(serialize=True)`` and PyTorch's issue #13246 describe). Two numpy arrays (the
UTF-8 bytes and the offsets) have no per-item object: workers read them and share every page.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def trim_heap() -> None:
    """Give the heap that building a big split freed back to the system (glibc's ``malloc_trim``).

    Parsing COCO 2017's train file makes 860k transient records; once they are freed, glibc keeps
    the pages mapped, counted in the process's PSS (135 MB of the 215 MB a COCO-sized split cost
    before this call) and inherited by every forked loader worker. Elsewhere than glibc: nothing."""
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        libc = None
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


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

    def slice(self, start: int, end: int) -> PackedStrings:
        """Strings ``start:end`` as a view: the same byte buffer, no copy (offsets index into it)."""
        return PackedStrings(self.data, self.offsets[start : end + 1])

    @classmethod
    def concat(cls, parts: Sequence[PackedStrings]) -> PackedStrings:
        """The strings of every part (views too), in order, in one new buffer."""
        if not parts:
            return cls.from_list([])
        data = [p.data[p.offsets[0] : p.offsets[-1]] for p in parts]
        sizes = np.cumsum([0] + [len(d) for d in data[:-1]])
        shifted = [p.offsets[1:] - p.offsets[0] + size for p, size in zip(parts, sizes, strict=True)]
        return cls(np.concatenate(data), np.concatenate([np.zeros(1, np.int64), *shifted]).astype(np.int64))


class PackedPaths(Sequence[Path]):
    """A sequence of paths: their file names as ``PackedStrings`` and, per path, the index of its
    folder in a short list of folders (see the module docstring); items are ``Path`` s.

    Names only: VGGFace2's 3.3M paths share 9k folders, so a full path per image would repeat the
    folder (some 50 bytes) 3.3M times; a name and a folder index cost about 20 bytes an image."""

    def __init__(self, names: PackedStrings, folders: Sequence[str], folder_of: np.ndarray) -> None:
        self.names, self.folders, self.folder_of = names, tuple(folders), folder_of

    @classmethod
    def in_folder(cls, folder: str | os.PathLike[str], names: Sequence[str]) -> PackedPaths:
        """``folder/name`` for every name."""
        return cls(PackedStrings.from_list(names), (os.fspath(folder),), np.zeros(len(names), np.int32))

    @classmethod
    def of(cls, paths: Iterable[str | os.PathLike[str]]) -> PackedPaths:
        """Any paths (their folders are found and listed once)."""
        split = [os.path.split(os.fspath(p)) for p in paths]
        index: dict[str, int] = {}
        folder_of = np.fromiter((index.setdefault(f, len(index)) for f, _ in split), np.int32, len(split))
        return cls(PackedStrings.from_list([name for _, name in split]), list(index), folder_of)

    @classmethod
    def concat(cls, parts: Sequence[PackedPaths]) -> PackedPaths:
        """The paths of every part, in order."""
        folders: dict[str, int] = {}
        renumbered = []
        for part in parts:
            mapping = np.asarray([folders.setdefault(f, len(folders)) for f in part.folders], np.int32)
            renumbered.append(mapping[part.folder_of] if len(part.folder_of) else part.folder_of)
        folder_of = np.concatenate(renumbered) if renumbered else np.zeros(0, np.int32)
        return cls(PackedStrings.concat([p.names for p in parts]), list(folders), folder_of.astype(np.int32))

    def __len__(self) -> int:
        return len(self.names)

    def slice(self, start: int, end: int) -> PackedPaths:
        """Paths ``start:end`` as a view of these arrays (no copy)."""
        return PackedPaths(self.names.slice(start, end), self.folders, self.folder_of[start:end])

    def __getitem__(self, index: int) -> Path:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return Path(self.folders[self.folder_of[index]], self.names[index])

    def __iter__(self) -> Iterator[Path]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented

    __hash__ = None  # type: ignore[assignment]
