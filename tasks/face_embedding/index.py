"""A searchable face index: faiss vectors with stable ids, and metadata saying whose face each is.

Three index kinds, all on L2-normalised embeddings, where inner product = cosine similarity, and
all returning exact similarities, so a threshold means the same on each:

* ``flat``: ``IndexFlatIP``, exact search; faiss's advice up to about a million vectors.
  Memory: 4 * d bytes per face (512 B at d = 128) + 8 B id.
* ``hnsw``: ``IndexHNSWFlat`` (inner product), a graph: fast approximate search, exact vectors
  kept; memory 4 * d + 8 * M bytes per face (768 B at d = 128, M = 32) + 8 B id; no removal in
  faiss, so ``remove`` rebuilds the graph from the stored vectors (once per batch of removals).
* ``ivfpq``: ``IndexIVFPQ`` (inner product), for tens of millions and more: an inverted file of
  ``nlist`` clusters, vectors compressed to ``pq_m`` bytes (16 B at d = 128). Compressed
  similarities are biased low (quantisation error), so the IVF-PQ is wrapped in
  ``IndexRefineFlat``: it proposes ``refine * k`` candidates, which are re-ranked by their exact
  inner products from the stored exact vectors. The exact vectors (4 * d bytes per face) make the
  file as large as a flat one, but searched with ``--mmap`` they stay on disk and only the
  candidates' pages are read. They also make ``retrain`` possible (re-train the clusters and
  codebooks on the current faces) and removal: the refine wrapper cannot remove ids, so
  ``remove`` re-encodes the kept vectors with the trained quantizer (once per batch).

Every kind is wrapped in ``IndexIDMap``, so every vector has a stable 64-bit id; the metadata
maps ids to faces (identity, image path, image SHA-256) and records the model that made the
vectors, so vectors of another model are never mixed in or searched with. On disk the index and
its metadata are one file (``index_file``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import faiss
import numpy as np

from backbone.errors import BadInputError
from tasks.face_embedding.index_file import (
    FORMAT,
    KINDS,
    MIN_TRAIN,
    PARAM_RANGES,
    PQ_BITS,
    VERSION,
    Face,
    HnswDegree,
    TrainSize,
    read_index_file,
    write_index_file,
)

__all__ = ["KINDS", "PARAM_RANGES", "Face", "FaceIndex", "HnswDegree", "TrainSize", "index_params", "new_index"]

# graph degree: faiss's usual 16-64 (its recall against exact search: docs/face_embedding.md, Face index benchmark)
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 40  # faiss's default
HNSW_EF_SEARCH = 64
PQ_M = 16  # bytes per compressed vector: 8 dimensions per sub-quantizer at d = 128
IVF_NPROBE = 16
# Re-ranked candidates per wanted match. A person's photos lie close together and their PQ codes
# barely tell them apart, so the exact best match is only found if all of the query's identity's
# photos are candidates: on benchmarks/face_index.py's synthetic gallery (10 photos per identity),
# 100k faces, nprobe 16, recall@1 against exact search was 0.17 / 0.53 / 0.88 / 0.999 at refine
# 1 / 4 / 8 / 16 with queries/s unchanged (a one-off sweep); at 1M faces refine 16 gives 0.978 (the
# probe's limit) and a top-1 similarity 1e-4 from the exact one, against 0.154 and -0.13 for the
# codes alone. 16 also leaves room for galleries with more photos per person.
REFINE = 16
TRAIN_POINTS_PER_CENTROID = 39  # faiss warns below 39 training points per centroid
# The default training sample: 64 points per IVF centroid (over faiss's 39, under its 256 cap),
# and at least 64 per PQ codebook centroid; all faces when the gallery is smaller.
SAMPLE_PER_CENTROID = 64
MIN_SAMPLE = SAMPLE_PER_CENTROID * MIN_TRAIN


def default_nlist(count: int) -> int:
    """faiss's guideline for the number of IVF clusters: about 4 * sqrt(N), trainable from N."""
    return max(1, min(int(4 * math.sqrt(count)), count // TRAIN_POINTS_PER_CENTROID or 1))


def default_train_size(count: int, nlist: int) -> int:
    """Enough training faces for ``nlist`` clusters (``SAMPLE_PER_CENTROID`` each), within the gallery:
    1M faces -> nlist 4,000, 256,000 trained; 100M -> 40,000, 2.56M (64 per centroid at every size)."""
    return max(min(count, MIN_TRAIN), min(count, max(MIN_SAMPLE, SAMPLE_PER_CENTROID * nlist)))


def index_params(kind: str, count: int, **given: int | None) -> dict[str, Any]:
    """The parameters of a new index of ``kind`` for ``count`` faces (``given`` values win)."""
    defaults: dict[str, Any] = {
        "flat": {},
        "hnsw": {"hnsw_m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": HNSW_EF_SEARCH},
        "ivfpq": {"nlist": default_nlist(count), "pq_m": PQ_M, "nprobe": IVF_NPROBE, "refine": REFINE},
    }[kind]
    params = {name: (given[name] if given.get(name) is not None else value) for name, value in defaults.items()}
    if kind == "ivfpq":
        size = given.get("train_size")
        params["train_size"] = size if size is not None else default_train_size(count, params["nlist"])
    return params


def train_ivfpq(d: int, vectors: np.ndarray, params: dict[str, Any], seed: int = 0) -> faiss.IndexIVFPQ:
    """An empty IVF-PQ trained on a random sample of ``vectors`` (``params['train_size']`` of them)."""
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
    sample = vectors[np.sort(np.random.default_rng(seed).choice(len(vectors), size, replace=False))]
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


def refined(ivfpq: faiss.IndexIVFPQ, params: dict[str, Any]) -> faiss.Index:
    """``ivfpq`` (trained, empty) re-ranked by exact inner products, with stable ids. (faiss's Python
    wrappers keep each wrapped index alive as long as its wrapper: no ownership juggling here.)"""
    refine = faiss.IndexRefineFlat(ivfpq)
    refine.k_factor = float(params["refine"])
    wrapped = faiss.IndexIDMap(refine)
    return wrapped


def new_index(kind: str, d: int, vectors: np.ndarray, params: dict[str, Any], seed: int = 0) -> faiss.Index:
    """An empty index of ``kind`` for ``d``-dimensional vectors (IVF-PQ trained on ``vectors``)."""
    if kind == "flat":
        inner: faiss.Index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        inner = faiss.IndexHNSWFlat(d, params["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = params["ef_construction"]
    elif kind == "ivfpq":
        return refined(train_ivfpq(d, vectors, params, seed), params)
    else:
        raise BadInputError(f"Unknown index kind {kind!r}; expected one of {', '.join(KINDS)}.")
    wrapped = faiss.IndexIDMap(inner)
    return wrapped


@dataclass
class FaceIndex:
    """A faiss index and its metadata (``meta``: model, kind, params, threshold; ``faces`` by id)."""

    index: faiss.Index
    meta: dict[str, Any]
    faces: dict[int, Face] = field(default_factory=dict)

    # --- create / load / save ------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        kind: str,
        model: dict[str, Any],
        vectors: np.ndarray,
        params: dict[str, Any],
        threshold: dict[str, Any] | None = None,
    ) -> FaceIndex:
        """An empty index for ``model``'s vectors; ``threshold``: its calibration (``Calibration.to_dict``)."""
        index = new_index(kind, int(model["embedding_size"]), vectors, params)
        meta = {"format": FORMAT, "version": VERSION, "kind": kind, "params": params, "model": model}
        meta |= {"threshold": threshold, "next_id": 0}
        meta["similarity"] = "inner product of L2-normalised embeddings (cosine similarity), exact on every kind"
        return cls(index, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str], mmap: bool = False) -> FaceIndex:
        """The index at ``path`` (``index_file``); ``mmap``: vectors mapped from disk, read-only."""
        return cls(*read_index_file(path, mmap))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Replace ``path`` by this index and its metadata, as one file (``index_file``)."""
        payload = {**self.meta, "faces": [[i, *face] for i, face in self.faces.items()]}
        write_index_file(path, self.index, payload)

    # --- edit -------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def kind(self) -> str:
        return str(self.meta["kind"])

    def add(
        self, vectors: np.ndarray, identities: list[str], paths: list[str], hashes: list[str | None] | None = None
    ) -> np.ndarray:
        """Add faces under new ids (returned); ``hashes``: their images' SHA-256 (for ``enrolled``)."""
        start = int(self.meta["next_id"])
        ids = np.arange(start, start + len(vectors), dtype=np.int64)
        if len(vectors):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        hashes = hashes if hashes is not None else [None] * len(vectors)
        faces = zip(ids.tolist(), identities, paths, hashes, strict=True)
        self.faces.update({i: Face(who, p, digest) for i, who, p, digest in faces})
        self.meta["next_id"] = start + len(vectors)
        return ids

    def enrolled(self) -> set[tuple[str, str | None]]:
        """The (resolved image path, image SHA-256) of every face: an image is enrolled once."""
        return {(face.path, face.sha256) for face in self.faces.values()}

    def vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(exact vectors, ids) of every face, in storage order (every kind keeps exact vectors)."""
        inner = faiss.downcast_index(self.index.index)
        storage = faiss.downcast_index(inner.refine_index) if self.kind == "ivfpq" else inner
        ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        vectors = storage.reconstruct_n(0, storage.ntotal) if storage.ntotal else np.zeros((0, inner.d), np.float32)
        return vectors, ids

    def remove(self, ids: np.ndarray | list[int]) -> int:
        """Remove the faces ``ids`` (unknown ids are ignored) with one rebuild at most; how many went."""
        ids = np.asarray(sorted({int(i) for i in ids} & self.faces.keys()), dtype=np.int64)
        if not len(ids):
            return 0
        if self.kind == "flat":
            self.index.remove_ids(ids)
        else:  # HNSW cannot delete and the refine wrapper cannot either: rebuild from the kept vectors
            vectors, all_ids = self.vectors()
            keep = ~np.isin(all_ids, ids)
            self._rebuild(vectors[keep], all_ids[keep], retrain=False)
        for i in ids.tolist():
            del self.faces[i]
        return len(ids)

    def retrain(self, params: dict[str, Any]) -> None:
        """IVF-PQ only: train new clusters and codebooks (``params``) on the current exact vectors."""
        if self.kind != "ivfpq":
            raise BadInputError(f"Only an IVF-PQ index is trained; this one is {self.kind}, which needs no retrain.")
        vectors, ids = self.vectors()
        self.meta["params"] = params
        self._rebuild(vectors, ids, retrain=True)

    def _rebuild(self, vectors: np.ndarray, ids: np.ndarray, retrain: bool) -> None:
        """A new faiss index of the same kind holding ``vectors`` under ``ids``; IVF-PQ keeps its
        trained quantizer and codebooks unless ``retrain``."""
        params, d = self.meta["params"], int(self.index.d)
        if self.kind == "ivfpq" and not retrain:
            ivf = faiss.extract_index_ivf(self.index)
            empty = faiss.clone_index(ivf)  # an IndexIVFPQ owned by this Python object
            empty.reset()
            index = refined(empty, params)
        else:
            index = new_index(self.kind, d, vectors, params)
        if len(vectors):
            index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)
        self.index = index

    # --- search -----------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, ids), each (queries, k); id -1 where the index holds fewer than k faces."""
        params = self.meta["params"]
        if self.kind == "hnsw":
            faiss.downcast_index(self.index.index).hnsw.efSearch = max(params["ef_search"], k)
        elif self.kind == "ivfpq":
            faiss.extract_index_ivf(self.index).nprobe = params["nprobe"]
            faiss.downcast_index(self.index.index).k_factor = float(params["refine"])
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
