"""Teacher outputs at web scale: ``attributes.npy`` + ``attributes_rows.txt``, memory-mapped, read
like ``attributes.csv`` (which is still read), and every kind of damage refused in one sentence."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from backbone.errors import BadInputError
from datasets.attribute_files import format_attributes_csv
from datasets.celeba import CelebADataModule
from datasets.teacher_outputs import ARRAY_FILE, ROWS_FILE, read_teacher_outputs
from tasks.face_attributes.writer import write_teacher_array

NAMES = ["Bangs", "Smiling", "Young"]
IMAGES = ["a.jpg", "sub/b.jpg", "c d.jpg"]
VALUES = np.array([[0.25, 0.5, 1.0], [0.0, 0.125, 0.75], [0.5, 0.5, 0.5]], dtype=np.float32)


def test_the_array_is_memory_mapped_and_reads_as_the_csv(tmp_path: Path) -> None:
    write_teacher_array(tmp_path, NAMES, IMAGES, VALUES)
    (tmp_path / "attributes.csv").write_text(format_attributes_csv(NAMES, list(zip(IMAGES, VALUES, strict=True))))
    order = NAMES[::-1]  # the data's attribute order need not be the file's
    array, text = (
        read_teacher_outputs(tmp_path / ARRAY_FILE, order),
        read_teacher_outputs(tmp_path / "attributes.csv", order),
    )
    assert isinstance(array.values, np.memmap) and array.names == text.names == IMAGES
    rows = array.rows(["c d.jpg", "nope.jpg", "a.jpg"])
    assert rows.tolist() == [2, -1, 0]
    np.testing.assert_array_equal(array.probabilities(rows[[0, 2]]), VALUES[[2, 0]][:, ::-1])
    np.testing.assert_array_equal(array.probabilities(text.rows(IMAGES)), text.probabilities(text.rows(IMAGES)))
    copy = pickle.loads(pickle.dumps(array))  # a spawned loader worker re-opens the map, never copies it
    assert array.__getstate__()["values"] is None and isinstance(copy.values, np.memmap)
    np.testing.assert_array_equal(copy.probabilities(1), VALUES[1, ::-1])


def test_the_data_module_reads_the_array(tiny_celeba: Path, tmp_path: Path) -> None:
    """--data.teacher_outputs attributes.npy: the training images' rows, item by item."""
    names = [f"{i:06d}.jpg" for i in range(1, 29)]
    probs = np.random.default_rng(0).random((len(names), 10)).astype(np.float32)
    dm = CelebADataModule(str(tiny_celeba), resolution=32, num_workers=0)
    write_teacher_array(tmp_path, dm.attribute_names, names[::-1], probs[::-1])
    dm = CelebADataModule(str(tiny_celeba), resolution=32, num_workers=0, teacher_outputs=str(tmp_path / ARRAY_FILE))
    train = dm.dataset("train")
    np.testing.assert_array_equal(train[3]["teacher"].numpy(), probs[3])
    np.testing.assert_array_equal(train.teacher.all(), probs[:16])


def damaged(edit: Callable[[Path], None]) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        write_teacher_array(folder, NAMES, IMAGES, VALUES)
        edit(folder)
        return folder / ARRAY_FILE

    return write


def save(values: object) -> Callable[[Path], None]:
    return lambda folder: np.save(folder / ARRAY_FILE, values, allow_pickle=True)


def rows_text(text: str | bytes) -> Callable[[Path], None]:
    data = text if isinstance(text, bytes) else text.encode()
    return lambda folder: (folder / ROWS_FILE).write_bytes(data)


def with_value(row: int, column: int, value: float) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        values = VALUES.copy()
        values[row, column] = value
        np.save(folder / ARRAY_FILE, values)

    return edit


HEADER = "image,Bangs,Smiling,Young\n"
CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "random_bytes": (
        lambda folder: (folder / ARRAY_FILE).write_bytes(np.random.default_rng(0).bytes(512)),
        r"teacher outputs array '.*attributes.npy': it is not a NumPy array file",
    ),
    "object_array": (save(np.array([{"a": 1}, None, 3], dtype=object)), r"it is not a NumPy array file"),
    "wrong_type": (save(np.ones((3, 3), dtype=np.int64)), r"the matrix is 'an array of int64 of shape \(3, 3\)'"),
    "one_dimension": (save(np.ones(9, dtype=np.float32)), r"the matrix is 'an array of float32 of shape \(9,\)'"),
    "count_mismatch": (save(VALUES[:2]), r"it holds 2 rows of 3 values but attributes_rows.txt names 3 images"),
    "nan": (with_value(1, 2, np.nan), r"attributes.npy' row 1 \('sub/b.jpg'\): Young is nan; expected a probability"),
    "out_of_range": (with_value(2, 0, 1.5), r"row 2 \('c d.jpg'\): Bangs is 1.5; expected a probability in \[0, 1\]"),
    "rows_missing": (lambda folder: (folder / ROWS_FILE).unlink(), r"rows file '.*attributes_rows.txt' does not exist"),
    "not_utf8": (
        rows_text(HEADER.encode() + "a.jpg\nb\xe9.jpg\nc.jpg\n".encode("latin-1")),
        r"attributes_rows.txt' is not UTF-8 text \(byte 0xe9 on line 3\)",
    ),
    "duplicate_id": (
        rows_text(HEADER + "a.jpg\nb.jpg\na.jpg\n"),
        r"attributes_rows.txt' line 4: image is 'a.jpg'; expected each image once \(it is also on line 2\)",
    ),
    "blank_name": (rows_text(HEADER + "a.jpg\n \nc.jpg\n"), r"attributes_rows.txt' line 3: image is ' '; expected"),
    "empty_name": (rows_text(HEADER + "a.jpg\nb.jpg\n\n"), r"attributes_rows.txt' line 4: image is ''; expected an"),
    "missing_column": (
        rows_text("image,Bangs,Smiling\na.jpg\nb.jpg\nc.jpg\n"),
        r"attributes_rows.txt' line 1: the header .* has no column 'Young'",
    ),
    "dangling_reference": (
        rows_text("image,Bangs,Smiling,Young,Hat\na.jpg\nb.jpg\nc.jpg\n"),
        r"attributes_rows.txt' line 1: a column is 'Hat'; expected only the data's 3 attributes",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_teacher_array_is_one_sentence(case: str, tmp_path: Path) -> None:
    edit, pattern = CASES[case]
    path = damaged(edit)(tmp_path)
    with pytest.raises(BadInputError, match=pattern) as refused:
        read_teacher_outputs(path, NAMES)
    assert "\n" not in str(refused.value) and str(refused.value).endswith(".")


def test_the_benchmark_section_reads_both_formats(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``python -m benchmarks --section face_attributes --quick``: one row per format, the same-run ratio."""
    import torch

    from benchmarks.__main__ import main

    threads = torch.get_num_threads()
    try:
        results = main(["--quick", "--section", "face_attributes", "--teacher-dir", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)  # the quick mode sets one thread
    rows = results["face_attributes"]["teacher_outputs"]
    assert [(r["rows"], r["file"]) for r in rows] == [(2000, "attributes.csv"), (2000, "attributes.npy")]
    assert rows[0]["read_vs_csv"] == 1.0 and 0 < rows[1]["read_vs_csv"] and rows[1]["mb"] < rows[0]["mb"]
    assert "| 2,000 | attributes.npy |" in capsys.readouterr().out and not list(tmp_path.iterdir())
