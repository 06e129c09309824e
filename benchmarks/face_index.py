"""The face index section: faiss index kinds on synthetic galleries (1M faces by default; several
sizes with ``--index-faces 1000000,10000000``), and the embedder's throughput.

For each index kind of ``tasks.face_embedding.index`` (flat, HNSW, IVF-PQ re-ranked exactly, as
``index build --kind ivfpq`` makes it) and for IVF-PQ without re-ranking (its compressed codes
alone, to show what the exact vectors cost and buy) on the same synthetic gallery: build time
(IVF-PQ's training included), queries per second (a batch of queries, as ``index search`` sends
them), recall@1 against exact search (the flat index's answers, computed in the same run), the
mean error of the top-1 similarity against the exact one (compressed similarities are biased low),
plus bytes per face (the serialised index). The gallery imitates a face set: ``identities`` centres on
the 128-d unit sphere with ``faces_per_identity`` noisy, re-normalised photos each; queries are new
photos of gallery identities. Then the embedding network's images/s at the trained resolution
(eager and BN-folded + channels_last), what ``index build`` spends per gallery image.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import faiss
import numpy as np
import torch

from backbone.inference import prepare_for_inference
from benchmarks.common import (
    Option,
    Section,
    calibrate_batchnorm,
    fmt,
    markdown_table,
    print_heading,
    progress,
    register,
    time_call,
)
from tasks.face_embedding.index import REFINE, FaceIndex, index_params, train_ivfpq
from tasks.face_embedding.model import EMBEDDING_SIZE, FaceEmbedder

NOISE = 0.35  # per-photo spread around the identity centre (a same-person cosine of about 0.9)
FACES_PER_IDENTITY = 10
KIND_NAMES = {
    "flat": "IndexFlatIP (exact)",
    "hnsw": "IndexHNSWFlat",
    "ivfpq": f"IndexIVFPQ + IndexRefineFlat (x{REFINE})",
    "ivfpq_codes": "IndexIVFPQ, codes only",
}
KINDS = tuple(KIND_NAMES)


def face_counts(text: str) -> list[int]:
    """``--index-faces 1000000,10000000``: one or more gallery sizes."""
    counts = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"--index-faces is {text!r}; expected sizes >= 1 separated by commas")
    return counts


def synthetic_faces(
    count: int, queries: int, d: int = EMBEDDING_SIZE, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` clustered unit vectors (face ``j`` is a photo of identity ``j % identities``), and
    ``queries`` new photos of gallery identities with those identities."""
    rng = np.random.default_rng(seed)
    identities = max(1, count // FACES_PER_IDENTITY)
    centres = rng.standard_normal((identities, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def photos(owners: np.ndarray) -> np.ndarray:
        x = centres[owners] + rng.standard_normal((len(owners), d), dtype=np.float32) * (NOISE / np.sqrt(d))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    gallery = np.concatenate(
        [photos(np.arange(s, min(s + 100_000, count)) % identities) for s in range(0, count, 100_000)]
    )
    owners = rng.integers(0, identities, queries)
    return gallery, photos(owners), owners


def measure_kind(
    kind: str, gallery: np.ndarray, queries: np.ndarray, owners: np.ndarray, exact: np.ndarray | None
) -> dict[str, Any]:
    """Build time, bytes per face, queries/s, recall@1 (vs ``exact``) and identity@1 of one index kind."""
    model = {"embedding_size": gallery.shape[1], "checkpoint": "synthetic", "sha256": "", "resolution": 0}
    params = index_params("ivfpq" if kind == "ivfpq_codes" else kind, len(gallery))
    start = time.perf_counter()
    if kind == "ivfpq_codes":  # what the IVF-PQ proposes before re-ranking: ids and compressed similarities
        codes = train_ivfpq(gallery.shape[1], gallery, params)
        codes.add(gallery)
        codes.nprobe = params["nprobe"]
        params.pop("refine")

        def search(k: int) -> tuple[np.ndarray, np.ndarray]:
            return codes.search(queries, k)

        index: faiss.Index = codes
    else:
        face_index = FaceIndex.create(kind, model, gallery, params)
        face_index.index.add_with_ids(gallery, np.arange(len(gallery), dtype=np.int64))

        def search(k: int) -> tuple[np.ndarray, np.ndarray]:
            return face_index.search(queries, k)

        index = face_index.index
    build_s = time.perf_counter() - start
    memory = faiss.serialize_index(index).nbytes
    timing = time_call(lambda: search(1), warmup=1, min_repeats=1, max_repeats=3, budget_s=0)
    similarity, found = search(1)
    recall = float(np.mean(found[:, 0] == exact)) if exact is not None else 1.0
    exact_similarity = np.einsum("ij,ij->i", queries, gallery[exact if exact is not None else found[:, 0]])
    return {
        "kind": kind,
        "faces": len(gallery),
        "params": params,
        "build_s": build_s,
        "bytes_per_face": memory / len(gallery),
        "queries_per_s": len(queries) / timing.median,
        "recall_at_1": recall,
        # the top-1 similarity minus the exact one: ~0 when re-ranked, negative for compressed codes
        "similarity_error": float(np.mean(similarity[:, 0] - exact_similarity)),
        # a face search answers "who is this": whether the best match is a photo of the query's identity
        "identity_at_1": float(np.mean(found[:, 0] % max(1, len(gallery) // FACES_PER_IDENTITY) == owners)),
        "found": found[:, 0],
    }


def measure_indexes(faces: int, queries_count: int, kinds: tuple[str, ...] = KINDS) -> list[dict[str, Any]]:
    """Every kind on the same gallery of ``faces``; flat first, its answers are the exact ones."""
    progress(f"  generating {faces:,} synthetic faces and {queries_count} queries")
    gallery, queries, owners = synthetic_faces(faces, queries_count)
    rows: list[dict[str, Any]] = []
    exact = None
    for kind in ("flat", *(k for k in kinds if k != "flat")):
        row = measure_kind(kind, gallery, queries, owners, exact)
        exact = row.pop("found") if exact is None else exact
        row.pop("found", None)
        rows.append(row)
        progress(
            f"  {kind:>6}: build {row['build_s']:7.1f} s, {row['queries_per_s']:9.0f} queries/s, "
            f"recall@1 {row['recall_at_1']:.3f}, identity@1 {row['identity_at_1']:.3f}, "
            f"similarity error {row['similarity_error']:+.4f}, "
            f"{row['bytes_per_face']:.0f} B/face"
        )
    return rows


def measure_embedding(width: float, resolution: int, batch: int, budget: float) -> dict[str, Any]:
    """Images/s of the face embedder, eager and BN-folded + channels_last (random weights, calibrated BN)."""
    torch.manual_seed(0)
    model = calibrate_batchnorm(FaceEmbedder(width), [torch.rand(max(batch, 2), 3, resolution, resolution)])
    images = torch.rand(batch, 3, resolution, resolution)
    result: dict[str, Any] = {"width": width, "resolution": resolution, "batch": batch}
    for name, net, x in (
        ("eager", model, images),
        ("optimised", prepare_for_inference(model), images.contiguous(memory_format=torch.channels_last)),
    ):
        with torch.inference_mode():
            timing = time_call(lambda net=net, x=x: net(x), budget_s=budget)
        result[f"{name}_images_per_s"] = batch / timing.median
    return result


def print_results(rows: list[dict[str, Any]], embedding: dict[str, Any], threads: int) -> None:
    for faces in dict.fromkeys(r["faces"] for r in rows):
        print_index_table([r for r in rows if r["faces"] == faces], threads)
    print_heading(f"Face embedder {embedding['width']:g}-{embedding['resolution']}, batch {embedding['batch']}", 4)
    print(
        markdown_table(
            ["mode", "images/s"],
            [
                ["eager", fmt(embedding["eager_images_per_s"], ".1f")],
                ["BN folded + channels_last", fmt(embedding["optimised_images_per_s"], ".1f")],
            ],
        )
    )


def print_index_table(rows: list[dict[str, Any]], threads: int) -> None:
    print_heading(f"Face index: {rows[0]['faces']:,} synthetic 128-d faces, {threads} threads")
    table = [
        [
            KIND_NAMES[r["kind"]],
            ", ".join(f"{k}={v}" for k, v in r["params"].items() if k != "train_size") or "–",
            fmt(r["build_s"], ".1f"),
            fmt(r["bytes_per_face"], ".0f"),
            fmt(r["queries_per_s"], ",.0f"),
            fmt(r["recall_at_1"], ".3f"),
            fmt(r["identity_at_1"], ".3f"),
            fmt(r["similarity_error"], "+.4f"),
        ]
        for r in rows
    ]
    header = ["index", "parameters", "build s", "bytes/face", "queries/s", "recall@1 vs exact", "identity@1"]
    print(markdown_table([*header, "top-1 similarity error"], table))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure the index kinds and the embedder; print; return the JSON."""
    threads = torch.get_num_threads()
    faiss.omp_set_num_threads(threads)
    progress(f"faiss {faiss.__version__}, {threads} threads, face_index section")
    kinds = tuple(k for k in args.index_kinds.split(",") if k)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise SystemExit(f"error: --index-kinds has {unknown[0]!r}; expected some of {', '.join(KINDS)}.")
    rows = [row for faces in args.index_faces for row in measure_indexes(faces, args.index_queries, kinds)]
    embedding = measure_embedding(args.face_width, args.face_resolution, args.face_batch, args.budget)
    print_results(rows, embedding, threads)
    return {"threads": threads, "faiss": faiss.__version__, "indexes": rows, "embedding": embedding}


SECTION = register(
    Section(
        "face_index",
        run,
        options=(
            Option(
                "--index-faces",
                [1_000_000],
                quick=[20_000],
                type=face_counts,
                help="gallery sizes, comma-separated (1000000,10000000)",
            ),
            Option("--index-kinds", ",".join(KINDS), quick=",".join(KINDS), help="kinds measured (flat always)"),
            Option("--index-queries", 1000, quick=200, type=int, help="query faces"),
            Option("--face-width", 1.0, quick=0.25, type=float, help="α of the embedder timed"),
            Option("--face-resolution", 128, quick=32, type=int, help="its (trained) resolution"),
            Option("--face-batch", 32, quick=2, type=int, help="images per embedding batch"),
        ),
    )
)
