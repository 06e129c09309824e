"""``--data.shards_order stream``: training from shards in litdata's streamed order (``datasets.shards``).

litdata's ``StreamingDataset`` shuffles the chunks and the items within a window of each with the
run's seed and epoch, gives each rank (and each loader worker) whole chunks of its own, every item
once per epoch (under DDP it drops the last items that would leave the ranks unequal), and reads
chunks in order, downloading the next ones ahead: what data larger than a local disk needs. Its
``StreamingDataLoader`` counts the samples it has yielded; Lightning saves that state in the
checkpoint (the loader has ``state_dict``/``load_state_dict``) and a resumed run goes on from the
same place in the epoch instead of starting it again.

Each streamed item is made into the task's sample by the task's own dataset (the one random access
reads), handed the item the stream has read (``ShardImages.give``): the same transforms and the
same records. A dataset that keeps part of its split (geolocation's photos inside a cell) answers
-1 for the others, which are dropped from their batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from litdata import StreamingDataLoader, StreamingDataset
from torch.utils.data import Dataset, default_collate

from datasets.shards import ShardImages, is_remote


class ShardStream(StreamingDataset):
    """The training split's items in litdata's order, each made by ``dataset`` (its images: ``images``)."""

    def __init__(self, dataset: Dataset, images: ShardImages, seed: int) -> None:
        cache = os.environ.get("LITDATA_CACHE_DIR") if is_remote(images.location) else None  # as ShardImages
        super().__init__(images.location, cache_dir=cache, shuffle=True, seed=seed)
        self.task_dataset = dataset
        self.task_images = images

    def __getitem__(self, index: Any) -> Any:
        item = super().__getitem__(index)
        position = self.task_images.position(int(item["index"]))
        if position < 0:
            return None
        self.task_images.give(item)
        return self.task_dataset[position]


class WithoutNone:
    """A collate function of the items that are not None (a class: loader workers pickle it)."""

    def __init__(self, collate_fn: Callable[[list[Any]], Any] | None) -> None:
        self.collate_fn = collate_fn or default_collate

    def __call__(self, batch: list[Any]) -> Any:
        return self.collate_fn([item for item in batch if item is not None])


def stream_loader(
    dataset: Dataset,
    batch_size: int,
    num_workers: int,
    collate_fn: Callable[[list[Any]], Any] | None,
    worker_init_fn: Callable[[int], None] | None,
    pin_memory: bool,
) -> StreamingDataLoader:
    """The training loader of ``dataset`` (read from shards) in streamed order; the run's seed shuffles."""
    images = getattr(dataset, "shards", None)
    assert isinstance(images, ShardImages), "only a dataset read from shards streams"
    seed = int(os.environ.get("PL_GLOBAL_SEED", 0))  # Lightning's seed_everything sets it
    return StreamingDataLoader(
        ShardStream(dataset, images, seed),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=WithoutNone(collate_fn),
        worker_init_fn=worker_init_fn,
        drop_last=True,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )
