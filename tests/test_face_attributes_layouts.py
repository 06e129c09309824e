"""CelebA as it is found today, each layout read in place: Kaggle's copy (CSV lists, the images in
a folder inside a folder), the official release's ``Anno/``, ``Eval/`` and ``Img/`` folders, its PNG
variant (lists naming .jpg files that are .png), and one sentence for anything else."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backbone.errors import BadInputError
from datasets.attribute_files import read_attribute_file, read_partition_file
from datasets.celeba import CelebADataModule


def data(root: Path) -> CelebADataModule:
    return CelebADataModule(str(root), resolution=32, batch_size=4, num_workers=0)


def lists(flat: Path) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    names, images, labels = read_attribute_file(flat / "list_attr_celeba.txt")
    return names, images, labels, read_partition_file(flat / "list_eval_partition.txt", images)


def kaggle(flat: Path, root: Path) -> None:
    """Kaggle's copy: CSV lists with image_id, -1/1 values, the bbox list beside, images one folder deeper."""
    names, images, labels, partition = lists(flat)
    with (root / "list_attr_celeba.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", *names])
        writer.writerows([image, *(1 if v else -1 for v in row)] for image, row in zip(images, labels, strict=True))
    with (root / "list_eval_partition.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("image_id", "partition"), *zip(images, partition.tolist(), strict=True)])
    (root / "list_bbox_celeba.csv").write_text("image_id,x_1,y_1,width,height\n000001.jpg,95,71,226,313\n")
    shutil.copytree(flat / "img_align_celeba", root / "img_align_celeba" / "img_align_celeba")


def official(flat: Path, root: Path) -> None:
    """The official release unpacked: Anno/, Eval/ and Img/img_align_celeba/."""
    (root / "Anno").mkdir()
    (root / "Eval").mkdir()
    shutil.copy(flat / "list_attr_celeba.txt", root / "Anno")
    shutil.copy(flat / "list_eval_partition.txt", root / "Eval")
    shutil.copytree(flat / "img_align_celeba", root / "Img" / "img_align_celeba")


def png(flat: Path, root: Path) -> None:
    """The official PNG variant: the same lists (naming 000001.jpg), the images as 000001.png."""
    official(flat, root)
    shutil.rmtree(root / "Img" / "img_align_celeba")
    folder = root / "Img" / "img_align_celeba_png"
    folder.mkdir()
    for image in sorted((flat / "img_align_celeba").glob("*.jpg")):
        Image.open(image).save(folder / f"{image.stem}.png")


LAYOUTS: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "kaggle": (kaggle, "list_attr_celeba.csv, list_eval_partition.csv and img_align_celeba/img_align_celeba/"),
    "official": (official, "Anno/list_attr_celeba.txt, Eval/list_eval_partition.txt and Img/img_align_celeba/"),
    "png": (png, "Anno/list_attr_celeba.txt, Eval/list_eval_partition.txt and Img/img_align_celeba_png/ (.png"),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_layout_is_read_in_place_as_the_flat_one(layout: str, tiny_celeba: Path, tmp_path: Path) -> None:
    write, described = LAYOUTS[layout]
    root = tmp_path / layout
    root.mkdir()
    write(tiny_celeba, root)
    flat, other = data(tiny_celeba), data(root)
    assert other.celeba_layout.describe().startswith(described)
    assert other.attribute_names == flat.attribute_names and other.image_names == flat.image_names
    np.testing.assert_array_equal(other.labels, flat.labels)
    np.testing.assert_array_equal(other.partition, flat.partition)
    item, expected = other.dataset("val")[2], flat.dataset("val")[2]
    assert item["name"] == expected["name"] == "000019.jpg"  # the lists' name, also for a .png file
    np.testing.assert_array_equal(item["image"].numpy(), expected["image"].numpy())  # PNG: lossless copy


def test_anything_else_is_one_sentence_naming_what_was_looked_for(tiny_celeba: Path, tmp_path: Path) -> None:
    root = tmp_path / "odd"
    root.mkdir()
    (root / "attributes.txt").write_text("not a CelebA list\n")
    with pytest.raises(BadInputError, match=r"holds no CelebA attribute list; looked for list_attr_celeba.txt, "):
        data(root)
    shutil.copy(tiny_celeba / "list_attr_celeba.txt", root)
    with pytest.raises(BadInputError, match=r"Eval/list_eval_partition.txt or list_eval_partition.csv\.$"):
        data(root)
    shutil.copy(tiny_celeba / "list_eval_partition.txt", root)
    (root / "images").mkdir()  # not a folder CelebA ships
    message = (
        r"holds neither '000001.jpg' nor any other CelebA image in the image folders looked for: "
        r"img_align_celeba/, img_align_celeba/img_align_celeba/, Img/img_align_celeba/, img_align_celeba_png/ "
        r"or Img/img_align_celeba_png/\.$"
    )
    with pytest.raises(BadInputError, match=message):
        data(root)


def test_a_missing_image_in_a_nested_folder_is_named(tiny_celeba: Path, tmp_path: Path) -> None:
    """The first listed image gone: the Kaggle folder is still found, and the image named when read."""
    kaggle(tiny_celeba, tmp_path)
    (tmp_path / "img_align_celeba" / "img_align_celeba" / "000001.jpg").unlink()
    dm = data(tmp_path)
    assert dm.celeba_layout.image_folder == tmp_path / "img_align_celeba" / "img_align_celeba"
    with pytest.raises(BadInputError, match=r"000001.jpg' is listed in list_attr_celeba.csv but does not exist"):
        dm.dataset("train")
