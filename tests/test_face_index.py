"""The faiss face index commands: build, add, remove, retrain, search, safe writes and refusals."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest
import torch

from datasets.demo.faces import write_identities
from tasks.face_embedding.index import FaceIndex, index_params
from tasks.face_embedding.index_cli import main
from tasks.face_embedding.index_file import read_raw_metadata, replace_raw_metadata
from tasks.face_embedding.module import FaceEmbeddingModule
from tasks.face_embedding.threshold import THRESHOLD_KEY, Calibration

RES = 48


CALIBRATION = Calibration(cosine=0.5, far=1e-3, tar=0.9, far_reached=0.0, positives=10, negatives=90)


def calibrated_checkpoint(
    path: Path, images: Path, seed: int, embedding_size: int = 128, threshold: Calibration | None = CALIBRATION
) -> Path:
    """A checkpoint of an untrained embedder whose BatchNorm statistics come from real images
    (an untrained net's eval-mode outputs otherwise vanish), saved as Lightning does."""
    from datasets.face_identities import face_eval_transform
    from datasets.images import read_rgb

    torch.manual_seed(seed)
    module = FaceEmbeddingModule(width=0.25, resolution=RES, embedding_size=embedding_size)
    batch = torch.stack([face_eval_transform(RES)(read_rgb(p)) for p in sorted(images.rglob("*.jpg"))])
    for norm in module.modules():
        if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm):
            norm.momentum = None
    module.train()
    with torch.no_grad():
        module(batch)
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    if threshold is not None:
        checkpoint[THRESHOLD_KEY] = threshold.to_dict()
    torch.save(checkpoint, path)
    return path


def face_gallery_fixtures() -> tuple[Any, Any]:
    """The module fixtures ``gallery`` (4 identities x 3 photos) and ``ckpt`` (its calibrated checkpoint),
    for each index test module that assigns them at module level."""

    @pytest.fixture(scope="module")
    def gallery(tmp_path_factory: pytest.TempPathFactory) -> Path:
        root = tmp_path_factory.mktemp("gallery")
        write_identities(root, identities=4, photos=3, seed=5, size=RES)
        return root

    @pytest.fixture(scope="module")
    def ckpt(gallery: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
        return calibrated_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.ckpt", gallery, seed=0)

    return gallery, ckpt


gallery, ckpt = face_gallery_fixtures()


def run(*args: str) -> None:
    main([*args, "--num-workers", "0"] if args[0] not in ("remove", "retrain", "info") else list(args))


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def test_build_then_search_finds_each_gallery_image_first(gallery: Path, ckpt: Path, tmp_path: Path) -> None:
    index = tmp_path / "faces.index"
    run("build", "--ckpt", str(ckpt), "--images", str(gallery), "--out", str(index))
    meta = read_raw_metadata(index)
    assert meta["model"]["embedding_size"] == 128 and meta["model"]["resolution"] == RES
    assert len(meta["model"]["sha256"]) == 64 and meta["kind"] == "flat" and len(meta["faces"]) == 12
    assert meta["threshold"] == CALIBRATION.to_dict() and meta["model"]["flip_test"] is True
    out, out_json = tmp_path / "results.csv", tmp_path / "results.json"
    run(
        "search", "--index", str(index), "--images", str(gallery), "-k", "3", "--out", str(out), "--json", str(out_json)
    )
    header, rows = read_rows(out)
    assert header == ["query", "rank", "identity", "path", "similarity"]
    assert len(rows) == 12 * 3
    firsts = [r for r in rows if r["rank"] == "1"]
    assert all(r["path"] == r["query"] and float(r["similarity"]) == pytest.approx(1.0, abs=1e-4) for r in firsts)
    assert all(r["identity"] == Path(r["path"]).parent.name for r in rows)
    assert json.loads(out_json.read_text())[0].keys() == {"query", "rank", "identity", "path", "similarity"}

    # Over the threshold nothing matches: one 'unknown' row per query, with its best similarity.
    run("search", "--index", str(index), "--images", str(gallery), "--out", str(out), "--threshold", "1.01")
    _, rows = read_rows(out)
    assert len(rows) == 12 and {r["identity"] for r in rows} == {"unknown"} and {r["rank"] for r in rows} == {"1"}


def test_existing_index_is_never_overwritten_without_the_flag(
    gallery: Path, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = tmp_path / "faces.index"
    run("build", "--ckpt", str(ckpt), "--images", str(gallery), "--out", str(index))
    before = index.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        run("build", "--ckpt", str(ckpt), "--images", str(gallery / "id00000"), "--out", str(index))
    assert exit_info.value.code == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert index.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces.index"]  # no temporaries, no lock left
    smaller = tmp_path / "smaller"
    shutil.copytree(gallery / "id00000", smaller / "id00000")
    run("build", "--ckpt", str(ckpt), "--images", str(smaller), "--out", str(index), "--overwrite")
    assert FaceIndex.load(index).size == 3


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_add_and_remove_identity(kind: str, gallery: Path, ckpt: Path, tmp_path: Path) -> None:
    index = tmp_path / "faces.index"
    first = tmp_path / "first"
    shutil.copytree(gallery / "id00000", first / "id00000")
    run("build", "--ckpt", str(ckpt), "--images", str(first), "--out", str(index), "--kind", kind)
    assert FaceIndex.load(index).size == 3
    run("add", "--index", str(index), "--images", str(gallery))
    assert FaceIndex.load(index).size == 15
    run("remove", "--index", str(index), "--identity", "id00001")
    loaded = FaceIndex.load(index)
    assert loaded.size == 12 and "id00001" not in {face.identity for face in loaded.faces.values()}
    out = tmp_path / "r.csv"
    run(
        "search",
        "--index",
        str(index),
        "--images",
        str(gallery / "id00001"),
        "-k",
        "12",
        "--out",
        str(out),
        "--threshold",
        "none",
    )
    _, rows = read_rows(out)
    assert rows and all(r["identity"] != "id00001" for r in rows) and len(rows) == 3 * 12


def test_other_model_or_size_is_refused(
    gallery: Path, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = tmp_path / "faces.index"
    run("build", "--ckpt", str(ckpt), "--images", str(gallery), "--out", str(index))
    before = index.read_bytes()
    other = calibrated_checkpoint(tmp_path / "other.ckpt", gallery, seed=1)
    small = calibrated_checkpoint(tmp_path / "small.ckpt", gallery, seed=2, embedding_size=64)
    cases = [
        (["add", "--index", str(index), "--images", str(gallery), "--ckpt", str(other)], "is not the model that built"),
        (["search", "--index", str(index), "--images", str(gallery), "--ckpt", str(small)], "makes 64-d embeddings"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit):
            run(*args)
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and message in err[-1], err
    # The recorded checkpoint was overwritten by further training: refused, not silently used.
    moved = tmp_path / "model.ckpt"
    shutil.copy(other, moved)
    meta = read_raw_metadata(index)
    meta["model"]["checkpoint"] = str(moved)
    replace_raw_metadata(index, meta)
    before = index.read_bytes()
    with pytest.raises(SystemExit):
        run("search", "--index", str(index), "--images", str(gallery), "--out", str(tmp_path / "r.csv"))
    assert "has changed since it built" in capsys.readouterr().err
    assert index.read_bytes() == before


def test_unreadable_image_is_reported_and_skipped(
    gallery: Path, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "gallery"
    shutil.copytree(gallery, copy)
    (copy / "id00002" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    index = tmp_path / "faces.index"
    with pytest.warns(UserWarning, match=r"Skipped: The image file .*broken\.jpg' could not be read"):
        run("build", "--ckpt", str(ckpt), "--images", str(copy), "--out", str(index))
    assert "1 of 13 images could not be read and were skipped" in capsys.readouterr().err
    assert FaceIndex.load(index).size == 12


def test_ivfpq_and_hnsw_recall_against_exact_search(tmp_path: Path) -> None:
    """IVF-PQ (trained on a sample) and HNSW find mostly the exact nearest neighbour; remove works."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(50, 128))
    vectors = (centres[rng.integers(0, 50, 3000)] + rng.normal(scale=0.5, size=(3000, 128))).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:200] + rng.normal(scale=0.05, size=(200, 128)).astype(np.float32)
    model = {"embedding_size": 128, "checkpoint": "x", "sha256": "0" * 64, "resolution": 32, "flip_test": True}
    names = [f"p{i % 300}" for i in range(len(vectors))]
    truth = faiss.IndexFlatIP(128)
    truth.add(vectors)
    _, exact = truth.search(queries, 1)
    for kind in ("hnsw", "ivfpq"):
        face_index = FaceIndex.create(kind, model, vectors, index_params(kind, len(vectors)))
        face_index.add(vectors, names, [f"{i}.jpg" for i in range(len(vectors))])
        face_index.save(tmp_path / f"{kind}.index")
        loaded = FaceIndex.load(tmp_path / f"{kind}.index")
        _, found = loaded.search(queries, 1)
        assert np.mean(found[:, 0] == exact[:, 0]) > 0.8, kind
        assert loaded.remove([i for i, face in loaded.faces.items() if face.identity == "p0"]) == 10
        _, ids = loaded.search(vectors[:1], 10)
        assert 0 not in ids and loaded.size == 2990


def test_ivfpq_on_a_tiny_gallery_says_so(gallery: Path, ckpt: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        run("build", "--ckpt", str(ckpt), "--images", str(gallery), "--out", str(tmp_path / "i"), "--kind", "ivfpq")
    assert "needs at least 256 faces" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
