"""COCO-layout data: label mapping, box cleaning, augmentation validity, clear errors, the demo."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

from backbone.errors import BadInputError
from datasets.coco import CocoDataModule, CocoDetection
from datasets.coco.dataset import predict_transform
from datasets.coco.transforms import AugmentPolicy
from datasets.demo.coco import ensure_demo_coco, write_coco_split
from datasets.images import PredictFolder, collate_with_info

pytestmark = pytest.mark.filterwarnings("ignore:.*degenerate boxes:UserWarning")

# Category ids deliberately unsorted and non-contiguous in the file.
CATEGORIES = [{"id": 9, "name": "nine"}, {"id": 2, "name": "two"}, {"id": 5, "name": "five"}]


def _ann(ann_id: int, image_id: int, cat: int, bbox: list[float], crowd: int = 0) -> dict[str, Any]:
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": bbox, "area": 1.0, "iscrowd": crowd}


def write_tiny_coco(root: Path, split: str = "val") -> Path:
    """Four 64x48 images: 1 normal, 1 with crowd + degenerate boxes, 1 partly outside, 1 empty."""
    (root / f"{split}2017").mkdir(parents=True)
    (root / "annotations").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    images = []
    for image_id in (11, 12, 13, 14):
        name = f"{image_id:012d}.jpg"
        cv2.imwrite(str(root / f"{split}2017" / name), rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        images.append({"id": image_id, "file_name": name, "width": 64, "height": 48})
    annotations = [
        _ann(1, 11, 9, [4, 4, 20, 16]),
        _ann(2, 11, 2, [30, 10, 20, 30]),
        _ann(3, 12, 5, [10, 10, 30, 20]),
        _ann(4, 12, 5, [0, 0, 64, 48], crowd=1),  # crowd: ignored as a target
        _ann(5, 12, 2, [5, 5, 0, 10]),  # zero width: dropped
        _ann(6, 12, 2, [500, 5, 10, 10]),  # entirely outside: dropped
        _ann(7, 13, 9, [50, 30, 30, 30]),  # sticks out: clipped to (50, 30, 64, 48)
    ]
    payload = {"images": images, "annotations": annotations, "categories": CATEGORIES}
    path = root / "annotations" / f"instances_{split}2017.json"
    path.write_text(json.dumps(payload))
    return path


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    write_tiny_coco(tmp_path, "val")
    write_tiny_coco(tmp_path, "train")
    return tmp_path


def _dataset(root: Path, augment: AugmentPolicy = "none", resolution: int = 64) -> CocoDetection:
    return CocoDetection(root / "val2017", root / "annotations" / "instances_val2017.json", resolution, augment)


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo-cache")


def test_non_contiguous_ids_map_both_ways(tiny: Path) -> None:
    ds = _dataset(tiny)
    assert ds.category_ids == [2, 5, 9]
    assert ds.label_to_category_id == {1: 2, 2: 5, 3: 9}
    assert ds.category_to_label == {2: 1, 5: 2, 9: 3}
    assert ds.category_names == ["two", "five", "nine"]
    assert ds.num_classes == 4
    _, target = ds[0]  # image 11: cat 9 then cat 2
    assert target["labels"].tolist() == [3, 1]


def test_crowd_ignored_degenerate_dropped_and_reported_once(tiny: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = _dataset(tiny)
    reports = [w for w in caught if "degenerate" in str(w.message)]
    assert len(reports) == 1 and "dropped 2" in str(reports[0].message) and "clipped 1" in str(reports[0].message)
    assert (ds.n_crowd, ds.n_dropped, ds.n_clipped) == (1, 2, 1)
    _, target = ds[1]  # image 12: only the one valid, non-crowd box
    assert target["labels"].tolist() == [2]
    _, target = ds[2]  # image 13: clipped to the image, in resized (64x64) pixels
    assert torch.allclose(target["boxes"], torch.tensor([[50.0, 40.0, 64.0, 64.0]]))


def test_empty_image_kept_and_eval_resize(tiny: Path) -> None:
    ds = _dataset(tiny, resolution=96)
    assert len(ds) == 4
    image, target = ds[3]
    assert image.shape == (3, 96, 96) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["image_id"] == 14 and target["orig_size"] == (48, 64) and target["input_size"] == (96, 96)
    _, first = ds[0]  # [4, 4, 20, 16] xywh in 64x48 -> xyxy scaled by (96/64, 96/48)
    assert torch.allclose(first["boxes"][0], torch.tensor([6.0, 8.0, 36.0, 40.0]))


@pytest.mark.parametrize("policy", ["ssd", "light"])
def test_train_augmentation_keeps_boxes_valid(tiny: Path, policy: AugmentPolicy) -> None:
    ds = _dataset(tiny, policy, resolution=64)
    n_boxes = 0
    for i in range(240):
        image, target = ds[i % len(ds)]
        boxes, labels = target["boxes"], target["labels"]
        assert image.shape == (3, 64, 64)
        assert boxes.shape == (len(labels), 4) and labels.dtype == torch.int64
        assert ((labels >= 1) & (labels <= 3)).all()
        assert (boxes >= 0).all() and (boxes <= 64).all()
        assert ((boxes[:, 2] - boxes[:, 0]) >= 1).all() and ((boxes[:, 3] - boxes[:, 1]) >= 1).all()
        n_boxes += len(boxes)
    assert n_boxes > 100  # the augmentation does not simply throw the objects away


@pytest.mark.parametrize("policy", ["ssd", "light"])
def test_augmenting_in_the_main_process_repeats_under_the_same_seed(tiny: Path, policy: AugmentPolicy) -> None:
    """``--data.num_workers 0``: the augmentations follow the run's seed, not the OS's entropy (the
    same command trained another model on every run)."""

    def augmented(seed: int) -> list[list[float]]:
        torch.manual_seed(seed)  # what --seed_everything does before the data module is set up
        ds = _dataset(tiny, policy)
        return [ds[i % len(ds)][1]["boxes"].flatten().tolist() for i in range(24)]

    first = augmented(0)
    assert augmented(0) == first
    assert augmented(1) != first


def test_missing_image_names_the_file(tiny: Path) -> None:
    (tiny / "val2017" / "000000000013.jpg").unlink()
    with pytest.raises(BadInputError, match="000000000013.jpg"):
        _dataset(tiny)


def test_malformed_json_names_the_file(tiny: Path) -> None:
    path = tiny / "annotations" / "instances_val2017.json"
    path.write_text('{"images": [')
    with pytest.raises(BadInputError, match="instances_val2017.json.*not valid JSON"):
        _dataset(tiny)
    path.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(BadInputError, match="instances_val2017.json.*'categories'"):
        _dataset(tiny)
    path.write_text(json.dumps({"images": [{"id": 1}], "annotations": [], "categories": CATEGORIES}))
    with pytest.raises(BadInputError, match="instances_val2017.json.*file_name"):
        _dataset(tiny)


def test_datamodule_on_a_root_and_its_errors(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    dm = CocoDataModule(root=str(tiny), resolution=64, batch_size=3, num_workers=0)
    assert dm.num_classes == 4 and dm.label_to_category_id == {1: 2, 2: 5, 3: 9}
    dm.setup("fit")
    images, targets = next(iter(dm.train_dataloader()))
    assert images.shape == (3, 3, 64, 64) and len(targets) == 3
    assert sorted(info["id"] for info in dm.val_ground_truth()["images"]) == [11, 12, 13, 14]
    # Under DDP the eval loader visits every image exactly once across ranks.
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1)  # type: ignore[assignment]
    sampler = dm.val_dataloader().sampler
    assert isinstance(sampler, UnrepeatedDistributedSampler) and list(sampler) == [1, 3]

    empty = tmp_path_factory.mktemp("not-coco")
    # the val split (which defines the labels) at once; the train split when fit builds it
    with pytest.raises(BadInputError, match="instances_val2017.json"):
        CocoDataModule(root=str(empty))


def test_predict_folder(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((30, 40, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((50, 20, 3), np.uint8))
    (tmp_path / "sub").mkdir()
    cv2.imwrite(str(tmp_path / "sub" / "c.jpg"), np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "._a.jpg").write_bytes(b"macOS resource fork, not an image")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    folder = PredictFolder(tmp_path, predict_transform(32))
    assert [p.relative_to(tmp_path).as_posix() for p in folder.files] == ["a.jpg", "b.png", "broken.jpg", "sub/c.jpg"]
    with pytest.warns(UserWarning, match="broken.jpg"):
        images, infos = collate_with_info([folder[i] for i in range(4)])
    assert images.shape == (3, 3, 32, 32)  # the unreadable file is skipped, not fatal
    assert [(Path(t["path"]).name, t["orig_size"]) for t in infos] == [
        ("a.jpg", (50, 20)),
        ("b.png", (30, 40)),
        ("c.jpg", (10, 10)),
    ]


def test_demo_generation_is_deterministic(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_coco_split(tmp_path / name, "val")
    json_a = (tmp_path / "a" / "annotations" / "instances_val2017.json").read_bytes()
    assert json_a == (tmp_path / "b" / "annotations" / "instances_val2017.json").read_bytes()
    for image in sorted((tmp_path / "a" / "val2017").iterdir())[:10]:
        assert image.read_bytes() == (tmp_path / "b" / "val2017" / image.name).read_bytes()


def test_demo_is_in_the_coco_layout(demo_cache: Path) -> None:
    root = ensure_demo_coco(demo_cache)
    assert ensure_demo_coco(demo_cache) == root  # cached: the second call generates nothing
    counts = {}
    for split in ("train", "val"):
        coco = COCO(str(root / "annotations" / f"instances_{split}2017.json"))
        counts[split] = len(coco.getImgIds())
        assert sorted(coco.getCatIds()) == [1, 3, 7, 12]
        empty = [i for i in coco.getImgIds() if not coco.getAnnIds(imgIds=i)]
        assert 0 < len(empty) <= 0.1 * counts[split]
        for image in coco.loadImgs(coco.getImgIds()[:5]):
            assert (root / f"{split}2017" / image["file_name"]).is_file()
        for ann in coco.loadAnns(coco.getAnnIds()):
            x, y, w, h = ann["bbox"]
            assert ann["iscrowd"] == 0 and w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 320 and y + h <= 320
    assert counts == {"train": 240, "val": 60}
    assert not [p for p in demo_cache.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_datamodule_without_root_uses_the_demo(
    demo_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MOBILENET_DEMO_DIR", str(demo_cache))
    dm = CocoDataModule(root=None, resolution=96, batch_size=4, num_workers=0)
    assert "Using the built-in demo dataset at" in capsys.readouterr().out
    assert dm.root == ensure_demo_coco(demo_cache) and dm.root.name.startswith("coco-v1-")
    assert dm.num_classes == 5 and dm.label_to_category_id == {1: 1, 2: 3, 3: 7, 4: 12}
    dm.setup("validate")
    images, targets = next(iter(dm.val_dataloader()))
    assert images.shape == (4, 3, 96, 96) and all(t["input_size"] == (96, 96) for t in targets)
