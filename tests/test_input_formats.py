"""Bad input as a class (issue 16): every file format against every kind of damage, every option against its range.

* Formats x damage: each format the project reads (CelebA's two lists, the geotagged CSVs,
  ``cells.csv``, ``pairs.txt``, the teacher's ``attributes.csv`` and embeddings, the index
  sidecar, the Stanford Dogs lists) is written valid, then damaged one way (not UTF-8, a missing
  column, a wrong type, a value out of range, a repeated id, a dangling reference, a NaN), and its
  reader must refuse it with ``BadInputError`` naming the file, the line (row, entry, key) and the
  field; a UTF-8 byte-order mark must be accepted.
* Options x ranges: every numeric option of every task's model and data module, and of both
  subcommand parsers, must have a declared range (a new option without one fails here), and a value
  outside it is refused by the parser in one sentence naming the option; a few end-to-end runs check
  the sentence and that no work started.
* Ranges that depend on the data, and the one output-path check.

Readers are called directly (milliseconds each); only the end-to-end runs build a task's CLI.
"""

from __future__ import annotations

import argparse
import json
import re
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backbone.errors import BadInputError
from tests.probes import expect_one_sentence

BOM = b"\xef\xbb\xbf"


# --- formats x damage ------------------------------------------------------------------------
@dataclass(frozen=True)
class Damage:
    """An edit of a valid file's text (or bytes) and the sentence its reader must then say."""

    edit: Callable[[str], str | bytes]
    pattern: str  # ``{path}`` stands for the damaged file, escaped


def latin1(old: str) -> Callable[[str], bytes]:
    """Save the file in Latin-1 with an accented letter replacing ``old``: not UTF-8."""
    return lambda text: text.replace(old, old[:-1] + "é", 1).encode("latin-1")


def replace(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return edit


ATTRIBUTES = "3\nBangs Smiling Young\n000001.jpg -1  1  1\n000002.jpg  1 -1  1\n000003.jpg -1 -1 -1\n"
PARTITIONS = "000001.jpg 0\n000002.jpg 1\n000003.jpg 2\n"
GEO = "IMG_ID,LAT,LON\na.jpg,48.85,2.35\nb.jpg,-33.9,151.2\nc.jpg,40.7,-74.0\n"
PAIRS = "2\t1\nAnn\t1\t2\nAnn\t1\tBob\t1\nCid\t1\t2\nCid\t2\tDee\t1\n"
TEACHER_CSV = "image,Bangs,Smiling,Young\na.jpg,0.1,0.9,0.5\nb.jpg,0.2,0.8,0.4\n"
NAMES = ["Bangs", "Smiling", "Young"]


def read_attributes(path: Path) -> Any:
    from datasets.attribute_files import read_attribute_file

    return read_attribute_file(path)[1]


def read_partitions(path: Path) -> Any:
    from datasets.attribute_files import read_partition_file

    return read_partition_file(path, ["000001.jpg", "000002.jpg", "000003.jpg"])


def read_geo(path: Path) -> Any:
    from datasets.geo_photos import read_geo_csv

    return read_geo_csv(path).ids


def read_cells(path: Path) -> Any:
    from datasets.geo_partition import Partition

    return Partition.load_csv(path).ids


def read_lfw_pairs(path: Path) -> Any:
    from datasets.lfw import read_pairs

    for name, number in [("Ann", 1), ("Ann", 2), ("Bob", 1), ("Cid", 1), ("Cid", 2), ("Dee", 1)]:
        image = path.parent / "lfw" / name / f"{name}_{number:04d}.jpg"
        image.parent.mkdir(parents=True, exist_ok=True)
        image.touch()
    return read_pairs(path.parent).same


def read_teacher_csv(path: Path) -> Any:
    from datasets.attribute_files import read_attributes_csv

    return read_attributes_csv(path, NAMES)


def cells_text() -> str:
    """A valid cells.csv: the partition of a few photos, as the partition command writes it."""
    import io

    from datasets.geo_partition import build_partition

    rng = np.random.default_rng(0)
    lat, lon = rng.uniform(-60, 60, 40), rng.uniform(-170, 170, 40)
    out = io.StringIO()
    build_partition(lat, lon, 8, 1).write_csv(out)
    return out.getvalue()


# format -> (file name, reader, valid text, {damage: Damage})
TEXT_FORMATS: dict[str, tuple[str, Callable[[Path], Any], Callable[[], str], dict[str, Damage]]] = {
    "celeba_attributes": (
        "list_attr_celeba.txt",
        read_attributes,
        lambda: ATTRIBUTES,
        {
            "not_utf8": Damage(latin1("Smiling"), r"{path}' is not UTF-8 text \(byte 0xe9 on line 2\)"),
            "missing_column": Damage(replace("000002.jpg  1 -1  1", "000002.jpg  1 -1"), r"{path}' line 4: 2 values"),
            "wrong_type": Damage(
                replace("000002.jpg  1 -1", "000002.jpg  1 no"), r"{path}' line 4: Smiling of '000002"
            ),
            "out_of_range": Damage(replace("3\n", "-3\n"), r"{path}' line 1: image count is '-3'; expected the number"),
            "duplicate_id": Damage(
                replace("000003.jpg", "000002.jpg"), r"{path}' line 5: image is '000002.jpg'; .* once"
            ),
            "dangling_reference": Damage(replace("3\n", "4\n"), r"{path}' line 1: the image count is 4; expected 3"),
        },
    ),
    "celeba_partition": (
        "list_eval_partition.txt",
        read_partitions,
        lambda: PARTITIONS,
        {
            "not_utf8": Damage(latin1("000002.jpg"), r"{path}' is not UTF-8 text \(byte 0xe9 on line 2\)"),
            "missing_column": Damage(replace("000002.jpg 1", "000002.jpg"), r"{path}' line 2: there are 1 fields"),
            "wrong_type": Damage(replace("000002.jpg 1", "000002.jpg val"), r"{path}' line 2: partition is 'val'"),
            "out_of_range": Damage(replace("000002.jpg 1", "000002.jpg 3"), r"{path}' line 2: partition is '3'"),
            "duplicate_id": Damage(
                replace("000003.jpg", "000002.jpg"), r"{path}' line 3: image is '000002.jpg'; .* once"
            ),
            "dangling_reference": Damage(
                lambda t: t + "000009.jpg 1\n", r"{path}' line 4: image is '000009.jpg'; expected an image listed in"
            ),
        },
    ),
    "geotagged_csv": (
        "train.csv",
        read_geo,
        lambda: GEO,
        {
            "not_utf8": Damage(latin1("b.jpg"), r"{path}' is not UTF-8 text \(byte 0xe9 on line 3\)"),
            "missing_column": Damage(
                replace("IMG_ID,LAT,LON", "IMG_ID,LAT"), r"{path}' line 1: the header .* no column"
            ),
            "wrong_type": Damage(replace("-33.9", "south"), r"{path}' line 3: LAT is 'south'; expected a latitude"),
            "out_of_range": Damage(replace("151.2", "200"), r"{path}' line 3: LON is '200'; expected a longitude in"),
            "duplicate_id": Damage(
                replace("c.jpg", "a.jpg"), r"{path}' line 4: IMG_ID is 'a.jpg'; expected each IMG_ID"
            ),
            "dangling_reference": Damage(replace("b.jpg", "/etc/b.jpg"), r"{path}' line 3: IMG_ID is '/etc/b.jpg'"),
            "nan": Damage(replace("-33.9", "nan"), r"{path}' line 3: LAT is 'nan'; expected a latitude in"),
        },
    ),
    "cells_csv": (
        "cells.csv",
        read_cells,
        cells_text,
        {
            "not_utf8": Damage(latin1("token"), r"{path}' is not UTF-8 text \(byte 0xe9 on line 1\)"),
            "missing_column": Damage(
                lambda t: t.replace(",center_lon", "", 1), r"{path}' line 1: .* no column 'center_lon'"
            ),
            "wrong_type": Damage(
                lambda t: re.sub(r"^(\w+),\d+,", r"\1,many,", t, count=1, flags=re.M),
                r"{path}' line 2: count is 'many'",
            ),
            "out_of_range": Damage(
                lambda t: re.sub(r"^(\w+,\d+),[-\d.]+,", r"\1,95,", t, count=1, flags=re.M),
                r"{path}' line 2: lat is '95'",
            ),
            "duplicate_id": Damage(
                lambda t: t + t.splitlines()[1] + "\n", r"{path}' line \d+: token is '\w+'; expected each token once"
            ),
            "dangling_reference": Damage(
                lambda t: re.sub(r"\n\w+,", "\nzz,", t, count=1), r"{path}' line 2: token is 'zz'"
            ),
            "nan": Damage(
                lambda t: re.sub(r"^(\w+,\d+,[-\d.]+),[-\d.]+,", r"\1,nan,", t, count=1, flags=re.M),
                r"{path}' line 2: lon is 'nan'",
            ),
        },
    ),
    "lfw_pairs": (
        "pairs.txt",
        read_lfw_pairs,
        lambda: PAIRS,
        {
            "not_utf8": Damage(latin1("Bob"), r"{path}' is not UTF-8 text \(byte 0xe9 on line 3\)"),
            "missing_column": Damage(
                replace("Ann\t1\tBob\t1", "Ann\t1\tBob"), r"{path}' line 3: there are 3 fields; expected 'Name1"
            ),
            "wrong_type": Damage(replace("Cid\t1\t2", "Cid\t1\ttwo"), r"{path}' line 4: image number is 'two'"),
            "out_of_range": Damage(
                replace("Cid\t1\t2", "Cid\t0\t2"), r"{path}' line 4: image number is '0'; expected .*\[1, 9999\]"
            ),
            "duplicate_id": Damage(
                replace("Cid\t1\t2", "Cid\t2\t2"), r"{path}' line 4: the second image number is 2; expected another"
            ),
            "dangling_reference": Damage(
                replace("Ann\t1\t2", "Ann\t1\t7"), r"{path}' line 2: the image is '.*Ann_0007.jpg'"
            ),
        },
    ),
    "teacher_attributes_csv": (
        "attributes.csv",
        read_teacher_csv,
        lambda: TEACHER_CSV,
        {
            "not_utf8": Damage(latin1("b.jpg"), r"{path}' is not UTF-8 text \(byte 0xe9 on line 3\)"),
            "missing_column": Damage(replace(",Young\n", "\n"), r"{path}' line 1: the header .* has no column 'Young'"),
            "wrong_type": Damage(replace("0.8", "high"), r"{path}' line 3: Smiling is 'high'; expected a probability"),
            "out_of_range": Damage(
                replace("0.8", "1.5"), r"{path}' line 3: Smiling is '1.5'; expected a probability in"
            ),
            "duplicate_id": Damage(
                replace("b.jpg", "a.jpg"), r"{path}' line 3: image is 'a.jpg'; expected each image once"
            ),
            "dangling_reference": Damage(
                replace(",Young\n", ",Young,Hat\n"), r"{path}' line 1: a column is 'Hat'; expected only"
            ),
            "nan": Damage(replace("0.8", "nan"), r"{path}' line 3: Smiling is 'nan'; expected a probability"),
        },
    ),
}

TEXT_CASES = [(fmt, damage) for fmt, (_, _, _, damages) in TEXT_FORMATS.items() for damage in damages]


def write_case(folder: Path, fmt: str, damage: str | None) -> tuple[Path, Callable[[Path], Any]]:
    name, reader, valid, damages = TEXT_FORMATS[fmt]
    path = folder / name
    text = valid()
    content = damages[damage].edit(text) if damage else text
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path, reader


@pytest.mark.parametrize(("fmt", "damage"), TEXT_CASES)
def test_a_damaged_text_file_is_named_in_one_sentence(fmt: str, damage: str, tmp_path: Path) -> None:
    path, reader = write_case(tmp_path, fmt, damage)
    pattern = TEXT_FORMATS[fmt][3][damage].pattern.replace("{path}", re.escape(str(path)))
    with pytest.raises(BadInputError, match=pattern) as refused:
        reader(path)
    assert "\n" not in str(refused.value) and str(refused.value).endswith(".")


@pytest.mark.parametrize("fmt", list(TEXT_FORMATS))
def test_a_byte_order_mark_is_accepted(fmt: str, tmp_path: Path) -> None:
    """Excel and Notepad save UTF-8 with a BOM: the same file reads the same with or without it."""
    path, reader = write_case(tmp_path, fmt, None)
    plain = reader(path)
    path.write_bytes(BOM + path.read_bytes())
    with_bom = reader(path)
    assert repr(plain) == repr(with_bom)


def test_overlapping_cells_are_refused(tmp_path: Path) -> None:
    """A cell and its own parent in one cells.csv: a photo would belong to two classes."""
    from datasets import s2cells
    from datasets.geo_partition import Partition

    leaf = s2cells.leaf_ids(np.array([48.85]), np.array([2.35]))
    parent, child = s2cells.to_tokens([*s2cells.parent_ids(leaf, 5), *s2cells.parent_ids(leaf, 7)])
    path = tmp_path / "cells.csv"
    path.write_text(f"token,count,lat,lon,center_lat,center_lon\n{parent},3,48,2,48,2\n{child},2,48,2,48,2\n")
    with pytest.raises(BadInputError, match=rf"line 3: token is '{child}'; expected a cell disjoint .* '{parent}'"):
        Partition.load_csv(path)


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
        r"teacher paths file '.*paths.txt' line 3: path is 'a/1.jpg'; expected each path once \(it is also on line 1\)",
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
    from datasets.face_identities import read_teacher_embeddings

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
    from datasets.face_identities import read_teacher_embeddings

    path = write_npy(tmp_path, valid_vectors(), EMBEDDING_KEYS)
    (tmp_path / "paths.txt").write_bytes(BOM + (tmp_path / "paths.txt").read_bytes())
    rows = read_teacher_embeddings(path, [tmp_path / "c/3.jpg", tmp_path / "a/1.jpg"], tmp_path)
    np.testing.assert_array_equal(rows, valid_vectors()[[2, 0]])


# --- the face index sidecar ------------------------------------------------------------------
@pytest.fixture
def small_index(tmp_path: Path) -> Path:
    from tasks.face_embedding.index import FaceIndex

    model = {"embedding_size": 8, "checkpoint": "m.ckpt", "sha256": "0" * 64, "resolution": 64, "width": 0.25}
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
    "missing_faces": (edit_meta("faces", KeyError), r"faces.index.json': it has no key 'faces'"),
    "missing_model": (edit_meta("model", KeyError), r"faces.index.json': it has no key 'model'"),
    "missing_version": (edit_meta("version", KeyError), r"faces.index.json': it has no key 'version'"),
    "newer_version": (edit_meta("version", 2), r"faces.index.json': version is 2; expected 1"),
    "wrong_type": (edit_face(0, 0, "x"), r"faces.index.json' faces\[0\]: id is 'x'; expected a face id >= 0"),
    "out_of_range": (edit_meta("next_id", -1), r"faces.index.json': next_id is -1; expected a face id >= 0"),
    "bad_model": (edit_meta("model.sha256", "abc"), r"faces.index.json' model: sha256 is 'abc'; expected a SHA-256"),
    "duplicate_id": (edit_face(1, 0, 0), r"faces.index.json' faces\[1\]: id is 0; expected each id once"),
    "dangling_reference": (
        edit_face(2, 0, 7),
        r"faces.index.json' faces\[2\]: id is 7; expected an id below next_id = 3",
    ),
    "face_count": (lambda meta: meta["faces"].pop(), r"faces.index.json': it lists 2 faces but .* holds 3 vectors"),
    "dimension": (edit_meta("model.embedding_size", 16), r"faces.index.json': embedding_size is 16 but .* holds 8-d"),
    "kind": (edit_meta("kind", "hnsw"), r"faces.index.json' params: there is no 'hnsw_m'"),
}


@pytest.mark.parametrize("case", list(SIDECAR_CASES))
def test_a_damaged_index_sidecar_is_named(case: str, small_index: Path) -> None:
    from tasks.face_embedding.index import FaceIndex

    side = small_index.with_name(small_index.name + ".json")
    meta = json.loads(side.read_text())
    edit, pattern = SIDECAR_CASES[case]
    edit(meta)
    side.write_text(json.dumps(meta))
    with pytest.raises(BadInputError, match=pattern):
        FaceIndex.load(small_index)


@pytest.mark.parametrize("encoding", ["bom", "latin-1"])
def test_the_sidecar_is_read_as_utf8_with_or_without_bom(encoding: str, small_index: Path) -> None:
    from tasks.face_embedding.index import FaceIndex

    side = small_index.with_name(small_index.name + ".json")
    meta = json.loads(side.read_text())
    meta["faces"][0][1] = "Zoé"
    text = json.dumps(meta, ensure_ascii=False)
    side.write_bytes(BOM + text.encode() if encoding == "bom" else text.encode("latin-1"))
    if encoding == "bom":
        assert FaceIndex.load(small_index).faces[0][0] == "Zoé"
    else:
        with pytest.raises(BadInputError, match=r"faces.index.json' is not UTF-8 text \(byte 0xe9 on line 1\)"):
            FaceIndex.load(small_index)


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
    "geotagged_csv": "geotagged photo CSV",
    "cells_csv": "cells file",
    "lfw_pairs": "LFW pairs file",
    "teacher_attributes_csv": "teacher outputs file",
    "teacher embeddings": "teacher embeddings file",
    "teacher paths": "teacher paths file",
    "index sidecar": "face index metadata",
    "stanford dogs": "Stanford Dogs list",
}


def test_every_declared_format_is_tried_here() -> None:
    """A format declared in a reader (datasets.schema.FORMATS) without damage cases above fails here."""
    import importlib

    from datasets.schema import FORMATS

    readers = ["attribute_files", "face_identities", "geo_partition", "geo_photos", "lfw", "stanford_dogs"]
    for module in [*(f"datasets.{name}" for name in readers), "tasks.face_embedding.index"]:
        importlib.import_module(module)

    assert set(TEXT_FORMATS) <= set(TRIED)
    assert set(FORMATS) == set(TRIED.values())


# --- every option has a declared range ---------------------------------------------------------
def task_classes() -> dict[str, tuple[type, type]]:
    """The model and data module of each task (as each task's declaration names them)."""
    from datasets.celeba import CelebADataModule
    from datasets.coco import CocoDataModule
    from datasets.face_identities import FaceDataModule
    from datasets.geo_photos import GeoPhotosDataModule
    from datasets.imagenet import ImageFolderDataModule
    from datasets.stanford_dogs import StanfordDogsDataModule
    from tasks.classification import ClassificationModule
    from tasks.detection.module import DetectionModule
    from tasks.face_attributes.module import FaceAttributesModule
    from tasks.face_embedding.module import FaceEmbeddingModule
    from tasks.geolocation.module import GeolocationModule

    return {
        "classification": (ClassificationModule, ImageFolderDataModule),
        "fine_grained": (ClassificationModule, StanfordDogsDataModule),
        "detection": (DetectionModule, CocoDataModule),
        "face_attributes": (FaceAttributesModule, CelebADataModule),
        "geolocation": (GeolocationModule, GeoPhotosDataModule),
        "face_embedding": (FaceEmbeddingModule, FaceDataModule),
    }


TASKS = ["classification", "fine_grained", "detection", "face_attributes", "geolocation", "face_embedding"]


def numbers_in(typehint: Any) -> Iterator[Any]:
    """The int/float types inside a type hint (through Optional, unions and lists); bools are not numbers."""
    if isinstance(typehint, type):
        if issubclass(typehint, (int, float)) and typehint is not bool:
            yield typehint
        return
    for argument in typing.get_args(typehint):
        yield from numbers_in(argument)


# Options that belong to Lightning's own classes (the trainer, the checkpoint callback) or to an
# injected optimizer/scheduler class: their checks are theirs (the optimizer's: check_optimization).
NOT_OURS = ("trainer.", "checkpoint.", "seed_everything", "model.optimizer", "model.lr_scheduler", "ckpt_path")


class ParserBuilt(Exception):
    """Raised in place of parsing, carrying the task CLI's parser."""


def task_cli_options(task: str, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """``(option, type hint)`` of every option of ``python -m tasks.<task> fit``, from the real CLI's parser."""
    import importlib

    from tasks.cli import TaskCLI

    def capture(self: Any, parser: Any, args: Any) -> None:
        raise ParserBuilt(parser)

    monkeypatch.setattr(TaskCLI, "parse_arguments", capture)
    with pytest.raises(ParserBuilt) as built:
        importlib.import_module(f"tasks.{task}.task").TASK.main(["fit"])
    fit = built.value.args[0]._subcommands_action._name_parser_map["fit"]
    options = []
    for action in fit._actions:
        hint = getattr(action, "_typehint", None) or action.type
        if not action.dest.startswith(NOT_OURS) and hint is not None:
            options.append((action.dest, hint))
    return options


@pytest.mark.parametrize("task", TASKS)
def test_every_numeric_option_of_a_task_has_a_declared_range(task: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Walks the parser of ``python -m tasks.<task> fit``: a numeric option without a range fails here."""
    from backbone.ranges import is_range

    options = task_cli_options(task, monkeypatch)
    numeric = [(name, t) for name, hint in options for t in numbers_in(hint)]
    assert {"backbone", "resolution", "data.batch_size"} <= {name for name, _ in numeric}, task
    unranged = sorted({name for name, t in numeric if not is_range(t)})
    assert not unranged, f"{task}: numeric options without a declared range (backbone.ranges): {unranged}"


def bad_values(range_type: Any) -> list[str]:
    """Values just outside a range type (and not a number at all)."""
    values = ["x"]
    step = 1 if range_type.integer else 0.5
    if range_type.low is not None:
        values.append(str(range_type.low if range_type.low_open else range_type.low - step))
    if range_type.high is not None:
        values.append(str(range_type.high if range_type.high_open else range_type.high + step))
    if not range_type.integer:
        values.append("nan")
    else:
        values.append("2.5")
    return values


@pytest.mark.parametrize("task", TASKS)
def test_every_ranged_option_of_a_task_refuses_values_outside_in_one_sentence(task: str) -> None:
    """Through jsonargparse, as LightningCLI parses: each value outside is one sentence naming the option."""
    from jsonargparse import ArgumentParser

    from backbone.ranges import is_range, option_sentence

    for group, cls in zip(("model", "data"), task_classes()[task], strict=True):
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(cls, group)
        for action in parser._actions:
            ranges = [t for t in numbers_in(getattr(action, "_typehint", None)) if is_range(t)]
            for value in bad_values(ranges[0]) if ranges else []:
                wrapped = f"[{value}]" if "list" in str(action._typehint) else value
                with pytest.raises(Exception) as refused:  # jsonargparse's ArgumentError
                    parser.parse_args([f"--{action.dest}", wrapped])
                sentence = option_sentence(str(refused.value))
                assert sentence is not None, str(refused.value)
                # a range with a check of its own (width, resolution) says its own sentence
                assert sentence.startswith(f"--{action.dest} ") or ranges[0].check is not None, sentence


def subcommand_parsers() -> dict[str, Any]:
    from tasks.face_embedding.index_cli import build_parser as index_parser
    from tasks.geolocation.partition import build_parser as partition_parser

    parsers = {"partition": partition_parser()}
    for action in index_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers.update({f"index {name}": sub for name, sub in action.choices.items()})
    return parsers


# The smallest arguments each subcommand needs besides the option under test (nothing is read).
REQUIRED = {
    "partition": ["--csv", "train.csv", "--out", "cells.csv"],
    "index build": ["--ckpt", "m.ckpt", "--out", "faces.index"],
    "index add": ["--index", "faces.index", "--images", "more"],
    "index remove": ["--index", "faces.index", "--identity", "ann"],
    "index search": ["--index", "faces.index"],
}


def test_every_numeric_option_of_a_subcommand_has_a_declared_range() -> None:
    from backbone.ranges import is_range

    parsers = subcommand_parsers()
    assert set(parsers) == set(REQUIRED)
    unranged = [
        f"{name} {a.option_strings[-1]}"
        for name, parser in parsers.items()
        for a in parser._actions
        if a.type in (int, float)
        or (isinstance(a.type, type) and issubclass(a.type, (int, float)) and not is_range(a.type))
    ]
    assert not unranged, f"subcommand options without a declared range (backbone.ranges): {unranged}"


# The issue's cases, kept apart from the generated ones below so that they are tried even where
# ranges cannot be listed (they failed before the ranges: nlist 0 crashed faiss).
ISSUE_CASES = [
    ("index search", "-k", "0"),
    ("index search", "--nprobe", "0"),
    ("index build", "--nlist", "0"),
    ("index build", "--train-size", "10"),
    ("index build", "--batch-size", "0"),
    ("partition", "--max-photos", "0"),
]


def subcommand_cases() -> list[tuple[str, str, str]]:
    """Every ranged option of both subcommand CLIs with values just outside (below, above)."""
    try:
        from backbone.ranges import is_range
    except ImportError:  # before ranges were declared
        return []
    cases = []
    for name, parser in subcommand_parsers().items():
        for action in parser._actions:
            if is_range(action.type):
                cases += [(name, action.option_strings[-1], value) for value in bad_values(action.type)[1:3]]
    return [case for case in cases if case not in ISSUE_CASES]


@pytest.mark.parametrize(("command", "option", "value"), ISSUE_CASES + subcommand_cases())
def test_a_subcommand_option_outside_its_range_is_one_sentence(
    command: str, option: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasks.face_embedding.index_cli import main as index_main
    from tasks.geolocation.partition import main as partition_main

    args = [str(tmp_path / a) if a.endswith((".csv", ".ckpt", ".index")) else a for a in REQUIRED[command]]
    args += [option, value]
    main = partition_main if command == "partition" else index_main
    args = args if command == "partition" else [command.split()[1], *args]
    expect_one_sentence(main, args, rf"^error: \S*{option} is {re.escape(value)}; expected ", capsys)
    assert not list(tmp_path.iterdir())  # refused before anything was read or written


# --- end to end: the task CLI refuses at parse time, before any work -----------------------------
@pytest.mark.parametrize(
    ("task", "option", "value", "expected"),
    [
        ("geolocation", "--model.top_k", "0", "an integer >= 1"),
        ("geolocation", "--data.val_share", "0.999", r"a number in \[0, 0.5\]"),
        ("geolocation", "--data.max_photos", "0", "an integer >= 1"),
        ("classification", "--data.batch_size", "0", "an integer >= 1"),
        ("face_embedding", "--data.images_per_identity", "1", "an integer >= 2"),
    ],
)
def test_a_task_option_outside_its_range_is_one_sentence_before_any_work(
    task: str, option: str, value: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    main = importlib.import_module(f"tasks.{task}.task").TASK.main
    runs = tmp_path / "runs"
    args = ["fit", "--data.root", str(tmp_path / "no-data"), "--trainer.default_root_dir", str(runs), option, value]
    expect_one_sentence(main, args, rf"^error: {re.escape(option)} is {value}; expected {expected}\.$", capsys)
    assert not runs.exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "data:\n  root: /data/café\n".encode("latin-1"),
            r"config file \(--config\) '.*' is not UTF-8 text \(byte 0xe9 on",
        ),
        (BOM + b"data:\n  batch_size: 0\n", r"^error: --data.batch_size is 0; expected an integer >= 1\.$"),
    ],
    ids=["latin1", "bom_out_of_range"],
)
def test_a_config_file_is_read_as_utf8_and_its_values_ranged(
    content: bytes, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasks.geolocation.task import TASK

    main = TASK.main
    config = tmp_path / "run.yaml"
    config.write_bytes(content)
    runs = tmp_path / "runs"
    expect_one_sentence(
        main, ["fit", "--config", str(config), "--trainer.default_root_dir", str(runs)], expected, capsys
    )
    assert not runs.exists()


def test_optimizer_and_scheduler_options_are_checked_when_the_module_is_made() -> None:
    """An injected optimizer's own checks (torch refuses a negative lr) as one sentence, before any data."""
    from functools import partial

    import torch

    from tasks.optim import check_optimization

    with pytest.raises(BadInputError, match=r"^--model.optimizer refuses its options: Invalid learning rate: -1.0\.$"):
        check_optimization(partial(torch.optim.AdamW, lr=-1.0), None)
    with pytest.raises(BadInputError, match=r"^--model.lr_scheduler refuses its options: Factor should be < 1\.0\.$"):
        check_optimization(
            partial(torch.optim.SGD, lr=0.1), partial(torch.optim.lr_scheduler.ReduceLROnPlateau, factor=2.0)
        )
    check_optimization(partial(torch.optim.SGD, lr=0.1), partial(torch.optim.lr_scheduler.StepLR, step_size=3))


# --- ranges that depend on the data ------------------------------------------------------------
def write_geo_set(root: Path, lat: np.ndarray, lon: np.ndarray) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{k}.jpg,{a:.5f},{b:.5f}\n" for k, (a, b) in enumerate(zip(lat, lon, strict=True)))
    (root / "train.csv").write_text("IMG_ID,LAT,LON\n" + rows)
    (root / "test.csv").write_text("IMG_ID,LAT,LON\n" + rows)
    return root


def test_cells_of_another_photo_set_are_refused(tmp_path: Path) -> None:
    """--data.cells built from photos elsewhere left 196 of 200 training photos out, silently."""
    from datasets.geo_partition import build_partition
    from datasets.geo_photos import GeoPhotosDataModule
    from tasks.geolocation.writer import write_cells_csv

    rng = np.random.default_rng(0)
    europe = write_geo_set(tmp_path / "europe", rng.uniform(40, 55, 200), rng.uniform(-5, 20, 200))
    elsewhere = build_partition(rng.uniform(-40, -10, 200), rng.uniform(110, 150, 200), 20, 2)
    cells = write_cells_csv(elsewhere, tmp_path / "cells.csv")
    data = GeoPhotosDataModule(str(europe), cells=str(cells), val_share=0.0)
    with pytest.raises(BadInputError, match=r"200 of the 200 training photos .* lie in no cell of --data.cells"):
        data.train_dataset()
    # the cells of these photos: only those of cells under T2 (here 2) are left out, and said
    train = data.split_tables()[0]
    own = write_cells_csv(build_partition(train.lat, train.lon, 20, 2), tmp_path / "own.csv")
    assert len(GeoPhotosDataModule(str(europe), cells=str(own), val_share=0.0).train_dataset()) > 150


def test_a_validation_share_that_holds_out_no_photo_is_said(tmp_path: Path) -> None:
    from datasets.geo_photos import GeoPhotosDataModule

    root = write_geo_set(tmp_path / "tiny", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0]))
    data = GeoPhotosDataModule(str(root), val_share=0.1)
    with pytest.raises(BadInputError, match=r"--data.val_share 0.1 of its 3 training photos is none"):
        data.val_dataset()


def test_ivfpq_options_that_do_not_fit_the_gallery_are_refused() -> None:
    from tasks.face_embedding.index import new_index
    from tasks.face_embedding.index_cli import check_index_options

    vectors = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    params = {"nlist": 301, "pq_m": 4, "nprobe": 1, "train_size": 300}
    with pytest.raises(BadInputError, match=r"--nlist is 301; expected at most the 300 faces of the training sample"):
        new_index("ivfpq", 8, vectors, params)

    def options(**given: Any) -> argparse.Namespace:
        names = ("hnsw_m", "ef_search", "nlist", "pq_m", "nprobe", "train_size")
        return argparse.Namespace(**{n: given.get(n) for n in names})

    with pytest.raises(BadInputError, match=r"--train-size is 300; expected at least --nlist = 400"):
        check_index_options(options(nlist=400, train_size=300), "ivfpq", 128)
    with pytest.raises(BadInputError, match=r"--pq-m is 5; expected a divisor of the model's embedding size 128"):
        check_index_options(options(pq_m=5), "ivfpq", 128)
    with pytest.raises(BadInputError, match=r"--nlist applies to --kind ivfpq; the index is flat"):
        check_index_options(options(nlist=4), "flat", 128)


# --- one output-path check -------------------------------------------------------------------
def test_check_output_file_refuses_folders_files_as_parents_and_read_only_folders(tmp_path: Path) -> None:
    import os

    from tasks.outputs import check_output_file

    with pytest.raises(BadInputError, match=rf"The results file '{tmp_path}' is a folder; expected the name of a file"):
        check_output_file(tmp_path, "results file")
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    with pytest.raises(BadInputError, match=rf"lies under '{blocker}', which is a file"):
        check_output_file(blocker / "sub" / "out.csv")
    assert check_output_file(tmp_path / "new" / "deeper" / "out.csv") == tmp_path / "new" / "deeper" / "out.csv"
    assert not (tmp_path / "new").exists()  # nothing is created by the check
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(BadInputError, match=r"the folder '.*locked' is not writable"):
            check_output_file(locked / "out.csv")


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        ("partition", ["--out", "{folder}"]),
        ("index build", ["--out", "{folder}"]),
        ("index search", ["--out", "{folder}"]),
        ("index search", ["--out", "r.csv", "--json", "{folder}"]),
        ("index search", ["--out", "{file}/r.csv"]),
    ],
)
def test_an_output_path_that_cannot_be_a_file_is_one_sentence_before_any_work(
    command: str, extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasks.face_embedding.index_cli import main as index_main
    from tasks.geolocation.partition import main as partition_main

    folder, blocker = tmp_path / "existing", tmp_path / "notes.txt"
    folder.mkdir()
    blocker.write_text("x")
    csv_file = write_geo_set(tmp_path / "photos", np.array([1.0, 2.0]), np.array([1.0, 2.0])) / "train.csv"
    extra = [
        e if e.startswith("--") else e.format(folder=folder, file=blocker) if "{" in e else str(tmp_path / e)
        for e in extra
    ]
    if command == "partition":
        args = ["--csv", str(csv_file), *extra]
        expect_one_sentence(partition_main, args, rf"'{folder}' is a folder; expected the name of a file", capsys)
        return
    required = {
        "index build": ["--ckpt", str(tmp_path / "none.ckpt")],
        "index search": ["--index", str(tmp_path / "i")],
    }
    args = [command.split()[1], *required[command], *extra]
    if blocker.name in " ".join(extra):
        expected = rf"'{blocker}', which is a file"
    else:
        expected = rf"'{folder}' is a folder; expected the name of a file"
    expect_one_sentence(index_main, args, expected, capsys)
