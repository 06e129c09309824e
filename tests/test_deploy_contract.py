"""``export`` and ``test --deployed``, checked on every task (``tasks.spec.all_tasks()``).

* an fp32 export (OpenVINO, the default runtime) scores the task's monitor as the checkpoint does,
  and its ``deploy.json`` says what it is: task, precision, the checkpoint's SHA-256, the names of
  its outputs, how far it is from the checkpoint;
* an int8 export (ONNX Runtime, the other runtime) is scored by the task's own metric, and
  ``metrics.json`` says which deployed model was scored;
* bad use is one sentence: an existing folder without ``--overwrite``, another task's folder,
  ``--ckpt_path`` with ``--deployed``, a folder missing its model, data with other output names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.probes import expect_one_sentence, metrics_files, one_torch_thread, read_metrics
from tests.tiny_tasks import NO_SANITY, Session, TinyTask, tiny_tasks

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CASES = tiny_tasks()
CLASSIFICATION = CASES[0]
# fp32 export: float rounding only (docs/deploy.md: the parity target).
PARITY = 1e-3


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


@pytest.fixture(params=CASES, ids=[case.name for case in CASES])
def case(request: pytest.FixtureRequest) -> TinyTask:
    return request.param


def export(case: TinyTask, session: Session, runs: Path, out: Path, *options: str) -> None:
    args = session.args(case, runs, "--ckpt_path", session.checkpoint(case), "--out", str(out), *options)
    case.spec.main(["export", *args])


def scored(case: TinyTask, session: Session, runs: Path, *options: str) -> dict:
    case.spec.main(["test", *session.args(case, runs, *options)])
    return read_metrics(runs)


def test_an_fp32_export_scores_as_the_checkpoint(case: TinyTask, session: Session, tmp_path: Path) -> None:
    out = tmp_path / "deployed"
    export(case, session, tmp_path / "export", out)
    assert sorted(p.name for p in out.iterdir()) == ["deploy.json", "model.bin", "model.xml"]
    record = json.loads((out / "deploy.json").read_text())
    checkpoint = Path(session.checkpoint(case))
    assert record["task"] == case.name and record["precision"] == "fp32" and record["runtime"] == "openvino"
    assert record["checkpoint"]["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert record["max_relative_difference_to_checkpoint"] < 1e-2
    assert record["input"]["shape"][0] == "batch" and record["input"]["preprocessing"]

    reference = scored(case, session, tmp_path / "ckpt", "--ckpt_path", str(checkpoint))
    deployed = scored(case, session, tmp_path / "deployed-test", "--deployed", str(out))
    assert deployed["deployed"] == {"folder": str(out), "runtime": "openvino", "precision": "fp32"}
    assert set(deployed["metrics"]) == set(reference["metrics"])
    monitor = case.parity_metric or case.spec.monitor
    assert deployed["metrics"][monitor] == pytest.approx(reference["metrics"][monitor], abs=PARITY)


def test_an_int8_export_is_scored_with_the_tasks_metric(case: TinyTask, session: Session, tmp_path: Path) -> None:
    out = tmp_path / "int8"
    export(case, session, tmp_path / "export", out, "--runtime", "onnxruntime", "--int8", "--calibration", "8")
    record = json.loads((out / "deploy.json").read_text())
    assert (record["precision"], record["runtime"], record["calibration_images"]) == ("int8", "onnxruntime", 8)
    assert sorted(p.name for p in out.iterdir()) == ["deploy.json", "model.onnx"]  # no scratch files left
    deployed = scored(case, session, tmp_path / "test", "--deployed", str(out))
    assert deployed["deployed"]["precision"] == "int8"
    assert case.spec.monitor in deployed["metrics"]


def test_an_existing_folder_is_kept_unless_overwrite(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = CLASSIFICATION
    out = tmp_path / "deployed"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    args = ["export", *session.args(case, tmp_path, "--ckpt_path", session.checkpoint(case), "--out", str(out))]
    expect_one_sentence(case.spec.main, args, r"already exists; pass --overwrite", capsys)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    case.spec.main([*args, "--overwrite"])
    assert sorted(p.name for p in out.iterdir()) == ["deploy.json", "model.bin", "model.xml"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no scratch folder left


def test_bad_deploy_folders_are_one_sentence(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = CLASSIFICATION
    out = tmp_path / "deployed"
    export(case, session, tmp_path / "export", out)
    runs = tmp_path / "runs"

    def refused(*options: str, pattern: str, spec: TinyTask = case) -> None:
        expect_one_sentence(spec.spec.main, ["test", *session.args(spec, runs, *options)], pattern, capsys)
        assert not metrics_files(runs)

    refused("--deployed", str(tmp_path / "nowhere"), pattern=r"is not a deploy folder: it has no deploy.json")
    refused("--deployed", str(out), "--ckpt_path", session.checkpoint(case), pattern=r"either --ckpt_path .* not both")
    geolocation = next(c for c in CASES if c.name == "geolocation")
    refused("--deployed", str(out), spec=geolocation, pattern=r"holds a classification model; use it with")
    record = json.loads((out / "deploy.json").read_text())
    (out / "deploy.json").write_text(json.dumps({**record, "format_version": 99}))
    refused("--deployed", str(out), pattern=r"format version 99; this project reads version 1")
    (out / "deploy.json").write_text(json.dumps(record))
    (out / "model.bin").unlink()
    refused("--deployed", str(out), pattern=r"lacks model.bin; re-run export")


def test_a_deployed_model_is_used_only_with_data_of_the_same_names(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    case = CLASSIFICATION
    out = tmp_path / "deployed"
    export(case, session, tmp_path / "export", out)
    data = case.write(tmp_path / "data")
    assert case.rename is not None
    case.rename(tmp_path / "data")
    args = ["test", *case.args(data, tmp_path / "runs", *NO_SANITY, "--deployed", str(out))]
    expect_one_sentence(case.spec.main, args, r"does not fit the data: its \w+ output \d+ is", capsys)
