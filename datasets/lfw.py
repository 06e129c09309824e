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

from datasets.schema import Field, Format

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


# pairs.txt, declared once (``datasets.schema``). LFW names its images <Name>_0001.jpg: four digits.
PAIRS_FORMAT = Format(
    "LFW pairs file",
    "pairs.txt: a header '<sets> <pairs per set>' (LFW's is '10 300'), then for each set that many "
    "same-person lines 'Name i j' followed by as many different-person lines 'Name1 i Name2 j'",
    (
        Field("sets", int, low=1, noun="a number of sets"),
        Field("pairs per set", int, low=1, noun="a number of pairs"),
        Field("image number", int, low=1, high=9999, noun="an image number"),
    ),
)


def image_path(root: Path, name: str, number: int) -> Path:
    """``root/lfw/<name>/<name>_<number:04d>.jpg`` (or ``.png``), as LFW names its images."""
    stem = root / IMAGE_FOLDER / name / f"{name}_{number:04d}"
    for suffix in SUFFIXES:
        if stem.with_suffix(suffix).is_file():
            return stem.with_suffix(suffix)
    return stem.with_suffix(SUFFIXES[0])


def read_pairs(root: str | Path, pairs_file: str = PAIRS_FILE) -> LfwPairs:
    """Parse ``root/pairs.txt`` (checked against ``PAIRS_FORMAT``) and check that every image it
    names exists under ``root/lfw``."""
    fmt = PAIRS_FORMAT
    root = Path(root).expanduser()
    path = fmt.require_file(root / pairs_file, " (an LFW root holds lfw/<Name>/<Name>_0001.jpg and pairs.txt)")
    lines = fmt.read_lines(path)
    header = lines[0].split() if lines else []
    if len(header) != 2:
        raise fmt.bad(
            path, 1, "the header", lines[0].strip() if lines else "", "'<sets> <pairs per set>', e.g. '10 300'"
        )
    sets, per_set = fmt.value(path, 1, "sets", header[0]), fmt.value(path, 1, "pairs per set", header[1])
    if sets < 2:
        # Each set's threshold is picked on the other sets: with one set there are none, every
        # model scored 0.5, and the best checkpoint was picked by that.
        raise fmt.error(
            path,
            1,
            f"the header announces {sets} set of pairs; LFW's protocol picks each set's threshold on the other "
            "sets, so it needs at least 2 (LFW's header is '10 300')",
        )
    body = [(no, line) for no, line in enumerate(lines[1:], start=2) if line.strip()]
    if len(body) != 2 * sets * per_set:
        raise fmt.error(
            path,
            None,
            f"there are {len(body)} pair lines after the header '{sets} {per_set}'; expected {2 * sets * per_set}, "
            f"{per_set} same-person and {per_set} different-person lines per set",
        )
    index: dict[Path, int] = {}
    first, second, same, fold = [], [], [], []
    for position, (line_no, line) in enumerate(body):
        fields = line.split()
        is_same = position % (2 * per_set) < per_set  # each set: same-person lines, then different-person
        if len(fields) != (3 if is_same else 4):
            kind, form = ("same", "'Name i j'") if is_same else ("different", "'Name1 i Name2 j'")
            raise fmt.error(
                path,
                line_no,
                f"there are {len(fields)} fields; expected {form}, a {kind}-person pair at this place of set "
                f"{position // (2 * per_set) + 1}",
            )
        if is_same:
            name_a = name_b = fields[0]
            number_a, number_b = (fmt.value(path, line_no, "image number", f) for f in fields[1:])
            if number_a == number_b:
                raise fmt.bad(path, line_no, "the second image number", number_b, "another image than the first")
        else:
            name_a, name_b = fields[0], fields[2]
            number_a, number_b = (fmt.value(path, line_no, "image number", f) for f in (fields[1], fields[3]))
            if name_a == name_b:
                raise fmt.bad(path, line_no, "the second name", name_b, "another person than the first")
        pair = []
        for name, number in ((name_a, number_a), (name_b, number_b)):
            image = image_path(root, name, number)
            if not image.is_file():
                raise fmt.bad(path, line_no, "the image", str(image), "an existing file lfw/<Name>/<Name>_<i>.jpg")
            pair.append(index.setdefault(image, len(index)))
        first.append(pair[0])
        second.append(pair[1])
        same.append(is_same)
        fold.append(position // (2 * per_set))
    return LfwPairs(
        images=list(index),
        first=np.asarray(first, dtype=np.int64),
        second=np.asarray(second, dtype=np.int64),
        same=np.asarray(same, dtype=bool),
        fold=np.asarray(fold, dtype=np.int64),
    )
