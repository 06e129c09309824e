"""What the face index is fed: the model (and its calibrated threshold), gallery images, and
``predict``'s embedding files.

A gallery is ``<identity>/*.jpg`` folders under a root: the identity is the first folder below
the root (``root/ann/2019/x.jpg`` is ``ann``); images directly under the root are skipped. Every
enrolled image is stored by its resolved path and the SHA-256 of its bytes: ``index add`` skips an
image whose path and content are both enrolled already (a changed file under the same name, or
the same photo copied elsewhere, is a new face).

Embeddings from ``predict`` (``--embeddings DIR_OR_NPY``: ``embeddings.npy`` + ``paths.txt``, read by
``datasets.embedding_files.read_embedding_rows``) are paired with the index's model: ``predict``
writes ``embeddings.json`` with its checkpoint's SHA-256 and ``flip_test``, and a pair written
without it (older runs) is only accepted with ``--ckpt`` naming the index's model, the user vouching
that the embeddings come from that checkpoint. Their identities follow the gallery rule relative
to ``--images ROOT`` when given, else the image's parent folder name; relative paths are resolved
against the current folder (as ``predict`` wrote them).

With ``--detector CKPT`` the images are photos, not face crops: a face detector (a
``tasks.detection`` checkpoint trained on faces, ``face_crops.FaceDetector``) finds the faces,
and each is cropped and embedded (``embed_detected``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from backbone.checkpoint_reader import file_sha256
from backbone.errors import BadInputError
from datasets.embedding_files import read_embedding_rows
from datasets.face_identities import describe_eval_transform, face_eval_transform
from datasets.images import PredictFolder, collate_with_info, image_files
from tasks.face_embedding.face_crops import FaceDetector, FoundFace, face_batch, faces_in_folder
from tasks.face_embedding.index import FaceIndex
from tasks.face_embedding.model import FaceEmbedder, embed
from tasks.face_embedding.module import TASK, load_face_embedder
from tasks.face_embedding.threshold import checkpoint_calibration
from tasks.face_embedding.writer import read_embeddings_record
from tasks.teacher import read_task_checkpoint

UNIT_TOLERANCE = 1e-3  # |norm - 1| allowed of a stored embedding (float32 rounding is ~1e-7)


# --- the model ------------------------------------------------------------------------------
def model_record(ckpt: str | Path) -> tuple[FaceEmbedder, dict[str, Any], dict[str, Any] | None]:
    """The embedder of ``ckpt``, what the index records about it, and its calibration (a dict, or
    None for a checkpoint trained before calibration or without validation identities)."""
    model, hparams = load_face_embedder(ckpt)
    path = Path(ckpt).expanduser()
    calibration = checkpoint_calibration(read_task_checkpoint(path, TASK), path)
    resolution = int(hparams.get("resolution", 128))
    record = {
        "checkpoint": str(path.resolve()),
        "sha256": file_sha256(path),
        "width": float(hparams.get("width", 1.0)),
        "resolution": resolution,
        "embedding_size": int(hparams["embedding_size"]),
        "preprocessing": describe_eval_transform(resolution),
        # the checkpoint's own setting: each image's and its mirror's embeddings averaged (model.embed)
        "flip_test": bool(hparams.get("flip_test", True)),
    }
    return model, record, None if calibration is None else calibration.to_dict()


def index_model(face_index: FaceIndex, ckpt: str | Path | None, path: Path) -> FaceEmbedder:
    """The model that made ``face_index``'s vectors: ``ckpt`` if given (it must be the same model),
    else the recorded checkpoint (it must not have changed since)."""
    recorded = face_index.meta["model"]
    source = str(ckpt or recorded["checkpoint"])
    if not Path(source).expanduser().is_file():
        raise BadInputError(
            f"The model that built {str(path)!r} ({recorded['checkpoint']!r}) is gone; pass that model with --ckpt."
        )
    model, record, _ = model_record(source)
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


# --- gallery images -------------------------------------------------------------------------
def identity_of(path: Path, root: Path) -> str:
    """The ``<identity>/`` folder of ``path`` under ``root`` ('' for an image directly in ``root``)."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else ""


def gallery_files(folder: Path) -> tuple[list[Path], list[str]]:
    """The images in identity folders under ``folder`` and their identities (loose images reported)."""
    if not folder.is_dir():
        raise BadInputError(f"The gallery folder {str(folder)!r} does not exist; expected <identity>/*.jpg folders.")
    files = image_files(folder, recursive=True)
    identities = [identity_of(p, folder) for p in files]
    loose = [p for p, who in zip(files, identities, strict=True) if not who]
    if loose:
        print(f"Skipped {len(loose)} images outside identity folders, e.g. {str(loose[0])!r}.", file=sys.stderr)
    kept = [(p, who) for p, who in zip(files, identities, strict=True) if who]
    if not kept:
        raise BadInputError(f"No images in identity folders under {str(folder)!r}; a gallery holds <identity>/*.jpg.")
    return [p for p, _ in kept], [who for _, who in kept]


def hash_files(files: list[Path]) -> list[str | None]:
    """The SHA-256 of each file's bytes (None for a file that is gone)."""
    return [file_sha256(p) if p.is_file() else None for p in tqdm(files, desc="hashing", unit="img", leave=False)]


def embed_files(
    model: FaceEmbedder,
    folder: Path,
    files: list[Path],
    record: dict[str, Any],
    batch_size: int,
    num_workers: int,
    what: str,
) -> tuple[np.ndarray, list[int]]:
    """Embeddings of the readable ``files`` (under ``folder``), with the positions in ``files`` of
    their rows; unreadable images are reported by name and skipped."""
    size = int(record["embedding_size"])
    if not files:
        return np.zeros((0, size), np.float32), []
    dataset = PredictFolder(folder, face_eval_transform(int(record["resolution"])))
    dataset.files = files  # only these (the folder's other images are enrolled already, or loose)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_with_info)
    vectors: list[np.ndarray] = []
    rows: list[int] = []
    model.eval()
    # PredictFolder warns about each unreadable file by name (also from worker processes).
    with torch.inference_mode(), tqdm(total=len(dataset), desc=f"embedding {what}", unit="img") as bar:
        for batch in loader:
            if batch is not None:
                images, infos = batch
                vectors.append(embed(model, images, record["flip_test"]).float().numpy())
                rows += [int(info["index"]) for info in infos]
            bar.update(min(batch_size, len(dataset) - bar.n))
    if len(rows) < len(files):
        print(f"{len(files) - len(rows)} of {len(files)} images could not be read and were skipped.", file=sys.stderr)
    return (np.concatenate(vectors) if vectors else np.zeros((0, size), np.float32)), rows


# --- embeddings files -----------------------------------------------------------------------
def read_embeddings(source: str | Path, model: dict[str, Any], ckpt: str | Path | None) -> tuple[list[str], np.ndarray]:
    """The paths and unit-length embeddings of ``predict``'s output at ``source``, refused in one
    sentence unless they are the index model's (``model``: its record; see the module docstring)."""
    hint = " (write it with 'python -m tasks.face_embedding predict --data.predict_dir FOLDER')"
    keys, vectors = read_embedding_rows(source, hint)
    where = Path(source).expanduser()
    if vectors.shape[1] != model["embedding_size"]:
        raise BadInputError(
            f"The embeddings {str(where)!r} are {vectors.shape[1]}-d; the index's model "
            f"{model['checkpoint']!r} makes {model['embedding_size']}-d ones."
        )
    norms = np.linalg.norm(vectors, axis=1)
    off = np.flatnonzero(np.abs(norms - 1) > UNIT_TOLERANCE)
    if len(off):
        raise BadInputError(
            f"The embedding of {keys[off[0]]!r} in {str(where)!r} has length {norms[off[0]]:.4f}; expected "
            "L2-normalised embeddings (length 1) as predict writes them."
        )
    record = read_embeddings_record(where if where.is_dir() else where.parent)
    if record is None:
        if ckpt is None:
            raise BadInputError(
                f"The embeddings {str(where)!r} do not say which model wrote them (no embeddings.json: written "
                "before it existed); pass the model that wrote them with --ckpt to vouch it is the index's model."
            )
    elif record["sha256"] != model["sha256"] or record["flip_test"] != model["flip_test"]:
        theirs = (
            f"{str(record['checkpoint'])!r} (SHA-256 {str(record['sha256'])[:12]}, flip_test {record['flip_test']})"
        )
        ours = f"{model['checkpoint']!r} (SHA-256 {model['sha256'][:12]}, flip_test {model['flip_test']})"
        raise BadInputError(
            f"The embeddings {str(where)!r} were written by {theirs}, not by the index's model {ours}: "
            "embeddings of different models cannot be compared."
        )
    return keys, vectors


def embedding_faces(keys: list[str], root: Path | None) -> tuple[list[int], list[str], list[Path]]:
    """The rows of ``keys`` with an identity, their identities and resolved image paths: relative to
    ``root`` by the gallery rule, or the image's parent folder name without a root."""
    paths = [Path(k).expanduser().resolve() for k in keys]
    if root is None:
        identities = [p.parent.name for p in paths]
    else:
        root = root.expanduser().resolve()
        identities = [identity_of(p, root) if p.is_relative_to(root) else "" for p in paths]
    rows = [i for i, who in enumerate(identities) if who]
    if len(rows) < len(keys):
        outside = next(k for k, who in zip(keys, identities, strict=True) if not who)
        print(
            f"Skipped {len(keys) - len(rows)} embeddings outside identity folders, e.g. {outside!r}.", file=sys.stderr
        )
    if not rows:
        raise BadInputError("No embedding names an image in an identity folder; a gallery holds <identity>/*.jpg.")
    return rows, [identities[i] for i in rows], [paths[i] for i in rows]


# --- faces in photos (--detector) -----------------------------------------------------------
Box = tuple[float, float, float, float]


def embed_detected(
    model: FaceEmbedder,
    detector: FaceDetector,
    folder: Path,
    files: list[Path],
    record: dict[str, Any],
    batch_size: int,
    num_workers: int,
    largest_only: bool,
    what: str,
) -> tuple[np.ndarray, list[int], list[Box]]:
    """Embeddings of the faces ``detector`` finds in ``files`` (photos, not crops), with the position
    in ``files`` of each face's photo and its box (x1, y1, x2, y2 in photo pixels): the largest face
    of each photo (``largest_only``: enrolment) or every face (search). Each face is cropped square
    with a margin at the embedder's resolution (``face_crops.crop_face``) and embedded as a folder
    of crops would be; photos without a face are reported by name and counted."""
    size, resolution = int(record["embedding_size"]), int(record["resolution"])
    found = faces_in_folder(detector, folder, resolution, largest_only, batch_size, num_workers)
    found.dataset.files = files  # only these (as embed_files)
    position = {str(p): i for i, p in enumerate(files)}
    vectors: list[np.ndarray] = []
    rows: list[int] = []
    boxes: list[Box] = []
    pending: list[FoundFace] = []

    def flush() -> None:
        if pending:
            crops = face_batch([face.crop for face in pending], resolution)
            vectors.append(embed(model, crops, record["flip_test"]).float().numpy())
            rows.extend(position[str(face.path)] for face in pending)
            boxes.extend(tuple(round(v, 1) for v in face.box) for face in pending)  # type: ignore[misc]
            pending.clear()

    model.eval()
    with torch.inference_mode():
        for face in tqdm(found, desc=f"finding faces in {what}", unit="face"):
            pending.append(face)
            if len(pending) == batch_size:
                flush()
        flush()
    return (np.concatenate(vectors) if vectors else np.zeros((0, size), np.float32)), rows, boxes
