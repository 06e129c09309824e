"""The face-attributes task end to end: supervised fit/test/predict, the teacher -> student flow,
bad input, and a 2-process DDP run scored like a 1-process one."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from datasets.attribute_files import ATTRIBUTE_FILE, read_attributes_csv
from datasets.teacher_outputs import read_teacher_outputs
from tasks.face_attributes import module as face_attributes
from tasks.face_attributes.task import TASK as FACE_ATTRIBUTES
from tests.probes import expect_one_sentence, one_torch_thread, read_metrics, tiny_run_args

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


def fast_args(root: Path, runs: Path, *extra: str, width: str = "0.25", resolution: str = "32") -> list[str]:
    """A tiny run (tests.probes) at this task's sizes, without the sanity validation."""
    sizes = {"width": float(width), "resolution": int(resolution), "batch_size": 4}
    return tiny_run_args(root, runs, "--trainer.num_sanity_val_steps", "0", *extra, **sizes)


def newest_log_dir(runs: Path) -> Path:
    return max(runs.glob("lightning_logs/version_*"), key=lambda p: p.stat().st_mtime)


def metrics(runs: Path) -> dict[str, float]:
    return read_metrics(runs)["metrics"]


@pytest.fixture(scope="module")
def teacher(tiny_celeba: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A supervised 0.5-48 'teacher' fitted for 2 epochs: its run folder."""
    runs = tmp_path_factory.mktemp("teacher")
    args = fast_args(tiny_celeba, runs, "--trainer.max_epochs", "2", width="0.5", resolution="48")
    FACE_ATTRIBUTES.main(["fit", *args])
    return runs


def test_supervised_fit_test_predict(teacher: Path, tiny_celeba: Path) -> None:
    fitted = metrics(teacher)
    names = [f"ap/{n}" for n in read_names(tiny_celeba)]
    scored = [n for n in names if n in fitted]
    # Exactly the attributes with a positive among the 7 val images (000017-000023) are scored.
    rows = [line.split() for line in (tiny_celeba / ATTRIBUTE_FILE).read_text().splitlines()[2:]]
    val = np.array([[v == "1" for v in r[1:]] for r in rows if "000017.jpg" <= r[0] <= "000023.jpg"])
    assert scored == [n for n, positive in zip(names, val.any(0), strict=True) if positive] and len(scored) < 10
    assert "mean_ap" in fitted and "emulation_ce" not in fitted
    assert fitted["mean_ap"] == pytest.approx(np.mean([fitted[n] for n in scored]), abs=1e-6)
    # Accuracy counts every attribute (with or without positives); the tuned one is >= at 0.5 on val.
    for prefix, mean in (("accuracy", "mean_accuracy"), ("accuracy_tuned", "mean_accuracy_tuned")):
        values = [fitted[f"{prefix}/{n[3:]}"] for n in names]
        assert fitted[mean] == pytest.approx(np.mean(values), abs=1e-6)
    assert all(fitted[f"accuracy_tuned/{n[3:]}"] >= fitted[f"accuracy/{n[3:]}"] for n in names)
    assert (teacher / "checkpoints" / "last.ckpt").is_file()

    common = fast_args(tiny_celeba, teacher, "--ckpt_path", "last", width="0.5", resolution="48")
    left_out = [n[3:] for n in names if n not in scored]
    with pytest.warns(UserWarning, match=r"mean_ap leaves out \d attribute") as caught:
        FACE_ATTRIBUTES.main(["validate", *common])
    reports = [str(w.message) for w in caught if "mean_ap leaves out" in str(w.message)]
    assert len(reports) == 1 and all(repr(name) in reports[0] for name in left_out)
    assert metrics(teacher)["mean_ap"] == pytest.approx(fitted["mean_ap"], abs=1e-6)  # same weights, same images

    FACE_ATTRIBUTES.main(["predict", *common, "--model.predict_labels", "true"])
    path = newest_log_dir(teacher) / "attributes.csv"
    with path.open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["image", *(n[3:] for n in names)]
    assert [r[0] for r in rows[1:]] == [f"{i:06d}.jpg" for i in range(1, 29)]  # every partition, in order
    probs = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    assert probs.min() >= 0 and probs.max() <= 1 and probs.std() > 0
    array = read_teacher_outputs(path.with_name("attributes.npy"), read_names(tiny_celeba))
    assert array.names == [r[0] for r in rows[1:]]
    np.testing.assert_allclose(array.probabilities(np.arange(28)), probs, atol=5e-7)  # the CSV's 6 decimals
    # The yes/no file: each probability above the threshold the checkpoint holds (chosen on val).
    state = torch.load(teacher / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert bool(state["thresholds_chosen"]) and not torch.all(state["attribute_thresholds"] == 0.5)
    with path.with_name("attribute_labels.csv").open() as handle:
        labels = list(csv.reader(handle))
    assert labels[0] == rows[0] and [r[0] for r in labels[1:]] == [r[0] for r in rows[1:]]
    decided = array.probabilities(np.arange(28)).astype(np.float64) > state["attribute_thresholds"].numpy()
    np.testing.assert_array_equal(np.array([[int(v) for v in r[1:]] for r in labels[1:]]), decided)

    FACE_ATTRIBUTES.main(["test", *common])  # the test split at the thresholds chosen on val
    tested = metrics(teacher)
    assert {"mean_accuracy", "mean_accuracy_tuned"} <= set(tested) and tested["mean_accuracy_tuned"] > 0.5


def test_predict_a_folder_names_images_by_relative_path(teacher: Path, tiny_celeba: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos" / "day1"
    folder.mkdir(parents=True)
    for name in ("000001.jpg", "000002.jpg"):
        (folder / name).write_bytes((tiny_celeba / "img_align_celeba" / name).read_bytes())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    args = fast_args(tiny_celeba, teacher, "--ckpt_path", "last", "--data.predict_dir", str(tmp_path / "photos"),
                     width="0.5", resolution="48")  # fmt: skip
    FACE_ATTRIBUTES.main(["predict", *args])
    table = read_attributes_csv(newest_log_dir(teacher) / "attributes.csv", read_names(tiny_celeba))
    assert sorted(table) == ["day1/000001.jpg", "day1/000002.jpg"]  # the unreadable one skipped


def read_names(root: Path) -> list[str]:
    return (root / ATTRIBUTE_FILE).read_text().splitlines()[1].split()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model.hard_label_weight", "1.5"], r"--model.hard_label_weight is 1.5; expected a number in \[0, 1\]"),
        (
            ["--model.pos_weight", "sometimes"],
            r"^error: --model.pos_weight is 'sometimes'; expected 'none', 'auto' or a list, each item a number > 0.$",
        ),
        (["--model.pos_weight", "[1, 0]"], r"^error: --model.pos_weight holds 0; expected a number > 0.$"),
        (["--data.unlabelled_root", "/no/such/dir"], r"unlabelled image folder '/no/such/dir' does not exist"),
        (["--data.teacher_outputs", "/no/t.csv"], r"teacher outputs file '/no/t.csv' does not exist"),
        (["--model.teacher", "/no/t.ckpt"], r"^error: The checkpoint '/no/t.ckpt' does not exist.$"),
    ],
)
def test_bad_input_is_one_sentence(
    extra: list[str], message: str, tiny_celeba: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expect_one_sentence(FACE_ATTRIBUTES.main, ["fit", *fast_args(tiny_celeba, tmp_path, *extra)], message, capsys)
    assert not (tmp_path / "checkpoints").exists()


def test_unlabelled_images_need_a_teacher(
    tiny_celeba: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = fast_args(tiny_celeba, tmp_path, "--data.unlabelled_root", str(tiny_celeba / "unlabelled"))
    expected = r"have no labels; they need a teacher \(--model.teacher CKPT or --data.teacher_outputs FILE\)"
    expect_one_sentence(FACE_ATTRIBUTES.main, ["fit", *args], expected, capsys)


def test_a_checkpoint_of_another_task_is_refused_as_teacher(
    tiny_celeba: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = tmp_path / "detector.ckpt"
    hparams = {"_class_path": "tasks.detection.module.DetectionModule", "num_classes": 5, "width": 0.25}
    torch.save({"state_dict": {"model.w": torch.zeros(1)}, "hyper_parameters": hparams}, ckpt)
    args = ["fit", *fast_args(tiny_celeba, tmp_path / "runs", "--model.teacher", str(ckpt))]
    line = expect_one_sentence(FACE_ATTRIBUTES.main, args, "holds a detection model", capsys)
    assert line == (
        f"error: The teacher checkpoint '{ckpt}' holds a detection model, not a face_attributes one; "
        "give a checkpoint written by 'python -m tasks.face_attributes fit'."
    )


@pytest.fixture(scope="module")
def teacher_outputs(teacher: Path, tiny_celeba: Path) -> Path:
    """The teacher's predict over every partition and the unlabelled folder: its attributes.csv."""
    args = fast_args(tiny_celeba, teacher, "--ckpt_path", "last", "--data.unlabelled_root",
                     str(tiny_celeba / "unlabelled"), width="0.5", resolution="48")  # fmt: skip
    FACE_ATTRIBUTES.main(["predict", *args])
    return newest_log_dir(teacher) / "attributes.csv"


def test_student_from_teacher_outputs_on_unlabelled_images(
    teacher_outputs: Path, tiny_celeba: Path, tmp_path: Path
) -> None:
    assert len(read_attributes_csv(teacher_outputs, read_names(tiny_celeba))) == 34  # 28 + 6 unlabelled
    extra = ["--trainer.max_epochs", "1", "--data.teacher_outputs", str(teacher_outputs)]
    extra += ["--data.unlabelled_root", str(tiny_celeba / "unlabelled")]
    extra += ["--model.hard_label_weight", "0.2", "--model.temperature", "2", "--model.pos_weight", "auto"]
    FACE_ATTRIBUTES.main(["fit", *fast_args(tiny_celeba, tmp_path, *extra)])
    result = metrics(tmp_path)
    assert "mean_ap" in result and 0 < result["emulation_ce"] < 2
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 5  # 22 / 4
    # pos_weight auto: negatives / positives of the 16 labelled training images only (not unlabelled, val, test).
    rows = [line.split() for line in (tiny_celeba / ATTRIBUTE_FILE).read_text().splitlines()[2:18]]
    positives = np.array([[v == "1" for v in r[1:]] for r in rows]).sum(0)
    expected = np.where(positives > 0, (16 - positives) / np.maximum(positives, 1), 1.0)
    np.testing.assert_allclose(saved["state_dict"]["attribute_pos_weight"].numpy(), expected, rtol=1e-6)
    assert saved["hyper_parameters"]["pos_weight"] == "auto"


def test_live_teacher_and_its_outputs_file_agree(
    teacher: Path, teacher_outputs: Path, tiny_celeba: Path, tmp_path: Path
) -> None:
    """A student distilled from the checkpoint (0.5-48 teacher, 0.25-32 student) and scored against
    the live teacher and against the teacher's attributes.csv: the same emulation_ce, so the live
    teacher runs frozen in eval mode at its own resolution, exactly as its predict did."""
    ckpt = str(teacher / "checkpoints" / "last.ckpt")
    FACE_ATTRIBUTES.main(
        ["fit", *fast_args(tiny_celeba, tmp_path, "--trainer.max_epochs", "1", "--model.teacher", ckpt)]
    )
    student = tmp_path / "checkpoints" / "last.ckpt"
    saved = torch.load(student, weights_only=False)
    assert "teacher" not in saved["hyper_parameters"]
    student_module = face_attributes.FaceAttributesModule(read_names(tiny_celeba), width=0.25)
    own_buffers = {name for name, _ in student_module.named_buffers(recurse=False)}  # thresholds, class weights
    weights = [v for k, v in saved["state_dict"].items() if "running" not in k and "batches" not in k]
    assert sum(v.numel() for k, v in saved["state_dict"].items() if k in own_buffers) == 2 * 10 + 1
    assert sum(v.numel() for v in weights) - 21 == sum(p.numel() for p in student_module.parameters())
    # no teacher weights in the student's checkpoint
    results = {}
    for how in (["--model.teacher", ckpt], ["--data.teacher_outputs", str(teacher_outputs)]):
        FACE_ATTRIBUTES.main(["validate", *fast_args(tiny_celeba, tmp_path, "--ckpt_path", str(student), *how)])
        results[how[0]] = metrics(tmp_path)
    live, offline = results["--model.teacher"], results["--data.teacher_outputs"]
    assert live["emulation_ce"] == pytest.approx(offline["emulation_ce"], abs=1e-5)
    assert live["mean_ap"] == offline["mean_ap"]


def test_ddp_two_processes_give_the_same_mean_ap(teacher: Path, teacher_outputs: Path, tiny_celeba: Path) -> None:
    """2-process CPU DDP (gloo) validation with a teacher == 1-process (7 val images: 4 + 3 across
    the ranks; without a teacher on every task: tests/test_task_contract.py).

    Batches of one image make every score bit-identical in both runs (a barely trained model's
    scores are near ties, which another batch composition could reorder in the last bit)."""
    ckpt = str(teacher / "checkpoints" / "last.ckpt")
    common = ["--ckpt_path", ckpt, "--data.batch_size", "1", "--data.teacher_outputs", str(teacher_outputs)]
    single, double = teacher.parent / "ddp1", teacher.parent / "ddp2"
    FACE_ATTRIBUTES.main(["validate", *fast_args(tiny_celeba, single, *common, width="0.5", resolution="48")])
    args = fast_args(tiny_celeba, double, *common, "--trainer.devices", "2", "--trainer.strategy", "ddp_fork",
                     width="0.5", resolution="48")  # fmt: skip
    FACE_ATTRIBUTES.main(["validate", *args])  # the ranks are forked from this process
    one, two = metrics(single), metrics(double)
    assert set(two) == set(one) and "emulation_ce" in one
    for name, value in one.items():
        assert two[name] == pytest.approx(value, abs=1e-6), name


@pytest.mark.parametrize("config", sorted((ROOT / "configs" / "face_attributes").glob("*.yaml")), ids=lambda p: p.stem)
def test_paper_configs_parse(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every Table 12 row parses; students have no weight decay and no early stopping."""
    with pytest.raises(SystemExit) as exit_info:
        FACE_ATTRIBUTES.main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    if config.stem.startswith("student_"):
        width, resolution = config.stem.split("_")[1:]
        assert resolved["backbone"] == float(width) and resolved["resolution"] == int(resolution)
        assert resolved["model"]["weight_decay"] == 0.0 and resolved["model"]["hard_label_weight"] == 0.0
        callbacks = resolved["trainer"].get("callbacks") or []
        assert not any("EarlyStopping" in str(c) for c in callbacks)
