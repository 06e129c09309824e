"""One checkpoint reader (``backbone.checkpoint_reader``): the same sentence for the same damaged file,
whichever of the three former readers opens it: ``--ckpt_path`` (``tasks.checkpoints``), a teacher
(``--model.teacher``) and backbone weights (``--model.backbone_weights``, timm's dicts too)."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from backbone import MobileNetV1, load_backbone_weights
from backbone.checkpoint_reader import read_checkpoint, read_state_dict
from backbone.errors import BadInputError
from tasks.checkpoints import check_checkpoint
from tasks.face_attributes.module import load_teacher
from tasks.face_embedding.module import FaceEmbeddingModule


class Pickled:
    """A Python object a weights-only load must refuse to build."""


def _archive(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


def damaged(folder: Path, kind: str) -> Path:
    """A file (or not) that no reader can use, one per refusal of the reader."""
    path = folder / f"{kind}.ckpt"
    if kind == "missing":
        return path
    if kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "pickle":  # a plain pickle, not torch.save's format
        path.write_bytes(pickle.dumps({"state_dict": [1, 2, 3]}, protocol=2))
    elif kind == "truncated":
        whole = _archive(folder / "whole.pt", {"state_dict": {"w": torch.zeros(4096)}}).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif kind == "object":
        _archive(path, {"state_dict": {"w": torch.zeros(1)}, "extra": Pickled()})
    elif kind == "list":
        _archive(path, [torch.zeros(1)])
    elif kind == "no_tensors":
        _archive(path, {"epoch": 3, "state_dict": {"w": "not a tensor"}})
    elif kind == "safetensors":
        path = folder / "weights.safetensors"
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    return path


KINDS = ["missing", "folder", "empty", "text", "pickle", "truncated", "object", "list", "no_tensors", "safetensors"]

# The three former readers, as the commands call them.
READERS: dict[str, Callable[[Path], object]] = {
    "--ckpt_path": lambda p: check_checkpoint(str(p), "classification", 1.0, 224, 1.0, 224, set()),
    "--model.teacher": lambda p: load_teacher(str(p), ["Smiling"]),
    "--model.backbone_weights": lambda p: load_backbone_weights(MobileNetV1(0.25), str(p)),
}


def sentence(read: Callable[[Path], object], path: Path) -> str:
    with pytest.raises(BadInputError) as info:
        read(path)
    return str(info.value)


@pytest.mark.parametrize("kind", KINDS)
def test_every_reader_gives_the_same_sentence_for_the_same_damaged_file(kind: str, tmp_path: Path) -> None:
    path = damaged(tmp_path, kind)
    sentences = {option: sentence(read, path) for option, read in READERS.items()}
    assert len(set(sentences.values())) == 1, sentences
    text = sentences["--ckpt_path"]
    assert text.startswith(f"The checkpoint {str(path)!r} ") and text.endswith(".")
    assert "\n" not in text and "weights_only" not in text and "Traceback" not in text
    # the face-embedding teacher goes through the same reader
    assert sentence(lambda p: FaceEmbeddingModule(width=0.25, resolution=32, teacher=str(p)), path) == text


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("missing", r"does not exist\.$"),
        ("folder", r"is a folder, not a file"),
        ("empty", r"is an empty file"),
        ("text", r"could not be read as a PyTorch checkpoint \(not a file written by torch.save\)"),
        ("pickle", r"could not be read as a PyTorch checkpoint \(not a file written by torch.save\)"),
        ("truncated", r"could not be read as a PyTorch checkpoint \(a torch.save archive cut short or damaged\)"),
        ("object", r"holds Python objects \(.*Pickled\) besides tensors"),
        ("list", r"holds a list, not a state dict"),
        ("no_tensors", r"holds a dict without tensors, not a state dict"),
        ("safetensors", r"could not be read as a safetensors file"),
    ],
)
def test_each_refusal_says_what_is_wrong(kind: str, expected: str, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=expected):
        read_state_dict(damaged(tmp_path, kind))


def test_a_bare_state_dict_is_weights_not_a_checkpoint(tmp_path: Path) -> None:
    path = _archive(tmp_path / "bare.pt", MobileNetV1(0.25).state_dict())
    assert set(read_state_dict(path)) == set(MobileNetV1(0.25).state_dict())
    assert load_backbone_weights(MobileNetV1(0.25), path) == []
    with pytest.raises(BadInputError, match=r"is a bare state dict, not a checkpoint .* --model.backbone_weights"):
        read_checkpoint(path)
