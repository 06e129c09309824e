"""The ImageNet-style and Stanford Dogs loaders on data written in their real layouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from scipy.io import loadmat

from backbone.errors import BadInputError
from datasets.demo.textures import write_dogs_list
from datasets.imagenet import ImageFolderDataModule
from datasets.stanford_dogs import StanfordDogsDataModule, read_box, read_list


def test_imagenet_layout(tiny_imagenet: Path) -> None:
    data = ImageFolderDataModule(str(tiny_imagenet), resolution=64, batch_size=4, num_workers=0)
    assert data.num_classes == 3
    data.setup("fit")
    assert len(data.dataset("train")) == 24 and len(data.dataset("val")) == 9
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (4, 3, 64, 64) and labels.max() < 3


def test_dogs_lists_are_real_matlab_cells(tiny_dogs: Path) -> None:
    raw = loadmat(str(tiny_dogs / "lists" / "train_list.mat"))
    assert raw["file_list"].shape == (18, 1) and raw["labels"].min() == 1  # 1-based, N x 1 cells
    entries = read_list(tiny_dogs / "lists" / "train_list.mat")
    assert entries[0][1] == 0 and entries[-1][1] == 2
    assert all((tiny_dogs / "Images" / f).is_file() for f, _ in entries)


def test_dogs_module_and_crop_to_box(tiny_dogs: Path) -> None:
    data = StanfordDogsDataModule(str(tiny_dogs), resolution=64, num_workers=0, crop_to_box=True)
    assert data.num_classes == 3 and data.class_names[0].startswith("n0")
    data.setup("fit")
    sample = data.dataset("train").samples[0]
    stem = sample.path.relative_to(tiny_dogs / "Images").with_suffix("")
    assert sample.box == read_box(tiny_dogs / "Annotation" / stem)
    image, label = data.dataset("train")[0]
    assert image.shape == (3, 64, 64) and label == 0


def test_dogs_extra_web_images(tiny_dogs: Path, tmp_path: Path) -> None:
    extra = tmp_path / "web"
    breed = sorted((tiny_dogs / "Images").iterdir())[1].name.split("-", 1)[1]
    (extra / breed).mkdir(parents=True)
    shutil.copy(next((tiny_dogs / "Images").rglob("*.jpg")), extra / breed / "web.jpg")
    data = StanfordDogsDataModule(str(tiny_dogs), num_workers=0, extra_root=str(extra))
    samples = data.train_samples()
    assert len(samples) == 19 and samples[-1].label == 1
    (extra / "Not_a_breed").mkdir()
    with pytest.raises(BadInputError, match="Not_a_breed"):
        data.train_samples()


def test_missing_pieces_are_named(tiny_dogs: Path, tiny_imagenet: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        ImageFolderDataModule(str(tmp_path / "nowhere"))
    with pytest.raises(BadInputError, match=r"train/<class>"):
        ImageFolderDataModule(str(tmp_path))
    copy = tmp_path / "dogs"
    shutil.copytree(tiny_dogs, copy)
    (copy / "lists" / "test_list.mat").unlink()
    data = StanfordDogsDataModule(str(copy), num_workers=0)
    with pytest.raises(BadInputError, match="test_list.mat.*does not exist"):
        data.setup("test")


def test_wrong_label_and_unreadable_image(tiny_dogs: Path, tmp_path: Path) -> None:
    copy = tmp_path / "dogs"
    shutil.copytree(tiny_dogs, copy)
    entries = [(f, label + 1) for f, label in read_list(copy / "lists" / "test_list.mat")]
    entries[0] = (entries[0][0], 3)  # a breed-0 image listed under breed 3
    write_dogs_list(copy / "lists" / "test_list.mat", entries)
    with pytest.raises(BadInputError, match="the folder of its label 3"):
        StanfordDogsDataModule(str(copy), num_workers=0).setup("test")
    copy = tmp_path / "dogs2"
    shutil.copytree(tiny_dogs, copy)
    data = StanfordDogsDataModule(str(copy), num_workers=0)
    data.setup("fit")
    broken = data.dataset("train").samples[4].path
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(BadInputError, match=f"{broken.name}.*could not be read"):
        data.dataset("train")[4]


def test_demo_is_deterministic(tmp_path: Path) -> None:
    from datasets.demo.textures import write_imagenet_demo

    for name in ("a", "b"):
        write_imagenet_demo(tmp_path / name, per_class_train=1, per_class_val=1, size=32, num_classes=2)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpg"))
    assert len(files) == 4
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
