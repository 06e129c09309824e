"""The face index file: faiss vectors and the metadata naming them, in one file replaced by one rename.

Layout (version 2)::

    [ faiss index, exactly as faiss.write_index writes it ][ metadata JSON ][ JSON length: u64 LE ][ b"FACEIDX2" ]

The metadata (``METADATA_FORMAT``) says whose face each vector id is, and records the model
that made the vectors and its calibrated threshold. Why one file: version 1 wrote the faiss file
and a ``<index>.json`` sidecar with two renames, so a reader between them (or after a crash
between them) paired one write's vectors with another's names. A single file written to a
temporary sibling, flushed to disk and renamed over the old one is replaced as one unit: a reader
opens the old file or the new one. faiss reads an index from the start of a file and ignores what
follows it, so the file stays a plain faiss file for ``faiss.read_index`` and for memory-mapped
loading (``IO_FLAG_MMAP_IFC``: the vectors stay in the page cache, read as searched, not copied).

A reader opens the file, reads the metadata through that handle, lets faiss read the path, then
checks that the path still names the file it opened (same inode). A writer always renames a new
file into place and an open file keeps its inode, so an unchanged inode means faiss read the very
file the metadata came from; otherwise the index was replaced meanwhile and the read is retried.

Version 1 indexes (``faces.index`` + ``faces.index.json``) are refused in one sentence saying how to
rebuild them: they lack the face content hashes, the threshold and IVF-PQ's exact vectors.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, NamedTuple

import faiss
import numpy as np

from backbone.errors import BadInputError
from backbone.ranges import PositiveInt, Resolution, Width, int_range
from datasets.schema import Field, Format
from datasets.text import decode_text
from tasks.face_embedding.threshold import Calibration
from tasks.outputs import atomic_path

FORMAT = "mobilenet-suite face index"
VERSION = 2
MAGIC = b"FACEIDX2"
TRAILER = struct.Struct("<Q8s")  # the metadata's length in bytes, then MAGIC
READ_ATTEMPTS = 5  # a reader retries when the index is replaced while being read
KINDS: tuple[str, ...] = ("flat", "hnsw", "ivfpq")
PQ_BITS = 8  # 256 centroids per sub-quantizer (faiss's default)
MIN_TRAIN = 1 << PQ_BITS  # faiss trains each PQ codebook by k-means into 2^bits centroids: as many vectors
REBUILD = "rebuild it with 'index build --overwrite' (from the images, or from predict's embeddings with --embeddings)"

# The ranges of the index options (``--hnsw-m`` ...), shared by the command line and the metadata check.
HnswDegree = int_range(2)  # faiss's HNSW crashed (no error) at M = 1
TrainSize = int_range(MIN_TRAIN)
PARAM_RANGES: dict[str, dict[str, type]] = {
    "flat": {},
    "hnsw": {"hnsw_m": HnswDegree, "ef_construction": PositiveInt, "ef_search": PositiveInt},
    "ivfpq": {
        "nlist": PositiveInt,
        "pq_m": PositiveInt,
        "nprobe": PositiveInt,
        "train_size": TrainSize,
        "refine": PositiveInt,
    },
}
# The faiss classes of each kind, outermost first: every kind is id-mapped (stable 64-bit ids);
# IVF-PQ is wrapped in a refine index keeping the exact vectors (see ``index.py``).
LAYERS = {
    "flat": ("IndexIDMap", "IndexFlatIP"),
    "hnsw": ("IndexIDMap", "IndexHNSWFlat"),
    "ivfpq": ("IndexIDMap", "IndexRefineFlat", "IndexIVFPQ"),
}

METADATA_FORMAT = Format(
    "face index metadata",
    "the metadata that 'index build' writes at the end of a face index file: format, version, kind, params, "
    "model, threshold, next_id and faces",
    (
        Field("format", str, choices=(FORMAT,)),
        Field("version", int, choices=(VERSION,), expected=f"{VERSION} (another version needs a rebuild)"),
        Field("kind", str, choices=KINDS),
        Field("params", dict, expected="an object of the kind's parameters"),
        Field("model", dict, expected="an object with the model's checkpoint, sha256, resolution and embedding_size"),
        Field("next_id", int, low=0, noun="a face id"),
        Field("faces", list, expected="a list of [id, identity, path, sha256 or null]"),
        Field("face", list, expected="[id, identity, path, sha256 or null]"),
        Field("id", int, low=0, unique=True, noun="a face id"),
        Field("identity", str, pattern=r".*\S.*", pattern_words="not blank", noun="an identity"),
        Field("path", str, noun="an image path"),
        Field("checkpoint", str, noun="a checkpoint path"),
        Field("sha256", str, pattern=r"[0-9a-f]{64}", pattern_words="64 hexadecimal digits", noun="a SHA-256"),
        Field.ranged("width", Width),
        Field.ranged("resolution", Resolution),
        Field.ranged("embedding_size", PositiveInt),
        *(Field.ranged(name, kind) for name, kind in {**PARAM_RANGES["hnsw"], **PARAM_RANGES["ivfpq"]}.items()),
    ),
    record="key",
)


class Face(NamedTuple):
    """One enrolled face: whose it is, its image, and the image's content SHA-256 (None: not hashed)."""

    identity: str
    path: str
    sha256: str | None


# --- writing --------------------------------------------------------------------------------
def write_index_file(path: str | os.PathLike[str], index: faiss.Index, meta: dict[str, Any]) -> None:
    """Write ``index`` and ``meta`` as one file (see the module docstring), replacing ``path`` atomically."""
    path = Path(path)
    data = json.dumps(meta, allow_nan=False).encode()
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
        append_metadata(tmp, data)
    try:  # the rename itself reaches the disk (a crash right after would otherwise lose it)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError:  # pragma: no cover - folders cannot be opened on Windows
        pass


def append_metadata(tmp: Path, data: bytes) -> None:
    """The metadata and trailer after the faiss bytes, flushed to disk before the rename."""
    with open(tmp, "ab") as handle:
        handle.write(data + TRAILER.pack(len(data), MAGIC))
        handle.flush()
        os.fsync(handle.fileno())


# --- reading --------------------------------------------------------------------------------
def read_metadata_bytes(path: Path, handle: Any, size: int) -> bytes:
    """The metadata bytes at the end of an open index file; one sentence if there are none."""
    side = path.with_name(path.name + ".json")
    magic_ok = False
    if size >= TRAILER.size:
        handle.seek(size - TRAILER.size)
        length, magic = TRAILER.unpack(handle.read(TRAILER.size))
        magic_ok = magic == MAGIC
    if not magic_ok:
        if side.is_file():
            raise BadInputError(
                f"The face index {str(path)!r} is a version-1 index (metadata in {str(side)!r}), which this version "
                f"cannot read; {REBUILD}."
            )
        raise BadInputError(
            f"The face index {str(path)!r} has no face index metadata at its end (a truncated file, or not one "
            f"written by 'index build'); {REBUILD}."
        )
    if length > size - TRAILER.size:
        raise BadInputError(
            f"The face index {str(path)!r} is damaged: its metadata claims {length} bytes of a {size}-byte file; "
            f"{REBUILD}."
        )
    handle.seek(size - TRAILER.size - length)
    return handle.read(length)


def _read_faiss(path: Path, mmap: bool) -> faiss.Index:
    # IO_FLAG_MMAP_IFC maps flat codes and inverted lists (every kind's vectors); faiss's older
    # IO_FLAG_MMAP only maps on-disk inverted lists and still read 530 MB of a 1M-face IVF-PQ.
    flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0
    try:
        return faiss.read_index(str(path), flags)
    except RuntimeError as error:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        raise BadInputError(f"The face index {str(path)!r} could not be read by faiss ({detail}); {REBUILD}.") from None


def read_index_file(
    path: str | os.PathLike[str], mmap: bool = False
) -> tuple[faiss.Index, dict[str, Any], dict[int, Face]]:
    """The faiss index, metadata (without ``faces``) and faces by id of the file at ``path``,
    checked against each other; ``mmap`` maps the vectors instead of reading them (read-only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise BadInputError(f"The face index {str(path)!r} {what}; expected an index file made by 'index build'.")
    for _ in range(READ_ATTEMPTS):
        with open(path, "rb") as handle:
            opened = os.fstat(handle.fileno())
            data = read_metadata_bytes(path, handle, opened.st_size)
            meta, faces = check_metadata(parse_metadata(data, path), path)
            index = _read_faiss(path, mmap)
            named = os.stat(path)
        if (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino):
            check_index_matches(index, meta, faces, path)
            return index, meta, faces
    raise BadInputError(f"The face index {str(path)!r} was replaced {READ_ATTEMPTS} times while being read; try again.")


def parse_metadata(data: bytes, path: Path) -> Any:
    fmt = METADATA_FORMAT
    text = decode_text(data, path, fmt.kind, fmt.layout)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise fmt.error(path, None, f"it is not valid JSON ({error.msg} at character {error.pos}); {REBUILD}") from None


def check_metadata(meta: Any, path: Path) -> tuple[dict[str, Any], dict[int, Face]]:
    """The metadata (without ``faces``) and the faces by id, checked against ``METADATA_FORMAT``."""
    fmt = METADATA_FORMAT
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else f"a JSON {type(meta).__name__}"
        raise fmt.bad(path, None, "format", found, f"{FORMAT!r}: the metadata of a face index made by 'index build'")
    for key in ("version", "kind", "params", "model", "next_id", "faces"):
        if key not in meta:
            raise fmt.error(path, None, f"it has no key {key!r}; expected {fmt.layout}")
        fmt.value(path, None, key, meta[key])
    for name in PARAM_RANGES[meta["kind"]]:
        if name not in meta["params"]:
            raise fmt.error(path, "params", f"there is no {name!r}; expected the parameters of a {meta['kind']} index")
        fmt.value(path, "params", name, meta["params"][name])
    model = meta["model"]
    for name in ("checkpoint", "sha256", "resolution", "embedding_size", "width"):  # width: informative only
        if name in model:
            fmt.value(path, "model", name, model[name])
        elif name != "width":
            raise fmt.error(path, "model", f"there is no {name!r}; expected {fmt.field('model').words}")
    if not isinstance(model.get("flip_test"), bool):
        raise fmt.bad(path, "model", "flip_test", model.get("flip_test"), "true or false")
    if meta.get("threshold") is not None:
        Calibration.from_dict(meta["threshold"], f"The face index {str(path)!r}")
    faces: dict[int, Face] = {}
    fields = [fmt.field(name) for name in ("id", "identity", "path", "sha256")]  # looked up once, not per face
    next_id = meta["next_id"]
    for number, face in enumerate(meta.pop("faces")):
        if not isinstance(face, list) or len(face) != 4:
            raise fmt.bad(path, f"faces[{number}]", "face", face)
        for field, value in zip(fields, face, strict=True):
            if not (field.accepts(value) or (value is None and field.name == "sha256")):
                raise fmt.bad(path, f"faces[{number}]", field.name, value)
        face_id = face[0]
        if face_id >= next_id or face_id in faces:
            expected = f"an id below next_id = {next_id}" if face_id >= next_id else "each id once"
            raise fmt.bad(path, f"faces[{number}]", "id", face_id, expected)
        faces[face_id] = Face(face[1], face[2], face[3])
    return meta, faces


def faiss_layers(index: faiss.Index) -> list[str]:
    """The class names of ``index`` and the indexes it wraps, outermost first."""
    names = []
    while index is not None:
        index = faiss.downcast_index(index)
        names.append(type(index).__name__)
        inner = getattr(index, "base_index", None) if "Refine" in names[-1] else None
        index = index.index if "IDMap" in names[-1] else inner
    return names


def check_index_matches(index: faiss.Index, meta: dict[str, Any], faces: dict[int, Face], path: Path) -> None:
    """The metadata describes this faiss index: its kind, metric, vector size, face count and ids."""
    fmt = METADATA_FORMAT
    layers = faiss_layers(index)
    if tuple(layers) != LAYERS[meta["kind"]] or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        found = " around ".join(layers) + ("" if index.metric_type == faiss.METRIC_INNER_PRODUCT else " (not IP)")
        raise fmt.error(path, None, f"kind is {meta['kind']!r} but the file holds a faiss {found}; {REBUILD}")
    if index.d != meta["model"]["embedding_size"]:
        size = meta["model"]["embedding_size"]
        raise fmt.error(path, None, f"embedding_size is {size} but it holds {index.d}-d vectors; {REBUILD}")
    if index.ntotal != len(faces):
        raise fmt.error(path, None, f"it lists {len(faces)} faces but holds {index.ntotal} vectors; {REBUILD}")
    ids = faiss.vector_to_array(index.id_map)
    listed = np.fromiter(faces, dtype=np.int64, count=len(faces))
    unknown = np.setdiff1d(ids, listed)
    if len(unknown):
        raise fmt.error(path, None, f"it has no face for the vector id {int(unknown[0])}; {REBUILD}")
    vectorless = np.setdiff1d(listed, ids)
    if len(vectorless):
        raise fmt.error(path, None, f"the face id {int(vectorless[0])} has no vector; {REBUILD}")


# --- inspecting -----------------------------------------------------------------------------
def read_raw_metadata(path: str | os.PathLike[str]) -> Any:
    """The metadata JSON of an index file as stored, unchecked (to inspect it, or to test damage)."""
    path = Path(path)
    with open(path, "rb") as handle:
        return parse_metadata(read_metadata_bytes(path, handle, os.fstat(handle.fileno()).st_size), path)


def replace_raw_metadata(path: str | os.PathLike[str], meta: Any, data: bytes | None = None) -> None:
    """Rewrite an index file's metadata as ``meta`` (or raw ``data``), unchecked: for tests of damage."""
    path = Path(path)
    blob = path.read_bytes()
    length, _ = TRAILER.unpack(blob[-TRAILER.size :])
    data = json.dumps(meta).encode() if data is None else data
    path.write_bytes(blob[: len(blob) - TRAILER.size - length] + data + TRAILER.pack(len(data), MAGIC))
