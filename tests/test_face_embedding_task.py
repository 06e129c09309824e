"""``python -m tasks.face_embedding`` end to end: fit, test, predict, distillation, held-out only, DDP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from backbone.checkpoint_reader import file_sha256
from datasets.demo.faces import write_identities, write_lfw
from tasks.face_embedding.task import TASK as FACE_EMBEDDING

# Validation: the identities held out of training (selection, calibration). Test: LFW's pairs.
VAL_METRICS = {"identification_top1", "tar_at_far_1e-4", "threshold", "threshold_tar", "threshold_far"}
TEST_METRICS = {"lfw_accuracy", "lfw_accuracy_std", "val_at_far_1e-3", "tar_at_far_1e-4", "identification_top1"}
TEST_METRICS |= {"threshold", "tar_at_threshold", "far_at_threshold"}


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """8 training identities x 4 photos (2 held out) and a 10-set LFW of 2 + 2 pairs per set (40 px)."""
    ids, lfw = tmp_path_factory.mktemp("ids"), tmp_path_factory.mktemp("lfw")
    write_identities(ids, identities=10, photos=4, seed=1, size=40)
    write_lfw(lfw, sets=10, pairs_per_set=2, people_per_set=3, photos=2, size=40)
    return ids, lfw


def fast_args(ids: Path, runs: Path, *extra: str) -> list[str]:
    return [
        "--data.root", str(ids), "--backbone", "0.25", "--resolution", "32",
        "--data.batch_size", "8", "--data.images_per_identity", "2", "--data.num_workers", "0",
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(runs), *extra,
    ]  # fmt: skip


def read_metrics(runs: Path) -> dict:
    newest = max(runs.glob("lightning_logs/version_*/metrics.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text())


@pytest.fixture(scope="module")
def fitted(faces: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One 2-epoch fit shared by the tests below: its run folder and its last validation."""
    ids, lfw = faces
    runs = tmp_path_factory.mktemp("runs")
    FACE_EMBEDDING.main(["fit", *fast_args(ids, runs, "--data.lfw_root", str(lfw), "--trainer.max_epochs", "2")])
    return runs, read_metrics(runs)


def test_fit_test_predict(faces: tuple[Path, Path], fitted: tuple[Path, dict]) -> None:
    import torch

    ids, lfw = faces
    runs, metrics = fitted
    assert set(metrics["metrics"]) >= VAL_METRICS and metrics["global_step"] == 8  # 32 training images / 8, 2 epochs
    assert "lfw_accuracy" not in metrics["metrics"]  # LFW is the test set: it plays no part in selection
    assert 0 <= metrics["metrics"]["identification_top1"] <= 1 and len(list((runs / "checkpoints").glob("best-*"))) == 1
    # the threshold calibrated at the last validation travels in the checkpoint of those weights
    stored = torch.load(runs / "checkpoints" / "last.ckpt", weights_only=False)["face_threshold"]
    assert stored["cosine"] == pytest.approx(metrics["metrics"]["threshold"]) and stored["far"] == 1e-3

    FACE_EMBEDDING.main(
        ["test", *fast_args(ids, runs, "--data.lfw_root", str(lfw), "--ckpt_path", "last", "--model.roc_curve", "true")]
    )
    tested = read_metrics(runs)
    assert tested["stage"] == "test" and set(tested["metrics"]) >= TEST_METRICS
    assert tested["metrics"]["threshold"] == pytest.approx(stored["cosine"])
    assert 0 <= tested["metrics"]["far_at_threshold"] <= 1
    assert (Path(max(runs.glob("lightning_logs/version_*"), key=lambda p: p.stat().st_mtime)) / "roc.png").is_file()

    FACE_EMBEDDING.main(["predict", *fast_args(ids, runs, "--ckpt_path", "last", "--data.predict_dir", str(lfw))])
    folder = max(runs.glob("lightning_logs/version_*"), key=lambda p: p.stat().st_mtime)
    embeddings = np.load(folder / "embeddings.npy")
    paths = (folder / "paths.txt").read_text().splitlines()
    assert embeddings.dtype == np.float32 and embeddings.shape == (60, 128) == (len(paths), 128)
    assert paths == sorted(str(p) for p in lfw.rglob("*.jpg"))
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    record = json.loads((folder / "embeddings.json").read_text())  # which model: checked by 'index --embeddings'
    last = runs / "checkpoints" / "last.ckpt"
    assert record["sha256"] == file_sha256(last) and record["embedding_size"] == 128


def test_margin_softmax_trains_and_stays_out_of_the_embedder(faces: tuple[Path, Path], tmp_path: Path) -> None:
    """--model.loss arcface: the class weights are trained and checkpointed (resume) but are not part of the
    embedder that test, predict and the index load."""
    import torch

    from tasks.face_embedding.module import load_face_embedder

    ids, lfw = faces
    short = ["--data.lfw_root", str(lfw), "--trainer.max_epochs", "1", "--trainer.log_every_n_steps", "1"]
    loss = ["--model.loss", "arcface", "--model.margin_warmup_steps", "2", "--model.softmax_scale", "16"]
    FACE_EMBEDDING.main(["fit", *fast_args(ids, tmp_path, *short, *loss)])
    logged = (next(tmp_path.glob("lightning_logs/version_*")) / "metrics.csv").read_text().splitlines()[0]
    assert "train_arcface" in logged and "train_triplet" not in logged
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    assert state["margin_loss.W"].shape == (128, 8)  # one unit vector per training identity
    model, _ = load_face_embedder(ckpt)
    assert not any("margin" in name for name in model.state_dict())
    FACE_EMBEDDING.main(["test", *fast_args(ids, tmp_path, "--data.lfw_root", str(lfw), "--ckpt_path", "last")])
    assert set(read_metrics(tmp_path)["metrics"]) >= TEST_METRICS


def test_distillation_from_a_checkpoint_and_from_a_file(
    faces: tuple[Path, Path], fitted: tuple[Path, dict], tmp_path: Path
) -> None:
    ids, lfw = faces
    ckpt = fitted[0] / "checkpoints" / "last.ckpt"
    short = ["--data.lfw_root", str(lfw), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"]
    # the paper's way: the student only regresses the teacher's embeddings (a teacher at another resolution)
    student = tmp_path / "student"
    distill = ["--model.teacher", str(ckpt), "--model.triplet_weight", "0", "--resolution", "48"]
    FACE_EMBEDDING.main(["fit", *fast_args(ids, student, *short, *distill, "--trainer.log_every_n_steps", "1")])
    logged = (next(student.glob("lightning_logs/version_*")) / "metrics.csv").read_text().splitlines()[0]
    assert "train_distill" in logged and "train_triplet" not in logged
    # precomputed: the teacher's own predict output over the identity folders
    teacher = tmp_path / "teacher"
    FACE_EMBEDDING.main(["predict", *fast_args(ids, teacher, "--ckpt_path", str(ckpt), "--data.predict_dir", str(ids))])
    npy = next(teacher.glob("lightning_logs/version_*/embeddings.npy"))
    mixed = tmp_path / "mixed"
    args = [
        "--data.teacher_embeddings",
        str(npy),
        "--model.distillation_weight",
        "0.5",
        "--trainer.log_every_n_steps",
        "1",
    ]
    FACE_EMBEDDING.main(["fit", *fast_args(ids, mixed, *short, *args)])
    logged = (next(mixed.glob("lightning_logs/version_*")) / "metrics.csv").read_text().splitlines()[0]
    assert "train_distill" in logged and "train_triplet" in logged


def test_without_lfw_tests_on_identities_kept_out_of_selection(
    faces: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datasets.face_identities import FaceDataModule

    ids, _ = faces
    data = FaceDataModule(str(ids), resolution=32, batch_size=8, images_per_identity=2)
    val, test = set(data.heldout_identities), set(data.test_identities)
    assert len(val) == len(test) == 2 and not val & test and not (val | test) & set(data.train_identities)
    assert "testing on 2 further identities" in capsys.readouterr().out
    runs = tmp_path / "runs"
    FACE_EMBEDDING.main(
        ["fit", *fast_args(ids, runs, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2")]
    )
    metrics = read_metrics(runs)["metrics"]
    assert "identification_top1" in metrics and "lfw_accuracy" not in metrics
    config = yaml.safe_load(next(runs.glob("lightning_logs/version_*/config.yaml")).read_text())
    assert config["checkpoint"]["monitor"] == "identification_top1"


def test_without_validation_identities_selects_on_lfw_and_says_so(
    faces: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids, lfw = faces
    short = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--data.heldout_fraction", "0"]
    FACE_EMBEDDING.main(["fit", *fast_args(ids, tmp_path, "--data.lfw_root", str(lfw), *short)])
    assert "selected on LFW's pairs" in capsys.readouterr().out
    config = yaml.safe_load(next(tmp_path.glob("lightning_logs/version_*/config.yaml")).read_text())
    assert config["checkpoint"]["monitor"] == "lfw_accuracy"


def test_bad_lfw_root_is_one_sentence(faces: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    ids, _ = faces
    with pytest.raises(SystemExit) as exit_info:
        FACE_EMBEDDING.main(["fit", *fast_args(ids, tmp_path, "--data.lfw_root", str(ids))])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pairs.txt' does not exist" in err[0]


def test_ddp_fit_splits_the_pk_batches(faces: tuple[Path, Path], tmp_path: Path) -> None:
    """Under DDP the P x K sampler is kept (a DistributedSampler): 4 batches per epoch, 2 per rank."""
    import torch

    ids, lfw = faces
    args = fast_args(ids, tmp_path, "--data.lfw_root", str(lfw), "--trainer.max_epochs", "1")
    args += ["--trainer.devices", "2", "--trainer.strategy", "ddp_fork"]  # ranks forked from this process
    FACE_EMBEDDING.main(["fit", *args])
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
    assert set(read_metrics(tmp_path)["metrics"]) >= VAL_METRICS


@pytest.mark.parametrize(
    "config", sorted((Path(__file__).parents[1] / "configs" / "face_embedding").glob("*.yaml")), ids=lambda p: p.stem
)
def test_configs_parse(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every recipe is valid for the CLI (--print_config: checked, nothing built), with the loss it states."""
    with pytest.raises(SystemExit) as exit_info:
        FACE_EMBEDDING.main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)["model"]
    stated = yaml.safe_load(config.read_text())["model"]
    assert printed["loss"] == stated.get("loss", "triplet") and printed["embedding_size"] == 128
