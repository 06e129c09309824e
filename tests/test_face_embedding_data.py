"""Face data: LFW's pairs.txt, identity folders, the P x K sampler, teacher embedding files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from torch.utils.data import DistributedSampler

from backbone.errors import BadInputError
from datasets.demo.faces import write_identities, write_lfw
from datasets.embedding_files import read_teacher_embeddings
from datasets.face_identities import PKSampler, identity_images, split_heldout
from datasets.lfw import read_pairs


@pytest.fixture(scope="module")
def lfw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lfw")
    write_lfw(root, sets=10, pairs_per_set=3, people_per_set=3, photos=3, size=40)
    return root


def test_pairs_follow_the_sets_of_the_file(lfw: Path) -> None:
    pairs = read_pairs(lfw)
    lines = (lfw / "pairs.txt").read_text().splitlines()
    assert lines[0].split() == ["10", "3"] and len(lines) == 1 + 60
    assert len(pairs.same) == 60 and pairs.num_folds == 10
    np.testing.assert_array_equal(pairs.fold, np.repeat(np.arange(10), 6))
    np.testing.assert_array_equal(pairs.same, np.tile([True] * 3 + [False] * 3, 10))
    name, i, j = lines[1].split()
    assert pairs.images[pairs.first[0]] == lfw / "lfw" / name / f"{name}_{int(i):04d}.jpg"
    assert pairs.images[pairs.second[0]].name == f"{name}_{int(j):04d}.jpg"
    a, i, b, j = lines[4].split()  # the first different-person line of set 1
    assert pairs.images[pairs.first[3]].parent.name == a and pairs.images[pairs.second[3]].parent.name == b
    assert len(set(pairs.images)) == len(pairs.images)  # each image once


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: ["10"] + lines[1:], r"line 1: the header is '10'; expected '<sets> <pairs per set>'"),
        (
            lambda lines: lines[:5] + ["Only_Name 1"] + lines[6:],
            r"line 6: there are 2 fields; expected 'Name1 i Name2 j'",
        ),
        (
            lambda lines: lines[:3] + [lines[3].rsplit("\t", 1)[0] + "\tx"] + lines[4:],
            r"line 4: image number is 'x'; expected an image number in \[1, 9999\]",
        ),
        (
            lambda lines: lines[:2] + [lines[2].split("\t")[0] + "\t1\t9"] + lines[3:],
            r"line 3: the image is '.*_0009.jpg'; expected an existing file",
        ),
        (lambda lines: lines[:-1], r"there are 59 pair lines after the header '10 3'; expected 60"),
    ],
)
def test_bad_pairs_file_names_the_line(lfw: Path, tmp_path: Path, edit, message: str) -> None:
    import shutil

    copy = tmp_path / "lfw"
    shutil.copytree(lfw, copy)
    lines = (copy / "pairs.txt").read_text().splitlines()
    (copy / "pairs.txt").write_text("\n".join(edit(lines)) + "\n")
    with pytest.raises(BadInputError, match=message):
        read_pairs(copy)


def test_missing_pairs_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"pairs file .*pairs.txt' does not exist"):
        read_pairs(tmp_path)


def test_pk_sampler_batches_and_ranks() -> None:
    # 7 identities; identity 6 has a single image, identity 5 two (fewer than K = 3)
    labels = [i for i in range(5) for _ in range(6)] + [5, 5, 6]
    sampler = PKSampler(labels, identities_per_batch=4, images_per_identity=3)
    assert isinstance(sampler, DistributedSampler)
    order = list(sampler)
    assert len(order) == len(sampler) == (len(labels) // 12) * 12
    for start in range(0, len(order), 12):
        batch = [labels[i] for i in order[start : start + 12]]
        counts = Counter(batch)
        assert len(counts) == 4 and set(counts.values()) == {3}, batch  # P distinct identities x K
    sampler.set_epoch(1)
    assert list(sampler) != order  # reshuffled every epoch
    # Two ranks: the same number of batches each, no batch given to both, together the global sequence.
    ranks = [PKSampler(labels, 4, 3, num_replicas=2, rank=r) for r in (0, 1)]
    parts = [list(s) for s in ranks]
    assert len(parts[0]) == len(parts[1]) == len(ranks[0])
    batches = [tuple(p[i : i + 12]) for p in parts for i in range(0, len(p), 12)]
    assert len(set(batches)) == len(batches)
    # An identity with fewer images than K still gives K samples (repeats) when drawn.
    many = PKSampler([0] * 10 + [1], identities_per_batch=2, images_per_identity=4)
    drawn = Counter(many)
    assert drawn[10] == len(many) // 2  # the single image of identity 1, K times per batch


def test_identity_split_is_seeded_and_disjoint(tmp_path: Path) -> None:
    write_identities(tmp_path, identities=20, photos=1, seed=0, size=32)
    names = list(identity_images(tmp_path))
    (held,) = split_heldout(names, 0.1)
    assert [held] == split_heldout(names, 0.1) and len(held) == 2 and held <= set(names)
    validation, test = split_heldout(names, 0.1, parts=2)
    assert validation == held and len(test) == 2 and not validation & test
    with pytest.raises(BadInputError, match="leaves fewer than 2 to train on"):
        split_heldout(names[:3], 0.5)


def test_teacher_embeddings_from_predict_output_or_npz(tmp_path: Path) -> None:
    write_identities(tmp_path / "ids", identities=2, photos=2, seed=0, size=32)
    images = sorted((tmp_path / "ids").rglob("*.jpg"))
    vectors = np.arange(4 * 3, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "embeddings.npy", vectors[::-1])
    (tmp_path / "paths.txt").write_text("".join(f"{p}\n" for p in images[::-1]))  # absolute paths, another order
    np.testing.assert_array_equal(
        read_teacher_embeddings(tmp_path / "embeddings.npy", images, tmp_path / "ids"), vectors
    )
    relative = [str(p.relative_to(tmp_path / "ids")) for p in images]
    np.savez(tmp_path / "t.npz", paths=np.array(relative), embeddings=vectors)
    np.testing.assert_array_equal(read_teacher_embeddings(tmp_path / "t.npz", images, tmp_path / "ids"), vectors)
    np.savez(tmp_path / "short.npz", paths=np.array(relative[:3]), embeddings=vectors[:3])
    with pytest.raises(BadInputError, match="has no embedding for 1 training images"):
        read_teacher_embeddings(tmp_path / "short.npz", images, tmp_path / "ids")


def test_only_training_batches_must_be_p_by_k(lfw: Path, tmp_path: Path) -> None:
    """``fit`` refuses a batch that is not P x K (P, K >= 2); evaluation takes any batch, even one image."""
    from datasets.face_identities import FaceDataModule

    write_identities(tmp_path, identities=4, photos=2, seed=0, size=32)
    options = {"lfw_root": str(lfw), "resolution": 32, "num_workers": 0, "images_per_identity": 2}
    with pytest.raises(BadInputError, match=r"--data.batch_size must be a multiple .* got 6 and 4"):
        FaceDataModule(str(tmp_path), batch_size=6, **{**options, "images_per_identity": 4}).setup("fit")
    data = FaceDataModule(str(tmp_path), batch_size=1, **options)
    data.setup("test")
    assert len(next(iter(data.test_dataloader()))["image"]) == 1
