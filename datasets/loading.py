"""DataLoaders as every data module of the project builds them (through ``TaskDataModule``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, Sampler


def eval_sampler(dataset: Dataset, trainer: Trainer | None) -> Sampler | None:
    """A sampler for validation/test/predict that visits every sample exactly once across ranks.

    Lightning's default ``DistributedSampler`` pads the last ranks with repeated samples, which
    would count some images twice in a metric; a 2-process run must give the same metrics as a
    1-process run. Lightning keeps a sampler that is already a DistributedSampler.
    """
    if trainer is None or trainer.world_size <= 1:
        return None
    return UnrepeatedDistributedSampler(
        dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False
    )


def make_loader(
    dataset: Dataset,
    *,
    train: bool,
    batch_size: int,
    num_workers: int,
    trainer: Trainer | None,
    sampler: Sampler | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    worker_init_fn: Callable[[int], None] | None = None,
) -> DataLoader:
    """A shuffled, last-batch-dropping loader for training; an exact, sequential one for eval.

    ``sampler`` replaces the training order (e.g. P identities x K images per batch for triplet
    mining). Under DDP Lightning wraps a training loader in a ``DistributedSampler`` itself unless
    its sampler already is one, so a custom sampler that splits the data across ranks subclasses
    ``DistributedSampler``. Workers persist across epochs (no re-fork every epoch).
    """
    if not train:
        sampler = eval_sampler(dataset, trainer)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        collate_fn=collate_fn,
        worker_init_fn=worker_init_fn,
        drop_last=train and len(dataset) > batch_size,  # type: ignore[arg-type]
        pin_memory=torch.cuda.is_available(),
    )
