"""A searchable face index: faiss vectors + a JSON sidecar saying whose face each vector is.

Three index kinds, all on L2-normalised embeddings, where inner product = cosine similarity:

* ``flat``: ``IndexFlatIP``, exact search; faiss's advice up to about a million vectors.
  Memory: 4 * d bytes per face (512 B at d = 128) + 8 B id.
* ``hnsw``: ``IndexHNSWFlat`` (inner product), a graph: fast approximate search, exact vectors
  kept; memory 4 * d + 8 * M bytes per face (768 B at d = 128, M = 32) + 8 B id; no removal in
  faiss, so ``remove`` rebuilds the graph from the stored vectors.
* ``ivfpq``: ``IndexIVFPQ`` (inner product), for tens of millions and more: an inverted file of
  ``nlist`` clusters trained on a sample, vectors compressed to ``pq_m`` bytes (16 B at d = 128)
  + 8 B id; similarities are approximate (compressed vectors).

``flat`` and ``hnsw`` are wrapped in ``IndexIDMap2`` and ``ivfpq`` stores ids itself, so every
vector has a stable 64-bit id; the sidecar ``<index>.json`` maps ids to identity and image path
and records the model that made the vectors (checkpoint path and SHA-256, embedding size,
resolution, preprocessing), so vectors of another model are never mixed in or searched with.
Both files are written to temporary siblings and renamed (``tasks.outputs.atomic_path``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from backbone.errors import BadInputError
from backbone.ranges import PositiveInt, Resolution, Width, int_range
from datasets.schema import Field, Format
from tasks.outputs import atomic_path

Kind = Literal["flat", "hnsw", "ivfpq"]
KINDS: tuple[str, ...] = ("flat", "hnsw", "ivfpq")
FORMAT = "mobilenet-suite face index"
VERSION = 1
# graph degree: faiss's usual 16-64 (its recall against exact search: docs/face_embedding.md, Face index benchmark)
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40  # faiss's default
HNSW_EF_SEARCH = 64
PQ_M = 16  # bytes per compressed vector: 8 dimensions per sub-quantizer at d = 128
PQ_BITS = 8  # 256 centroids per sub-quantizer (faiss's default)
IVF_NPROBE = 16
TRAIN_POINTS_PER_CENTROID = 39  # faiss warns below 39 training points per centroid
MAX_TRAIN = 262_144  # IVF-PQ trains on a random sample of at most this many vectors
MIN_TRAIN = 1 << PQ_BITS  # faiss trains each PQ codebook by k-means into 2^bits centroids: as many vectors

# The ranges of the index options (``--hnsw-m`` ...), shared by the command line and the sidecar check.
HnswDegree = int_range(2)  # faiss's HNSW crashed (no error) at M = 1
TrainSize = int_range(MIN_TRAIN)
PARAM_RANGES: dict[str, dict[str, type]] = {
    "flat": {},
    "hnsw": {"hnsw_m": HnswDegree, "ef_construction": PositiveInt, "ef_search": PositiveInt},
    "ivfpq": {"nlist": PositiveInt, "pq_m": PositiveInt, "nprobe": PositiveInt, "train_size": TrainSize},
}

# The sidecar <index>.json, declared once (``datasets.schema``); its keys are its fields.
SIDECAR_FORMAT = Format(
    "face index metadata",
    "the JSON file '<index>.json' that 'index build' writes beside a face index: format, version, kind, params, "
    "model, next_id and faces",
    (
        Field("format", str, choices=(FORMAT,)),
        Field("version", int, choices=(VERSION,), expected=f"{VERSION} (a newer index needs a newer version)"),
        Field("kind", str, choices=KINDS),
        Field("params", dict, expected="an object of the kind's parameters"),
        Field("model", dict, expected="an object with the model's checkpoint, sha256, resolution and embedding_size"),
        Field("next_id", int, low=0, noun="a face id"),
        Field("faces", list, expected="a list of [id, identity, path]"),
        Field("face", list, expected="[id, identity, path]"),
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


def sidecar(path: str | os.PathLike[str]) -> Path:
    """The metadata file beside an index: ``<index>.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def default_nlist(count: int) -> int:
    """faiss's guideline for the number of IVF clusters: about 4 * sqrt(N), trainable from N."""
    return max(1, min(int(4 * math.sqrt(count)), count // TRAIN_POINTS_PER_CENTROID or 1))


def new_index(kind: str, d: int, vectors: np.ndarray, params: dict[str, Any], seed: int = 0) -> faiss.Index:
    """An empty index of ``kind`` for ``d``-dimensional vectors (IVF-PQ trained on ``vectors``)."""
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(d))
    if kind == "hnsw":
        graph = faiss.IndexHNSWFlat(d, params["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = params["ef_construction"]
        return faiss.IndexIDMap2(graph)
    if kind == "ivfpq":
        if len(vectors) < MIN_TRAIN:
            raise BadInputError(
                f"An IVF-PQ index is trained on the gallery and needs at least {MIN_TRAIN} faces; got {len(vectors)}: "
                "use --kind flat (exact) for a gallery this small."
            )
        if d % params["pq_m"]:
            raise BadInputError(f"--pq-m is {params['pq_m']}; expected a divisor of the embedding size {d}.")
        size = min(len(vectors), params["train_size"])
        if size < params["nlist"]:  # faiss's k-means needs a training vector per cluster
            raise BadInputError(
                f"--nlist is {params['nlist']}; expected at most the {size} faces of the training sample "
                f"(the gallery's {len(vectors)}, --train-size {params['train_size']})."
            )
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFPQ(quantizer, d, params["nlist"], params["pq_m"], PQ_BITS, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = vectors[rng.choice(len(vectors), size, replace=False)]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        return index
    raise BadInputError(f"Unknown index kind {kind!r}; expected one of {', '.join(KINDS)}.")


@dataclass
class FaceIndex:
    """A faiss index and its metadata (``meta``: model, kind, params, faces by id)."""

    index: faiss.Index
    meta: dict[str, Any]
    faces: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (identity, path)

    # --- create / load / save ------------------------------------------------------------------
    @classmethod
    def create(cls, kind: str, model: dict[str, Any], vectors: np.ndarray, params: dict[str, Any]) -> FaceIndex:
        d = int(model["embedding_size"])
        index = new_index(kind, d, vectors, params)
        meta = {"format": FORMAT, "version": VERSION, "kind": kind, "params": params, "model": model, "next_id": 0}
        meta["similarity"] = "inner product of L2-normalised embeddings (cosine similarity)"
        return cls(index, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FaceIndex:
        """The index at ``path`` and its sidecar, each checked against the other (``read_sidecar``)."""
        path = Path(path)
        side = sidecar(path)
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise BadInputError(f"The face index {str(path)!r} {what}; expected an index file made by 'index build'.")
        if not side.is_file():
            raise BadInputError(
                f"The face index {str(path)!r} has no metadata file {str(side)!r} beside it; "
                "it was not made by 'index build' (or the file was moved without it)."
            )
        meta, faces = read_sidecar(side)
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as error:
            raise BadInputError(f"The face index {str(path)!r} could not be read by faiss: {error}".strip()) from None
        check_index_matches(index, meta, faces, path)
        return cls(index, meta, faces)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index and its sidecar: both to temporary files first, then both renamed."""
        path = Path(path)
        payload = {**self.meta, "faces": [[i, identity, p] for i, (identity, p) in self.faces.items()]}
        with atomic_path(path) as tmp_index, atomic_path(sidecar(path)) as tmp_meta:
            faiss.write_index(self.index, str(tmp_index))
            tmp_meta.write_text(json.dumps(payload))

    # --- edit -------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def add(self, vectors: np.ndarray, identities: list[str], paths: list[str]) -> None:
        start = int(self.meta["next_id"])
        ids = np.arange(start, start + len(vectors), dtype=np.int64)
        if len(vectors):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        self.faces.update({int(i): (who, p) for i, who, p in zip(ids, identities, paths, strict=True)})
        self.meta["next_id"] = start + len(vectors)

    def remove_identity(self, identity: str) -> int:
        """Remove every face of ``identity``; returns how many were removed."""
        ids = np.array([i for i, (who, _) in self.faces.items() if who == identity], dtype=np.int64)
        if not len(ids):
            return 0
        if self.meta["kind"] == "hnsw":  # faiss's HNSW cannot delete: rebuild from the kept vectors
            graph = faiss.downcast_index(self.index.index)
            all_ids = faiss.vector_to_array(self.index.id_map)
            vectors = graph.reconstruct_n(0, graph.ntotal)
            keep = ~np.isin(all_ids, ids)
            self.index = new_index("hnsw", graph.d, vectors, self.meta["params"])
            self.index.add_with_ids(vectors[keep], all_ids[keep])
        else:
            self.index.remove_ids(ids)
        for i in ids:
            del self.faces[int(i)]
        return len(ids)

    # --- search -----------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, ids), each (queries, k); id -1 where the index holds fewer than k faces."""
        params = self.meta["params"]
        if self.meta["kind"] == "hnsw":
            faiss.downcast_index(self.index.index).hnsw.efSearch = max(params["ef_search"], k)
        elif self.meta["kind"] == "ivfpq":
            self.index.nprobe = params["nprobe"]
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def index_params(kind: str, count: int, **given: int | None) -> dict[str, Any]:
    """The parameters of a new index of ``kind`` for ``count`` faces (``given`` values win)."""
    defaults: dict[str, Any] = {
        "flat": {},
        "hnsw": {"hnsw_m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": HNSW_EF_SEARCH},
        "ivfpq": {
            "nlist": default_nlist(count),
            "pq_m": PQ_M,
            "nprobe": IVF_NPROBE,
            "train_size": min(count, MAX_TRAIN),
        },
    }[kind]
    return {name: (given[name] if given.get(name) is not None else value) for name, value in defaults.items()}


def read_sidecar(side: Path) -> tuple[dict[str, Any], dict[int, tuple[str, str]]]:
    """The metadata of an index (without ``faces``) and its faces by id, checked against ``SIDECAR_FORMAT``."""
    fmt = SIDECAR_FORMAT
    meta = fmt.read_json(side)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else f"a JSON {type(meta).__name__}"
        raise fmt.bad(side, None, "format", found, f"{FORMAT!r}: the metadata of a face index made by 'index build'")
    for key in ("version", "kind", "params", "model", "next_id", "faces"):
        if key not in meta:
            raise fmt.error(side, None, f"it has no key {key!r}; expected {fmt.layout}")
        fmt.value(side, None, key, meta[key])
    for name in PARAM_RANGES[meta["kind"]]:
        if name not in meta["params"]:
            raise fmt.error(side, "params", f"there is no {name!r}; expected the parameters of a {meta['kind']} index")
        fmt.value(side, "params", name, meta["params"][name])
    for name in ("checkpoint", "sha256", "resolution", "embedding_size", "width"):  # width: informative only
        if name in meta["model"]:
            fmt.value(side, "model", name, meta["model"][name])
        elif name != "width":
            raise fmt.error(side, "model", f"there is no {name!r}; expected {fmt.field('model').words}")
    faces: dict[int, tuple[str, str]] = {}
    for number, face in enumerate(meta.pop("faces")):
        where = f"faces[{number}]"
        if not isinstance(face, list) or len(face) != 3:
            raise fmt.bad(side, where, "face", face)
        face_id, identity, image = (
            fmt.value(side, where, name, v) for name, v in zip(("id", "identity", "path"), face, strict=True)
        )
        if face_id >= meta["next_id"]:
            raise fmt.bad(side, where, "id", face_id, f"an id below next_id = {meta['next_id']}")
        if face_id in faces:
            raise fmt.bad(side, where, "id", face_id, "each id once")
        faces[face_id] = (identity, image)
    return meta, faces


_FAISS_TYPES = {"flat": ("IndexIDMap2", "IndexFlat"), "hnsw": ("IndexIDMap2", "IndexHNSW"), "ivfpq": ("IndexIVFPQ", "")}


def check_index_matches(
    index: faiss.Index, meta: dict[str, Any], faces: dict[int, tuple[str, str]], path: Path
) -> None:
    """The sidecar describes this index: its kind, vector size, face count and (flat, hnsw) ids."""
    side, fmt = sidecar(path), SIDECAR_FORMAT
    outer, inner = _FAISS_TYPES[meta["kind"]]
    found = type(index).__name__ + (f"({type(faiss.downcast_index(index.index)).__name__})" if inner else "")
    if not found.startswith(outer) or inner not in found:
        raise fmt.error(side, None, f"kind is {meta['kind']!r} but {str(path)!r} is a faiss {found}; rebuild the index")
    if index.d != meta["model"]["embedding_size"]:
        raise fmt.error(
            side,
            None,
            f"embedding_size is {meta['model']['embedding_size']} but {str(path)!r} holds {index.d}-d vectors; "
            "rebuild the index with 'index build --overwrite'",
        )
    if index.ntotal != len(faces):
        raise fmt.error(
            side,
            None,
            f"it lists {len(faces)} faces but {str(path)!r} holds {index.ntotal} vectors; "
            "rebuild the index with 'index build --overwrite'",
        )
    if inner:
        ids = set(faiss.vector_to_array(index.id_map).tolist())
        unknown = next((i for i in sorted(ids) if i not in faces), None)
        if unknown is not None:
            raise fmt.error(
                side, None, f"it has no face for the vector id {unknown} of {str(path)!r}; rebuild the index"
            )
