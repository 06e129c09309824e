"""Writing files users keep (metrics, results, indexes, partitions) without ever half-writing one.

Every file is written to a temporary sibling in the same folder (same filesystem, so the rename is
atomic) and renamed over the target at the end: a killed run leaves either the old file or the new
one, never a truncated mix, and an error removes the temporary file.

A command that writes a file the user names (``partition --out``, ``index build --out``,
``index search --out/--json``, the index that ``index add/remove`` rewrite) checks it with
``check_output_file`` before any work starts: an existing folder, a parent that is a file or a
folder that cannot be written is one sentence, not a traceback after an hour of work.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from backbone.errors import BadInputError


def ensure_folder(folder: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Create ``folder`` (and its parents), or say in one sentence why it cannot be."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise BadInputError(f"The {what} {str(folder)!r} is a file (or lies under one); expected a folder.") from None
    except NotADirectoryError:
        raise BadInputError(f"The {what} {str(folder)!r} lies under a regular file; expected a folder path.") from None
    except PermissionError:
        raise BadInputError(f"The {what} {str(folder)!r} cannot be created: permission denied.") from None
    if not os.access(folder, os.W_OK):
        raise BadInputError(f"The {what} {str(folder)!r} is not writable; choose a folder you can write to.")
    return folder


def check_output_file(path: str | os.PathLike[str], what: str = "output file") -> Path:
    """``path`` if a file can be written there (atomically), else one sentence saying why not.

    Refused: an existing folder, a path under a regular file, a folder that is not writable (or
    the nearest existing folder above one that does not exist yet). Nothing is created.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise BadInputError(f"The {what} {str(path)!r} is a folder; expected the name of a file to write.")
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise BadInputError(f"The {what} {str(path)!r} lies under {str(ancestor)!r}, which is a file, not a folder.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise BadInputError(
            f"The {what} {str(path)!r} cannot be written: the folder {str(ancestor)!r} is not writable."
        )
    return path


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed to ``path``.

    For writers that want a file name (``np.save``, ``faiss.write_index``, ``torch.save``).
    """
    path = check_output_file(path)
    ensure_folder(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(
    path: str | os.PathLike[str], payload: Mapping[str, Any] | list[Any], indent: int | None = 2
) -> Path:
    """Write ``payload`` to ``path`` atomically, as strict JSON.

    A NaN or infinity raises ``ValueError`` instead of being written bare (``NaN`` is not JSON:
    jq, JavaScript and ``json.loads(..., parse_constant=...)`` refuse the file); callers map such
    values to None first, as ``tasks.callbacks.MetricsJSON`` does.
    """
    return write_text_atomic(path, json.dumps(payload, indent=indent, allow_nan=False))
