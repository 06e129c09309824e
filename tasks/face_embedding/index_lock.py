"""The face index's writer lock: one ``index build|add|remove|retrain`` at a time per index.

Without it two concurrent ``index add`` runs each load the same index, add their faces and save:
the second save replaces the first, whose faces are lost although both runs said they succeeded.
A writer holds an exclusive ``flock`` on ``<index>.lock`` from loading the index to saving it (the
embedding of images happens before, outside the lock, so the lock is held for seconds to minutes,
not hours); a second writer polls for up to ``--lock-timeout`` seconds and then refuses in one
sentence naming the holder's process id, which the holder writes into the lock file.

Readers (``index search``, ``FaceSearch``) take no lock: the index is one file replaced by one
rename (``index_file``), so a reader sees the old or the new index, never a mix.

The lock file is removed by its holder on release. A waiter that opened the file just before it
was removed would lock a file that no longer has a name while a third process locks a new one;
so after locking, a writer checks that the path still names the file it locked, and retries if not.

``fcntl`` exists on Linux and macOS (the targets). On Windows ``msvcrt.locking`` is used instead
(untested here); the module imports on every platform.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from backbone.errors import BadInputError
from backbone.ranges import float_range

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LockTimeout = float_range(0)  # --lock-timeout, seconds
# A writer's critical section is a load, an edit and a save: seconds for a million faces, minutes
# for an HNSW rebuild of tens of millions; ten minutes covers those without hanging a script forever.
DEFAULT_LOCK_TIMEOUT = 600.0
POLL_S = 0.05


def lock_path(index: str | os.PathLike[str]) -> Path:
    index = Path(index)
    return index.with_name(index.name + ".lock")


def _try_lock(fd: int) -> bool:
    """Take the exclusive lock on ``fd`` without waiting; False if another process holds it."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:  # pragma: no cover - Windows
            import msvcrt

            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:
        return False
    return True


def _holder(fd: int) -> str:
    """The holder's pid as it wrote it (empty if it has not written it yet)."""
    try:
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except (OSError, AttributeError):  # pragma: no cover - no pread on Windows
        return ""


def _same_file(fd: int, path: Path) -> bool:
    try:
        mine, named = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (mine.st_dev, mine.st_ino) == (named.st_dev, named.st_ino)


@contextmanager
def writer_lock(index: str | os.PathLike[str], timeout: float = DEFAULT_LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the writer lock of ``index`` (see the module docstring) for the ``with`` block."""
    path = lock_path(index)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise BadInputError(f"The index lock file {str(path)!r} cannot be created: {error.strerror}.") from None
        if _try_lock(fd):
            if _same_file(fd, path):
                break
            os.close(fd)  # locked a file its previous holder had just removed: try the new one
            continue
        holder = _holder(fd)
        os.close(fd)
        if time.monotonic() >= deadline:
            who = f"process {holder}" if holder else "another process"
            raise BadInputError(
                f"The face index {str(index)!r} is being changed by {who} (lock {str(path)!r}), which still held "
                f"it after --lock-timeout {timeout:g} s; wait for it to finish or pass a longer --lock-timeout."
            )
        time.sleep(POLL_S)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # at offset 0: the file was just opened
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked: a waiter then sees the name gone and retries
        os.close(fd)  # releases the lock
