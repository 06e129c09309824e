"""The embedding files ``predict`` writes (``embeddings.npy`` + ``paths.txt``, or an ``.npz``), read
once for distillation (``--data.teacher_embeddings``) and for the face index (``--embeddings``)."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from backbone.errors import BadInputError
from datasets.schema import Field, Format

# The embedding files of distillation and of the face index, declared once (``datasets.schema``): what
# ``predict`` writes (embeddings.npy + paths.txt) or an .npz holding both.
EMBEDDINGS_FORMAT = Format(
    "embeddings file",
    "embeddings.npy (N rows of D finite numbers) with its paths.txt beside it, as "
    "'python -m tasks.face_embedding predict' writes them, or an .npz with arrays 'paths' (N texts) and "
    "'embeddings' (N x D numbers)",
    (
        Field("path", str, pattern=r".*\S.*", pattern_words="not blank", unique=True, noun="an image path"),
        Field("embedding", float, noun="a finite number"),
    ),
    record="row",
)
EMBEDDING_PATHS_FORMAT = Format(
    "embedding paths file",
    "paths.txt: one image path per line, line k naming row k of the embeddings.npy beside it",
    (Field("path", str, pattern=r".*\S.*", pattern_words="not blank", unique=True, noun="an image path"),),
)


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npy (under ``embeddings``) or .npz, never unpickling; one sentence if not readable."""
    fmt = EMBEDDINGS_FORMAT
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in ("paths", "embeddings") if k not in data.files]
                if missing:
                    raise fmt.error(
                        path, None, f"it holds the arrays {data.files} but no {missing[0]!r}; expected {fmt.layout}"
                    )
                return {key: data[key] for key in ("paths", "embeddings")}
        return {"embeddings": np.load(path, allow_pickle=False)}
    except BadInputError:
        raise
    except ValueError as error:  # numpy falls back to unpickling (never allowed here) for what is not an array
        detail = "reading it would mean unpickling it" if "pickle" in str(error) else str(error)
        raise fmt.error(path, None, f"it is not a NumPy array file ({detail}); expected {fmt.layout}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as error:
        raise fmt.error(path, None, f"it is not a NumPy .npy/.npz file ({error}); expected {fmt.layout}") from None


def read_embedding_rows(path: str | Path, hint: str = "") -> tuple[list[str], np.ndarray]:
    """The image paths and float32 embeddings (N x D, finite) of an ``embeddings.npy`` + ``paths.txt``
    pair or an ``.npz`` (``EMBEDDINGS_FORMAT``); a folder means its ``embeddings.npy``. The one reader
    of ``predict``'s output, for distillation and for the face index."""
    fmt = EMBEDDINGS_FORMAT
    path = Path(path).expanduser()
    path = fmt.require_file(path / "embeddings.npy" if path.is_dir() else path, hint)
    arrays = _load_arrays(path)
    vectors = arrays["embeddings"]
    if path.suffix == ".npz":
        paths = arrays["paths"]
        if paths.ndim != 1 or paths.dtype.kind not in "US":
            raise fmt.bad(path, None, "the array 'paths'", f"{paths.dtype} of shape {paths.shape}", "N texts")
        keys = [p.decode() if isinstance(p, bytes) else str(p) for p in paths.tolist()]
        fmt.column(path, "path", keys, 0)
    else:
        listing = EMBEDDING_PATHS_FORMAT.require_file(path.with_name("paths.txt"))
        keys = EMBEDDING_PATHS_FORMAT.read_lines(listing)
        EMBEDDING_PATHS_FORMAT.column(listing, "path", keys, 1)
    if vectors.ndim != 2 or vectors.dtype.kind not in "iuf" or vectors.shape[1] < 1:
        raise fmt.bad(
            path, None, "the embeddings", f"an array of {vectors.dtype} of shape {vectors.shape}", "N x D numbers"
        )
    if len(keys) != len(vectors):
        raise fmt.error(
            path, None, f"it holds {len(vectors)} embeddings for {len(keys)} paths; expected one row per path"
        )
    vectors = vectors.astype(np.float32)
    finite = np.isfinite(vectors)
    if not finite.all():  # a NaN target trains NaN weights, a NaN gallery row matches nothing: refused by row
        row = int(np.flatnonzero(~finite.all(axis=1))[0])
        value = vectors[row][~finite[row]][0]
        raise fmt.bad(path, f"row {row} ({keys[row]!r})", "embedding", float(value), "finite numbers")
    return keys, vectors


def read_teacher_embeddings(path: str | Path, images: Sequence[Path], root: Path) -> np.ndarray:
    """The teacher's embedding of each of ``images`` (rows in that order), from ``path``.

    ``path`` is either ``embeddings.npy`` with a ``paths.txt`` beside it (what ``predict`` of this
    task writes: run the teacher's ``predict --data.predict_dir <root>``) or an ``.npz`` with arrays
    ``paths`` (N strings) and ``embeddings`` (N x D float), checked against
    ``EMBEDDINGS_FORMAT`` (``read_embedding_rows``): a NaN or an infinity, a repeated path, a count that does not
    match is refused naming the file and row. A path matches an image given relative to the data
    root (``<identity>/x.jpg``) or as the same absolute file.
    """
    fmt = EMBEDDINGS_FORMAT
    path = Path(path).expanduser()
    keys, vectors = read_embedding_rows(path, " (write it with the teacher's 'python -m tasks.face_embedding predict')")
    lookup: dict[str, int] = {}
    for row, key in enumerate(keys):
        lookup[key] = row
        lookup[str((root / key).resolve())] = row  # relative to the data root, or absolute
        lookup[str(Path(key).resolve())] = row
    rows = [lookup.get(str(image.resolve()), -1) for image in images]
    missing = [image for image, row in zip(images, rows, strict=True) if row < 0]
    if missing:
        raise fmt.error(
            path,
            None,
            f"it has no embedding for {len(missing)} training images, e.g. {str(missing[0])!r}; expected a row for "
            "every training image (run the teacher's predict on the same data root)",
        )
    return vectors[rows]
