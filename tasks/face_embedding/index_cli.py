"""``python -m tasks.face_embedding index build|add|remove|retrain|search|info``: a faiss index of faces.

    index build   --ckpt CKPT (--images GALLERY | --embeddings DIR) --out faces.index [--kind flat|hnsw|ivfpq]
    index add     --index faces.index (--images MORE | --embeddings DIR [--ckpt CKPT])
    index remove  --index faces.index [--identity NAME] [--path P] [--id N] ...   (each repeatable)
    index retrain --index faces.index [--nlist N] [--pq-m M] [--train-size S]   (IVF-PQ)
    index info    --index faces.index    (its metadata: model, kind, parameters, threshold, counts)
    index search  --index faces.index (--images QUERIES | --embeddings DIR) -k 5 --out results.csv
                  [--threshold auto|none|COSINE] [--json results.json] [--mmap]
    build|add|search ... --detector FACE_DETECTOR.ckpt   (photos instead of face crops: see index_inputs)

A gallery is ``<identity>/*.jpg`` folders (the identity is the folder name; see ``index_inputs``);
queries are any images under a folder. Without ``--images``/``--embeddings``, build uses the
built-in demo gallery and search the demo queries. An unreadable image is reported and skipped.
``results.csv`` has one row per query and rank: ``query,rank,identity,path,similarity`` (cosine
similarity, exact on every index kind; rank 1 is the best); a query whose best similarity is under
the threshold gets one row with identity ``unknown``. ``--threshold auto`` (the default) is the
model's calibrated threshold stored in the index (``threshold.py``); search says which it used.

Writers (build, add, remove, retrain) hold the index's lock (``index_lock``) from loading it to
saving it; images are embedded before, outside the lock, so a second writer waits seconds, not
hours (``--lock-timeout``). Every option has a declared range (``backbone.ranges``, and
``PARAM_RANGES`` for the index parameters), and every file a command writes is checked with
``tasks.outputs.check_output_file`` before any image is embedded: bad input ends with one
sentence and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from backbone.errors import BadInputError
from backbone.ranges import NonNegativeInt, OptionParser, PositiveInt, Share
from datasets.demo.cache import announce_demo
from datasets.images import PredictFolder
from tasks.face_embedding.api import UNKNOWN, FaceSearch, resolve_threshold, threshold_option
from tasks.face_embedding.face_crops import FaceDetector
from tasks.face_embedding.index import KINDS, PARAM_RANGES, FaceIndex, HnswDegree, TrainSize, index_params
from tasks.face_embedding.index_inputs import (
    embed_detected,
    embed_files,
    embedding_faces,
    gallery_files,
    hash_files,
    index_model,
    model_record,
    read_embeddings,
)
from tasks.face_embedding.index_lock import DEFAULT_LOCK_TIMEOUT, LockTimeout, writer_lock
from tasks.outputs import check_output_file, ensure_folder, write_json_atomic, write_text_atomic

RESULT_COLUMNS = ("query", "rank", "identity", "path", "similarity")
DETECTED_COLUMNS = ("face", "box")  # with --detector: which face of the query photo, and where (x1 y1 x2 y2)
DETECTOR_SCORE = 0.5  # --detector-score: the detector's own score threshold (torchvision's SSD keeps 0.01 and up)
SHOWN_QUERIES = 20  # rows of the table printed by search
# The index parameters each option sets, by option name (their ranges: PARAM_RANGES).
PARAM_OPTIONS = {"hnsw_m": "--hnsw-m", "ef_search": "--ef-search", "nlist": "--nlist", "pq_m": "--pq-m",
                 "nprobe": "--nprobe", "train_size": "--train-size", "refine": "--refine"}  # fmt: skip


def demo_folder(name: str) -> Path:
    from datasets.demo.faces import ensure_demo_faces

    folder = ensure_demo_faces() / name
    announce_demo(folder)
    return folder


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


def given_params(args: argparse.Namespace) -> dict[str, int | None]:
    return {name: getattr(args, name, None) for name in PARAM_OPTIONS}


# --- new faces ------------------------------------------------------------------------------
Faces = tuple[np.ndarray, list[str], list[str], list[str | None]]  # vectors, identities, paths, image SHA-256s


def new_faces(args: argparse.Namespace, model_source: Any, record: dict[str, Any], enrolled: set[Any]) -> Faces:
    """The faces of ``--images`` or ``--embeddings`` not ``enrolled`` yet (same path and content),
    embedded by ``model_source()`` (called only if images are to be embedded)."""
    if getattr(args, "embeddings", None):
        keys, vectors = read_embeddings(args.embeddings, record, getattr(args, "ckpt", None))
        rows, identities, paths = embedding_faces(keys, Path(args.images) if args.images else None)
        vectors, hashes = vectors[rows], hash_files(paths)
        keep = [i for i, key in enumerate(zip(map(str, paths), hashes, strict=True)) if key not in enrolled]
        report_skipped(len(paths) - len(keep))
        return vectors[keep], [identities[i] for i in keep], [str(paths[i]) for i in keep], [hashes[i] for i in keep]
    folder = Path(args.images) if args.images else demo_folder("gallery")
    files, identities = gallery_files(folder)
    hashes = hash_files(files)
    keep = [i for i, p in enumerate(files) if (str(p.resolve()), hashes[i]) not in enrolled]
    report_skipped(len(files) - len(keep))
    kept = [files[i] for i in keep]
    if args.detector:  # photos: the largest face of each is the person enrolled
        detector = FaceDetector.load(args.detector, args.detector_score)
        vectors, rows, _ = embed_detected(
            model_source(), detector, folder, kept, record, args.batch_size, args.num_workers, True, "gallery"
        )
    else:
        vectors, rows = embed_files(model_source(), folder, kept, record, args.batch_size, args.num_workers, "gallery")
    chosen = [keep[r] for r in rows]
    return (
        vectors,
        [identities[i] for i in chosen],
        [str(files[i].resolve()) for i in chosen],
        [hashes[i] for i in chosen],
    )


def report_skipped(count: int) -> None:
    if count:
        print(f"Skipped {count} already enrolled (same image path and content).", file=sys.stderr)


def add_unique(face_index: FaceIndex, faces: Faces) -> int:
    """Add ``faces`` not enrolled in ``face_index`` (as it is now, under the lock); how many were added."""
    vectors, identities, paths, hashes = faces
    enrolled = face_index.enrolled()
    keep = [i for i, key in enumerate(zip(paths, hashes, strict=True)) if key not in enrolled]
    report_skipped(len(paths) - len(keep))  # enrolled by another writer meanwhile
    face_index.add(vectors[keep], [identities[i] for i in keep], [paths[i] for i in keep], [hashes[i] for i in keep])
    return len(keep)


# --- commands -------------------------------------------------------------------------------
def build(args: argparse.Namespace) -> None:
    out = check_output_file(args.out, "index file (--out)")
    if out.exists() and not args.overwrite:
        raise BadInputError(f"{str(out)!r} already exists; pass --overwrite to replace the index.")
    model, record, threshold = model_record(args.ckpt)
    check_index_options(args, args.kind, record["embedding_size"])
    vectors, identities, paths, hashes = new_faces(args, lambda: model, record, set())
    if not len(vectors):
        raise BadInputError("No face could be embedded; the index was not written.")
    params = index_params(args.kind, len(vectors), **given_params(args))
    face_index = FaceIndex.create(args.kind, record, vectors, params, threshold)
    ensure_folder(out.parent, "index folder")  # the lock file lies beside the index
    with writer_lock(out, args.lock_timeout):
        if out.exists() and not args.overwrite:  # written by another build meanwhile
            raise BadInputError(f"{str(out)!r} already exists; pass --overwrite to replace the index.")
        face_index.add(vectors, identities, paths, hashes)
        face_index.save(out)
    print(f"Wrote {str(out)!r} ({args.kind}): {face_index.size} faces of {len(set(identities))} identities.")
    described = "none (pass --threshold to search)" if threshold is None else f"cosine {threshold['cosine']:.4f}"
    print(f"Calibrated threshold stored with the index: {described}.")


def add(args: argparse.Namespace) -> None:
    before = FaceIndex.load(args.index)
    check_output_file(args.index, "face index (--index)")
    record = before.meta["model"]
    if args.embeddings and args.ckpt:
        index_model(before, args.ckpt, Path(args.index))  # the vouched model must be the index's
    faces = new_faces(args, lambda: index_model(before, args.ckpt, Path(args.index)), record, before.enrolled())
    with writer_lock(args.index, args.lock_timeout):
        face_index = FaceIndex.load(args.index)  # as it is now: another writer may have changed it
        if face_index.meta["model"]["sha256"] != record["sha256"]:
            raise BadInputError(f"The index {args.index!r} was rebuilt with another model meanwhile; run add again.")
        added = add_unique(face_index, faces)
        if added:
            face_index.save(args.index)
    print(f"Added {added} faces to {args.index!r}: it holds {face_index.size}.")


def remove(args: argparse.Namespace) -> None:
    check_output_file(args.index, "face index (--index)")
    if not (args.identity or args.path or args.id):
        raise BadInputError("index remove needs --identity NAME, --path IMAGE or --id N (each repeatable).")
    with writer_lock(args.index, args.lock_timeout):
        face_index = FaceIndex.load(args.index)
        wanted = {("--identity", n) for n in args.identity or []} | {("--id", str(i)) for i in args.id or []}
        wanted |= {("--path", str(Path(p).expanduser().resolve())) for p in args.path or []}
        ids, hit = [], set()
        for face_id, face in face_index.faces.items():
            keys = {("--identity", face.identity), ("--path", face.path), ("--id", str(face_id))} & wanted
            if keys:
                ids.append(face_id)
                hit |= keys
        missing = sorted(wanted - hit)
        if not ids:
            raise BadInputError(f"The index {args.index!r} holds no face matching {' '.join(missing[0])}.")
        removed = face_index.remove(ids)  # one rebuild (hnsw, ivfpq) for the whole batch
        face_index.save(args.index)
    for option, value in missing:
        print(f"No face matches {option} {value} in the index.", file=sys.stderr)
    print(f"Removed {removed} faces from {args.index!r}: it holds {face_index.size}.")


def retrain(args: argparse.Namespace) -> None:
    check_output_file(args.index, "face index (--index)")
    with writer_lock(args.index, args.lock_timeout):
        face_index = FaceIndex.load(args.index)
        check_index_options(args, face_index.kind, face_index.meta["model"]["embedding_size"])
        old = face_index.meta["params"]
        # nlist and the training sample follow the gallery's size now; the rest stays as built unless given
        given = given_params(args) | {"nprobe": old.get("nprobe"), "refine": old.get("refine")}
        given["pq_m"] = given["pq_m"] or old.get("pq_m")
        params = index_params(face_index.kind, face_index.size, **given)
        face_index.retrain(params)
        face_index.save(args.index)
    shown = ", ".join(f"{k} {old.get(k)} -> {v}" for k, v in params.items() if old.get(k) != v) or "same parameters"
    print(f"Retrained {args.index!r} on its {face_index.size} faces ({shown}).")


def info(args: argparse.Namespace) -> None:
    """The metadata stored at the end of the index file (it is not a separate readable file any more)."""
    face_index = FaceIndex.load(args.index, mmap=True)  # mapped: only the metadata is read in full
    summary = dict(face_index.meta)
    summary["faces"] = face_index.size
    summary["identities"] = len({face.identity for face in face_index.faces.values()})
    print(json.dumps(summary, indent=2))


def search(args: argparse.Namespace) -> None:
    check_output_file(args.out, "results file (--out)")
    if args.json:
        check_output_file(args.json, "results file (--json)")
    face_index = FaceIndex.load(args.index, mmap=args.mmap)
    check_index_options(args, face_index.kind, face_index.meta["model"]["embedding_size"])
    threshold = resolve_threshold(args.threshold, face_index, args.index)
    for name in ("ef_search", "nprobe", "refine"):
        if getattr(args, name) is not None and name in face_index.meta["params"]:
            face_index.meta["params"][name] = getattr(args, name)
    searcher = FaceSearch(face_index, Path(args.index), threshold, args.ckpt)
    folder = None
    detected: list[dict[str, Any]] = []  # per query face, with --detector: its number in the photo and box
    if args.embeddings:
        if args.ckpt:  # the model vouched for must be the index's
            searcher.model  # noqa: B018 (loads and checks it)
        queries, vectors = read_embeddings(args.embeddings, face_index.meta["model"], args.ckpt)
    else:
        folder = Path(args.images) if args.images else demo_folder("queries")
        files = PredictFolder(folder, lambda image: image).files  # every image under the folder, sorted
        record, workers = face_index.meta["model"], (args.batch_size, args.num_workers)
        if args.detector:  # photos: every face found is a query, reported with its box
            detector = FaceDetector.load(args.detector, args.detector_score)
            vectors, rows, boxes = embed_detected(
                searcher.model, detector, folder, files, record, *workers, False, "queries"
            )
            faces = {}
            for r, box in zip(rows, boxes, strict=True):
                faces[r] = faces.get(r, 0) + 1
                detected.append({"face": faces[r], "box": " ".join(f"{v:g}" for v in box)})
        else:
            vectors, rows = embed_files(searcher.model, folder, files, record, *workers, "queries")
        queries = [str(files[r]) for r in rows]
    answers = searcher.search_embeddings(vectors, args.k)
    rows_out = [
        {"query": q, **face, "rank": rank, "identity": m.identity, "path": m.path, "similarity": m.similarity}
        for q, face, found in zip(queries, detected or [{}] * len(queries), answers, strict=True)
        for rank, m in enumerate(found, start=1)
    ]
    text = io.StringIO()
    columns = (RESULT_COLUMNS[0], *DETECTED_COLUMNS, *RESULT_COLUMNS[1:]) if detected else RESULT_COLUMNS
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({**r, "similarity": f"{r['similarity']:.6f}"} for r in rows_out)
    write_text_atomic(args.out, text.getvalue())
    if args.json:
        write_json_atomic(args.json, [{**r, "similarity": none_if_nan(r["similarity"])} for r in rows_out])
    print_summary(rows_out, folder, face_index)
    print(f"Threshold: {threshold.source}.")
    print(
        f"Wrote {len(rows_out)} rows for {len(queries)} queries to {args.out!r}"
        + (f" and {args.json!r}." if args.json else ".")
    )


def none_if_nan(value: float) -> float | None:
    return None if value != value else value  # an empty index's unknown row has no best similarity


def print_summary(rows: list[dict[str, Any]], folder: Path | None, face_index: FaceIndex) -> None:
    """The best match of the first queries, and, for queries kept in ``<identity>/`` folders, how
    often the best match is that identity (or ``unknown`` for people not in the index)."""
    best = [r for r in rows if r["rank"] == 1]
    print("| query | identity | similarity |\n|---|---|---|")
    for r in best[:SHOWN_QUERIES]:
        shown = Path(r["query"]).relative_to(folder) if folder else r["query"]
        print(f"| {shown} | {r['identity']} | {r['similarity']:.3f} |")
    if len(best) > SHOWN_QUERIES:
        print(f"... and {len(best) - SHOWN_QUERIES} more queries")
    if folder is None:
        return
    known = {face.identity for face in face_index.faces.values()}
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

    def locked(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--lock-timeout",
            type=LockTimeout,
            default=DEFAULT_LOCK_TIMEOUT,
            help=f"seconds to wait for another writer of the index, then refuse (default {DEFAULT_LOCK_TIMEOUT:g})",
        )

    def ivfpq_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--nlist", type=PositiveInt, help="IVF clusters (default about 4 * sqrt(faces))")
        sub.add_argument("--pq-m", type=PositiveInt, help="PQ bytes per face, a divisor of the embedding size (16)")
        sub.add_argument("--train-size", type=TrainSize, help="IVF-PQ training faces (default 64 per cluster)")

    def detector_options(sub: argparse.ArgumentParser, use: str) -> None:
        sub.add_argument("--detector", help=f"a face detector checkpoint (tasks.detection, faces): {use}")
        sub.add_argument(
            "--detector-score",
            type=Share,
            default=DETECTOR_SCORE,
            help=f"the detector's score threshold for a face (default {DETECTOR_SCORE})",
        )

    embeddings_help = "predict's embeddings.npy (with paths.txt), or its folder, instead of embedding images"
    b = commands.add_parser("build", help="embed a gallery of <identity>/*.jpg and write a new index")
    b.add_argument("--ckpt", required=True, help="a checkpoint of tasks.face_embedding")
    b.add_argument("--images", help="the gallery folder (<identity>/*.jpg); with --embeddings: their root")
    b.add_argument("--embeddings", help=embeddings_help)
    b.add_argument("--out", required=True, help="the index file to write")
    b.add_argument("--overwrite", action="store_true", help="replace an existing index")
    b.add_argument(
        "--kind", choices=KINDS, default="flat", help="flat (exact), hnsw or ivfpq (see docs/face_embedding.md)"
    )
    b.add_argument("--hnsw-m", type=HnswDegree, help="HNSW graph degree, >= 2 (default 32)")
    ivfpq_options(b)
    b.add_argument("--ef-search", type=PositiveInt, help="HNSW search breadth stored as the default (64)")
    b.add_argument("--nprobe", type=PositiveInt, help="IVF clusters visited per search stored as the default (16)")
    b.add_argument("--refine", type=PositiveInt, help="IVF-PQ candidates re-ranked exactly per match (default 16)")
    detector_options(b, "the gallery is photos; the largest face of each is enrolled")
    common(b)
    locked(b)

    a = commands.add_parser("add", help="embed more <identity>/*.jpg images into an index")
    a.add_argument("--index", required=True)
    a.add_argument("--images", help="a folder of <identity>/*.jpg; with --embeddings: their root")
    a.add_argument("--embeddings", help=embeddings_help)
    a.add_argument("--ckpt", help="the index's model (default: the checkpoint recorded in the index)")
    detector_options(a, "the images are photos; the largest face of each is enrolled")
    common(a)
    locked(a)

    r = commands.add_parser("remove", help="remove faces by identity, image path or id (one rebuild for all)")
    r.add_argument("--index", required=True)
    r.add_argument("--identity", action="append", help="every face of this identity; repeatable")
    r.add_argument("--path", action="append", help="the face of this image; repeatable")
    r.add_argument("--id", type=NonNegativeInt, action="append", help="the face of this id; repeatable")
    locked(r)

    t = commands.add_parser("retrain", help="re-train an IVF-PQ index's clusters and codebooks on its faces")
    t.add_argument("--index", required=True)
    ivfpq_options(t)
    locked(t)

    i = commands.add_parser("info", help="print an index's metadata (model, kind, parameters, threshold, counts)")
    i.add_argument("--index", required=True)

    s = commands.add_parser("search", help="find the closest faces of every query image")
    s.add_argument("--index", required=True)
    s.add_argument("--images", help="a folder of query images; default: the demo queries")
    s.add_argument("--embeddings", help="predict's embeddings of the queries, instead of --images")
    s.add_argument("-k", "--k", type=PositiveInt, default=5, help="matches per query")
    s.add_argument("--out", default="results.csv", help="CSV: query,rank,identity,path,similarity")
    s.add_argument(
        "--threshold",
        type=threshold_option,
        default="auto",
        help="auto (the model's calibrated threshold, default), none, or a cosine; best under it -> 'unknown'",
    )
    s.add_argument("--json", help="also write the rows as JSON to this file")
    s.add_argument("--ckpt", help="the index's model (default: the checkpoint recorded in the index)")
    s.add_argument("--ef-search", type=PositiveInt, help="HNSW search breadth (default: the index's)")
    s.add_argument("--nprobe", type=PositiveInt, help="IVF clusters visited (default: the index's)")
    s.add_argument("--refine", type=PositiveInt, help="IVF-PQ candidates re-ranked per match (default: the index's)")
    s.add_argument("--mmap", action="store_true", help="map the index from disk instead of reading it (large IVF-PQ)")
    detector_options(s, "the queries are photos; every face found is searched, reported with its box")
    common(s)
    return parser


COMMANDS = {"build": build, "add": add, "remove": remove, "retrain": retrain, "search": search, "info": info}


def main(argv: Sequence[str] | None = None) -> None:
    """Run one index command; bad input ends with one sentence on stderr and exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "add" and not (args.images or args.embeddings):
            raise BadInputError("index add needs --images FOLDER or --embeddings FILE.")
        if getattr(args, "detector", None) and getattr(args, "embeddings", None):
            raise BadInputError("--detector finds faces in images; it does not apply to --embeddings.")
        COMMANDS[args.command](args)
    except BadInputError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
