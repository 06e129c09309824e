"""``python -m tasks.geolocation`` end to end: fit, the partition in the checkpoint, test, predict, DDP."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import s2sphere
import torch

from datasets.demo.geo import write_geo_demo
from tasks.geolocation.metrics import METRIC_NAMES
from tasks.geolocation.task import TASK as GEOLOCATION
from tests.probes import expect_one_sentence, read_metrics, tiny_run_args


@pytest.fixture(scope="session")
def tiny_geo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo layout: 60 train and 9 test photos (odd: uneven DDP ranks), 40 px."""
    root = tmp_path_factory.mktemp("geo")
    write_geo_demo(root, train=60, test=9, size=40)
    return root


def fast_args(root: Path, runs: Path, *extra: str) -> list[str]:
    return tiny_run_args(root, runs, "--data.max_photos", "12", "--data.min_photos", "2", *extra, resolution=32)


def newest(runs: Path, name: str) -> Path:
    return max(runs.glob(f"lightning_logs/version_*/{name}"), key=lambda p: p.stat().st_mtime)


@pytest.fixture(scope="module")
def trained(tiny_geo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder of a 2-epoch fit on ``tiny_geo`` (shared by the tests that only read its checkpoint)."""
    runs = tmp_path_factory.mktemp("geo_runs")
    GEOLOCATION.main(["fit", *fast_args(tiny_geo, runs, "--trainer.max_epochs", "2")])
    return runs


def test_fit_test_predict_with_the_partition_from_the_checkpoint(tiny_geo: Path, trained: Path, tmp_path: Path) -> None:
    runs = trained
    fitted = read_metrics(runs)
    assert set(fitted["metrics"]) >= set(METRIC_NAMES)
    accs = [fitted["metrics"][name] for name in METRIC_NAMES[:-1]]
    assert accs == sorted(accs) and all(0 <= a <= 1 for a in accs)  # a larger radius holds more photos
    cells_csv = newest(runs, "cells.csv").read_text().splitlines()
    ckpt = runs / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=False)
    assert state["hyper_parameters"]["num_cells"] == len(cells_csv) - 1 == state["state_dict"]["cell_ids"].shape[0]

    # test and predict on a copy of the data without train.csv: the cells come from the checkpoint
    data = tmp_path / "data"
    shutil.copytree(tiny_geo, data)
    (data / "train.csv").unlink()
    GEOLOCATION.main(["test", *fast_args(data, runs, "--ckpt_path", str(ckpt), "--model.error_curve", "true")])
    tested = read_metrics(runs)
    assert tested["stage"] == "test" and set(tested["metrics"]) >= set(METRIC_NAMES)
    assert all(tested["metrics"][n] * 9 == pytest.approx(round(tested["metrics"][n] * 9)) for n in METRIC_NAMES[:-1])
    assert newest(runs, "error_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    GEOLOCATION.main(["predict", *fast_args(data, runs, "--ckpt_path", str(ckpt), "--model.top_k", "3")])
    with newest(runs, "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9 and list(rows[0]) == [
        "path",
        "lat",
        "lon",
        "cell_1",
        "prob_1",
        "cell_2",
        "prob_2",
        "cell_3",
        "prob_3",
    ]
    tokens = {line.split(",")[0] for line in cells_csv[1:]}
    for row in rows:
        probs = [float(row[f"prob_{k}"]) for k in (1, 2, 3)]
        assert probs == sorted(probs, reverse=True) and row["cell_1"] in tokens
        assert -90 <= float(row["lat"]) <= 90 and -180 <= float(row["lon"]) <= 180
    # the predicted location is the centroid of the top cell's training photos
    centroids = {line.split(",")[0]: line.split(",")[2:4] for line in cells_csv[1:]}
    assert [f"{float(v):.6f}" for v in centroids[rows[0]["cell_1"]]] == [rows[0]["lat"], rows[0]["lon"]]

    # a folder of photos (recursively), with the cell's own center as the location
    folder = ["--data.predict_dir", str(data / "images"), "--model.predict_location", "center"]
    GEOLOCATION.main(["predict", *fast_args(data, runs, "--ckpt_path", str(ckpt), *folder)])
    with newest(runs, "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(list((data / "images").rglob("*.jpg"))) == 69
    assert all(row["path"].startswith(str(data / "images")) for row in rows)
    top = s2sphere.CellId.from_token(rows[0]["cell_1"]).to_lat_lng()
    assert [float(rows[0]["lat"]), float(rows[0]["lon"])] == pytest.approx(
        [top.lat().degrees, top.lng().degrees], abs=1e-6
    )


def test_hierarchy_of_partitions_trains_and_tests_from_its_checkpoint(tiny_geo: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    extra = ("--trainer.max_epochs", "1", "--data.coarse_max_photos", "[40, 25]")
    GEOLOCATION.main(["fit", *fast_args(tiny_geo, runs, *extra)])
    state = torch.load(runs / "checkpoints" / "last.ckpt", weights_only=False)
    sizes = [state["state_dict"][f"model.heads.{k}.weight"].shape[0] for k in range(3)]
    assert sizes[0] <= sizes[1] <= sizes[2] and state["state_dict"]["cell_parents"].shape == (2, sizes[2])
    # without the option at test time: the three heads and the hierarchy come from the checkpoint
    GEOLOCATION.main(["test", *fast_args(tiny_geo, runs, "--ckpt_path", "last")])
    assert set(read_metrics(runs)["metrics"]) >= set(METRIC_NAMES)


def test_bad_row_is_one_sentence(tiny_geo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_geo, data)
    lines = (data / "train.csv").read_text().splitlines()
    fields = lines[5].split(",")
    fields[-2] = "123.4"  # LAT
    lines[5] = ",".join(fields)
    (data / "train.csv").write_text("\n".join(lines) + "\n")
    args = ["fit", *fast_args(data, tmp_path / "runs")]
    expect_one_sentence(
        GEOLOCATION.main, args, r"train.csv' line 6: LAT is '123.4'; expected a latitude in \[-90, 90\]", capsys
    )
