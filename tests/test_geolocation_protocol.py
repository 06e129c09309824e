"""Geolocation as its papers score it (issue 19): where a prediction lands, Table 11's model size,
five/ten crops, several test sets in one run, and the full distribution on request."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import s2sphere
import torch
import yaml
from PIL import Image
from torchvision import transforms as v1

from backbone.complexity import count_complexity
from backbone.mobilenet import IMAGENET_MEAN, IMAGENET_STD
from datasets.demo.geo import write_geo_demo
from datasets.geo_test_sets import eval_transform
from tasks.geolocation.maps import cell_outline
from tasks.geolocation.metrics import METRIC_NAMES
from tasks.geolocation.model import GeoNet, hierarchical_log_probs, multi_crop_log_probs
from tasks.geolocation.module import GeolocationModule
from tasks.geolocation.task import TASK as GEOLOCATION
from tests.probes import ROOT, expect_one_sentence, read_metrics, tiny_run_args

CONFIGS = ROOT / "configs" / "geolocation"
# GeoEstimation's published MP-16 partitions (T2 = 50, 4,723,695 photos), T1 -> cells: the rows of
# TIBHannover/GeoEstimation's cells_50_1000.csv, cells_50_2000.csv and cells_50_5000.csv.
GEOESTIMATION_MP16_CELLS = {1000: 12_893, 2000: 7_202, 5000: 3_298}


# --- where a prediction lands, and Table 11's size ---------------------------------------------
def printed_config(capsys: pytest.CaptureFixture[str], *configs: str) -> dict:
    args = ["fit", *(a for c in configs for a in ("--config", str(CONFIGS / c))), "--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        GEOLOCATION.main(args)
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_planet_config_predicts_the_center_and_table11_gives_13m_parameters(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """planet.yaml reads a cell as PlaNet does (its center; the code default is GeoEstimation's
    centroid); planet.yaml + table11.yaml give the paper's 13M-parameter, 0.58-billion mult-add
    model on MP-16, by GeoEstimation's published cell counts interpolated at its T1."""
    assert printed_config(capsys)["model"]["predict_location"] == "centroid"
    config = printed_config(capsys, "planet.yaml", "table11.yaml")
    assert config["model"]["predict_location"] == "center"
    assert config["model"]["optimizer"]["class_path"] == "torch.optim.RMSprop"  # planet.yaml's recipe kept
    data = config["data"]
    assert (data["min_photos"], data["min_level"], config["backbone"], config["resolution"]) == (50, 0, 1.0, 224)
    t1s, cells = zip(*sorted(GEOESTIMATION_MP16_CELLS.items()), strict=True)
    expected = float(np.exp(np.interp(np.log(data["max_photos"]), np.log(t1s), np.log(cells))))
    complexity = count_complexity(GeoNet(1.0, [round(expected)]), 224)
    assert 12.5e6 <= complexity.params <= 13.5e6, complexity  # "13 million parameters"
    assert 575e6 <= complexity.mult_adds <= 585e6, complexity  # "0.58" billion mult-adds
    # and PlaNet's own 10,000 / 50 alone are not Table 11's size on MP-16 (1.5k cells: 4.8M)
    assert printed_config(capsys, "planet.yaml")["data"]["max_photos"] == 10_000


# --- the crop protocol ----------------------------------------------------------------------------
def test_five_and_ten_crops_are_geoestimations_views() -> None:
    """At 224 px, ``--data.test_crops 5`` is GeoEstimation's test view (Resize(256), FiveCrop(224),
    ToTensor, Normalize on the PIL image); 10 adds the same crops of the mirrored image."""
    yy, xx = np.mgrid[0:300, 0:404]  # resized to 344 x 256: an even margin, so the flips line up
    pixels = np.stack([xx * 255 // 404, yy * 255 // 300, (xx // 50 + yy // 50) % 2 * 200], axis=-1)
    image = Image.fromarray(pixels.astype(np.uint8))
    theirs = v1.Compose([v1.Resize(256), v1.FiveCrop(224)])(image)
    finish = v1.Compose([v1.ToTensor(), v1.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    reference = torch.stack([finish(crop) for crop in theirs])
    five = eval_transform(224, 5)(image)
    assert five.shape == (5, 3, 224, 224)
    # the same crops; the pixels differ only by the resize filter (PIL's against torch's antialias)
    assert (five - reference).abs().mean() < 0.02 and (five - reference).abs().max() < 0.5
    ten = eval_transform(224, 10)(image)
    assert ten.shape == (10, 3, 224, 224)
    assert torch.equal(ten[:5], five)
    assert torch.equal(ten[5], five[1].flip(-1)) and torch.equal(
        ten[6], five[0].flip(-1)
    )  # TenCrop: flips swap corners
    assert torch.equal(ten[9], five[4].flip(-1))


def test_max_over_crops_then_the_hierarchy_is_geoestimations_reading() -> None:
    """``multi_crop_log_probs`` against GeoEstimation's ``_multi_crop_inference`` written out:
    softmax per crop and partition, max over crops, product over the hierarchy, argmax."""
    torch.manual_seed(0)
    batch, crops, coarse, fine = 6, 5, 3, 7
    parents = torch.tensor([[0, 0, 1, 1, 2, 2, 2]])
    logits = [torch.randn(batch * crops, coarse) * 3, torch.randn(batch * crops, fine) * 3]
    maxed = [torch.softmax(h, 1).reshape(batch, crops, -1).max(1).values for h in logits]
    theirs = maxed[1] * maxed[0][:, parents[0]]
    ours = multi_crop_log_probs(logits, crops, parents)
    assert torch.equal(ours.argmax(1), theirs.argmax(1))
    shift = ours - theirs.log()  # a per-image constant (each partition's maxima renormalised)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-5)
    # one crop is the plain reading
    assert torch.allclose(multi_crop_log_probs(logits, 1, parents), hierarchical_log_probs(logits, parents))


def test_an_exported_model_is_read_over_crops_through_its_one_output() -> None:
    """``test --deployed`` replaces ``forward`` (the product over the hierarchy is all an exported
    model gives): the crops of a batch go through it once, and their max picks the checkpoint's cells."""
    module = GeolocationModule(num_cells=7, width=0.25, resolution=32).eval()
    images = torch.randn(3, 5, 3, 32, 32)
    with torch.no_grad():
        direct = module.cell_scores(images)
        shapes = []
        network = module.deploy_network()

        def exported(batch: torch.Tensor) -> torch.Tensor:
            shapes.append(tuple(batch.shape))
            return network(batch)

        module.use_deployed(exported)
        module.deployed = {"folder": "stand-in"}
        deployed = module.cell_scores(images)
    assert shapes == [(15, 3, 32, 32)]
    assert torch.equal(deployed.argmax(1), direct.argmax(1))
    shift = deployed - direct  # one partition: the same scores up to a per-image constant
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-5)


# --- a tiny trained model, scored on two named sets ------------------------------------------------
@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Training photos (with a 9-photo test split) and a second, differently seeded test set of 5."""
    base = tmp_path_factory.mktemp("geo_sets")
    write_geo_demo(base / "main", train=60, test=9, size=40)
    write_geo_demo(base / "other", train=2, test=5, size=40, seed=7)
    (base / "other" / "train.csv").unlink()  # a test set as Im2GPS is: test photos only
    return {"main": base / "main", "other": base / "other"}


def args(root: Path, runs: Path, *extra: str) -> list[str]:
    return tiny_run_args(root, runs, "--data.max_photos", "12", "--data.min_photos", "2", *extra, resolution=32)


@pytest.fixture(scope="module")
def checkpoint(sets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("geo_protocol_runs")
    GEOLOCATION.main(["fit", *args(sets["main"], runs, "--trainer.max_epochs", "2")])
    return runs / "checkpoints" / "last.ckpt"


def test_several_test_sets_in_one_run_with_five_crops(sets: dict[str, Path], checkpoint: Path, tmp_path: Path) -> None:
    """``--data.test_sets`` scores each set on its own loader, its metrics under its name, and
    each set's numbers are those of a run on that set alone; error curves are per set."""
    named = [a for name, root in sets.items() for a in (f"--data.test_sets.{name}", str(root))]
    extra = ("--ckpt_path", str(checkpoint), "--data.test_crops", "5", "--data.batch_size", "4")
    GEOLOCATION.main(["test", *args(sets["main"], tmp_path / "both", *extra, *named, "--model.error_curve", "true")])
    both = read_metrics(tmp_path / "both")["metrics"]
    assert set(both) == {f"{name}/{metric}" for name in sets for metric in METRIC_NAMES}
    curves = sorted(p.name for p in (tmp_path / "both").rglob("error_curve*.png"))
    assert curves == ["error_curve_main.png", "error_curve_other.png"]
    for name, root in sets.items():
        GEOLOCATION.main(["test", *args(root, tmp_path / name, *extra)])
        alone = read_metrics(tmp_path / name)["metrics"]
        assert {m: both[f"{name}/{m}"] for m in METRIC_NAMES} == pytest.approx(alone, abs=1e-9), name


def test_two_ddp_processes_score_each_named_set_whole(sets: dict[str, Path], checkpoint: Path, tmp_path: Path) -> None:
    """2 CPU processes (gloo, forked) give each set's metrics of 1 process: 9 and 5 photos split
    unevenly over the ranks, every photo counted once, per set."""
    named = json.dumps({name: str(root) for name, root in sets.items()})
    results = {}
    for devices, strategy in (("1", "auto"), ("2", "ddp_fork")):
        extra = ("--ckpt_path", str(checkpoint), "--data.test_sets", named, "--data.test_crops", "5")
        extra += ("--data.batch_size", "1", "--trainer.devices", devices, "--trainer.strategy", strategy)
        GEOLOCATION.main(["test", *args(sets["main"], tmp_path / devices, *extra)])
        results[devices] = read_metrics(tmp_path / devices)["metrics"]
    assert results["2"] == pytest.approx(results["1"], abs=1e-6)


def test_bad_test_sets_are_one_sentence(
    sets: dict[str, Path], checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing folder, a name that cannot prefix a metric and a crop count other than 1, 5, 10:
    one sentence each, before any photo is read."""
    ckpt = ("--ckpt_path", str(checkpoint))
    missing = json.dumps({"im2gps": str(tmp_path / "nowhere")})
    pattern = r"--data.test_sets im2gps: the folder '.*nowhere' does not exist; expected a folder with test.csv"
    expect_one_sentence(GEOLOCATION.main, ["test", *args(sets["main"], tmp_path, *ckpt, "--data.test_sets", missing)],
                        pattern, capsys)  # fmt: skip
    slash = json.dumps({"a/b": str(sets["other"])})
    expect_one_sentence(GEOLOCATION.main, ["test", *args(sets["main"], tmp_path, *ckpt, "--data.test_sets", slash)],
                        r"--data.test_sets has a set named 'a/b'; expected a name of letters", capsys)  # fmt: skip
    expect_one_sentence(GEOLOCATION.main, ["test", *args(sets["main"], tmp_path, *ckpt, "--data.test_crops", "3")],
                        r"--data.test_crops is .?3.?; expected one of", capsys)  # fmt: skip


# --- the full distribution and world maps -----------------------------------------------------------
def test_predict_writes_every_probability_and_world_maps(sets: dict[str, Path], checkpoint: Path) -> None:
    runs = checkpoint.parents[1]
    extra = ("--ckpt_path", str(checkpoint), "--data.test_crops", "10")
    extra += ("--model.write_probabilities", "true", "--model.world_maps", "2", "--model.top_k", "3")
    GEOLOCATION.main(["predict", *args(sets["main"], runs, *extra)])
    folder = max(runs.glob("lightning_logs/version_*/predictions.csv"), key=lambda p: p.stat().st_mtime).parent
    matrix = np.load(folder / "probabilities.npy")
    with (folder / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    with (folder / "probabilities_cells.csv").open() as handle:
        cells = list(csv.DictReader(handle))
    trained = (runs / "lightning_logs").glob("version_*/cells.csv")
    tokens = [line.split(",")[0] for line in next(iter(trained)).read_text().splitlines()[1:]]
    assert matrix.dtype == np.float16 and matrix.shape == (len(rows), len(cells)) == (9, len(tokens))
    assert [c["token"] for c in cells] == tokens
    assert np.allclose(matrix.astype(np.float64).sum(1), 1.0, atol=5e-3)
    column = {token: c for c, token in enumerate(tokens)}
    for row, probs in zip(rows, matrix, strict=True):  # the matrix row is the image of the csv row
        for k in (1, 2, 3):
            assert float(probs[column[row[f"cell_{k}"]]]) == pytest.approx(float(row[f"prob_{k}"]), abs=1e-3)
        assert probs[column[row["cell_1"]]] == probs.max()
    maps = sorted((folder / "world_maps").iterdir())
    stems = [Path(r["path"]).stem for r in rows[:2]]
    assert [m.name for m in maps] == [f"0001_{stems[0]}.png", f"0002_{stems[1]}.png"]
    assert all(m.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for m in maps)


@pytest.mark.parametrize("token", ["1", "5", "b", "44", "bc", "7", "8085", "47e66fd", "6b12ae1"])
def test_cell_outlines_follow_s2_cells(token: str) -> None:
    """Every corner of the cell is on its outline (longitudes modulo 360), every outline point is
    inside the cell's latitude/longitude bound, and a cell holding a pole is closed at it."""
    outline = cell_outline(token)
    cell = s2sphere.Cell(s2sphere.CellId.from_token(token))
    bound = cell.get_rect_bound()
    lat_lo, lat_hi = bound.lat_lo().degrees - 1e-6, bound.lat_hi().degrees + 1e-6
    assert ((outline[:, 1] >= lat_lo) & (outline[:, 1] <= lat_hi)).all()
    for k in range(4):
        corner = s2sphere.LatLng.from_point(cell.get_vertex(k))
        lat, lon = corner.lat().degrees, corner.lng().degrees
        on_lat = np.isclose(outline[:, 1], lat, atol=1e-6)
        on_lon = np.isclose((outline[:, 0] - lon + 180.0) % 360.0, 180.0, atol=1e-6) | (abs(lat) > 89.999)
        assert (on_lat & on_lon).any(), (token, k, lat, lon)
    holds_pole = any(cell.contains(s2sphere.Point(0.0, 0.0, z)) for z in (1.0, -1.0))
    assert holds_pole == (np.abs(outline[:, 1]) > 89.999).any()
