"""SSD training throughput on the demo COCO set, and the share of step time spent waiting for data.

Part of the ``detection`` section: with the data module's default number of workers, a training
step should almost never wait for the DataLoader (the target is under 10% of the step time).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from benchmarks.common import markdown_table, print_heading
from tasks.detection.ssd import build_ssd300

TARGET_DATA_WAIT = 0.10


def measure_training_throughput(
    width: float, resolution: int, batch_size: int, warmup: int, steps: int
) -> dict[str, Any]:
    """SSD training steps on the demo COCO set: images/s and the share of time waiting for data.

    A plain loop (forward with targets, backward, SGD step) over ``CocoDataModule``'s train loader
    with its default number of workers and its default augmentation; the wait is the time
    blocked in ``next(iterator)``. The first ``warmup`` steps (worker start-up, allocator warm-up)
    are not timed; an epoch boundary inside the timed steps is (a real run pays it too).
    """
    # Imported here: the data module pulls in Lightning and albumentations, which only this needs.
    from datasets.coco import CocoDataModule

    data = CocoDataModule(root=None, resolution=resolution, batch_size=batch_size)
    loader = data.train_dataloader()
    torch.manual_seed(0)
    model = build_ssd300(width, data.num_classes, resolution).train()
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=4e-5)
    iterator = iter(loader)
    waits: list[float] = []
    totals: list[float] = []
    loss = torch.zeros(())
    for step in range(warmup + steps):
        start = time.perf_counter()
        try:
            images, targets = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            images, targets = next(iterator)
        got = time.perf_counter()
        losses = model(list(images), [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
        loss = torch.stack(list(losses.values())).sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step >= warmup:
            waits.append(got - start)
            totals.append(time.perf_counter() - start)
    del iterator, loader  # shut the (persistent) workers down
    total = sum(totals)
    return {
        "model": "ssd300",
        "width": width,
        "resolution": resolution,
        "batch": batch_size,
        "num_workers": data.num_workers,
        "num_classes": data.num_classes,
        "warmup_steps": warmup,
        "steps": steps,
        "images_per_s": batch_size * steps / total,
        "median_step_s": statistics.median(totals),
        "median_wait_s": statistics.median(waits),
        "data_wait_share": sum(waits) / total,
        "final_loss": float(loss.detach()),
    }


def judge(training: dict[str, Any]) -> dict[str, Any]:
    """The targets' entries of training: the data wait share and whether it is under the target."""
    return {
        "data_wait_share": training["data_wait_share"],
        "data_wait_met": training["data_wait_share"] < TARGET_DATA_WAIT,
    }


def print_training(training: dict[str, Any], threads: int) -> None:
    """The one-row throughput table under its heading."""
    print_heading(f"SSD training throughput (demo COCO, {threads} threads)")
    header = ["model", "α", "res", "batch", "workers", "timed steps", "images/s", "median step s", "data wait share"]
    row = [f"SSD{training['resolution']} MobileNetV1", f"{training['width']:g}", str(training["resolution"])]
    row += [str(training["batch"]), str(training["num_workers"]), str(training["steps"])]
    row += [f"{training['images_per_s']:.2f}", f"{training['median_step_s']:.2f}"]
    row += [f"{100 * training['data_wait_share']:.1f}%"]
    print(markdown_table(header, [row]))
