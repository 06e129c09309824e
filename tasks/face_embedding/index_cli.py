"""``python -m tasks.face_embedding index build|add|remove|search``: a faiss index of faces.

    index build  --ckpt CKPT --images GALLERY --out faces.index [--kind flat|hnsw|ivfpq] [--overwrite]
    index add    --index faces.index --images MORE
    index remove --index faces.index --identity NAME [--identity NAME ...]
    index search --index faces.index --images QUERIES -k 5 --out results.csv [--threshold 0.5] [--json results.json]

A gallery is ``<identity>/*.jpg`` folders (the identity is the folder name); queries are any
images under a folder. Without ``--images``, build uses the built-in demo gallery and search the
demo queries. An unreadable image is reported and skipped. ``results.csv`` has one row per query
and rank: ``query,rank,identity,path,similarity`` (cosine similarity; rank 1 is the best); a
query whose best similarity is under ``--threshold`` gets one row with identity ``unknown``.

Every option has a declared range (``backbone.ranges``, and ``PARAM_RANGES`` for the index
parameters), and every file a command writes is checked with ``tasks.outputs.check_output_file``
before any image is embedded: bad input ends with one sentence and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from backbone.checkpoint_reader import file_sha256
from backbone.errors import BadInputError
from backbone.ranges import NonNegativeInt, OptionParser, PositiveInt, float_range
from datasets.demo.cache import announce_demo
from datasets.face_identities import describe_eval_transform, face_eval_transform
from datasets.images import PredictFolder, collate_with_info
from tasks.face_embedding.index import (
    KINDS,
    PARAM_RANGES,
    FaceIndex,
    HnswDegree,
    TrainSize,
    index_params,
    sidecar,
)
from tasks.face_embedding.model import FaceEmbedder
from tasks.face_embedding.module import load_face_embedder
from tasks.outputs import check_output_file, write_json_atomic, write_text_atomic

RESULT_COLUMNS = ("query", "rank", "identity", "path", "similarity")
UNKNOWN = "unknown"
SHOWN_QUERIES = 20  # rows of the table printed by search
# --threshold: compared with cosine similarities; any finite number is meaningful (float32 rounding
# puts an image's similarity with itself at 1.0000001, and a threshold above it rejects every match).
Threshold = float_range()
# The index parameters each option sets, by option name (their ranges: PARAM_RANGES).
PARAM_OPTIONS = {"hnsw_m": "--hnsw-m", "ef_search": "--ef-search", "nlist": "--nlist", "pq_m": "--pq-m",
                 "nprobe": "--nprobe", "train_size": "--train-size"}  # fmt: skip


# --- the model ------------------------------------------------------------------------------
def model_record(ckpt: str | Path) -> tuple[FaceEmbedder, dict[str, Any]]:
    """The embedder of ``ckpt`` and what the index records about it."""
    model, hparams = load_face_embedder(ckpt)
    resolution = int(hparams.get("resolution", 128))
    record = {
        "checkpoint": str(Path(ckpt).expanduser().resolve()),
        "sha256": file_sha256(Path(ckpt).expanduser()),
        "width": float(hparams.get("width", 1.0)),
        "resolution": resolution,
        "embedding_size": int(hparams["embedding_size"]),
        "preprocessing": describe_eval_transform(resolution),
    }
    return model, record


def index_model(face_index: FaceIndex, ckpt: str | None, path: Path) -> FaceEmbedder:
    """The model that made ``face_index``'s vectors: ``ckpt`` if given (it must be the same model),
    else the recorded checkpoint (it must not have changed since)."""
    recorded = face_index.meta["model"]
    source = ckpt or recorded["checkpoint"]
    if not Path(source).expanduser().is_file():
        raise BadInputError(
            f"The model that built {str(path)!r} ({recorded['checkpoint']!r}) is gone; pass that model with --ckpt."
        )
    model, record = model_record(source)
    if record["embedding_size"] != recorded["embedding_size"]:
        raise BadInputError(
            f"{source!r} makes {record['embedding_size']}-d embeddings but {str(path)!r} holds "
            f"{recorded['embedding_size']}-d ones from {recorded['checkpoint']!r}; use that model or build a new index."
        )
    if record["sha256"] != recorded["sha256"]:
        what = "has changed since it built" if ckpt is None else "is not the model that built"
        raise BadInputError(
            f"The checkpoint {source!r} {what} {str(path)!r} (SHA-256 {record['sha256'][:12]} vs "
            f"{recorded['sha256'][:12]}): embeddings of different models cannot be compared; "
            "pass the index's own model with --ckpt or build a new index."
        )
    return model


# --- embedding images -----------------------------------------------------------------------
def embed_folder(
    model: FaceEmbedder, folder: Path, resolution: int, batch_size: int, num_workers: int, what: str
) -> tuple[np.ndarray, list[Path]]:
    """Embeddings of every readable image under ``folder`` (recursively), with a progress bar;
    unreadable images are reported by name and skipped."""
    dataset = PredictFolder(folder, face_eval_transform(resolution))
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_with_info)
    vectors: list[np.ndarray] = []
    paths: list[Path] = []
    model.eval()
    # PredictFolder warns about each unreadable file by name (also from worker processes).
    with torch.inference_mode(), tqdm(total=len(dataset), desc=f"embedding {what}", unit="img") as bar:
        for batch in loader:
            if batch is not None:
                images, infos = batch
                vectors.append(model(images).float().numpy())
                paths += [Path(info["path"]) for info in infos]
            bar.update(min(batch_size, len(dataset) - bar.n))
    if len(paths) < len(dataset):
        print(
            f"{len(dataset) - len(paths)} of {len(dataset)} images could not be read and were skipped.", file=sys.stderr
        )
    size = model.embedding_size
    return (np.concatenate(vectors) if vectors else np.zeros((0, size), np.float32)), paths


def gallery_faces(
    model: FaceEmbedder, folder: Path, resolution: int, args: argparse.Namespace
) -> tuple[np.ndarray, list[str], list[str]]:
    """Embeddings, identities (``<identity>/`` folder names) and paths of a gallery."""
    vectors, paths = embed_folder(model, folder, resolution, args.batch_size, args.num_workers, "gallery")
    identities = [p.relative_to(folder).parts[0] if len(p.relative_to(folder).parts) > 1 else "" for p in paths]
    loose = [p for p, who in zip(paths, identities, strict=True) if not who]
    if loose:
        print(f"Skipped {len(loose)} images outside identity folders, e.g. {str(loose[0])!r}.", file=sys.stderr)
    keep = [i for i, who in enumerate(identities) if who]
    if not keep:
        raise BadInputError(f"No images in identity folders under {str(folder)!r}; a gallery holds <identity>/*.jpg.")
    return vectors[keep], [identities[i] for i in keep], [str(paths[i]) for i in keep]


def demo_folder(name: str) -> Path:
    from datasets.demo.faces import ensure_demo_faces

    folder = ensure_demo_faces() / name
    announce_demo(folder)
    return folder


# --- commands -------------------------------------------------------------------------------
def check_index_options(args: argparse.Namespace, kind: str, embedding_size: int) -> None:
    """The index options given, against the kind of index and the model, before any image is embedded."""
    given = {name: getattr(args, name, None) for name in PARAM_OPTIONS}
    for name, value in given.items():
        if value is not None and name not in PARAM_RANGES[kind]:
            users = [k for k, ranges in PARAM_RANGES.items() if name in ranges]
            raise BadInputError(f"{PARAM_OPTIONS[name]} applies to --kind {users[0]}; the index is {kind}.")
    if given["pq_m"] is not None and embedding_size % given["pq_m"]:
        raise BadInputError(
            f"--pq-m is {given['pq_m']}; expected a divisor of the model's embedding size {embedding_size}."
        )
    if given["train_size"] is not None and given["nlist"] is not None and given["train_size"] < given["nlist"]:
        raise BadInputError(
            f"--train-size is {given['train_size']}; expected at least --nlist = {given['nlist']} "
            "(faiss trains each IVF cluster on its own vectors)."
        )


def build(args: argparse.Namespace) -> None:
    out = check_output_file(args.out, "index file (--out)")
    check_output_file(sidecar(out), "index metadata file (<out>.json)")
    existing = [p for p in (out, sidecar(out)) if p.exists()]
    if existing and not args.overwrite:
        raise BadInputError(f"{str(existing[0])!r} already exists; pass --overwrite to replace the index.")
    model, record = model_record(args.ckpt)
    check_index_options(args, args.kind, record["embedding_size"])
    folder = Path(args.images) if args.images else demo_folder("gallery")
    vectors, identities, paths = gallery_faces(model, folder, record["resolution"], args)
    params = index_params(
        args.kind,
        len(vectors),
        hnsw_m=args.hnsw_m,
        ef_search=args.ef_search,
        nlist=args.nlist,
        pq_m=args.pq_m,
        nprobe=args.nprobe,
        train_size=args.train_size,
    )
    face_index = FaceIndex.create(args.kind, record, vectors, params)
    face_index.add(vectors, identities, paths)
    face_index.save(out)
    print(f"Wrote {str(out)!r} ({args.kind}): {face_index.size} faces of {len(set(identities))} identities.")


def check_rewrite(index: str) -> None:
    """The index and its sidecar can be replaced (before any image is embedded)."""
    check_output_file(index, "face index (--index)")
    check_output_file(sidecar(index), "index metadata file")


def add(args: argparse.Namespace) -> None:
    face_index = FaceIndex.load(args.index)
    check_rewrite(args.index)
    model = index_model(face_index, args.ckpt, Path(args.index))
    vectors, identities, paths = gallery_faces(model, Path(args.images), face_index.meta["model"]["resolution"], args)
    face_index.add(vectors, identities, paths)
    face_index.save(args.index)
    print(f"Added {len(vectors)} faces to {args.index!r}: it holds {face_index.size}.")


def remove(args: argparse.Namespace) -> None:
    face_index = FaceIndex.load(args.index)
    check_rewrite(args.index)
    removed = {name: face_index.remove_identity(name) for name in args.identity}
    missing = [name for name, count in removed.items() if count == 0]
    if len(missing) == len(removed):
        raise BadInputError(f"The index {args.index!r} holds no face of {', '.join(map(repr, missing))}.")
    face_index.save(args.index)
    for name in missing:
        print(f"No face of {name!r} in the index.", file=sys.stderr)
    print(f"Removed {sum(removed.values())} faces from {args.index!r}: it holds {face_index.size}.")


def search_rows(
    face_index: FaceIndex, queries: list[Path], similarities: np.ndarray, ids: np.ndarray, threshold: float | None
) -> list[dict[str, Any]]:
    """One row per query and rank; a query under ``threshold`` gets one ``unknown`` row."""
    rows: list[dict[str, Any]] = []
    for query, row_sims, row_ids in zip(queries, similarities, ids, strict=True):
        found = [(float(s), int(i)) for s, i in zip(row_sims, row_ids, strict=True) if i >= 0]
        if threshold is not None and (not found or found[0][0] < threshold):
            best = found[0][0] if found else float("nan")
            rows.append({"query": str(query), "rank": 1, "identity": UNKNOWN, "path": "", "similarity": best})
            continue
        for rank, (similarity, i) in enumerate(found, start=1):
            identity, path = face_index.faces[i]
            rows.append(
                {"query": str(query), "rank": rank, "identity": identity, "path": path, "similarity": similarity}
            )
    return rows


def search(args: argparse.Namespace) -> None:
    check_output_file(args.out, "results file (--out)")
    if args.json:
        check_output_file(args.json, "results file (--json)")
    face_index = FaceIndex.load(args.index)
    check_index_options(args, face_index.meta["kind"], face_index.meta["model"]["embedding_size"])
    model = index_model(face_index, args.ckpt, Path(args.index))
    folder = Path(args.images) if args.images else demo_folder("queries")
    params = face_index.meta["params"]
    for name in ("ef_search", "nprobe"):
        if getattr(args, name) is not None and name in params:
            params[name] = getattr(args, name)
    vectors, queries = embed_folder(
        model, folder, face_index.meta["model"]["resolution"], args.batch_size, args.num_workers, "queries"
    )
    similarities, ids = face_index.search(vectors, args.k)
    rows = search_rows(face_index, queries, similarities, ids, args.threshold)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({**r, "similarity": f"{r['similarity']:.6f}"} for r in rows)
    write_text_atomic(args.out, text.getvalue())
    if args.json:
        write_json_atomic(args.json, rows)
    print_summary(rows, folder, face_index)
    print(
        f"Wrote {len(rows)} rows for {len(queries)} queries to {args.out!r}"
        + (f" and {args.json!r}." if args.json else ".")
    )


def print_summary(rows: list[dict[str, Any]], folder: Path, face_index: FaceIndex) -> None:
    """The best match of the first queries, and, for queries kept in ``<identity>/`` folders, how
    often the best match is that identity (or ``unknown`` for people not in the index)."""
    best = [r for r in rows if r["rank"] == 1]
    print("| query | identity | similarity |\n|---|---|---|")
    for r in best[:SHOWN_QUERIES]:
        print(f"| {Path(r['query']).relative_to(folder)} | {r['identity']} | {r['similarity']:.3f} |")
    if len(best) > SHOWN_QUERIES:
        print(f"... and {len(best) - SHOWN_QUERIES} more queries")
    known = {who for who, _ in face_index.faces.values()}
    labelled = [(r, Path(r["query"]).relative_to(folder).parts) for r in best]
    labelled = [(r, parts[0]) for r, parts in labelled if len(parts) > 1]
    enrolled = [(r, who) for r, who in labelled if who in known]
    if enrolled:
        right = sum(r["identity"] == who for r, who in enrolled)
        print(f"Best match is the query's own identity for {right} of {len(enrolled)} queries of enrolled people.")
    strangers = [r for r, who in labelled if who not in known]
    if strangers:
        unknown = sum(r["identity"] == UNKNOWN for r in strangers)
        print(f"{unknown} of {len(strangers)} queries of people not in the index are reported as {UNKNOWN}.")


# --- the command line -----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = OptionParser(prog="python -m tasks.face_embedding index", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--batch-size", type=PositiveInt, default=64, help="images embedded at a time")
        sub.add_argument("--num-workers", type=NonNegativeInt, default=2, help="image-reading worker processes")

    b = commands.add_parser("build", help="embed a gallery of <identity>/*.jpg and write a new index")
    b.add_argument("--ckpt", required=True, help="a checkpoint of tasks.face_embedding")
    b.add_argument("--images", help="the gallery folder (<identity>/*.jpg); default: the demo gallery")
    b.add_argument("--out", required=True, help="the index file to write (its metadata goes to <out>.json)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing index")
    b.add_argument(
        "--kind", choices=KINDS, default="flat", help="flat (exact), hnsw or ivfpq (see docs/face_embedding.md)"
    )
    b.add_argument("--hnsw-m", type=HnswDegree, help="HNSW graph degree, >= 2 (default 32)")
    b.add_argument("--nlist", type=PositiveInt, help="IVF clusters (default about 4 * sqrt(faces))")
    b.add_argument("--pq-m", type=PositiveInt, help="PQ bytes per face, a divisor of the embedding size (default 16)")
    b.add_argument("--train-size", type=TrainSize, help="IVF-PQ training sample, >= 256 (default all, at most 262144)")
    b.add_argument("--ef-search", type=PositiveInt, help="HNSW search breadth stored as the default (64)")
    b.add_argument("--nprobe", type=PositiveInt, help="IVF clusters visited per search stored as the default (16)")
    common(b)

    a = commands.add_parser("add", help="embed more <identity>/*.jpg images into an index")
    a.add_argument("--index", required=True)
    a.add_argument("--images", required=True)
    a.add_argument("--ckpt", help="the index's model (default: the checkpoint recorded in the index)")
    common(a)

    r = commands.add_parser("remove", help="remove every face of an identity")
    r.add_argument("--index", required=True)
    r.add_argument("--identity", required=True, action="append", help="repeat to remove several")

    s = commands.add_parser("search", help="find the closest faces of every query image")
    s.add_argument("--index", required=True)
    s.add_argument("--images", help="a folder of query images; default: the demo queries")
    s.add_argument("-k", "--k", type=PositiveInt, default=5, help="matches per query")
    s.add_argument("--out", default="results.csv", help="CSV: query,rank,identity,path,similarity")
    s.add_argument("--threshold", type=Threshold, help="best cosine similarity under this -> 'unknown'")
    s.add_argument("--json", help="also write the rows as JSON to this file")
    s.add_argument("--ckpt", help="the index's model (default: the checkpoint recorded in the index)")
    s.add_argument("--ef-search", type=PositiveInt, help="HNSW search breadth (default: the index's)")
    s.add_argument("--nprobe", type=PositiveInt, help="IVF clusters visited (default: the index's)")
    common(s)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Run one index command; bad input ends with one sentence on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        {"build": build, "add": add, "remove": remove, "search": search}[args.command](args)
    except BadInputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
