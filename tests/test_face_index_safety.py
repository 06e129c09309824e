"""The face index's guarantees: exact similarities on every kind, one-unit writes under a writer
lock, damaged files in one sentence, dedupe, batch removal, embeddings input, retrain, the API."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backbone.errors import BadInputError
from tasks.face_embedding import index_file
from tasks.face_embedding.api import FaceSearch
from tasks.face_embedding.index import FaceIndex, index_params
from tasks.face_embedding.index_file import read_raw_metadata, replace_raw_metadata
from tasks.face_embedding.index_lock import writer_lock
from tasks.face_embedding.writer import embeddings_record, write_embeddings
from tests.test_face_index import calibrated_checkpoint, face_gallery_fixtures, read_rows, run

gallery, ckpt = face_gallery_fixtures()  # the gallery and its calibrated checkpoint, as test_face_index's

MODEL = {"embedding_size": 32, "checkpoint": "m.ckpt", "sha256": "0" * 64, "resolution": 32, "flip_test": True}


def unit_vectors(count: int, d: int = 32, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(count, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def small(path: Path, names: list[str], kind: str = "flat", vectors: np.ndarray | None = None) -> FaceIndex:
    vectors = unit_vectors(len(names)) if vectors is None else vectors
    given = {"pq_m": 4} if kind == "ivfpq" else {}  # 8 dimensions per sub-quantizer: quick to train
    face_index = FaceIndex.create(kind, MODEL, vectors, index_params(kind, len(vectors), **given))
    face_index.add(vectors, names, [f"/g/{n}/{i}.jpg" for i, n in enumerate(names)])
    face_index.save(path)
    return face_index


# --- exact similarities, retrain, mmap ------------------------------------------------------
def test_ivfpq_top1_similarity_is_flats_and_survives_remove_retrain_and_mmap(tmp_path: Path) -> None:
    vectors = unit_vectors(1000)
    names = [f"p{i % 100}" for i in range(1000)]
    flat, ivfpq = small(tmp_path / "f", names, "flat", vectors), small(tmp_path / "i", names, "ivfpq", vectors)
    queries = vectors[::10]
    exact, _ = flat.search(queries, 1)
    for attempt in ("built", "removed", "retrained", "mmap"):
        similarity, found = ivfpq.search(queries, 1)
        np.testing.assert_allclose(similarity, exact, atol=1e-5, err_msg=attempt)
        assert np.mean(found[:, 0] == np.arange(0, 1000, 10)) > 0.99, attempt
        if attempt == "built":
            assert ivfpq.remove([1, 2, 3]) == 3 and ivfpq.size == 997
        elif attempt == "retrained":
            ivfpq.save(tmp_path / "i")
            ivfpq = FaceIndex.load(tmp_path / "i", mmap=True)
        elif attempt == "removed":
            ivfpq.retrain(index_params("ivfpq", ivfpq.size, nlist=20, pq_m=4))
            assert ivfpq.meta["params"]["nlist"] == 20 and ivfpq.size == 997


def test_default_training_sample_has_39_points_per_centroid_at_every_size() -> None:
    for count in (300, 10_000, 1_000_000, 100_000_000):
        params = index_params("ivfpq", count)
        assert params["train_size"] >= min(count, 39 * params["nlist"]), count


# --- one-unit writes, the lock ---------------------------------------------------------------
def slow_add(index: str, embeddings: str) -> None:
    """``index add --embeddings`` in a forked process, slowed after its load under the lock so that two
    runs started together overlap (without the lock both would load the same index and one's faces
    would be lost)."""
    import time

    load = FaceIndex.load.__func__  # type: ignore[attr-defined]

    def slow_load(cls: type[FaceIndex], *args: object, **kwargs: object) -> FaceIndex:
        loaded = load(cls, *args, **kwargs)
        time.sleep(0.3)
        return loaded

    FaceIndex.load = classmethod(slow_load)  # type: ignore[method-assign]  # this child process only
    run("add", "--index", index, "--embeddings", embeddings)


def test_two_concurrent_adds_both_land(tmp_path: Path) -> None:
    path = tmp_path / "faces.index"
    small(path, ["ann"])
    folders = []
    for name in ("bob", "cy"):
        folder = tmp_path / name
        paths = [str(tmp_path / "g" / name / f"{i}.jpg") for i in range(2)]
        write_embeddings(folder, paths, unit_vectors(2, seed=len(name)), {**MODEL, "checkpoint": "m.ckpt"})
        folders.append(folder)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=slow_add, args=(str(path), str(folder))) for folder in folders]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert sorted(face.identity for face in FaceIndex.load(path).faces.values()) == ["ann", "bob", "bob", "cy", "cy"]
    assert not (tmp_path / "faces.index.lock").exists()


def test_retrain_rebuilds_an_ivfpq_index_and_refuses_others(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "faces.index"
    built = small(path, [f"p{i % 50}" for i in range(600)], "ivfpq", unit_vectors(600))
    run("retrain", "--index", str(path), "--nlist", "8", "--pq-m", "4")
    retrained = FaceIndex.load(path)
    assert retrained.meta["params"]["nlist"] == 8 and "nlist 15 -> 8" in capsys.readouterr().out
    np.testing.assert_array_equal(retrained.vectors()[1], built.vectors()[1])  # same ids, same exact vectors
    np.testing.assert_array_equal(retrained.vectors()[0], built.vectors()[0])
    run("info", "--index", str(path))
    shown = json.loads(capsys.readouterr().out)
    assert shown["kind"] == "ivfpq" and shown["faces"] == 600 and shown["identities"] == 50
    assert shown["model"]["sha256"] == "0" * 64 and shown["params"]["nlist"] == 8
    small(path, ["ann"])
    with pytest.raises(SystemExit):
        run("retrain", "--index", str(path))
    assert "Only an IVF-PQ index is trained; this one is flat" in capsys.readouterr().err


def test_a_held_lock_is_one_sentence_naming_the_holder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    path = tmp_path / "faces.index"
    small(path, ["ann"])
    with writer_lock(path), pytest.raises(SystemExit):
        run("remove", "--index", str(path), "--identity", "ann", "--lock-timeout", "0.2")
    assert f"is being changed by process {os.getpid()}" in capsys.readouterr().err
    assert FaceIndex.load(path).size == 1


@pytest.mark.parametrize("where", ["after the faiss bytes", "at the rename"])
def test_a_crash_while_saving_leaves_the_old_index(where: str, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "faces.index"
    small(path, ["ann", "bob"])
    before = path.read_bytes()
    face_index = FaceIndex.load(path)
    face_index.add(unit_vectors(1), ["cy"], ["/cy/1.jpg"])

    def crash(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(*((index_file, "append_metadata") if where.startswith("after") else ("os.replace",)), crash)
    with pytest.raises(KeyboardInterrupt):
        face_index.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and FaceIndex.load(path).size == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces.index"]


def test_a_reader_during_writes_sees_old_or_new_never_a_mix(tmp_path: Path) -> None:
    path = tmp_path / "faces.index"
    states = [small(tmp_path / "a", ["a"] * 3), small(tmp_path / "b", ["b"] * 5, vectors=unit_vectors(5, seed=1))]
    states[0].save(path)
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            states[n % 2].save(path)
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(40):
            loaded = FaceIndex.load(path)
            names = {face.identity for face in loaded.faces.values()}
            assert (names, loaded.size) in (({"a"}, 3), ({"b"}, 5))
            own = states[0] if names == {"a"} else states[1]
            np.testing.assert_array_equal(loaded.vectors()[0], own.vectors()[0])
    finally:
        stop.set()
        thread.join()


# --- damaged files --------------------------------------------------------------------------
def edit(key: str, value: object):
    def apply(meta: dict) -> None:
        target, *rest = key.split(".")
        holder = meta[target] if rest else meta
        name = rest[0] if rest else target
        holder.pop(name) if value is KeyError else holder.__setitem__(name, value)

    return apply


DAMAGES = {
    "no faces": (edit("faces", KeyError), r"faces.index': it has no key 'faces'"),
    "wrong version": (edit("version", 1), r"version is 1; expected 2"),
    "ids differ": (lambda m: m["faces"][0].__setitem__(0, 1), r"faces\[1\]: id is 1; expected each id once"),
    "id without vector": (lambda m: (m["faces"][0].__setitem__(0, 5), m.__setitem__("next_id", 9)), "no face for"),
    "dimension": (edit("model.embedding_size", 64), r"embedding_size is 64 but it holds 32-d vectors"),
    "no flip_test": (edit("model.flip_test", KeyError), r"model: flip_test is null; expected true or false"),
    "bad threshold": (edit("threshold", {"cosine": 2}), r"has a face threshold entry"),
    "old face rows": (lambda m: m["faces"][0].pop(), r"faces\[0\]: face is a list; expected \[id, identity"),
}


@pytest.mark.parametrize("case", [*DAMAGES, "truncated", "not json", "faiss bytes", "version 1", "empty"])
def test_a_damaged_index_is_one_sentence(case: str, tmp_path: Path) -> None:
    path = tmp_path / "faces.index"
    small(path, ["ann", "bob"])
    if case in DAMAGES:
        change, pattern = DAMAGES[case]
        meta = read_raw_metadata(path)
        change(meta)
        replace_raw_metadata(path, meta)
    elif case == "not json":
        replace_raw_metadata(path, None, b"{not json")
        pattern = r"is not valid JSON"
    elif case == "faiss bytes":
        blob = bytearray(path.read_bytes())
        blob[:4] = b"XXXX"
        path.write_bytes(bytes(blob))
        pattern = r"could not be read by faiss"
    elif case == "version 1":
        path.write_bytes(path.read_bytes()[:-200])
        path.with_name("faces.index.json").write_text("{}")
        pattern = r"is a version-1 index .* rebuild it with 'index build --overwrite'"
    else:
        path.write_bytes(path.read_bytes()[: 0 if case == "empty" else 300])
        pattern = r"has no face index metadata at its end \(a truncated file"
    with pytest.raises(BadInputError, match=pattern) as refused:
        FaceIndex.load(path)
    assert "\n" not in str(refused.value)


# --- dedupe, batch removal ------------------------------------------------------------------
def test_add_skips_enrolled_images_and_remove_takes_a_batch(
    gallery: Path, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    index = tmp_path / "faces.index"
    run("build", "--ckpt", str(ckpt), "--images", str(gallery), "--out", str(index), "--kind", "hnsw")
    run("add", "--index", str(index), "--images", str(gallery))
    assert "Skipped 12 already enrolled" in capsys.readouterr().err and FaceIndex.load(index).size == 12
    rebuilds = []
    original = FaceIndex._rebuild
    monkeypatch.setattr(FaceIndex, "_rebuild", lambda self, *a, **k: (rebuilds.append(1), original(self, *a, **k)))
    path = str(sorted((gallery / "id00002").glob("*.jpg"))[0])
    run("remove", "--index", str(index), "--identity", "id00000", "--identity", "id00001", "--path", path, "--id", "11")
    faces = FaceIndex.load(index).faces
    assert len(rebuilds) == 1 and len(faces) == 12 - 3 - 3 - 2
    assert {f.identity for f in faces.values()} == {"id00002", "id00003"} and 11 not in faces


# --- embeddings input, threshold, the API ---------------------------------------------------
def test_embeddings_input_threshold_and_api(
    gallery: Path, ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = tmp_path / "faces.index"
    shutil.copytree(gallery / "id00000", tmp_path / "g0" / "id00000")
    run("build", "--ckpt", str(ckpt), "--images", str(tmp_path / "g0"), "--out", str(tmp_path / "x.index"))
    searcher = FaceSearch.open(tmp_path / "x.index")
    files = sorted(gallery.rglob("*.jpg"))
    vectors = searcher.embed_images(files)
    out = tmp_path / "predicted"
    from tasks.face_embedding.module import load_face_embedder

    write_embeddings(out, [str(f) for f in files], vectors, embeddings_record(str(ckpt), load_face_embedder(ckpt)[1]))
    run("build", "--ckpt", str(ckpt), "--embeddings", str(out), "--out", str(index))
    assert sorted({f.identity for f in FaceIndex.load(index).faces.values()}) == [f"id0000{i}" for i in range(4)]
    results = tmp_path / "r.csv"
    run("search", "--index", str(index), "--embeddings", str(out / "embeddings.npy"), "--out", str(results), "--mmap")
    printed = capsys.readouterr().out
    assert "Threshold: the model's calibrated cosine 0.5000" in printed
    _, rows = read_rows(results)
    firsts = [r for r in rows if r["rank"] == "1"]
    assert len(firsts) == 12 and all(r["path"] == r["query"] for r in firsts)

    other = calibrated_checkpoint(tmp_path / "other.ckpt", gallery, seed=1, threshold=None)
    (out / "embeddings.json").unlink()
    with pytest.raises(SystemExit):
        run("add", "--index", str(index), "--embeddings", str(out))
    assert "pass the model that wrote them with --ckpt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run("add", "--index", str(index), "--embeddings", str(out), "--ckpt", str(other))
    assert "is not the model that built" in capsys.readouterr().err

    api = FaceSearch.open(index, threshold=0.99)
    answers = api.search_images([files[0], Image.open(files[5]).convert("RGB")], k=2)
    assert answers[0][0].path == str(files[0]) and answers[0][0].similarity == pytest.approx(1.0, abs=1e-4)
    assert answers[1][0].identity == files[5].parent.name and api.threshold.value == 0.99
    assert FaceSearch.open(index, threshold=1.5).search_embeddings(vectors[:1], 3)[0][0].identity == "unknown"
    assert len(FaceSearch.open(index, threshold="none").search_embeddings(vectors[:2], 3)[1]) == 3

    uncalibrated = tmp_path / "u.index"
    shutil.copytree(gallery / "id00001", tmp_path / "g1" / "id00001")
    run("build", "--ckpt", str(other), "--images", str(tmp_path / "g1"), "--out", str(uncalibrated))
    with pytest.raises(SystemExit):
        run("search", "--index", str(uncalibrated), "--images", str(gallery), "--out", str(results))
    err = capsys.readouterr().err
    assert "has no calibrated threshold" in err and "pass --threshold NUMBER" in err
