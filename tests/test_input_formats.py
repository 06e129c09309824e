"""Bad input as a class (issue 16): every file format the project reads against every kind of damage.

Each format (CelebA's two lists, the geotagged CSVs, ``cells.csv`` and GeoEstimation's cells
files, ``pairs.txt``, the teacher's
``attributes.csv`` and embeddings, the index sidecar, the Stanford Dogs lists) is written valid,
then damaged one way (not UTF-8, a missing column, a wrong type, a value out of range, a repeated
id, a dangling reference, a NaN), and its reader must refuse it with ``BadInputError`` naming the
file, the line (row, entry, key) and the field; a UTF-8 byte-order mark must be accepted. Readers
are called directly (milliseconds each). The binary and JSON formats (teacher embeddings, the
index sidecar, Stanford Dogs' lists): ``tests/test_input_formats_binary.py``; options and their
ranges: ``tests/test_option_ranges.py``; COCO's JSON: ``tests/test_coco_format.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backbone.errors import BadInputError

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


KAGGLE_ATTRIBUTES = "image_id,Bangs,Smiling,Young\n000001.jpg,-1,1,1\n000002.jpg,1,-1,1\n000003.jpg,-1,-1,-1\n"
KAGGLE_PARTITIONS = "image_id,partition\n000001.jpg,0\n000002.jpg,1\n000003.jpg,2\n"


def read_kaggle_attributes(path: Path) -> Any:
    from datasets.attribute_files import read_attribute_csv

    return read_attribute_csv(path)[1:]


def read_kaggle_partitions(path: Path) -> Any:
    from datasets.attribute_files import read_partition_csv

    return read_partition_csv(path, ["000001.jpg", "000002.jpg", "000003.jpg"])


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


def geoestimation_cells_text() -> str:
    """A valid GeoEstimation cells file as published: two 'name: value' lines, the header, then the
    cells with class labels in another order than the rows (create_cells.py numbers them as it meets them)."""
    from datasets.geo_partition import build_partition

    rng = np.random.default_rng(0)
    cells = build_partition(rng.uniform(-60, 60, 40), rng.uniform(-170, 170, 40), 8, 2, 2, centroid="degrees")
    rows = [
        f"{len(cells) - 1 - k},{token},{count},{lat!r},{lon!r}\n"
        for k, (token, count, (lat, lon)) in enumerate(
            zip(cells.tokens, cells.counts.tolist(), cells.centroids.tolist(), strict=True)
        )
    ]
    header = (
        "num_images: 40\nmin_concept_probability: ---\nclass_label,hex_id,imgs_per_cell,latitude_mean,longitude_mean\n"
    )
    return header + "".join(rows)


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
    "celeba_kaggle_attributes": (
        "list_attr_celeba.csv",
        read_kaggle_attributes,
        lambda: KAGGLE_ATTRIBUTES,
        {
            "not_utf8": Damage(latin1("Smiling"), r"{path}' is not UTF-8 text \(byte 0xe9 on line 1\)"),
            "missing_column": Damage(
                replace("image_id,", "id,"), r"{path}' line 1: the header .* no column 'image_id'"
            ),
            "wrong_type": Damage(replace("000002.jpg,1,-1", "000002.jpg,1,no"), r"{path}' line 3: Smiling of '000002"),
            "out_of_range": Damage(replace("000002.jpg,1,-1", "000002.jpg,1,0"), r"{path}' line 3: Smiling .* is '0'"),
            "duplicate_id": Damage(
                replace("000003.jpg", "000002.jpg"), r"{path}' line 4: image_id is '000002.jpg'; .* once"
            ),
            "dangling_reference": Damage(replace("-1,1,1\n", "-1,1\n"), r"{path}' line 2: there are 3 fields"),
        },
    ),
    "celeba_kaggle_partition": (
        "list_eval_partition.csv",
        read_kaggle_partitions,
        lambda: KAGGLE_PARTITIONS,
        {
            "not_utf8": Damage(latin1("000002.jpg"), r"{path}' is not UTF-8 text \(byte 0xe9 on line 3\)"),
            "missing_column": Damage(replace(",partition", ",split"), r"{path}' line 1: the header .* 'partition'"),
            "wrong_type": Damage(replace("000002.jpg,1", "000002.jpg,val"), r"{path}' line 3: partition is 'val'"),
            "out_of_range": Damage(replace("000002.jpg,1", "000002.jpg,3"), r"{path}' line 3: partition is '3'"),
            "duplicate_id": Damage(
                replace("000003.jpg", "000002.jpg"), r"{path}' line 4: image_id is '000002.jpg'; .* once"
            ),
            "dangling_reference": Damage(
                lambda t: t + "000009.jpg,1\n", r"{path}' line 5: image_id is '000009.jpg'; expected an image listed"
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
    "geoestimation_cells_csv": (
        "cells_50_1000.csv",
        read_cells,
        geoestimation_cells_text,
        {
            "not_utf8": Damage(latin1("hex_id"), r"{path}' is not UTF-8 text \(byte 0xe9 on line 3\)"),
            "missing_column": Damage(
                lambda t: t.replace(",longitude_mean", "", 1), r"{path}' line 3: .* no column 'longitude_mean'"
            ),
            "wrong_type": Damage(
                lambda t: re.sub(r"^(\d+,\w+),\d+,", r"\1,many,", t, count=1, flags=re.M),
                r"{path}' line 4: imgs_per_cell is 'many'; expected a number of photos",
            ),
            "out_of_range": Damage(
                lambda t: re.sub(r"^(\d+,\w+,\d+),[-\d.]+,", r"\1,95,", t, count=1, flags=re.M),
                r"{path}' line 4: latitude_mean is '95'; expected a latitude in \[-90, 90\]",
            ),
            "duplicate_id": Damage(
                lambda t: t + f"{t.count(chr(10)) - 3}," + t.splitlines()[3].split(",", 1)[1] + "\n",
                r"{path}' line \d+: hex_id is '\w+'; expected each hex_id once \(it is also on line 4\)",
            ),
            "dangling_reference": Damage(
                lambda t: re.sub(r"^\d+,", "99,", t, count=1, flags=re.M),
                r"{path}' line 4: class_label is '99'; expected a class index in \[0, \d+\] \(the file has",
            ),
            "nan": Damage(
                lambda t: re.sub(r"^(\d+,\w+,\d+,[-\d.]+),[-\d.]+$", r"\1,nan", t, count=1, flags=re.M),
                r"{path}' line 4: longitude_mean is 'nan'",
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
