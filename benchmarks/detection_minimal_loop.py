"""The minimal SSD training loop of issue 12, and switches that move the project's choices into it.

The loop, as a torchvision user writes it: the project's SSD300 (``tasks.detection.ssd``: TF's
anchors, 1x1 heads) at width ``--width``; images read with PIL, flipped with probability 0.5 and
handed at their own size to the detector, whose own transform (torchvision's
``GeneralizedRCNNTransform``) resizes them to 300x300 and normalises them; batches of 16 drawn
with replacement; plain SGD, lr 0.05, momentum 0.9, weight decay 4e-5 on every parameter, at a
constant lr; no validation until the end. After training it scores COCO mAP on val under several
evaluation settings (they need no retraining).

Each switch replaces one part of the loop by what ``python -m tasks.detection fit`` does, so an
ablation at equal steps shows which difference costs accuracy::

    python -m benchmarks.detection_minimal_loop --steps 300                    # the loop itself
    python -m benchmarks.detection_minimal_loop --steps 300 --pipeline project # the project's data
    python -m benchmarks.detection_minimal_loop --steps 300 --schedule warmup_cosine
    python -m benchmarks.detection_minimal_loop --steps 300 --decay groups
    python -m benchmarks.detection_minimal_loop --root DEMO --json runs/ablation.json ...

``--root`` defaults to the second generated set (``datasets.demo.coco_shapes``); ``--json``
appends one record per run. ``benchmarks.detection_training`` times this loop next to the
Lightning task.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from datasets.coco import CocoDataModule, collate_detection
from datasets.coco.annotations import read_annotation_json
from datasets.demo.coco_shapes import ensure_shapes_set
from tasks.detection.evaluation import CocoEvaluator, load_ground_truth
from tasks.detection.ssd import build_ssd300
from tasks.optim import param_groups, warmup_cosine

PROGRESS_EVERY = 50  # steps between two progress lines on stderr
# (name, score_thresh, nms_thresh, detections_per_img) the trained model is scored with.
EVAL_SETTINGS: tuple[tuple[str, float, float, int], ...] = (
    ("project (0.01, NMS 0.6, 100)", 0.01, 0.6, 100),
    ("torchvision SSD (0.01, NMS 0.45, 200)", 0.01, 0.45, 200),
    ("low floor (0.001, NMS 0.6, 100)", 0.001, 0.6, 100),
)


class TorchvisionCoco(Dataset[tuple[Tensor, dict[str, Any]]]):
    """A COCO split as a torchvision user reads it: PIL, v2 flip, the image at its own size."""

    def __init__(self, root: Path, split: str, category_ids: Sequence[int], train: bool) -> None:
        data = read_annotation_json(root / "annotations" / f"instances_{split}2017.json")
        self.folder = root / f"{split}2017"
        self.images = sorted(data["images"], key=lambda im: int(im["id"]))
        label = {cid: k + 1 for k, cid in enumerate(category_ids)}
        self.boxes: dict[int, list[tuple[list[float], int]]] = {int(im["id"]): [] for im in self.images}
        for ann in data["annotations"]:
            if not ann.get("iscrowd", 0):
                x, y, w, h = ann["bbox"]
                self.boxes[int(ann["image_id"])].append(([x, y, x + w, y + h], label[int(ann["category_id"])]))
        self.flip = v2.RandomHorizontalFlip(0.5) if train else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        info = self.images[index]
        with Image.open(self.folder / info["file_name"]) as pil:
            image = v2.functional.to_dtype(v2.functional.to_image(pil.convert("RGB")), torch.float32, scale=True)
        objects = self.boxes[int(info["id"])]
        boxes = tv_tensors.BoundingBoxes(
            torch.tensor([b for b, _ in objects], dtype=torch.float32).reshape(-1, 4),
            format="XYXY",
            canvas_size=tuple(image.shape[-2:]),
        )
        if self.flip is not None:
            image, boxes = self.flip(image, boxes)
        labels = torch.tensor([lab for _, lab in objects], dtype=torch.int64)
        return image, {"boxes": boxes.as_subclass(Tensor), "labels": labels, "image_id": int(info["id"])}


def loaders(
    root: Path,
    pipeline: str,
    batch: int,
    steps: int,
    sampling: str,
    workers: int,
    seed: int,
    resolution: int = 300,
) -> tuple[DataLoader, DataLoader, CocoDataModule]:
    """(train loader yielding exactly ``steps`` batches, val loader, the project's data module)."""
    data = CocoDataModule(str(root), resolution=resolution, batch_size=batch, num_workers=workers)
    if pipeline == "project":
        train_set, val_set = data.dataset("train"), data.dataset("val")
    else:
        train_set = TorchvisionCoco(root, "train", data.category_ids, train=True)
        val_set = TorchvisionCoco(root, "val", data.category_ids, train=False)
    generator = torch.Generator().manual_seed(seed)
    if sampling == "replacement":
        sampler = RandomSampler(train_set, replacement=True, num_samples=steps * batch, generator=generator)
    else:  # shuffled epochs, the last partial batch dropped, as the Lightning task's loader
        epochs = math.ceil(steps / (len(train_set) // batch))
        order = torch.cat([torch.randperm(len(train_set), generator=generator)[: len(train_set) // batch * batch]
                           for _ in range(epochs)])  # fmt: skip
        sampler = order[: steps * batch].tolist()
    common = {"collate_fn": collate_detection, "num_workers": workers, "persistent_workers": False}
    worker_init = CocoDataModule.worker_init_fn if pipeline == "project" else None
    train = DataLoader(train_set, batch_size=batch, sampler=sampler, worker_init_fn=worker_init, **common)
    val = DataLoader(val_set, batch_size=batch, shuffle=False, **common)
    return train, val, data


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, decay: str) -> torch.optim.Optimizer:
    """Plain SGD with decay on every parameter (``all``) or the project's groups (``groups``)."""
    params: Any = model.parameters() if decay == "all" else param_groups(model, weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)


def batches(loader: DataLoader) -> Iterator[tuple[Any, list[dict[str, Any]]]]:
    for images, targets in loader:
        yield images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]


def train(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, schedule: Any) -> dict[str, float]:
    """The loop: forward with targets, backward, step. Returns timing and the last loss."""
    model.train()
    start = time.perf_counter()
    wait = 0.0
    steps = 0
    loss = torch.zeros(())
    fetch = time.perf_counter()
    for images, targets in batches(loader):
        wait += time.perf_counter() - fetch
        losses = model(list(images), targets)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        steps += 1
        if steps % PROGRESS_EVERY == 0:
            print(f"step {steps}, {time.perf_counter() - start:.0f} s, loss {float(loss):.3f}", file=sys.stderr)
        fetch = time.perf_counter()
    seconds = time.perf_counter() - start
    return {"steps": steps, "train_s": seconds, "steps_per_s": steps / seconds, "data_wait_share": wait / seconds,
            "last_loss": float(loss.detach())}  # fmt: skip


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, data: CocoDataModule) -> dict[str, dict[str, float]]:
    """COCO stats of ``model`` on val under each of ``EVAL_SETTINGS``."""
    model.eval()
    outputs: list[tuple[list[dict[str, Tensor]], list[dict[str, Any]]]] = []
    results: dict[str, dict[str, float]] = {}
    ground_truth = load_ground_truth(data.val_ground_truth)  # indexed once for every setting
    for name, score, nms, dets in EVAL_SETTINGS:
        model.score_thresh, model.nms_thresh, model.detections_per_img = score, nms, dets
        evaluator = CocoEvaluator(ground_truth, data.label_to_category_id)
        outputs = [(model(list(images)), targets) for images, targets in loader]
        for predictions, targets in outputs:
            evaluator.update(predictions, targets)
        stats = evaluator.compute(per_category=True)
        results[name] = {k: round(v, 4) for k, v in stats.items()}
    return results


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Train once with ``args``' choices, evaluate, and return the record."""
    torch.manual_seed(args.seed)
    root = Path(args.root) if args.root else ensure_shapes_set()
    train_loader, val_loader, data = loaders(
        root, args.pipeline, args.batch, args.steps, args.sampling, args.workers, args.seed, args.resolution
    )
    model = build_ssd300(args.width, data.num_classes, args.resolution)
    if args.bn_momentum is not None:
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = args.bn_momentum
    optimizer = make_optimizer(model, args.lr, args.weight_decay, args.decay)
    schedule = None
    if args.schedule != "constant":  # 1 epoch of warm-up, cosine to 0 (from --decay-start of the run)
        warmup = len(train_loader.dataset) // args.batch  # type: ignore[arg-type]
        schedule = warmup_cosine(optimizer, args.steps, warmup, decay_start=args.decay_start)
    timing = train(model, train_loader, optimizer, schedule)
    record = {"config": {k: v for k, v in vars(args).items() if k != "json"}, "root": str(root), **timing}
    record["eval"] = evaluate(model, val_loader, data)
    return record


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=None, help="COCO-layout set; default: the second generated set")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--resolution", type=int, default=300)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--weight-decay", type=float, default=4e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pipeline", choices=["torchvision", "project"], default="torchvision",
                        help="project: CocoDataModule's cv2 read + albumentations flip + resize to 300")  # fmt: skip
    parser.add_argument("--schedule", choices=["constant", "warmup_cosine"], default="constant")
    parser.add_argument("--decay-start", type=float, default=0.0,
                        help="warmup_cosine: share of the run held at the full lr before the cosine")  # fmt: skip
    parser.add_argument("--decay", choices=["all", "groups"], default="all",
                        help="groups: none on BN, biases and depthwise filters (tasks.optim.param_groups)")  # fmt: skip
    parser.add_argument("--sampling", choices=["replacement", "epochs"], default="replacement")
    parser.add_argument("--bn-momentum", type=float, default=None, help="BatchNorm momentum; default torch's 0.1")
    parser.add_argument("--json", type=Path, default=None, help="append the run's record to this JSON list")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    record = run(args)
    print(json.dumps({k: v for k, v in record.items() if k != "eval"}, indent=None))
    for name, stats in record["eval"].items():
        print(f"{name}: mAP {stats['mAP']:.3f}  mAP50 {stats['mAP50']:.3f}")
    if args.json is not None:
        previous = json.loads(args.json.read_text()) if args.json.is_file() else []
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([*previous, record], indent=1))
    return record


if __name__ == "__main__":
    main()
