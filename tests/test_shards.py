"""Streamed shards (``--data.shards``, ``python -m tasks.shards write``) on every task's tiny data.

* a run from shards equals the run from the folder layout: the same metrics and the same weights
  after the same steps (every declared task, through ``tests/tiny_tasks.py``);
* 2 DDP processes (gloo) testing from shards give the metrics of 1 from the folder layout;
* ``--data.shards_order stream``: a run stopped mid-epoch and resumed goes on where it stopped
  (every training item once in the epoch, the order of an uninterrupted run);
* a remote URI (litdata's ``local:``, read through its downloader and cache) reads the same data;
* bad input in one sentence: a URI litdata cannot read, no shards, another task's or split's
  shards, a damaged manifest, chunks that do not match it, a damaged image, the writer's refusals.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from pytorch_lightning import Callback, LightningModule, Trainer

from backbone.errors import BadInputError
from tasks import shards as shard_command
from tests.probes import expect_one_sentence, one_torch_thread, read_metrics
from tests.tiny_tasks import NO_SANITY, REFERENCE_STEPS, Session, TinyTask, tiny_tasks

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CASES = tiny_tasks()
BY_NAME = {case.name: case for case in CASES}
# The --data.* options that say where a folder layout lies: a run from shards gives none of them.
LOCATION_OPTIONS = ("--data.root", "--data.lfw_root")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


def without_locations(data: tuple[str, ...] | list[str]) -> list[str]:
    """``data`` (a ``TinyTask.write`` result) without the options naming folders."""
    kept, skip = [], False
    for token in data:
        if skip:
            skip = False
        elif token in LOCATION_OPTIONS:
            skip = True
        else:
            kept.append(token)
    return kept


def write_shards(case: TinyTask, data: tuple[str, ...] | list[str], out: Path, *extra: str) -> list[str]:
    """The shards of ``data`` under ``out``; the ``--data.*`` arguments of a run that reads them."""
    shard_command.main(["write", "--task", case.name, "--out", str(out), *extra, *data])
    return [*without_locations(data), "--data.shards", str(out)]


def state(runs: Path) -> dict[str, torch.Tensor]:
    return torch.load(runs / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")["state_dict"]


# --------------------------------------------------------------------------------------------
# The same run from shards
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_run_from_shards_equals_the_folder_run(
    case: TinyTask, session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The reference fit (``REFERENCE_STEPS`` steps from the folder layout, shared with the contract
    tests) and the same fit from the shards of the same data: equal metrics, equal weights."""
    reference = session.fitted(case)
    data = write_shards(case, session.data(case), tmp_path / "shards")
    assert "images/s" in capsys.readouterr().out  # the writer's throughput, per split
    runs = tmp_path / "runs"
    case.spec.main(["fit", *case.args(data, runs, *NO_SANITY, "--trainer.max_steps", str(REFERENCE_STEPS))])
    assert read_metrics(runs)["metrics"] == read_metrics(reference)["metrics"]
    a, b = state(reference), state(runs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_ddp_processes_from_shards_give_the_metrics_of_one(session: Session, tmp_path: Path) -> None:
    """``test`` of one checkpoint from shards on 2 gloo processes (9 val images: unequal shares) and from
    the folder layout on 1: every image scored once, the same metrics (batches of one, as the contract test)."""
    case = BY_NAME["classification"]
    data = write_shards(case, session.data(case), tmp_path / "shards")
    results = {}
    for name, options, devices, strategy in (
        ("folder", session.data(case), "1", "auto"),
        ("shards", data, "2", "ddp_fork"),
    ):
        out = tmp_path / name
        args = case.args(options, out, *NO_SANITY, "--ckpt_path", session.checkpoint(case), "--data.batch_size", "1")
        case.spec.main(["test", *args, "--trainer.devices", devices, "--trainer.strategy", strategy])
        results[name] = read_metrics(out)["metrics"]
    assert results["shards"].keys() == results["folder"].keys()
    for name, value in results["folder"].items():
        assert results["shards"][name] == pytest.approx(value, abs=1e-6), name


def test_a_remote_uri_reads_the_same_data(session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``local:FOLDER`` is read as an object store is: the manifest and the chunks are downloaded
    (into ``$LITDATA_CACHE_DIR``), and ``validate`` scores what it scores from the folder."""
    monkeypatch.setenv("LITDATA_CACHE_DIR", str(tmp_path / "cache"))
    case = BY_NAME["fine_grained"]
    data = write_shards(case, session.data(case), tmp_path / "shards")
    data[data.index("--data.shards") + 1] = f"local:{tmp_path / 'shards'}"
    ckpt = ["--ckpt_path", session.checkpoint(case)]
    for name, options in (("folder", session.data(case)), ("remote", data)):
        case.spec.main(["validate", *case.args(options, tmp_path / name, *NO_SANITY, *ckpt)])
    assert read_metrics(tmp_path / "remote")["metrics"] == read_metrics(tmp_path / "folder")["metrics"]
    assert any((tmp_path / "cache").rglob("*.bin")), "the chunks were not fetched into the cache"


# --------------------------------------------------------------------------------------------
# Streamed order: each rank its own chunks, resumed mid-epoch
# --------------------------------------------------------------------------------------------
class SeenIndices(Callback):
    """The sample numbers of each training batch (face attributes' items carry their ``index``)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.batches.append(batch["index"].tolist())


def test_the_streamed_order_resumes_mid_epoch(session: Session, tmp_path: Path) -> None:
    """16 training faces at batch 8 (2 steps an epoch): stopped after step 1, resumed to step 2, the
    run sees the other 8 faces, in the order of a run that was not stopped; each face once."""
    case = BY_NAME["face_attributes"]
    data = [*write_shards(case, session.data(case), tmp_path / "shards"), "--data.shards_order", "stream"]
    seen = {}
    for name, steps, resume in (("whole", 2, ()), ("first", 1, ()), ("resumed", 2, ("--ckpt_path", "last"))):
        runs = tmp_path / ("whole" if name == "whole" else "parts")
        recorder = SeenIndices()
        args = case.args(data, runs, *NO_SANITY, "--trainer.max_steps", str(steps), *resume)
        case.spec.main(["fit", *args], callbacks=[recorder])
        seen[name] = recorder.batches
    assert len(seen["first"]) == len(seen["resumed"]) == 1
    assert seen["first"] + seen["resumed"] == seen["whole"]
    every = [i for batch in seen["whole"] for i in batch]
    assert sorted(every) == list(range(16))  # one epoch: each training face once
    assert every != sorted(every)  # shuffled (litdata's order, from the run's seed)


def test_the_streamed_order_is_refused_where_the_task_samples_its_batches(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = BY_NAME["face_embedding"]
    data = [*write_shards(case, session.data(case), tmp_path / "shards"), "--data.shards_order", "stream"]
    args = ["fit", *case.args(data, tmp_path / "runs", *NO_SANITY, "--trainer.max_steps", "1")]
    expect_one_sentence(
        case.spec.main, args, r"shards_order stream .* own sampler .*; use --data.shards_order index", capsys
    )


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def classification_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The classification tiny data's shards (train and val), written once for the refusals below."""
    case = BY_NAME["classification"]
    folder = tmp_path_factory.mktemp("cls")
    data = case.write(folder / "data")
    shard_command.main(["write", "--task", case.name, "--out", str(folder / "shards"), *data])
    return folder / "shards"


def copy_of(shards: Path, folder: Path) -> Path:
    shutil.copytree(shards, folder / "shards")
    return folder / "shards"


def classification(shards: str | Path, split: str = "val") -> Any:
    from datasets.imagenet import ImageFolderDataModule

    data = ImageFolderDataModule(shards=str(shards))
    return data.dataset(split)


def edit_manifest(shards: Path, split: str, change: Any) -> None:
    path = shards / split / "shards.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


MANIFEST_CASES: dict[str, tuple[Any, str]] = {
    "not_json": (lambda p: p.write_text("{"), r"shards.json' is not valid JSON"),
    "a_list": (lambda p: p.write_text("[1]"), r"shards.json': it holds a JSON list; expected shards.json as"),
    "missing_key": (
        lambda p: p.write_text(json.dumps({k: v for k, v in json.loads(p.read_text()).items() if k != "count"})),
        r"shards.json': it has no key 'count'",
    ),
    "other_version": (
        lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "version": 99})),
        r"shards.json' key version: version is 99; expected 1",
    ),
    "short_column": (
        lambda p: p.write_text(
            json.dumps(
                {**(m := json.loads(p.read_text())), "meta": {**m["meta"], "columns": {"label": [0]}}},
            )
        ),
        r"shards.json' key meta: the column 'label' has 1 values; expected one per sample \(9\)",
    ),
}


@pytest.mark.parametrize("damage", list(MANIFEST_CASES))
def test_a_damaged_manifest_is_named(damage: str, classification_shards: Path, tmp_path: Path) -> None:
    shards = copy_of(classification_shards, tmp_path)
    edit, pattern = MANIFEST_CASES[damage]
    edit(shards / "val" / "shards.json")
    with pytest.raises(BadInputError, match=pattern):
        classification(shards)


def test_bad_shards_are_refused_in_one_sentence(
    classification_shards: Path, session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = BY_NAME["classification"]
    # through the CLI: a URI litdata cannot read, no shards at all
    for uri, pattern in (
        ("ftp://host/shards", r"--data.shards 'ftp://host/shards' is a URI litdata cannot read"),
        (str(tmp_path / "none"), r"holds no split .*python -m tasks.shards write --task classification"),
        (f"local:{tmp_path / 'none'}", r"--data.shards 'local:.*none' holds no split"),  # read as a remote URI
    ):
        args = ["fit", *case.args(["--data.shards", uri], tmp_path / "runs", *NO_SANITY)]
        expect_one_sentence(case.spec.main, args, pattern, capsys)
    # both a root and shards
    with pytest.raises(BadInputError, match=r"Give --data.root or --data.shards, not both"):
        from datasets.imagenet import ImageFolderDataModule

        ImageFolderDataModule(root=str(tmp_path), shards=str(classification_shards))
    # another task's shards (detection's) and another split's
    detection = write_shards(BY_NAME["detection"], session.data(BY_NAME["detection"]), tmp_path / "det")
    with pytest.raises(BadInputError, match=r"hold detection data \(datasets.coco.datamodule.CocoDataModule\)"):
        classification(detection[-1])
    shards = copy_of(classification_shards, tmp_path)
    edit_manifest(shards, "val", lambda m: m.update(split="train"))
    with pytest.raises(BadInputError, match=r"hold the train split, not the val split their folder names"):
        classification(shards)


def test_chunks_that_do_not_match_the_manifest_are_refused(classification_shards: Path, tmp_path: Path) -> None:
    shards = copy_of(classification_shards, tmp_path)
    edit_manifest(shards, "val", lambda m: m.update(count=8, meta={**m["meta"], "columns": {}}))
    with pytest.raises(BadInputError, match=r"hold 9 items but their shards.json says 8"):
        classification(shards)
    (shards / "train" / "index.json").unlink()
    with pytest.raises(BadInputError, match=r"shards/train' could not be opened .* expected litdata's index.json"):
        classification(shards, "train")


def test_a_damaged_image_in_the_shards_is_named(tmp_path: Path) -> None:
    """A truncated JPEG is written as it is (bytes, never decoded) and refused when read, by item."""
    from tests.probes import truncate_file

    case = BY_NAME["classification"]
    data = case.write(tmp_path / "data")
    truncate_file(sorted((tmp_path / "data" / "val").rglob("*.jpg"))[4])
    shard_command.main(["write", "--task", case.name, "--out", str(tmp_path / "shards"), "--split", "val", *data])
    dataset = classification(tmp_path / "shards")
    with pytest.raises(BadInputError, match=r"The image 4 of the shards at '.*val' could not be read as an image"):
        dataset[4]


def test_the_writer_refuses_in_one_sentence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An object-store --out, an existing split without --overwrite, a listed image that is missing
    (Stanford Dogs' lists name their files), --data.shards: one sentence each, nothing half-written."""
    case = BY_NAME["fine_grained"]
    data = case.write(tmp_path / "data")
    write = ["write", "--task", case.name, *data]
    expect_one_sentence(
        shard_command.main, [*write, "--out", "s3://bucket/x"], r"write the shards to a local folder", capsys
    )
    out = tmp_path / "shards"
    shard_command.main([*write, "--out", str(out)])
    before = {split: (out / split / "shards.json").read_bytes() for split in ("train", "val")}
    expect_one_sentence(
        shard_command.main, [*write, "--out", str(out)], r"shards/train' exists; pass --overwrite", capsys
    )
    first = sorted((tmp_path / "data" / "Images").rglob("*.jpg"))[0]
    first.unlink()
    expect_one_sentence(
        shard_command.main, [*write, "--out", str(out), "--overwrite"], rf"{first.name}' does not exist", capsys
    )
    # the splits written before are whole and no temporary folder is left
    assert {split: (out / split / "shards.json").read_bytes() for split in ("train", "val")} == before
    assert sorted(p.name for p in out.iterdir()) == ["train", "val"]
    expect_one_sentence(
        shard_command.main,
        [*write, "--out", str(tmp_path / "x"), "--data.shards", str(out)],
        r"--data.shards names shards to read",
        capsys,
    )


# --------------------------------------------------------------------------------------------
# The benchmark's table (section data)
# --------------------------------------------------------------------------------------------
def test_the_benchmark_reads_a_demo_three_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``benchmarks.data_shards`` on a shrunk demo: the writer's rate and three positive read rates,
    and the streamed order left out (a dash) for the task that samples its own batches."""
    from benchmarks.data_shards import run_shards

    monkeypatch.setenv("MOBILENET_DEMO_DIR", str(tmp_path / "demo"))
    for name in ("fine_grained", "face_embedding"):
        BY_NAME[name].shrink_demo(monkeypatch)
    rows = run_shards(["fine_grained", "face_embedding"], batches=2, workers=0, batch_size=8)
    dogs, faces = rows["fine_grained"], rows["face_embedding"]
    assert dogs["images"] == 15 and dogs["write_images_per_s"] > 0 and dogs["write_mb_per_s"] > 0
    assert all(dogs[mode] > 0 for mode in ("folder", "shards", "stream"))
    assert faces["shards"] > 0 and faces["stream"] is None
    table = capsys.readouterr().out
    assert "| fine_grained | 15 |" in table and "shards / folder" in table
