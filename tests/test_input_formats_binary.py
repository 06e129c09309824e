"""Bad input as a class (issue 16): the binary and JSON formats against every kind of damage.

Teacher embeddings (``.npy`` + ``paths.txt``, ``.npz``), the face index sidecar and Stanford Dogs'
``.mat`` lists, damaged one way each; and the check that every declared format (``FORMATS``) is
tried here or in ``tests/test_input_formats.py`` (the text formats).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backbone.errors import BadInputError
from tests.test_input_formats import BOM, TEXT_FORMATS

# --- teacher embeddings (.npy + paths.txt, .npz) ---------------------------------------------
EMBEDDING_KEYS = ["a/1.jpg", "b/2.jpg", "c/3.jpg"]


def write_npy(folder: Path, vectors: Any, keys: list[str] | bytes) -> Path:
    np.save(folder / "embeddings.npy", vectors, allow_pickle=True)
    listing = folder / "paths.txt"
    listing.write_bytes(keys if isinstance(keys, bytes) else "".join(f"{k}\n" for k in keys).encode())
    return folder / "embeddings.npy"


def valid_vectors() -> np.ndarray:
    return np.arange(12, dtype=np.float32).reshape(3, 4) / 10


def nan_row() -> np.ndarray:
    vectors = valid_vectors()
    vectors[1, 2] = np.nan
    return vectors


TEACHER_CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "nan": (
        lambda d: write_npy(d, nan_row(), EMBEDDING_KEYS),
        r"embeddings.npy' row 1 \('b/2.jpg'\): embedding is nan",
    ),
    "infinite": (
        lambda d: write_npy(d, valid_vectors() * np.array([1, 1, np.inf, 1], np.float32), EMBEDDING_KEYS),
        r"embeddings.npy' row 0 \('a/1.jpg'\): embedding is inf; expected finite numbers",
    ),
    "random_bytes_npz": (
        lambda d: (d / "t.npz").write_bytes(np.random.default_rng(0).bytes(4096)) and d / "t.npz",
        r"t.npz': it is not a NumPy array file \(reading it would mean unpickling it\)",
    ),
    "object_array": (
        lambda d: write_npy(d, np.array([{"a": 1}, None, 3], dtype=object), EMBEDDING_KEYS),
        r"embeddings.npy': it is not a NumPy array file",
    ),
    "wrong_type": (
        lambda d: write_npy(d, np.array([["x"] * 4] * 3), EMBEDDING_KEYS),
        r"embeddings.npy': the embeddings is 'an array of <U1 of shape \(3, 4\)'; expected N x D numbers",
    ),
    "missing_column": (
        lambda d: np.savez(d / "t.npz", paths=np.array(EMBEDDING_KEYS)) or d / "t.npz",
        r"t.npz': it holds the arrays \['paths'\] but no 'embeddings'",
    ),
    "count_mismatch": (
        lambda d: write_npy(d, valid_vectors()[:2], EMBEDDING_KEYS),
        r"embeddings.npy': it holds 2 embeddings for 3 paths",
    ),
    "duplicate_id": (
        lambda d: write_npy(d, valid_vectors(), ["a/1.jpg", "b/2.jpg", "a/1.jpg"]),
        r"embedding paths file '.*paths.txt' line 3: path is 'a/1.jpg'; expected each path once "
        r"\(it is also on line 1\)",
    ),
    "duplicate_id_npz": (
        lambda d: (
            np.savez(d / "t.npz", paths=np.array(["a/1.jpg", "a/1.jpg", "c/3.jpg"]), embeddings=valid_vectors())
            or d / "t.npz"
        ),
        r"t.npz' row 1: path is 'a/1.jpg'; expected each path once \(it is also on row 0\)",
    ),
    "not_utf8": (
        lambda d: write_npy(d, valid_vectors(), "a/1.jpg\nb/é.jpg\nc/3.jpg\n".encode("latin-1")),
        r"paths.txt' is not UTF-8 text \(byte 0xe9 on line 2\)",
    ),
    "dangling_reference": (
        lambda d: write_npy(d, valid_vectors(), ["a/1.jpg", "b/2.jpg", "z/9.jpg"]),
        r"has no embedding for 1 training images, e.g. '.*c/3.jpg'",
    ),
}


@pytest.mark.parametrize("case", list(TEACHER_CASES))
def test_a_damaged_teacher_embeddings_file_is_named(case: str, tmp_path: Path) -> None:
    from datasets.embedding_files import read_teacher_embeddings

    write, pattern = TEACHER_CASES[case]
    path = write(tmp_path)
    with pytest.raises(BadInputError, match=pattern):
        read_teacher_embeddings(path, [tmp_path / k for k in EMBEDDING_KEYS], tmp_path)


def test_teacher_embeddings_of_another_size_are_refused_before_training() -> None:
    """The rows of the teacher file against --model.embedding_size, when fit sets up (not at the first step)."""
    from types import SimpleNamespace

    from tasks.face_embedding.module import FaceEmbeddingModule

    module = FaceEmbeddingModule(embedding_size=8, width=0.25, resolution=32)
    train = SimpleNamespace(teacher=np.zeros((5, 4), np.float32))
    data = SimpleNamespace(dataset=lambda split: train, teacher_embeddings="t/embeddings.npy")
    with pytest.raises(BadInputError, match=r"'t/embeddings.npy' holds 4-d rows; expected 8-d ones"):
        module._check_teacher(data)
    train.teacher = np.zeros((5, 8), np.float32)
    module._check_teacher(data)


def test_valid_teacher_embeddings_are_read_in_image_order(tmp_path: Path) -> None:
    from datasets.embedding_files import read_teacher_embeddings

    path = write_npy(tmp_path, valid_vectors(), EMBEDDING_KEYS)
    (tmp_path / "paths.txt").write_bytes(BOM + (tmp_path / "paths.txt").read_bytes())
    rows = read_teacher_embeddings(path, [tmp_path / "c/3.jpg", tmp_path / "a/1.jpg"], tmp_path)
    np.testing.assert_array_equal(rows, valid_vectors()[[2, 0]])


# --- the face index metadata (the end of the index file) ------------------------------------
@pytest.fixture
def small_index(tmp_path: Path) -> Path:
    from tasks.face_embedding.index import FaceIndex

    model = {"embedding_size": 8, "checkpoint": "m.ckpt", "sha256": "0" * 64, "resolution": 64, "width": 0.25}
    model["flip_test"] = True
    vectors = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    face_index = FaceIndex.create("flat", model, vectors, {})
    face_index.add(vectors, ["ann", "ann", "bob"], ["ann/1.jpg", "ann/2.jpg", "bob/1.jpg"])
    face_index.save(tmp_path / "faces.index")
    return tmp_path / "faces.index"


def edit_meta(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(meta: dict[str, Any]) -> None:
        target, *path = key.split(".")
        if not path:
            meta.pop(target) if value is KeyError else meta.__setitem__(target, value)
        else:
            meta[target][path[0]] = value

    return edit


def edit_face(index: int, column: int, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda meta: meta["faces"][index].__setitem__(column, value)


SIDECAR_CASES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "missing_faces": (edit_meta("faces", KeyError), r"faces.index': it has no key 'faces'"),
    "missing_model": (edit_meta("model", KeyError), r"faces.index': it has no key 'model'"),
    "missing_version": (edit_meta("version", KeyError), r"faces.index': it has no key 'version'"),
    "newer_version": (edit_meta("version", 3), r"faces.index': version is 3; expected 2"),
    "wrong_type": (edit_face(0, 0, "x"), r"faces.index' faces\[0\]: id is 'x'; expected a face id >= 0"),
    "out_of_range": (edit_meta("next_id", -1), r"faces.index': next_id is -1; expected a face id >= 0"),
    "bad_model": (edit_meta("model.sha256", "abc"), r"faces.index' model: sha256 is 'abc'; expected a SHA-256"),
    "duplicate_id": (edit_face(1, 0, 0), r"faces.index' faces\[1\]: id is 0; expected each id once"),
    "dangling_reference": (
        edit_face(2, 0, 7),
        r"faces.index' faces\[2\]: id is 7; expected an id below next_id = 3",
    ),
    "face_count": (lambda meta: meta["faces"].pop(), r"faces.index': it lists 2 faces but holds 3 vectors"),
    "dimension": (edit_meta("model.embedding_size", 16), r"faces.index': embedding_size is 16 but it holds 8-d"),
    "kind": (edit_meta("kind", "hnsw"), r"faces.index' params: there is no 'hnsw_m'"),
}


@pytest.mark.parametrize("case", list(SIDECAR_CASES))
def test_a_damaged_index_sidecar_is_named(case: str, small_index: Path) -> None:
    from tasks.face_embedding.index import FaceIndex
    from tasks.face_embedding.index_file import read_raw_metadata, replace_raw_metadata

    meta = read_raw_metadata(small_index)
    edit, pattern = SIDECAR_CASES[case]
    edit(meta)
    replace_raw_metadata(small_index, meta)
    with pytest.raises(BadInputError, match=pattern):
        FaceIndex.load(small_index)


@pytest.mark.parametrize("encoding", ["bom", "latin-1"])
def test_the_sidecar_is_read_as_utf8_with_or_without_bom(encoding: str, small_index: Path) -> None:
    from tasks.face_embedding.index import FaceIndex
    from tasks.face_embedding.index_file import read_raw_metadata, replace_raw_metadata

    meta = read_raw_metadata(small_index)
    meta["faces"][0][1] = "Zoé"
    text = json.dumps(meta, ensure_ascii=False)
    replace_raw_metadata(small_index, None, BOM + text.encode() if encoding == "bom" else text.encode("latin-1"))
    if encoding == "bom":
        assert FaceIndex.load(small_index).faces[0].identity == "Zoé"
    else:
        with pytest.raises(BadInputError, match=r"faces.index' is not UTF-8 text \(byte 0xe9 on line 1\)"):
            FaceIndex.load(small_index)


# --- the embeddings record (embeddings.json beside predict's embeddings.npy) -----------------
@pytest.mark.parametrize(
    ("record", "pattern"),
    [
        ([1], r"embeddings.json': it holds a JSON list"),
        ({"checkpoint": "m", "sha256": None, "flip_test": True}, r"it has no key 'embedding_size'"),
        ({"checkpoint": "m", "sha256": "x", "flip_test": True, "embedding_size": 8}, r"sha256 is 'x'; expected"),
        ({"checkpoint": "m", "sha256": None, "flip_test": "yes", "embedding_size": 8}, r"flip_test is 'yes'"),
        ({"checkpoint": "m", "sha256": None, "flip_test": True, "embedding_size": 0}, r"embedding_size is 0"),
    ],
)
def test_a_damaged_embeddings_record_is_named(record: Any, pattern: str, tmp_path: Path) -> None:
    from tasks.face_embedding.writer import read_embeddings_record

    (tmp_path / "embeddings.json").write_text(json.dumps(record))
    with pytest.raises(BadInputError, match=pattern):
        read_embeddings_record(tmp_path)


# --- Stanford Dogs lists (.mat) --------------------------------------------------------------
def write_mat(path: Path, files: list[str], labels: Any) -> Path:
    from scipy.io import savemat

    cells = np.empty((len(files), 1), dtype=object)
    for i, name in enumerate(files):
        cells[i, 0] = np.array([name])
    savemat(path, {"file_list": cells, "labels": np.asarray(labels).reshape(-1, 1)})
    return path


DOGS_FILES = ["n1-a/1.jpg", "n1-a/2.jpg", "n2-b/3.jpg"]
DOGS_CASES: dict[str, tuple[list[str], Any, str]] = {
    "wrong_type": (DOGS_FILES, [1.0, 1.5, 2.0], r"list.mat' entry 2: labels is 1.5; expected a breed number >= 1"),
    "out_of_range": (DOGS_FILES, [1, 0, 2], r"list.mat' entry 2: labels is 0; expected a breed number >= 1"),
    "duplicate_id": (
        ["n1-a/1.jpg", "n1-a/1.jpg", "n2-b/3.jpg"],
        [1, 1, 2],
        r"entry 2: file_list is 'n1-a/1.jpg'; .* once",
    ),
    "dangling_reference": (
        ["n1-a/1.jpg", "2.jpg", "n2-b/3.jpg"],
        [1, 1, 2],
        r"entry 2: file_list is '2.jpg'; expected a path",
    ),
    "count_mismatch": (DOGS_FILES, [1, 1], r"list.mat': it has 3 files but 2 labels"),
}


@pytest.mark.parametrize("case", list(DOGS_CASES))
def test_a_damaged_stanford_dogs_list_is_named(case: str, tmp_path: Path) -> None:
    from datasets.stanford_dogs import read_list

    files, labels, pattern = DOGS_CASES[case]
    with pytest.raises(BadInputError, match=pattern):
        read_list(write_mat(tmp_path / "train_list.mat", files, labels))


# --- every declared format is tried ---------------------------------------------------------
TRIED = {
    "celeba_attributes": "CelebA attribute file",
    "celeba_partition": "CelebA partition file",
    "celeba_kaggle_attributes": "CelebA attribute CSV",
    "celeba_kaggle_partition": "CelebA partition CSV",
    "geotagged_csv": "geotagged photo CSV",
    "cells_csv": "cells file",
    "geoestimation_cells_csv": "GeoEstimation cells file",
    "lfw_pairs": "LFW pairs file",
    "teacher_attributes_csv": "teacher outputs file",
    # attributes.npy + attributes_rows.txt, damaged each way: tests/test_face_attributes_teacher_outputs.py
    "teacher_attributes_npy": "teacher outputs array",
    "teacher_attributes_rows": "teacher outputs rows file",
    "embeddings": "embeddings file",
    "embedding paths": "embedding paths file",
    "index sidecar": "face index metadata",
    "embeddings record": "embeddings record",
    "stanford dogs": "Stanford Dogs list",
    "wider face": "WIDER FACE annotation file",  # its damaged lines: tests/test_wider_face.py (malformed, cut, missing)
    "shard manifest": "shard manifest",  # its damage cases: tests/test_shards.py (test_a_damaged_manifest_is_named)
}


def test_every_declared_format_is_tried_here() -> None:
    """A format declared in a reader (datasets.schema.FORMATS) without damage cases above fails here."""
    import importlib

    from datasets.schema import FORMATS

    readers = ["attribute_files", "embedding_files", "face_identities", "geo_cells", "geo_partition", "geo_photos"]
    readers += ["geo_tables", "lfw"]
    readers += ["stanford_dogs", "wider_face", "celeba_layouts", "teacher_outputs", "shards"]
    for module in [
        *(f"datasets.{name}" for name in readers),
        "tasks.face_embedding.index",
        "tasks.face_embedding.index_file",
        "tasks.face_embedding.writer",
    ]:
        importlib.import_module(module)

    assert set(TEXT_FORMATS) <= set(TRIED)
    assert set(FORMATS) == set(TRIED.values())
