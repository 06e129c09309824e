"""``python -m benchmarks.data_probe KIND ROOT BATCHES WORKERS``: one data set-up, measured in a fresh
process (so each kind starts from the same empty interpreter), printed as one JSON line.

KIND ``geo`` sets up an MP-16-sized ``train.csv`` (the CSV read, the fixed validation sample,
the partition at Table 11's T1 = 1400; no images, so without the image check). KIND ``coco`` is
the project's ``CocoDetection`` (flat arrays) on ``ROOT``'s COCO train split; ``coco-dicts`` is
its anchor: the way the data module held a split before (the parsed JSON, a record dict per image,
a target tuple per image, the ground-truth dict). ``faces`` is the project's ``FaceDataModule`` on
``ROOT/identities`` (packed paths); ``faces-paths`` its anchor, the identity folders as lists of
``Path`` objects with lists of labels. The anchors are kept here so the ratios are measured in the
same run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from datasets.images import image_files, read_rgb, read_rgb_array

RESOLUTION = 64  # the data path's cost, not the model's: tiny inputs


def pss_gb(pid: int | str = "self") -> float:
    """Proportional set size of a process (shared pages split between their users), in GB."""
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1e6
    return float("nan")


def children(pid: int) -> list[int]:
    """The direct child processes of ``pid`` (the DataLoader's workers)."""
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as handle:
            found += [int(p) for p in handle.read().split()]
    return found


class DictReference(Dataset[tuple[torch.Tensor, dict[str, Any]]]):
    """The anchor: a split held as Python objects, as the data module held it before compact arrays."""

    def __init__(self, image_dir: Path, annotation_file: Path) -> None:
        from datasets.coco.annotations import clean_boxes, read_annotation_json

        data = read_annotation_json(annotation_file)
        self.image_dir = image_dir
        self.images = {int(info["id"]): info for info in data["images"]}
        to_label = {int(c["id"]): i + 1 for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
        present = set(os.listdir(image_dir))
        self.image_ids = sorted(self.images)
        assert all(self.images[i]["file_name"] in present for i in self.image_ids)
        by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in data["annotations"]:
            by_image.setdefault(int(ann["image_id"]), []).append(ann)
        self.targets, kept_all = [], []
        for image_id in self.image_ids:
            info = self.images[image_id]
            boxes, labels, kept, *_ = clean_boxes(by_image.get(image_id, []), info["width"], info["height"], to_label)
            self.targets.append((boxes, labels))
            kept_all += kept
        self.ground_truth = {**data, "annotations": kept_all}

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        from datasets.coco.transforms import finalize_boxes, resize_only, to_tensor

        info = self.images[self.image_ids[index]]
        image = read_rgb_array(self.image_dir / info["file_name"])
        boxes, labels = self.targets[index]
        image, boxes = resize_only(image, boxes, RESOLUTION)
        box_tensor, label_tensor = finalize_boxes(boxes, labels, *image.shape[:2])
        return to_tensor(image), {"boxes": box_tensor, "labels": label_tensor, "image_id": info["id"]}


class PathListReference(Dataset[tuple[torch.Tensor, int]]):
    """The anchor of ``faces``: every identity folder's images as ``Path`` objects in lists."""

    def __init__(self, root: Path) -> None:
        from datasets.face_identities import face_eval_transform

        identities = {d.name: image_files(d) for d in sorted(root.iterdir()) if d.is_dir()}
        self.paths: list[Path] = []
        self.labels: list[int] = []
        for label, files in enumerate(identities.values()):
            self.paths += files
            self.labels += [label] * len(files)
        self.transform = face_eval_transform(RESOLUTION)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(read_rgb(self.paths[index])), self.labels[index]


def _build(kind: str, root: Path) -> tuple[Dataset, Any, Any]:
    """The dataset a loader reads, its collate function and its worker init. Each kind imports only
    its own task's data stack, so the main process's PSS is that task's, not every task's."""
    if kind.startswith("coco"):
        from datasets.coco.dataset import CocoDetection, collate_detection
        from datasets.coco.transforms import worker_init

        annotations = root / "annotations" / "instances_train2017.json"
    if kind == "coco":
        return CocoDetection(root / "train2017", annotations, RESOLUTION, "none"), collate_detection, worker_init
    if kind == "coco-dicts":
        return DictReference(root / "train2017", annotations), collate_detection, worker_init
    if kind == "faces":
        from datasets.face_identities import FaceDataModule

        data = FaceDataModule(str(root / "identities"), resolution=RESOLUTION, num_workers=0)
        data.setup("fit")
        return data.dataset("train"), None, None
    if kind == "geo":  # reading the CSV, the validation split and the partition (fit's set-up without images)
        from datasets.geo_photos import GeoPhotosDataModule

        data = GeoPhotosDataModule(str(root), max_photos=1400, min_photos=50, num_workers=0)
        data.split_tables()
        assert data.partitions
        return data, None, None
    if kind == "faces-paths":
        return PathListReference(root / "identities"), None, None
    raise ValueError(f"unknown probe kind {kind!r}")


def _import(kind: str) -> None:
    """The kind's modules, imported before the base PSS is taken (their libraries are no data)."""
    import importlib

    module = {"coco": "datasets.coco.dataset", "faces": "datasets.face_identities", "geo": "datasets.geo_photos"}
    importlib.import_module(module.get(kind.split("-")[0], "datasets.images"))


def probe(kind: str, root: Path, batches: int, workers: int) -> dict[str, Any]:
    import gc

    _import(kind)
    gc.collect()
    base = pss_gb()
    start = time.perf_counter()
    dataset, collate, init = _build(kind, root)
    gc.collect()
    setup_s, main = time.perf_counter() - start, pss_gb()
    result: dict[str, Any] = {"kind": kind, "setup_s": setup_s, "pss_main_gb": main, "pss_data_gb": main - base}
    if batches:
        loader = DataLoader(
            dataset, batch_size=16, shuffle=True, num_workers=workers, collate_fn=collate,
            worker_init_fn=init, persistent_workers=workers > 0,
        )  # fmt: skip
        me = os.getpid()
        others = set(children(me))  # processes started before (a test run's helpers): not this loader's
        iterator = iter(loader)

        def read(count: int) -> None:
            nonlocal iterator
            for _ in range(count):
                try:
                    next(iterator)
                except StopIteration:
                    iterator = iter(loader)

        # Growth is counted after a warm-up (every worker's decoder, allocator arenas and prefetch
        # settle in the first batches), so what remains is copy-on-read of the split itself.
        warmup = max(1, min(100, batches // 10))
        read(warmup)
        workers = [p for p in children(me) if p not in others]
        result["pss_all_start_gb"] = pss_gb() + sum(pss_gb(p) for p in workers)
        read(batches - warmup)
        result["pss_all_end_gb"] = pss_gb() + sum(pss_gb(p) for p in workers)
        result["workers"] = len(workers)
    return result


if __name__ == "__main__":
    torch.set_num_threads(1)
    np.seterr(all="ignore")
    kind, root, batches, workers = sys.argv[1:5]
    print(json.dumps(probe(kind, Path(root), int(batches), int(workers))))
