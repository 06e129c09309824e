"""Every task's tiny data and tiny run, declared once for the tests (``tests/test_task_contract.py``).

A ``TinyTask`` pairs a task's declaration (``tasks.spec.TaskSpec``) with what a fast CPU test of
it needs: a writer of a tiny data set in the task's real public layout (the datasets/demo
writers, at a few images), the smallest sizes the task runs at, and how to shrink its built-in
demo (same generator, fewer and smaller images) for the run without ``--data.root``. A new task
gets every contract of the contract test by being declared in ``tasks.spec.all_tasks()`` and
given a ``TinyTask`` here (the contract test fails until it has one).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tasks.spec import TaskSpec, all_tasks
from tests.probes import RunRecord, tiny_run_args, write_coco


@dataclass(frozen=True)
class TinyTask:
    """A task at its tiniest.

    Args:
        spec: the task's declaration.
        write: writes the tiny data set under the given (empty) folder in the task's layout and
            returns the ``--data.*`` arguments that point at it.
        shrink_demo: patches the task's demo generator to write a few small images (into a demo
            cache the test points elsewhere), for the run without ``--data.root``.
        resolution: the smallest input the task runs at.
        batch_size: the tiny runs' batch.
        options: further arguments of every tiny run (the task's own tiny sizes).
        rename: for a task whose checkpoint holds names (classes, categories, attributes):
            renames one of them in a data set ``write`` wrote, keeping their number, and returns
            the new name.
        parity_metric: the metric an export's parity is judged on, where the monitor is an argmax
            that float rounding flips at this size (None: the monitor).
    """

    spec: TaskSpec
    write: Callable[[Path], list[str]]
    shrink_demo: Callable[[pytest.MonkeyPatch], None]
    resolution: int = 32
    batch_size: int = 8
    options: tuple[str, ...] = ()
    parity_metric: str | None = None
    rename: Callable[[Path], str] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def args(
        self, data: Sequence[str], runs: Path, *extra: str, width: float | None = 0.25, tiny_resolution: bool = True
    ) -> list[str]:
        """The arguments of a tiny CPU run on ``data`` (a ``write`` result; empty: the demo).
        ``tiny_resolution`` False leaves ``--resolution`` at the task's default."""
        resolution = self.resolution if tiny_resolution else None
        sizes = tiny_run_args(None, runs, width=width, resolution=resolution, batch_size=self.batch_size)
        return [*data, *sizes, *self.options, *extra]


def _partial(monkeypatch: pytest.MonkeyPatch, module: object, name: str, **kwargs: object) -> None:
    """Replace ``module.name`` by itself with smaller ``kwargs`` (the demo's own generator, shrunk)."""
    monkeypatch.setattr(module, name, functools.partial(getattr(module, name), **kwargs))


# --- classification, fine_grained: texture classes ------------------------------------------------
def _imagenet(root: Path) -> list[str]:
    """3 classes x (8 train, 3 val): 3 steps an epoch at batch 8, 9 val images (odd: uneven DDP ranks)."""
    from datasets.demo.textures import write_imagenet_demo

    write_imagenet_demo(root, per_class_train=8, per_class_val=3, size=48, num_classes=3)
    return ["--data.root", str(root)]


def _rename_class(root: Path) -> str:
    first = sorted(p.name for p in (root / "train").iterdir())[0]
    for split in ("train", "val"):
        (root / split / first).rename(root / split / f"renamed_{first}")
    return f"renamed_{first}"


def _shrink_imagenet_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    from datasets.demo import textures

    _partial(monkeypatch, textures, "write_imagenet_demo", per_class_train=4, per_class_val=2, size=40, num_classes=3)


def _dogs(root: Path) -> list[str]:
    """3 breeds x (6 train, 3 test): 2 steps an epoch at batch 8, 9 test images."""
    from datasets.demo.textures import write_dogs_demo

    write_dogs_demo(root, per_class_train=6, per_class_test=3, num_classes=3)
    return ["--data.root", str(root)]


def _shrink_dogs_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    from datasets.demo import textures

    _partial(monkeypatch, textures, "write_dogs_demo", per_class_train=3, per_class_test=2, num_classes=3)


# --- detection: COCO ----------------------------------------------------------------------------
def _coco(root: Path) -> list[str]:
    """8 train and 3 val images (two non-contiguous category ids): 2 steps an epoch at batch 4."""
    write_coco(root, train=8, val=3)
    return ["--data.root", str(root)]


def _rename_category(root: Path) -> str:
    for path in (root / "annotations").glob("instances_*.json"):
        payload = json.loads(path.read_text())
        payload["categories"][0]["name"] = "renamed"
        path.write_text(json.dumps(payload))
    return "renamed"


def _shrink_coco_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    from datasets.demo import coco

    monkeypatch.setattr(coco, "SPLITS", {split: (4, first, seed) for split, (_, first, seed) in coco.SPLITS.items()})


# --- face attributes: CelebA ----------------------------------------------------------------------
def _celeba(root: Path) -> list[str]:
    """16 train / 7 val / 5 test faces with the demo's 10 attributes: 2 steps an epoch at batch 8."""
    from datasets.demo.celeba import write_celeba_demo

    write_celeba_demo(root, sizes={"train": 16, "val": 7, "test": 5}, unlabelled=0, seed=11)
    return ["--data.root", str(root)]


def _rename_attribute(root: Path) -> str:
    from datasets.attribute_files import ATTRIBUTE_FILE

    lines = (root / ATTRIBUTE_FILE).read_text().split("\n")
    names = lines[1].split()
    lines[1] = " ".join([f"Renamed_{names[0]}", *names[1:]])
    (root / ATTRIBUTE_FILE).write_text("\n".join(lines))
    return f"Renamed_{names[0]}"


def _shrink_celeba_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    from datasets.demo import celeba

    _partial(monkeypatch, celeba, "write_celeba_demo", sizes={"train": 8, "val": 4, "test": 4}, unlabelled=2)


# --- geolocation: geotagged photos ---------------------------------------------------------------
def _geo(root: Path) -> list[str]:
    """60 train and 9 test photos of the demo's cities, cells of 2-12 photos."""
    from datasets.demo.geo import write_geo_demo

    write_geo_demo(root, train=60, test=9, size=40)
    return ["--data.root", str(root), "--data.max_photos", "12", "--data.min_photos", "2"]


def _shrink_geo_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    from datasets.demo import geo

    _partial(monkeypatch, geo, "write_geo_demo", train=60, test=8, size=40)


# --- face embedding: identities + LFW ------------------------------------------------------------
def _faces(root: Path) -> list[str]:
    """10 identities x 4 photos (one held out for validation) and a 10-set LFW of 2 + 2 pairs a set."""
    from datasets.demo.faces import write_identities, write_lfw

    write_identities(root / "ids", identities=10, photos=4, seed=1, size=40)
    write_lfw(root / "lfw", sets=10, pairs_per_set=2, people_per_set=3, photos=2, size=40)
    return ["--data.root", str(root / "ids"), "--data.lfw_root", str(root / "lfw")]


def _shrink_faces_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    from datasets.demo import faces

    def write_small(folder: Path) -> None:  # the demo's identities and LFW, without the index sets
        faces.write_identities(folder / "identities", identities=6, photos=4, seed=3, size=40)
        faces.write_lfw(folder / "lfw", sets=10, pairs_per_set=1, people_per_set=2, photos=2, size=40)

    monkeypatch.setattr(faces, "write_demo_faces", write_small)


def tiny_tasks() -> tuple[TinyTask, ...]:
    """Every declared task at its tiniest, in ``all_tasks()``'s order."""
    by_name = {spec.name: spec for spec in all_tasks()}
    cases = (
        TinyTask(by_name.pop("classification"), _imagenet, _shrink_imagenet_demo, rename=_rename_class),
        TinyTask(by_name.pop("fine_grained"), _dogs, _shrink_dogs_demo),
        TinyTask(
            by_name.pop("detection"), _coco, _shrink_coco_demo, resolution=64, batch_size=4, rename=_rename_category
        ),
        TinyTask(by_name.pop("face_attributes"), _celeba, _shrink_celeba_demo, rename=_rename_attribute),
        TinyTask(by_name.pop("geolocation"), _geo, _shrink_geo_demo),
        TinyTask(
            by_name.pop("face_embedding"),
            _faces,
            _shrink_faces_demo,
            options=("--data.images_per_identity", "2"),
            # identification_top1 is an argmax over gallery faces that a 5-step model places within
            # float rounding of each other; LFW's accuracy thresholds distances on a 0.01 grid.
            parity_metric="lfw_accuracy",
        ),
    )
    assert not by_name, f"declared tasks without a TinyTask in tests/tiny_tasks.py: {sorted(by_name)}"
    return cases


# --- what the tests over every task share (the ``session`` fixture of tests/conftest.py) --------------
NO_SANITY = ("--trainer.num_sanity_val_steps", "0")
# The reference fit: 5 steps end mid-epoch at every task's tiny size (2, 3 or 6 steps an epoch).
REFERENCE_STEPS = 5


class Session:
    """What the contract tests share: each task's tiny data (written once) and its reference fit."""

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self.factory = factory

    @functools.cache  # noqa: B019 - one Session per test session
    def data(self, case: TinyTask) -> tuple[str, ...]:
        return tuple(case.write(self.factory.mktemp(f"{case.name}-data")))

    def args(self, case: TinyTask, runs: Path, *extra: str, width: float | None = 0.25) -> list[str]:
        return case.args(self.data(case), runs, *NO_SANITY, *extra, width=width)

    @functools.cache  # noqa: B019
    def fitted(self, case: TinyTask) -> Path:
        """The run folder of the task's reference fit (``REFERENCE_STEPS`` steps, default validation)."""
        runs = self.factory.mktemp(f"{case.name}-fit")
        case.spec.main(["fit", *self.args(case, runs, "--trainer.max_steps", str(REFERENCE_STEPS))])
        return runs

    @functools.cache  # noqa: B019
    def default_length(self, case: TinyTask) -> tuple[Path, RunRecord]:
        """A fit with no length option, of a task declared with ``REFERENCE_STEPS`` as its default
        (the declared defaults, hundreds of steps, are checked without running)."""
        runs = self.factory.mktemp(f"{case.name}-default")
        short = dataclasses.replace(case.spec, default_steps=REFERENCE_STEPS)
        return runs, fit_recorded(case, self.args(case, runs), spec=short)

    def checkpoint(self, case: TinyTask) -> str:
        return str(self.fitted(case) / "checkpoints" / "last.ckpt")


def fit_recorded(case: TinyTask, args: list[str], spec: Any = None) -> RunRecord:
    """``fit`` with ``args`` in this process; how the run went."""
    record = RunRecord()
    (spec or case.spec).main(["fit", *args], callbacks=[record])
    return record
