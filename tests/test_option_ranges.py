"""Bad input as a class (issue 16): every option against its declared range, and the one output-path check.

* Every numeric option of every task's model and data module, and of both subcommand parsers,
  must have a declared range (a new option without one fails here), and a value outside it is
  refused by the parser in one sentence naming the option; a few end-to-end runs check the
  sentence and that no work started.
* Ranges that depend on the data, and the one output-path check.
"""

from __future__ import annotations

import argparse
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backbone.errors import BadInputError
from tests.probes import expect_one_sentence

BOM = b"\xef\xbb\xbf"


# --- every option has a declared range ---------------------------------------------------------
def task_classes() -> dict[str, tuple[type, type]]:
    """The model and data module of each task (as each task's declaration names them)."""
    from datasets.celeba import CelebADataModule
    from datasets.coco import CocoDataModule
    from datasets.face_identities import FaceDataModule
    from datasets.geo_photos import GeoPhotosDataModule
    from datasets.imagenet import ImageFolderDataModule
    from datasets.stanford_dogs import StanfordDogsDataModule
    from tasks.classification import ClassificationModule
    from tasks.detection.module import DetectionModule
    from tasks.face_attributes.module import FaceAttributesModule
    from tasks.face_embedding.module import FaceEmbeddingModule
    from tasks.geolocation.module import GeolocationModule

    return {
        "classification": (ClassificationModule, ImageFolderDataModule),
        "fine_grained": (ClassificationModule, StanfordDogsDataModule),
        "detection": (DetectionModule, CocoDataModule),
        "face_attributes": (FaceAttributesModule, CelebADataModule),
        "geolocation": (GeolocationModule, GeoPhotosDataModule),
        "face_embedding": (FaceEmbeddingModule, FaceDataModule),
    }


TASKS = ["classification", "fine_grained", "detection", "face_attributes", "geolocation", "face_embedding"]


def numbers_in(typehint: Any) -> Iterator[Any]:
    """The int/float types inside a type hint (through Optional, unions and lists); bools are not numbers."""
    if isinstance(typehint, type):
        if issubclass(typehint, (int, float)) and typehint is not bool:
            yield typehint
        return
    for argument in typing.get_args(typehint):
        yield from numbers_in(argument)


# Options that belong to Lightning's own classes (the trainer, the checkpoint callback) or to an
# injected optimizer/scheduler class: their checks are theirs (the optimizer's: check_optimization).
NOT_OURS = ("trainer.", "checkpoint.", "seed_everything", "model.optimizer", "model.lr_scheduler", "ckpt_path")


class ParserBuilt(Exception):
    """Raised in place of parsing, carrying the task CLI's parser."""


def task_cli_options(task: str, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """``(option, type hint)`` of every option of ``python -m tasks.<task> fit``, from the real CLI's parser."""
    import importlib

    from tasks.cli import TaskCLI

    def capture(self: Any, parser: Any, args: Any) -> None:
        raise ParserBuilt(parser)

    monkeypatch.setattr(TaskCLI, "parse_arguments", capture)
    with pytest.raises(ParserBuilt) as built:
        importlib.import_module(f"tasks.{task}.task").TASK.main(["fit"])
    fit = built.value.args[0]._subcommands_action._name_parser_map["fit"]
    options = []
    for action in fit._actions:
        hint = getattr(action, "_typehint", None) or action.type
        if not action.dest.startswith(NOT_OURS) and hint is not None:
            options.append((action.dest, hint))
    return options


@pytest.mark.parametrize("task", TASKS)
def test_every_numeric_option_of_a_task_has_a_declared_range(task: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Walks the parser of ``python -m tasks.<task> fit``: a numeric option without a range fails here."""
    from backbone.ranges import is_range

    options = task_cli_options(task, monkeypatch)
    numeric = [(name, t) for name, hint in options for t in numbers_in(hint)]
    assert {"backbone", "resolution", "data.batch_size"} <= {name for name, _ in numeric}, task
    unranged = sorted({name for name, t in numeric if not is_range(t)})
    assert not unranged, f"{task}: numeric options without a declared range (backbone.ranges): {unranged}"


def bad_values(range_type: Any) -> list[str]:
    """Values just outside a range type (and not a number at all)."""
    values = ["x"]
    step = 1 if range_type.integer else 0.5
    if range_type.low is not None:
        values.append(str(range_type.low if range_type.low_open else range_type.low - step))
    if range_type.high is not None:
        values.append(str(range_type.high if range_type.high_open else range_type.high + step))
    if not range_type.integer:
        values.append("nan")
    else:
        values.append("2.5")
    return values


@pytest.mark.parametrize("task", TASKS)
def test_every_ranged_option_of_a_task_refuses_values_outside_in_one_sentence(task: str) -> None:
    """Through jsonargparse, as LightningCLI parses: each value outside is one sentence naming the option."""
    from jsonargparse import ArgumentParser

    from backbone.ranges import is_range, option_sentence

    for group, cls in zip(("model", "data"), task_classes()[task], strict=True):
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(cls, group)
        for action in parser._actions:
            ranges = [t for t in numbers_in(getattr(action, "_typehint", None)) if is_range(t)]
            for value in bad_values(ranges[0]) if ranges else []:
                wrapped = f"[{value}]" if "list" in str(action._typehint) else value
                with pytest.raises(Exception) as refused:  # jsonargparse's ArgumentError
                    parser.parse_args([f"--{action.dest}", wrapped])
                sentence = option_sentence(str(refused.value))
                assert sentence is not None, str(refused.value)
                # a range with a check of its own (width, resolution) says its own sentence
                assert sentence.startswith(f"--{action.dest} ") or ranges[0].check is not None, sentence


def subcommand_parsers() -> dict[str, Any]:
    from backbone.pick import build_parser as pick_parser
    from tasks.face_embedding.index_cli import build_parser as index_parser
    from tasks.geolocation.partition import build_parser as partition_parser

    parsers = {"partition": partition_parser(), "backbone.pick": pick_parser()}
    for action in index_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers.update({f"index {name}": sub for name, sub in action.choices.items()})
    return parsers


# The smallest arguments each subcommand needs besides the option under test (nothing is read).
REQUIRED = {
    "partition": ["--csv", "train.csv", "--out", "cells.csv"],
    "index build": ["--ckpt", "m.ckpt", "--out", "faces.index"],
    "index add": ["--index", "faces.index", "--images", "more"],
    "index remove": ["--index", "faces.index", "--identity", "ann"],
    "index retrain": ["--index", "faces.index"],
    "index info": ["--index", "faces.index"],
    "index search": ["--index", "faces.index"],
    "backbone.pick": ["--latency-ms", "5"],
}


def test_every_numeric_option_of_a_subcommand_has_a_declared_range() -> None:
    from backbone.ranges import is_range

    parsers = subcommand_parsers()
    assert set(parsers) == set(REQUIRED)
    unranged = [
        f"{name} {a.option_strings[-1]}"
        for name, parser in parsers.items()
        for a in parser._actions
        if a.type in (int, float)
        or (isinstance(a.type, type) and issubclass(a.type, (int, float)) and not is_range(a.type))
    ]
    assert not unranged, f"subcommand options without a declared range (backbone.ranges): {unranged}"


# The issue's cases, kept apart from the generated ones below so that they are tried even where
# ranges cannot be listed (they failed before the ranges: nlist 0 crashed faiss).
ISSUE_CASES = [
    ("index search", "-k", "0"),
    ("index search", "--nprobe", "0"),
    ("index build", "--nlist", "0"),
    ("index build", "--train-size", "10"),
    ("index build", "--batch-size", "0"),
    ("partition", "--max-photos", "0"),
]


def subcommand_cases() -> list[tuple[str, str, str]]:
    """Every ranged option of both subcommand CLIs with values just outside (below, above)."""
    try:
        from backbone.ranges import is_range
    except ImportError:  # before ranges were declared
        return []
    cases = []
    for name, parser in subcommand_parsers().items():
        for action in parser._actions:
            if is_range(action.type):
                cases += [(name, action.option_strings[-1], value) for value in bad_values(action.type)[1:3]]
    return [case for case in cases if case not in ISSUE_CASES]


@pytest.mark.parametrize(("command", "option", "value"), ISSUE_CASES + subcommand_cases())
def test_a_subcommand_option_outside_its_range_is_one_sentence(
    command: str, option: str, value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from backbone.pick import main as pick_main
    from tasks.face_embedding.index_cli import main as index_main
    from tasks.geolocation.partition import main as partition_main

    args = [str(tmp_path / a) if a.endswith((".csv", ".ckpt", ".index")) else a for a in REQUIRED[command]]
    args += [option, value]
    main = {"partition": partition_main, "backbone.pick": pick_main}.get(command, index_main)
    args = args if command in ("partition", "backbone.pick") else [command.split()[1], *args]
    expect_one_sentence(main, args, rf"^error: \S*{option} is {re.escape(value)}; expected ", capsys)
    assert not list(tmp_path.iterdir())  # refused before anything was read or written


# --- end to end: the task CLI refuses at parse time, before any work -----------------------------
@pytest.mark.parametrize(
    ("task", "option", "value", "expected"),
    [
        ("geolocation", "--model.top_k", "0", "an integer >= 1"),
        ("geolocation", "--data.val_share", "0.999", r"a number in \[0, 0.5\]"),
        ("geolocation", "--data.max_photos", "0", "an integer >= 1"),
        ("classification", "--data.batch_size", "0", "an integer >= 1"),
        ("face_embedding", "--data.images_per_identity", "1", "an integer >= 2"),
    ],
)
def test_a_task_option_outside_its_range_is_one_sentence_before_any_work(
    task: str, option: str, value: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib

    main = importlib.import_module(f"tasks.{task}.task").TASK.main
    runs = tmp_path / "runs"
    args = ["fit", "--data.root", str(tmp_path / "no-data"), "--trainer.default_root_dir", str(runs), option, value]
    expect_one_sentence(main, args, rf"^error: {re.escape(option)} is {value}; expected {expected}\.$", capsys)
    assert not runs.exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "data:\n  root: /data/café\n".encode("latin-1"),
            r"config file \(--config\) '.*' is not UTF-8 text \(byte 0xe9 on",
        ),
        (BOM + b"data:\n  batch_size: 0\n", r"^error: --data.batch_size is 0; expected an integer >= 1\.$"),
    ],
    ids=["latin1", "bom_out_of_range"],
)
def test_a_config_file_is_read_as_utf8_and_its_values_ranged(
    content: bytes, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasks.geolocation.task import TASK

    main = TASK.main
    config = tmp_path / "run.yaml"
    config.write_bytes(content)
    runs = tmp_path / "runs"
    expect_one_sentence(
        main, ["fit", "--config", str(config), "--trainer.default_root_dir", str(runs)], expected, capsys
    )
    assert not runs.exists()


def test_optimizer_and_scheduler_options_are_checked_when_the_module_is_made() -> None:
    """An injected optimizer's own checks (torch refuses a negative lr) as one sentence, before any data."""
    from functools import partial

    import torch

    from tasks.optim import check_optimization

    with pytest.raises(BadInputError, match=r"^--model.optimizer refuses its options: Invalid learning rate: -1.0\.$"):
        check_optimization(partial(torch.optim.AdamW, lr=-1.0), None)
    with pytest.raises(BadInputError, match=r"^--model.lr_scheduler refuses its options: Factor should be < 1\.0\.$"):
        check_optimization(
            partial(torch.optim.SGD, lr=0.1), partial(torch.optim.lr_scheduler.ReduceLROnPlateau, factor=2.0)
        )
    check_optimization(partial(torch.optim.SGD, lr=0.1), partial(torch.optim.lr_scheduler.StepLR, step_size=3))


# --- ranges that depend on the data ------------------------------------------------------------
def write_geo_set(root: Path, lat: np.ndarray, lon: np.ndarray) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{k}.jpg,{a:.5f},{b:.5f}\n" for k, (a, b) in enumerate(zip(lat, lon, strict=True)))
    (root / "train.csv").write_text("IMG_ID,LAT,LON\n" + rows)
    (root / "test.csv").write_text("IMG_ID,LAT,LON\n" + rows)
    (root / "images").mkdir(exist_ok=True)
    for k in range(len(lat)):  # every listed image exists (only looked up, never opened here)
        (root / "images" / f"{k}.jpg").touch()
    return root


def test_cells_of_another_photo_set_are_refused(tmp_path: Path) -> None:
    """--data.cells built from photos elsewhere left 196 of 200 training photos out, silently."""
    from datasets.geo_partition import build_partition
    from datasets.geo_photos import GeoPhotosDataModule
    from tasks.geolocation.writer import write_cells_csv

    rng = np.random.default_rng(0)
    europe = write_geo_set(tmp_path / "europe", rng.uniform(40, 55, 200), rng.uniform(-5, 20, 200))
    elsewhere = build_partition(rng.uniform(-40, -10, 200), rng.uniform(110, 150, 200), 20, 2)
    cells = write_cells_csv(elsewhere, tmp_path / "cells.csv")
    data = GeoPhotosDataModule(str(europe), cells=str(cells), val_share=0.0)
    with pytest.raises(BadInputError, match=r"200 of the 200 training photos .* lie in no cell of --data.cells"):
        data.train_dataset()
    # the cells of these photos: only those of cells under T2 (here 2) are left out, and said
    train = data.split_tables()[0]
    own = write_cells_csv(build_partition(train.lat, train.lon, 20, 2), tmp_path / "own.csv")
    assert len(GeoPhotosDataModule(str(europe), cells=str(own), val_share=0.0).train_dataset()) > 150


def test_a_validation_share_that_holds_out_no_photo_is_said(tmp_path: Path) -> None:
    from datasets.geo_photos import GeoPhotosDataModule

    root = write_geo_set(tmp_path / "tiny", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0]))
    data = GeoPhotosDataModule(str(root), val_share=0.1)
    with pytest.raises(BadInputError, match=r"--data.val_share 0.1 of its 3 training photos is none"):
        data.val_dataset()


def test_ivfpq_options_that_do_not_fit_the_gallery_are_refused() -> None:
    from tasks.face_embedding.index import new_index
    from tasks.face_embedding.index_cli import check_index_options

    vectors = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    params = {"nlist": 301, "pq_m": 4, "nprobe": 1, "train_size": 300}
    with pytest.raises(BadInputError, match=r"--nlist is 301; expected at most the 300 faces of the training sample"):
        new_index("ivfpq", 8, vectors, params)

    def options(**given: Any) -> argparse.Namespace:
        names = ("hnsw_m", "ef_search", "nlist", "pq_m", "nprobe", "train_size")
        return argparse.Namespace(**{n: given.get(n) for n in names})

    with pytest.raises(BadInputError, match=r"--train-size is 300; expected at least --nlist = 400"):
        check_index_options(options(nlist=400, train_size=300), "ivfpq", 128)
    with pytest.raises(BadInputError, match=r"--pq-m is 5; expected a divisor of the model's embedding size 128"):
        check_index_options(options(pq_m=5), "ivfpq", 128)
    with pytest.raises(BadInputError, match=r"--nlist applies to --kind ivfpq; the index is flat"):
        check_index_options(options(nlist=4), "flat", 128)


# --- one output-path check -------------------------------------------------------------------
def test_check_output_file_refuses_folders_files_as_parents_and_read_only_folders(tmp_path: Path) -> None:
    import os

    from tasks.outputs import check_output_file

    with pytest.raises(BadInputError, match=rf"The results file '{tmp_path}' is a folder; expected the name of a file"):
        check_output_file(tmp_path, "results file")
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    with pytest.raises(BadInputError, match=rf"lies under '{blocker}', which is a file"):
        check_output_file(blocker / "sub" / "out.csv")
    assert check_output_file(tmp_path / "new" / "deeper" / "out.csv") == tmp_path / "new" / "deeper" / "out.csv"
    assert not (tmp_path / "new").exists()  # nothing is created by the check
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(BadInputError, match=r"the folder '.*locked' is not writable"):
            check_output_file(locked / "out.csv")


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        ("partition", ["--out", "{folder}"]),
        ("index build", ["--out", "{folder}"]),
        ("index search", ["--out", "{folder}"]),
        ("index search", ["--out", "r.csv", "--json", "{folder}"]),
        ("index search", ["--out", "{file}/r.csv"]),
    ],
)
def test_an_output_path_that_cannot_be_a_file_is_one_sentence_before_any_work(
    command: str, extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tasks.face_embedding.index_cli import main as index_main
    from tasks.geolocation.partition import main as partition_main

    folder, blocker = tmp_path / "existing", tmp_path / "notes.txt"
    folder.mkdir()
    blocker.write_text("x")
    csv_file = write_geo_set(tmp_path / "photos", np.array([1.0, 2.0]), np.array([1.0, 2.0])) / "train.csv"
    extra = [
        e if e.startswith("--") else e.format(folder=folder, file=blocker) if "{" in e else str(tmp_path / e)
        for e in extra
    ]
    if command == "partition":
        args = ["--csv", str(csv_file), *extra]
        expect_one_sentence(partition_main, args, rf"'{folder}' is a folder; expected the name of a file", capsys)
        return
    required = {
        "index build": ["--ckpt", str(tmp_path / "none.ckpt")],
        "index search": ["--index", str(tmp_path / "i")],
    }
    args = [command.split()[1], *required[command], *extra]
    if blocker.name in " ".join(extra):
        expected = rf"'{blocker}', which is a file"
    else:
        expected = rf"'{folder}' is a folder; expected the name of a file"
    expect_one_sentence(index_main, args, expected, capsys)
