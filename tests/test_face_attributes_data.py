"""CelebA's real layout: the two lists, the splits, teacher outputs, unlabelled images, bad input."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from backbone.errors import BadInputError
from datasets.attribute_files import (
    ATTRIBUTE_FILE,
    PARTITION_FILE,
    format_attributes_csv,
    read_attribute_file,
    read_attributes_csv,
    read_partition_file,
)
from datasets.celeba import CelebADataModule

NAMES = ["Bangs", "Blond_Hair", "Eyeglasses"]


def data(root: Path, **kwargs: object) -> CelebADataModule:
    return CelebADataModule(str(root), resolution=32, batch_size=4, num_workers=0, **kwargs)


def copy_of(root: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(root, tmp_path / "celeba"))


def test_release_format_with_variable_whitespace(tmp_path: Path) -> None:
    """The release pads with one or two spaces; tabs and trailing blanks are tolerated too."""
    path = tmp_path / ATTRIBUTE_FILE
    path.write_text(
        "3\nBangs Blond_Hair Eyeglasses \n000001.jpg -1  1  1\n000002.jpg\t 1 -1 -1\n000003.jpg  1  1 -1 \n\n"
    )
    names, images, labels = read_attribute_file(path)
    assert names == NAMES and images == ["000001.jpg", "000002.jpg", "000003.jpg"]
    np.testing.assert_array_equal(labels, [[0, 1, 1], [1, 0, 0], [1, 1, 0]])
    (tmp_path / PARTITION_FILE).write_text("000003.jpg 2\n000001.jpg 0\n000002.jpg 1\n")
    np.testing.assert_array_equal(read_partition_file(tmp_path / PARTITION_FILE, images), [0, 1, 2])


def test_splits_follow_the_partition_file(tiny_celeba: Path) -> None:
    dm = data(tiny_celeba)
    assert len(dm.attribute_names) == 10 and dm.attribute_names[0] == "Bangs"
    sizes = {split: len(dm.dataset(split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 16, "val": 7, "test": 5}
    item = dm.dataset("val")[0]
    assert item["image"].shape == (3, 32, 32) and item["name"] == "000017.jpg" and bool(item["labelled"])
    # The labels are the file's row for that image (independent parse: the raw text).
    row = next(line for line in (tiny_celeba / ATTRIBUTE_FILE).read_text().splitlines() if line.startswith("000017"))
    np.testing.assert_array_equal(item["labels"].numpy(), [v == "1" for v in row.split()[1:]])
    assert len(dm.dataset("predict")) == 28  # predict_split "all": the three partitions


@pytest.mark.parametrize(
    ("file", "edit", "message"),
    [
        (
            ATTRIBUTE_FILE,
            lambda t: t.replace("000003.jpg", "000003.jpg 1", 1),
            r"line 5: 11 values follow '000003.jpg'; expected 10",
        ),
        (
            ATTRIBUTE_FILE,
            lambda t: re.sub(r"(000004\.jpg\s+)-?1", r"\g<1>0", t),
            r"line 6: \w+ of '000004.jpg' is '0'; expected -1 or 1",
        ),
        (ATTRIBUTE_FILE, lambda t: t.replace("28\n", "29\n", 1), r"line 1: the image count is 29; expected 28"),
        (
            ATTRIBUTE_FILE,
            lambda t: "Bangs Smiling\n" + t,
            r"line 1: image count is 'Bangs Smiling'; expected the number",
        ),
        (
            PARTITION_FILE,
            lambda t: t.replace("000005.jpg 0", "000005.jpg 3"),
            r"line 5: partition is '3'; expected 0, 1 or 2",
        ),
        (
            PARTITION_FILE,
            lambda t: t.replace("000005.jpg 0\n", ""),
            r"'000005.jpg' of list_attr_celeba.txt has no line",
        ),
        (
            PARTITION_FILE,
            lambda t: t + "999999.jpg 1\n",
            r"line 29: image is '999999.jpg'; expected an image listed in",
        ),
    ],
)
def test_bad_list_file_names_the_line(tiny_celeba: Path, tmp_path: Path, file: str, edit, message: str) -> None:
    """A malformed attribute file, or a partition file that does not match it."""
    root = copy_of(tiny_celeba, tmp_path)
    path = root / file
    path.write_text(edit(path.read_text()))
    with pytest.raises(BadInputError, match=message):
        data(root)


def test_missing_image_is_named(tiny_celeba: Path, tmp_path: Path) -> None:
    root = copy_of(tiny_celeba, tmp_path)
    (root / "img_align_celeba" / "000018.jpg").unlink()
    dm = data(root)
    dm.dataset("train")  # the train images are all there
    with pytest.raises(BadInputError, match=r"000018.jpg' is listed in list_attr_celeba.txt but does not exist"):
        dm.dataset("val")


def test_teacher_outputs_round_trip_in_any_column_order(tmp_path: Path) -> None:
    path = tmp_path / "attributes.csv"
    rows = [("a.jpg", [0.25, 0.5, 1.0]), ("sub/b.jpg", [0.0, 0.125, 0.75])]
    path.write_text(format_attributes_csv(NAMES, rows))
    table = read_attributes_csv(path, NAMES[::-1])
    np.testing.assert_allclose(table["a.jpg"], [1.0, 0.5, 0.25])
    np.testing.assert_allclose(table["sub/b.jpg"], [0.75, 0.125, 0.0])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name,Bangs,Blond_Hair,Eyeglasses\n", r"line 1: the first column is 'name'; expected 'image'"),
        ("image,Bangs,Blond_Hair\n", r"has no column 'Eyeglasses'"),
        (
            "image,Bangs,Blond_Hair,Eyeglasses\na.jpg,0.1,1.5,0\n",
            r"line 2: Blond_Hair is '1.5'; expected a probability in \[",
        ),
        ("image,Bangs,Blond_Hair,Eyeglasses\na.jpg,0.1,0.5\n", r"line 2: there are 3 fields; expected 4"),
        (
            "image,Bangs,Blond_Hair,Eyeglasses\na.jpg,0,0,0\na.jpg,1,1,1\n",
            r"line 3: image is 'a.jpg'; expected each image once \(it is also on line 2",
        ),
    ],
)
def test_bad_teacher_outputs(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "attributes.csv"
    path.write_text(text)
    with pytest.raises(BadInputError, match=message):
        read_attributes_csv(path, NAMES)


def test_teacher_outputs_and_unlabelled_images(tiny_celeba: Path, tmp_path: Path) -> None:
    """Every training image (labelled or not) needs a teacher row; partial eval coverage only warns."""
    unlabelled = tiny_celeba / "unlabelled"
    names = [f"{i:06d}.jpg" for i in range(1, 24)] + [f"u{i:05d}.jpg" for i in range(1, 7)]  # no test rows
    probs = np.random.default_rng(0).random((len(names), 10))
    path = tmp_path / "attributes.csv"
    path.write_text(format_attributes_csv(data(tiny_celeba).attribute_names, list(zip(names, probs, strict=True))))
    dm = data(tiny_celeba, teacher_outputs=str(path), unlabelled_root=str(unlabelled))
    train = dm.dataset("train")
    assert len(train) == 22 and int(train.labelled.sum()) == 16
    last = train[21]
    assert last["name"] == "u00006.jpg" and not bool(last["labelled"])
    np.testing.assert_allclose(last["teacher"].numpy(), probs[-1], atol=1e-6)
    assert dm.dataset("val").teacher is not None
    with pytest.warns(UserWarning, match="emulation_ce is not computed on the test split"):
        assert dm.dataset("test").teacher is None
    assert len(dm.dataset("predict")) == 34  # all partitions + the unlabelled folder

    path.write_text(format_attributes_csv(dm.attribute_names, list(zip(names[1:], probs[1:], strict=True))))
    with pytest.raises(BadInputError, match=r"has no row for the train image '000001.jpg' \(1 of 16 missing\)"):
        data(tiny_celeba, teacher_outputs=str(path)).dataset("train")


def test_unlabelled_name_may_not_shadow_a_celeba_image(tiny_celeba: Path, tmp_path: Path) -> None:
    folder = tmp_path / "web"
    folder.mkdir()
    shutil.copy(tiny_celeba / "img_align_celeba" / "000001.jpg", folder / "000001.jpg")
    with pytest.raises(BadInputError, match=r"unlabelled image '000001.jpg' has the name of a CelebA image"):
        data(tiny_celeba, unlabelled_root=str(folder)).dataset("train")
