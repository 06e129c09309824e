"""Batches of P identities x K images for online triplet mining (FaceNet, Section 3.2: "all
anchor-positive pairs" of a batch with semi-hard negatives from the same batch need several images
of each identity in it), DDP-aware (``datasets.face_identities`` uses it for training)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import DistributedSampler

from backbone.errors import BadInputError


class PKSampler(DistributedSampler):
    """P identities x K images per batch, in consecutive runs of ``P * K`` indices.

    Identities are visited in a shuffled cycle (each equally often), and each identity's images
    in their own shuffled cycle: an identity with fewer than K images repeats some (augmentation
    makes the copies differ), so every identity contributes K images and positives. An epoch has
    about one pass over the images; every rank builds the same global sequence from
    ``seed + epoch`` and takes every ``num_replicas``-th batch, so ranks run equally many steps.
    """

    def __init__(
        self,
        labels: Sequence[int],
        identities_per_batch: int,
        images_per_identity: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(range(len(labels)), num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        # Each identity's indices as a slice of one array (not a list of ints per identity: 3.3M
        # Python ints on VGGFace2), in first-appearance order of the identities, as before.
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self._order = np.argsort(labels, kind="stable")
        values, starts, counts = np.unique(labels[self._order], return_index=True, return_counts=True)
        first_seen = np.argsort(self._order[starts], kind="stable")
        self._slices = {int(values[i]): (int(starts[i]), int(starts[i] + counts[i])) for i in first_seen}
        if len(self._slices) < 2:
            raise BadInputError(f"Triplet training needs at least 2 identities; got {len(self._slices)}.")
        self.p = min(identities_per_batch, len(self._slices))
        self.k = images_per_identity
        batches = max(num_replicas, len(labels) // (self.p * self.k))
        self.batches_per_rank = batches // num_replicas

    def __len__(self) -> int:
        return self.batches_per_rank * self.p * self.k

    def images_of(self, label: int) -> list[int]:
        """The indices of identity ``label``'s images, in dataset order."""
        start, end = self._slices[label]
        return self._order[start:end].tolist()

    def __iter__(self) -> Iterator[int]:
        rng = random.Random(self.seed + self.epoch)
        identities = list(self._slices)
        cycle: list[int] = []
        images: dict[int, list[int]] = {label: [] for label in identities}
        batches: list[list[int]] = []
        for _ in range(self.batches_per_rank * self.num_replicas):
            chosen: list[int] = []
            while len(chosen) < self.p:
                if not cycle:
                    cycle = rng.sample(identities, len(identities))
                label = cycle.pop()
                if label in chosen:  # only at a reshuffle boundary: put it back for the next batch
                    cycle.insert(0, label)
                    continue
                chosen.append(label)
            batch = []
            for label in chosen:
                pool = images[label]
                for _ in range(self.k):
                    if not pool:
                        members = self.images_of(label)
                        pool.extend(rng.sample(members, len(members)))
                    batch.append(pool.pop())
            batches.append(batch)
        for batch in batches[self.rank :: self.num_replicas]:
            yield from batch
