"""The runtime promises of issue 16: names not counts, no untrained scoring, finite checkpoints, partial evaluation.

1. A checkpoint is used (``--ckpt_path``) only with data whose outputs have the same names in the
   same order: a face-attributes checkpoint on data with two columns swapped scored each output
   against the other attribute's labels (and ``predict`` wrote Bangs under Blond_Hair); a
   geolocation run resumed with one partition level more trained its one head on the coarse
   labels (exit 0), or, with one less, died on an IndexError.
2. ``validate``/``test``/``predict`` without ``--ckpt_path`` scored random weights in every task.
3. A NaN loss trained on with exit 0 and wrote NaN weights into ``last.ckpt``.
4. face_embedding crashed under ``--trainer.limit_val_batches`` / ``fast_dev_run``.
5. A one-set ``pairs.txt`` gave LFW accuracy 0.5 for any model.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from backbone.mobilenet import MobileNetV1
from datasets.demo.faces import write_identities, write_lfw
from datasets.demo.geo import write_geo_demo
from datasets.lfw import read_pairs
from tasks.checkpoints import STAMP_KEY
from tasks.classification.task import TASK as classification
from tasks.detection.task import TASK as detection
from tasks.face_attributes.task import TASK as face_attributes
from tasks.face_embedding.metrics import lfw_metrics
from tasks.face_embedding.task import TASK as face_embedding
from tasks.fine_grained.task import TASK as fine_grained
from tasks.geolocation.task import TASK as geolocation
from tests.probes import (
    checkpoint_step,
    cli_command,
    expect_one_sentence,
    metrics_files,
    one_torch_thread,
    read_metrics,
    subprocess_env,
    tiny_run_args,
    write_coco,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
Main = Callable[[list[str]], None]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


# --------------------------------------------------------------------------------------------
# Tiny data of every task, and the arguments of a tiny run on it
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def geo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("geo")
    write_geo_demo(root, train=60, test=9, size=40)
    return root


@pytest.fixture(scope="module")
def coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_coco(tmp_path_factory.mktemp("coco"), train=2, val=2)


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ids/``: 10 identities x 4 photos (2 held out); ``lfw/``: 10 sets of 2 + 2 pairs."""
    root = tmp_path_factory.mktemp("faces")
    write_identities(root / "ids", identities=10, photos=4, seed=1, size=40)
    write_lfw(root / "lfw", sets=10, pairs_per_set=2, people_per_set=3, photos=2, size=40)
    return root


# task -> (entry point, data fixture, extra arguments of a tiny run)
TASKS: dict[str, tuple[Main, str, tuple[str, ...]]] = {
    "classification": (classification.main, "tiny_imagenet", ()),
    "fine_grained": (fine_grained.main, "tiny_dogs", ()),
    "detection": (detection.main, "coco", ("--data.batch_size", "2")),
    "face_attributes": (face_attributes.main, "tiny_celeba", ()),
    "geolocation": (geolocation.main, "geo", ("--data.max_photos", "12", "--data.min_photos", "2")),
    "face_embedding": (face_embedding.main, "faces", ("--data.images_per_identity", "2")),
}


def task_args(task: str, root: Path, runs: Path, *extra: str) -> list[str]:
    _, _, own = TASKS[task]
    if task == "face_embedding":
        own = (*own, "--data.lfw_root", str(root / "lfw"))
        root = root / "ids"
    resolution = 128 if task == "detection" else 32  # SSD300's extra layers need 128 px
    return tiny_run_args(root, runs, "--trainer.num_sanity_val_steps", "0", *own, *extra, resolution=resolution)


def data_root(request: pytest.FixtureRequest, task: str) -> Path:
    return request.getfixturevalue(TASKS[task][1])


def fit(task: str, root: Path, runs: Path, *extra: str) -> Path:
    """One optimizer step (no validation): the run's last.ckpt."""
    TASKS[task][0](["fit", *task_args(task, root, runs, "--trainer.max_steps", "1", *extra)])
    return runs / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def classifier(tiny_imagenet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint folder of one classification step on ``tiny_imagenet`` (last.ckpt, best-0-1.ckpt)."""
    return fit("classification", tiny_imagenet, tmp_path_factory.mktemp("classifier")).parent


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


# --------------------------------------------------------------------------------------------
# 1. Names, not counts
# --------------------------------------------------------------------------------------------
def swap_first_two_attributes(root: Path) -> Path:
    """The same faces and labels with the first two attribute columns (names and values) swapped."""
    path = root / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()

    def swap(fields: list[str], first: int) -> str:
        fields[first], fields[first + 1] = fields[first + 1], fields[first]
        return " ".join(fields)

    path.write_text("\n".join([lines[0], swap(lines[1].split(), 0), *(swap(x.split(), 1) for x in lines[2:])]) + "\n")
    return root


def rename_a_class(root: Path) -> Path:
    """The first class folder renamed (in train/ and val/): the same count, other names."""
    first = sorted(p.name for p in (root / "train").iterdir())[0]
    for split in ("train", "val"):
        (root / split / first).rename(root / split / "zz_renamed")
    return root


def rename_a_category(root: Path) -> Path:
    for split in ("train", "val"):
        path = root / "annotations" / f"instances_{split}2017.json"
        data = json.loads(path.read_text())
        data["categories"][0]["name"] = "renamed"
        path.write_text(json.dumps(data))
    return root


# task -> (what changes in the data, the subcommands refused, the sentence)
RENAMED = {
    "face_attributes": (
        swap_first_two_attributes, ("test", "predict"), r"attributes output 0 is 'Bangs' where the data's is 'Blond_Ha"
    ),
    "classification": (rename_a_class, ("validate", "predict"), r"classes output 0 is '\w+' where the data's is '\w+'"),
    "detection": (
        rename_a_category, ("test", "predict"), r"categories output 0 is 'square \(id 3\)' where the data's is 'renamed"
    ),
}  # fmt: skip


@pytest.mark.parametrize("task", sorted(RENAMED))
def test_a_checkpoint_is_used_only_with_data_of_the_same_output_names(
    task: str, request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = data_root(request, task)
    if task == "classification":
        ckpt = request.getfixturevalue("classifier") / "last.ckpt"
    else:
        ckpt = fit(task, root, tmp_path / "runs")
    change, subcommands, pattern = RENAMED[task]
    other = change(copy_tree(root, tmp_path / "other"))
    main = TASKS[task][0]
    for subcommand in subcommands:
        out = tmp_path / subcommand
        expect_one_sentence(main, [subcommand, *task_args(task, other, out, "--ckpt_path", str(ckpt))], pattern, capsys)
        assert not metrics_files(out) and not list(out.rglob("*.csv")) and not list(out.rglob("*.json"))
    # The same checkpoint on its own data: accepted (the names were recorded and match).
    main(["validate", *task_args(task, root, tmp_path / "same", "--ckpt_path", str(ckpt))])
    assert read_metrics(tmp_path / "same")["stage"] == "validate"


@pytest.mark.parametrize(
    ("first", "then", "pattern"),
    [
        ((), ("--data.coarse_max_photos", "[30]"), r"data defines an output head 'coarse cells \(T1 = 30\)'"),
        (("--data.coarse_max_photos", "[30]"), (), r"it has an output head 'coarse cells \(T1 = 30\)'"),
    ],
    ids=["level_added", "level_removed"],
)
def test_geolocation_resumes_only_with_the_same_partition_levels(
    first: tuple[str, ...],
    then: tuple[str, ...],
    pattern: str,
    geo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Added: the one head trained on the coarse labels (exit 0); removed: an IndexError traceback."""
    runs = tmp_path / "runs"
    ckpt = fit("geolocation", geo, runs, *first)
    before = ckpt.read_bytes()
    args = task_args("geolocation", geo, runs, "--trainer.max_steps", "2", "--ckpt_path", "last", *then)
    expect_one_sentence(geolocation.main, ["fit", *args], pattern, capsys)
    assert ckpt.read_bytes() == before


def test_a_checkpoint_without_recorded_names_falls_back_to_the_count_check(
    classifier: Path, tiny_imagenet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checkpoints written before names were recorded still load; another class count is still refused."""
    from tasks.checkpoints import OUTPUTS_KEY

    checkpoint = torch.load(classifier / "last.ckpt", weights_only=True)
    assert checkpoint[STAMP_KEY][OUTPUTS_KEY] == {
        "classes": sorted(p.name for p in (tiny_imagenet / "train").iterdir())
    }
    del checkpoint[STAMP_KEY][OUTPUTS_KEY]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    classification.main(
        ["validate", *task_args("classification", tiny_imagenet, tmp_path / "a", "--ckpt_path", str(old))]
    )
    assert read_metrics(tmp_path / "a")["stage"] == "validate"
    four = copy_tree(tiny_imagenet, tmp_path / "four")
    for split in ("train", "val"):
        shutil.copytree(next((four / split).iterdir()), four / split / "zz_fourth")
    args = task_args("classification", four, tmp_path / "b", "--ckpt_path", str(old))
    expect_one_sentence(
        classification.main, ["validate", *args], r"holds model\.classifier\.weight of shape \(3,", capsys
    )


# --------------------------------------------------------------------------------------------
# 2. No untrained model is scored
# --------------------------------------------------------------------------------------------
EVALUATIONS = ("validate", "test", "predict")


def test_a_classifier_whose_every_weight_is_a_file_may_be_scored_without_a_checkpoint(
    classifier: Path, tiny_imagenet: Path, tiny_dogs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The one legitimate no-checkpoint evaluation: imported weights (a timm ImageNet state dict on
    ImageNet val) of the whole classifier. A trunk alone, or a classifier of other classes, is refused."""
    whole, trunk = tmp_path / "whole.pth", tmp_path / "trunk.pth"
    torch.save(MobileNetV1(0.25, 3).state_dict(), whole)  # a plain state dict: no names recorded
    torch.save(MobileNetV1(0.25, 0).state_dict(), trunk)
    args = task_args("classification", tiny_imagenet, tmp_path / "whole", "--model.backbone_weights", str(whole))
    classification.main(["validate", *args])
    assert "top1" in read_metrics(tmp_path / "whole")["metrics"]

    args = task_args("classification", tiny_imagenet, tmp_path / "trunk", "--model.backbone_weights", str(trunk))
    pattern = (
        r"validate without --ckpt_path would score an untrained model: --model.backbone_weights .* no trained output"
    )
    expect_one_sentence(classification.main, ["validate", *args], pattern, capsys)
    assert not metrics_files(tmp_path / "trunk")

    # A classification checkpoint of 3 textures as the weights of a 3-breed classifier: its names differ.
    ckpt = classifier / "last.ckpt"
    args = task_args("fine_grained", tiny_dogs, tmp_path / "dogs", "--model.backbone_weights", str(ckpt))
    expect_one_sentence(fine_grained.main, ["test", *args], r"does not fit the data: its classes output 0 is", capsys)


# --------------------------------------------------------------------------------------------
# 3. Non-finite losses and weights
# --------------------------------------------------------------------------------------------
def all_finite(path: Path) -> bool:
    state = torch.load(path, weights_only=True)["state_dict"]
    return all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())


def nan_teacher(faces: Path, folder: Path, row: int) -> list[str]:
    """Arguments distilling from teacher embeddings of the ``faces`` identities, one image's so large
    (3e38, finite: a NaN is refused when the file is read) that its squared distance overflows."""
    images = sorted((faces / "ids").rglob("*.jpg"))
    vectors = np.random.default_rng(0).normal(size=(len(images), 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors[row] = 3e38
    teacher = folder / "teacher.npz"
    np.savez(teacher, paths=np.array([str(p) for p in images]), embeddings=vectors)
    return ["--data.teacher_embeddings", str(teacher), "--trainer.max_steps", "12", "--trainer.limit_val_batches", "0"]


def test_a_nan_teacher_embedding_stops_the_run_with_the_last_finite_checkpoint(
    faces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It trained a checkpoint of NaN weights and exited 0 (with a NaN row, now refused when read)."""
    runs = tmp_path / "runs"
    args = task_args("face_embedding", faces, runs, *nan_teacher(faces, tmp_path, 5))  # met after some finite steps
    line = expect_one_sentence(
        face_embedding.main,
        ["fit", *args],
        r"^error: The training loss is (?:nan|inf) after \d+ optimizer steps \(epoch \d+, batch \d+\); the run stopped "
        r"before applying it and no checkpoint holds non-finite weights: .*--data.teacher_embeddings",
        capsys,
    )
    steps = int(re.search(r"after (\d+) optimizer steps", line).group(1))  # type: ignore[union-attr]
    assert steps > 0  # the image is met after some finite steps: their work is kept
    last = runs / "checkpoints" / "last.ckpt"
    assert checkpoint_step(last) == steps and all_finite(last)


def test_non_finite_weights_are_never_written(
    classifier: Path, tiny_imagenet: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An infinite learning rate (YAML's .inf): a finite first loss, then infinite weights. The validation after
    that step would have saved them (best and last.ckpt); the previous run's checkpoints are kept."""
    runs = tmp_path / "runs"
    folder = copy_tree(classifier, runs / "checkpoints")
    before = {path.name: path.read_bytes() for path in folder.iterdir()}  # last.ckpt and best-0-1.ckpt
    args = task_args("classification", tiny_imagenet, runs, "--model.optimizer", "SGD", "--model.optimizer.lr", ".inf",
                     "--trainer.max_steps", "3", "--trainer.val_check_interval", "1",
                     "--trainer.check_val_every_n_epoch", "null")  # fmt: skip
    pattern = r"^error: The weights hold a NaN or an infinity \(model\.\S+\) after 1 optimizer steps, so '.*' was not"
    expect_one_sentence(classification.main, ["fit", *args], pattern, capsys)
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


def test_a_nan_on_one_ddp_rank_stops_every_rank(faces: Path, tmp_path: Path) -> None:
    """The ranks agree before stopping: one rank stopping alone would leave the other in its
    gradient all-reduce. Since they stop together, they also save last.ckpt (finite) together."""
    runs = tmp_path / "runs"
    ddp = ("--trainer.devices", "2", "--trainer.strategy", "ddp")
    args = task_args("face_embedding", faces, runs, *nan_teacher(faces, tmp_path, 5), *ddp)
    done = subprocess.run(
        cli_command("face_embedding", "fit", *args), env=subprocess_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2, done.stderr
    # Every rank says the same sentence (the two processes share stderr, so their lines may interleave).
    pattern = (
        r"error: The training loss is (?:nan|inf) after (\d+) optimizer steps "
        r"\(epoch \d+, batch \d+, on rank (\d) of 2\)"
    )
    sentences = re.findall(pattern, done.stderr)
    assert len(sentences) == done.stderr.count("error: ") == 2 and sentences[0] == sentences[1], done.stderr
    assert "Traceback" not in done.stderr
    last = runs / "checkpoints" / "last.ckpt"
    assert checkpoint_step(last) == int(sentences[0][0]) > 0 and all_finite(last)


# --------------------------------------------------------------------------------------------
# 4. Evaluation limited to part of the split
# --------------------------------------------------------------------------------------------
def test_partial_lfw_scores_the_pairs_whose_images_were_embedded() -> None:
    from tasks.face_embedding.metrics import score_embedded

    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(40, 8))
    fold = np.repeat(np.arange(10), 6)  # fold k pairs images 3k..3k+2, as LFW's sets are person-disjoint
    first, second = 3 * fold + rng.integers(0, 3, 60), 3 * fold + rng.integers(0, 3, 60)
    same = rng.random(60) < 0.5
    lfw, heldout = np.arange(30), np.arange(30, 40)
    labels = np.repeat(np.arange(5), 2)
    everything = score_embedded(vectors, np.ones(40, bool), lfw, (first, second, same, fold), heldout, labels)
    full = lfw_metrics(vectors[:30], first, second, same, fold)
    assert everything.metrics["lfw_accuracy"] == full.accuracy.mean() and everything.pairs_scored == 60

    embedded = np.ones(40, bool)
    embedded[[3, 17, 31]] = False
    part = score_embedded(vectors, embedded, lfw, (first, second, same, fold), heldout, labels)
    kept = embedded[first] & embedded[second]
    _, folds = np.unique(fold[kept], return_inverse=True)
    expected = lfw_metrics(vectors[:30], first[kept], second[kept], same[kept], folds)
    assert part.metrics["lfw_accuracy"] == expected.accuracy.mean() and part.pairs_scored == kept.sum() < 60
    assert part.heldout_scored == 9 and np.isfinite(part.metrics["tar_at_far_1e-4"])

    one_fold = np.zeros(40, bool)
    one_fold[:3] = True  # only fold 0's images
    alone = score_embedded(vectors, one_fold, lfw, (first, second, same, fold), heldout, labels)
    assert alone.lfw_result is None and np.isnan(alone.metrics["lfw_accuracy"])
    assert "LFW metrics are NaN" in alone.summary(int(one_fold.sum()), 40)


# --------------------------------------------------------------------------------------------
# 5. LFW needs 2 folds
# --------------------------------------------------------------------------------------------
def test_a_pairs_file_of_one_set_is_refused(faces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With one set there is no other set to pick its threshold on: every model scored 0.5."""
    lfw = tmp_path / "lfw"
    write_lfw(lfw, sets=1, pairs_per_set=2, people_per_set=3, photos=2, size=40)
    with pytest.raises(Exception, match=r"announces 1 set of pairs; LFW's protocol .* needs at least 2"):
        read_pairs(lfw)
    args = task_args("face_embedding", faces, tmp_path / "runs", "--data.lfw_root", str(lfw))
    pattern = r"pairs\.txt' line 1: the header announces 1 set of pairs"
    expect_one_sentence(face_embedding.main, ["fit", *args], pattern, capsys)
