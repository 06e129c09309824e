"""LFW's public layout: ``lfw/<Name>/<Name>_0001.jpg`` and the standard 10-fold ``pairs.txt``.

``pairs.txt`` (View 2 of LFW) starts with a header line ``<sets> <pairs per set>`` (``10 300``),
then, set by set, ``n`` same-person lines ``Name i j`` and ``n`` different-person lines
``Name1 i Name2 j`` (fields separated by tabs or spaces, image numbers 1-based). The sets are the
10 folds of the protocol: the fold of a pair is the set it is listed in, never a re-split.

A malformed line or a pair whose image is missing is one clear error naming the line; the
FaceNet reference code silently skips such pairs, which changes the folds without saying so. A
file of fewer than 2 sets is refused: no other set is left to pick a set's threshold on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backbone.errors import BadInputError

# The file names LFW ships (``lfw-deepfunneled`` and other alignments keep the same names).
IMAGE_FOLDER = "lfw"
PAIRS_FILE = "pairs.txt"
SUFFIXES = (".jpg", ".png")  # as the FaceNet reference's add_extension


@dataclass(frozen=True)
class LfwPairs:
    """The pairs of ``pairs.txt``: image paths, and per pair its two image indices, label and fold."""

    images: list[Path]  # every image used by some pair, once, in first-use order
    first: np.ndarray  # (pairs,) index into images
    second: np.ndarray  # (pairs,) index into images
    same: np.ndarray  # (pairs,) bool: same person
    fold: np.ndarray  # (pairs,) int: the set (0-based) the pair is listed in

    @property
    def num_folds(self) -> int:
        return int(self.fold.max()) + 1 if len(self.fold) else 0


def _number(field: str, path: Path, line_no: int, line: str) -> int:
    try:
        value = int(field)
    except ValueError:
        value = 0
    if value < 1:
        raise BadInputError(
            f"{str(path)!r} line {line_no}: {field!r} is not an image number (1, 2, ...) in {line.strip()!r}."
        )
    return value


def image_path(root: Path, name: str, number: int) -> Path:
    """``root/lfw/<name>/<name>_<number:04d>.jpg`` (or ``.png``), as LFW names its images."""
    stem = root / IMAGE_FOLDER / name / f"{name}_{number:04d}"
    for suffix in SUFFIXES:
        if stem.with_suffix(suffix).is_file():
            return stem.with_suffix(suffix)
    return stem.with_suffix(SUFFIXES[0])


def read_pairs(root: str | Path, pairs_file: str = PAIRS_FILE) -> LfwPairs:
    """Parse ``root/pairs.txt`` and check that every image it names exists under ``root/lfw``."""
    root = Path(root).expanduser()
    path = root / pairs_file
    if not path.is_file():
        raise BadInputError(
            f"The LFW pairs file {str(path)!r} does not exist; an LFW root holds lfw/<Name>/<Name>_0001.jpg "
            "and pairs.txt."
        )
    lines = path.read_text().splitlines()
    header = lines[0].split() if lines else []
    if len(header) != 2 or not all(h.isdigit() and int(h) > 0 for h in header):
        shown = lines[0].strip() if lines else ""
        raise BadInputError(
            f"{str(path)!r} line 1: expected the header '<sets> <pairs per set>' (LFW's is '10 300'), got {shown!r}."
        )
    sets, per_set = int(header[0]), int(header[1])
    if sets < 2:
        # Each set's threshold is picked on the other sets: with one set there are none, every
        # model scored 0.5, and the best checkpoint was picked by that.
        raise BadInputError(
            f"{str(path)!r} line 1 announces {sets} set of pairs; LFW's protocol picks each set's threshold on the "
            "other sets, so it needs at least 2 (LFW's header is '10 300')."
        )
    body = [(no, line) for no, line in enumerate(lines[1:], start=2) if line.strip()]
    if len(body) != 2 * sets * per_set:
        raise BadInputError(
            f"{str(path)!r} has {len(body)} pair lines after its header '{sets} {per_set}', which announces "
            f"{sets} sets of {per_set} same-person and {per_set} different-person pairs ({2 * sets * per_set} lines)."
        )
    index: dict[Path, int] = {}
    first, second, same, fold = [], [], [], []
    for position, (line_no, line) in enumerate(body):
        fields = line.split()
        if len(fields) == 3:
            name_a, name_b = fields[0], fields[0]
            number_a, number_b = (_number(f, path, line_no, line) for f in fields[1:])
        elif len(fields) == 4:
            name_a, name_b = fields[0], fields[2]
            number_a, number_b = _number(fields[1], path, line_no, line), _number(fields[3], path, line_no, line)
        else:
            raise BadInputError(
                f"{str(path)!r} line {line_no}: expected 'Name i j' or 'Name1 i Name2 j', got {line.strip()!r}."
            )
        pair = []
        for name, number in ((name_a, number_a), (name_b, number_b)):
            image = image_path(root, name, number)
            if not image.is_file():
                raise BadInputError(
                    f"{str(path)!r} line {line_no} names the image {str(image)!r}, which does not exist."
                )
            pair.append(index.setdefault(image, len(index)))
        first.append(pair[0])
        second.append(pair[1])
        same.append(len(fields) == 3)
        fold.append(position // (2 * per_set))
    return LfwPairs(
        images=list(index),
        first=np.asarray(first, dtype=np.int64),
        second=np.asarray(second, dtype=np.int64),
        same=np.asarray(same, dtype=bool),
        fold=np.asarray(fold, dtype=np.int64),
    )
