"""Collectives for metrics that must be computed once over the whole dataset, across DDP ranks.

Lightning's ``self.all_gather`` handles tensors of equal shape; detections, embeddings with their
paths and prediction records are ragged Python objects, so every task gathers them with these
two helpers (``torch.distributed``'s object collectives, a no-op in a single process).
"""

from __future__ import annotations

from typing import Any, TypeVar

import torch.distributed as dist

T = TypeVar("T")


def is_distributed() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def global_rank() -> int:
    """This process's global rank (0 outside a process group)."""
    return dist.get_rank() if is_distributed() else 0


def gather_objects(local: T) -> list[T]:
    """Every rank's ``local`` object, in rank order, on every rank (a collective under DDP)."""
    if not is_distributed():
        return [local]
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    return parts


def gather_to_zero(local: T) -> list[T] | None:
    """Every rank's ``local`` object, in rank order, on rank 0 only (None elsewhere): for shares only
    rank 0 merges, so no rank receives what it does not use (a collective under DDP)."""
    if not is_distributed():
        return [local]
    parts: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(local, parts, dst=0)
    return parts


def broadcast_from_zero(value: T) -> T:
    """Rank 0's ``value`` on every rank (a collective under DDP)."""
    if not is_distributed():
        return value
    payload: list[Any] = [value]
    dist.broadcast_object_list(payload, src=0)
    return payload[0]
