"""Face identities in shards (``datasets.shards``): what ``FaceDataModule`` reads from ``--data.shards``.

An image's record is its path (under ``--data.root``, or the LFW root, or whole), its identity
label and its evaluation source (LFW or held-out identities), as ``FaceImages`` holds them. The
data's part of the manifest holds what the module asks of the data module: the training, held-out
and test identity names (the margin-softmax class count, whether validation has held-out
identities) and LFW's pairs as indices into the evaluation split's first images. Which identities
are held out, and whether LFW tests, is the writer's choice (its ``--data.*`` options): the options
that choose them are not read again with ``--data.shards``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from datasets.lfw import LfwPairs

if TYPE_CHECKING:
    from datasets.face_identities import FaceDataModule, FaceImages


def _name(path: Path, roots: list[Path]) -> str:
    for root in roots:
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return path.as_posix()


def face_data_meta(data: FaceDataModule) -> dict[str, Any]:
    pairs = data.lfw_pairs
    return {
        "train_identities": list(data.train_identities),
        "heldout_identities": list(data.heldout_identities),
        "test_identities": list(data.test_identities),
        "test_is_heldout": data.test_identities is data.heldout_identities,
        "lfw_pairs": None
        if pairs is None
        else {
            "first": pairs.first.tolist(),
            "second": pairs.second.tolist(),
            "same": pairs.same.tolist(),
            "fold": pairs.fold.tolist(),
        },
    }


def face_records(data: FaceDataModule, dataset: FaceImages) -> tuple[list[Path], list[dict[str, Any]]]:
    roots = [root for root in (data.root, data.lfw_root) if root is not None]
    records = [
        {"path": _name(path, roots), "label": int(label), "source": int(source)}
        for path, label, source in zip(dataset.paths, dataset.labels, dataset.sources, strict=True)
    ]
    return list(dataset.paths), records


def restore_from_shards(data: FaceDataModule) -> None:
    """Set ``data``'s identities and LFW pairs from its shards' manifest (no folder is read)."""
    assert data.shards is not None
    meta = data.shards.data_meta()
    data.lfw_root = None
    data.train_identities = {name: [] for name in meta["train_identities"]}
    data.heldout_identities = {name: [] for name in meta["heldout_identities"]}
    data.test_identities = (
        data.heldout_identities if meta["test_is_heldout"] else {name: [] for name in meta["test_identities"]}
    )
    pairs = meta["lfw_pairs"]
    data.lfw_pairs = None
    if pairs is not None:
        data.lfw_pairs = LfwPairs(
            images=[],  # the images are the evaluation split's first ones (source LFW), in the shards
            first=np.asarray(pairs["first"], np.int64),
            second=np.asarray(pairs["second"], np.int64),
            same=np.asarray(pairs["same"], bool),
            fold=np.asarray(pairs["fold"], np.int64),
        )
