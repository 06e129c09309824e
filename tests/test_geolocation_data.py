"""Geolocation data as users have it (issue 19): missing images, GeoEstimation's cells and rule,
the validation cap, Im2GPS3k's swapped header, photos outside ``--data.cells``."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import s2sphere

from backbone.errors import BadInputError
from benchmarks.geolocation import synthetic_photos
from datasets.demo.geo import CITIES, place_photos, write_geo_demo
from datasets.geo_partition import Partition, build_partition
from datasets.geo_photos import GeoPhotosDataModule
from datasets.geo_tables import read_geo_csv
from tasks.geolocation.module import GeolocationModule
from tasks.geolocation.task import TASK as GEOLOCATION
from tests.probes import expect_one_sentence, tiny_run_args

GEOESTIMATION_HEADER = "class_label,hex_id,imgs_per_cell,latitude_mean,longitude_mean"


# --- GeoEstimation's create_cells.py, ported as the reference ----------------------------------
# TIBHannover/GeoEstimation, create_cells.py (its partitioning/ step): the same functions and
# comparisons, without the multiprocessing pool (which only changes the order photos are met in).
def _cell_at_level(cell: s2sphere.Cell, level: int) -> str:
    return cell.id().parent(level).to_token()


def _delete_cells(photos: list[list], h: dict[str, int], t_min: int) -> tuple[list[list], dict[str, int]]:
    deleted = {k for k, v in h.items() if v <= t_min}  # "Remove cells with |img| < t_min": v <= t_min
    return [p for p in photos if p[3] not in deleted], {k: v for k, v in h.items() if v > t_min}


def _gen_subcells(photos: list[list], h_0: dict[str, int], level: int, t_max: int) -> tuple[list[list], dict]:
    h: dict[str, int] = {}
    for photo in photos:
        if h_0[photo[3]] > t_max:
            photo[3] = _cell_at_level(photo[4], level)
        h[photo[3]] = h.get(photo[3], 0) + 1
    return photos, h


def geoestimation_cells(
    lat: np.ndarray, lon: np.ndarray, img_min: int, img_max: int, lvl_min: int = 2, lvl_max: int = 30
) -> list[tuple[int, str, int, float, float]]:
    """The rows create_cells.py writes: (class_label, hex_id, imgs_per_cell, latitude_mean, longitude_mean)."""
    photos = []
    for k, (a, b) in enumerate(zip(lat.tolist(), lon.tolist(), strict=True)):
        cell = s2sphere.Cell.from_lat_lng(s2sphere.LatLng.from_degrees(a, b))
        photos.append([k, a, b, _cell_at_level(cell, lvl_min), cell])
    h = dict(Counter(p[3] for p in photos))
    photos, h = _delete_cells(photos, h, img_min)
    level = lvl_min
    while any(v > img_max for v in h.values()) and level < lvl_max:
        level += 1
        photos, h = _gen_subcells(photos, h, level, img_max)
    photos, h = _delete_cells(photos, h, img_min)
    sums = {k: [0.0, 0.0] for k in h}
    for photo in photos:
        sums[photo[3]][0] += photo[1]
        sums[photo[3]][1] += photo[2]
    return [(label, k, v, sums[k][0] / v, sums[k][1] / v) for label, (k, v) in enumerate(h.items())]


def geoestimation_class(lat: float, lon: float, mapping: dict[str, int]) -> int:
    """GeoEstimation's assign_classes.py: the class of the first ancestor (levels 2-29) in the file, else -1."""
    cell = s2sphere.Cell.from_lat_lng(s2sphere.LatLng.from_degrees(lat, lon))
    for level in range(2, 30):
        token = cell.id().parent(level).to_token()
        if token in mapping:
            return mapping[token]
    return -1


def write_geoestimation_file(path: Path, rows: list[tuple[int, str, int, float, float]], notes: bool) -> Path:
    """As published (two 'name: value' lines first) or as create_cells.py writes it now (header first)."""
    lines = ["num_images: 4723695", "min_concept_probability: ---"] if notes else []
    lines += [GEOESTIMATION_HEADER, *(",".join(str(v) for v in row) for row in rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def clustered_photos(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Photos around the demo's 32 cities, each with its own spread (2-80 km), 8% anywhere."""
    rng = np.random.default_rng(seed)
    places = [(lat, lon, weight) for _, lat, lon, weight in CITIES]
    place, lat, lon = place_photos(places, count, rng, 1.0)
    spread = rng.uniform(2.0, 80.0, len(places))[place] * (place >= 0)  # km; the strays stay put
    lat = np.clip(lat + rng.normal(0, 1, count) * spread / 111.2, -89.9, 89.9)
    lon = (lon + rng.normal(0, 1, count) * spread / (111.2 * np.cos(np.radians(lat))) + 180.0) % 360.0 - 180.0
    return lat, lon


@pytest.mark.parametrize(("img_min", "img_max"), [(5, 100), (2, 30)])
def test_project_options_reproduce_geoestimations_partition(img_min: int, img_max: int, tmp_path: Path) -> None:
    """create_cells.py --img_min T2 --img_max T1 (start level 2, keep cells holding MORE than T2, split
    cells holding more than T1, down to level 30) = --data.min_level 2 --data.min_photos T2+1
    --data.max_photos T1 (--data.centroid_mean degrees for their centroids)."""
    lat, lon = clustered_photos(3000, seed=19)
    theirs = {token: (count, a, b) for _, token, count, a, b in geoestimation_cells(lat, lon, img_min, img_max)}
    rows = "".join(f"{k}.jpg,{a!r},{b!r}\n" for k, (a, b) in enumerate(zip(lat.tolist(), lon.tolist(), strict=True)))
    (tmp_path / "train.csv").write_text("IMG_ID,LAT,LON\n" + rows)
    options = {"min_level": 2, "min_photos": img_min + 1, "max_photos": img_max, "centroid_mean": "degrees"}
    ours = GeoPhotosDataModule(str(tmp_path), val_share=0.0, **options).partitions[-1]
    assert len(theirs) > 20 and sorted(ours.tokens) == sorted(theirs)
    for token, count, (a, b) in zip(ours.tokens, ours.counts.tolist(), ours.centroids.tolist(), strict=True):
        assert count == theirs[token][0] and (a, b) == pytest.approx(theirs[token][1:], abs=1e-9)
    assert ours.levels.min() >= 2 and ours.levels.max() > 4  # split over several levels
    # the mean on the sphere (the default) moves only the centroids
    sphere = build_partition(lat, lon, img_max, img_min + 1, 2)
    assert sphere.tokens == ours.tokens and np.array_equal(sphere.counts, ours.counts)
    # T2 itself (PlaNet's >=) keeps the cells holding exactly T2 photos, which create_cells.py drops
    plain = build_partition(lat, lon, img_max, img_min, 2)
    assert len(plain) - len(ours) == int((plain.counts == img_min).sum()) > 0


def test_geoestimation_cells_files_are_read_in_their_class_order(tmp_path: Path) -> None:
    lat, lon = clustered_photos(2000, seed=7)
    rows = geoestimation_cells(lat, lon, 3, 60)
    rows = [(len(rows) - 1 - label, *rest) for label, *rest in rows]  # labels in another order than the lines
    mapping = {token: label for label, token, *_ in rows}
    for notes in (True, False):
        path = write_geoestimation_file(tmp_path / f"cells_3_60_{notes}.csv", rows, notes)
        cells = Partition.load_csv(path)
        by_label = sorted(rows)
        assert cells.tokens == [token for _, token, *_ in by_label] != sorted(cells.tokens)  # row k is class k
        assert cells.counts.tolist() == [count for _, _, count, _, _ in by_label]
        assert np.array_equal(cells.centroids, np.array([(a, b) for *_, a, b in by_label]))  # what centroid predicts
        centers = [s2sphere.CellId.from_token(t).to_lat_lng() for t in cells.tokens]
        assert np.allclose(cells.centers, [(c.lat().degrees, c.lng().degrees) for c in centers])
        # every photo gets the class GeoEstimation's assign_classes.py gives it
        assert cells.assign(lat, lon).tolist() == [
            geoestimation_class(a, b, mapping) for a, b in zip(lat, lon, strict=True)
        ]
    # the model predicts the file's latitude_mean, longitude_mean for a cell (--model.predict_location centroid)
    model = GeolocationModule(num_cells=len(cells), width=0.25, resolution=32)
    model.set_partitions([cells])
    assert np.array_equal(model.cell_centroids.numpy(), cells.centroids)


def test_a_cells_file_of_neither_format_is_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "cells.csv"
    path.write_text("num_images: 3\nid,cell,n\n1,89c25,4\n")
    pattern = (
        r"cells.csv' line 2: the header 'id,cell,n' has neither the columns token,count,lat,lon,center_lat,"
        r"center_lon \(.*\) nor class_label,hex_id,imgs_per_cell,latitude_mean,longitude_mean \(GeoEstimation's"
    )
    with pytest.raises(BadInputError, match=pattern):
        Partition.load_csv(path)


# --- a second generated set, unlike the demo ---------------------------------------------------
def second_set(root: Path, train: int = 60, test: int = 6) -> Path:
    """Other places, spread, look and seed than the demo (datasets/demo/geo.py's defaults), 32 px."""
    places = [(64.1, -21.9, 2.0), (-1.3, 36.8, 1.0), (35.7, 139.7, 3.0), (-34.6, -58.4, 1.0), (19.4, -99.1, 1.5)]
    write_geo_demo(root, train=train, test=test, size=32, places=places, spread_km=60.0, look="bands", seed=19)
    return root


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return second_set(tmp_path_factory.mktemp("geo_second"))


def fast_args(root: Path, runs: Path, *extra: str) -> list[str]:
    return tiny_run_args(root, runs, "--data.max_photos", "20", "--data.min_photos", "2", *extra, resolution=32)


def delete_images(root: Path, ids: np.ndarray) -> list[str]:
    names = [i.decode() for i in ids]
    for name in names:
        (root / "images" / name).unlink()
    return names


def test_missing_files_lists_each_folder_once_and_names_what_is_not_a_file(tmp_path: Path) -> None:
    from datasets.file_presence import missing_files

    for name in ("a.jpg", "x/1.jpg", "x/2.jpg", "x/y/3.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    (tmp_path / "x" / "folder.jpg").mkdir()  # a folder under a photo's name is not its image
    names = [b"a.jpg", b"b.jpg", b"x/1.jpg", b"x/2.jpg", b"x/folder.jpg", b"x/y/3.jpg", b"gone/4.jpg", b"x/3.jpg"]
    for workers in (1, 3):
        found = missing_files(tmp_path, names, workers=workers).tolist()
        assert found == [False, True, False, False, True, False, True, True]


def test_missing_images_refuse_fit_before_the_first_step(second: Path, tmp_path: Path, capsys) -> None:
    data = shutil.copytree(second, tmp_path / "data")
    train, _ = GeoPhotosDataModule(str(data)).split_tables()
    gone = delete_images(data, train.ids[[3, 10, 20, 30]])
    pattern = (
        rf"4 of the {len(train)} training photos of '.*train.csv' have no image in '.*images' \(first: "
        rf"'{gone[0]}', '{gone[1]}', '{gone[2]}'\); expected images/<IMG_ID> for every row, or "
        r"--data.skip_missing true to use the others\."
    )
    runs = tmp_path / "runs"
    expect_one_sentence(GEOLOCATION.main, ["fit", *fast_args(data, runs)], pattern, capsys)
    assert not list(runs.rglob("*.ckpt"))  # no step was taken


def test_skip_missing_drops_and_counts_them_in_every_split(second: Path, tmp_path: Path) -> None:
    data = shutil.copytree(second, tmp_path / "data")
    train, val = GeoPhotosDataModule(str(data)).split_tables()
    test = read_geo_csv(data / "test.csv")
    delete_images(data, np.concatenate([train.ids[:5], val.ids[:1], test.ids[:2]]))
    module = GeoPhotosDataModule(str(data), skip_missing=True, resolution=32)
    with pytest.warns(UserWarning, match=rf"5 of the {len(train)} training photos .* using the other {len(train) - 5}"):
        assert len(module.dataset("train").table) == len(train) - 5
    with pytest.warns(UserWarning, match=rf"1 of the {len(val)} validation photos"):
        assert len(module.dataset("val")) == len(val) - 1
    with pytest.warns(UserWarning, match=rf"2 of the {len(test)} test photos"):
        assert len(module.dataset("test")) == len(test) - 2
    # a few steps of fit on the rest: nothing fails mid-epoch
    runs = tmp_path / "runs"
    GEOLOCATION.main(["fit", *fast_args(data, runs, "--data.skip_missing", "true", "--trainer.max_steps", "3")])
    assert (runs / "checkpoints" / "last.ckpt").is_file()


def test_validation_is_a_fixed_capped_sample_out_of_the_partition(second: Path, tmp_path: Path) -> None:
    """The default cap (25,600) leaves a small set's 10% alone; a lower one caps it, the same in every process."""
    default = GeoPhotosDataModule(str(second))
    train, val = default.split_tables()
    assert len(val) == round(0.1 * 60) and len(train) == 60 - len(val)
    capped = [GeoPhotosDataModule(str(second), val_share=0.5, val_max_photos=7) for _ in range(2)]  # two "ranks"
    (train_a, val_a), (train_b, val_b) = (m.split_tables() for m in capped)
    assert len(val_a) == 7 and len(train_a) == 53 and val_a.ids.tolist() == val_b.ids.tolist()
    assert not set(val_a.ids.tolist()) & set(train_a.ids.tolist())
    fine = capped[0].partitions[-1]  # built from the training photos only
    inside = fine.assign(train_a.lat, train_a.lon) >= 0
    assert int(fine.counts.sum()) == int(inside.sum())
    # a val.csv larger than the cap: a fixed sample of it
    root = shutil.copytree(second, tmp_path / "with_val")
    shutil.copy(root / "test.csv", root / "val.csv")
    sampled = [GeoPhotosDataModule(str(root), val_max_photos=4).split_tables()[1].ids.tolist() for _ in range(2)]
    assert len(sampled[0]) == 4 and sampled[0] == sampled[1]
    assert len(GeoPhotosDataModule(str(root)).split_tables()[1]) == 6  # under the default cap: all of it


def test_the_default_cap_holds_out_25600_of_a_large_table(tmp_path: Path) -> None:
    """300k photos (10% would be 30k): 25,600 held out, the rest partitioned. CSV only, no image is read."""
    lat, lon = synthetic_photos(300_000, seed=2)
    rows = "".join(
        f"{k}.jpg,{a:.5f},{b:.5f}\n" for k, (a, b) in enumerate(zip(lat.tolist(), lon.tolist(), strict=True))
    )
    (tmp_path / "train.csv").write_text("IMG_ID,LAT,LON\n" + rows)
    data = GeoPhotosDataModule(str(tmp_path))
    train, val = data.split_tables()
    assert (len(train), len(val)) == (300_000 - 25_600, 25_600)
    assert int(data.partitions[-1].counts.sum()) <= len(train)


# --- Im2GPS3k: a LON,LAT header over latitude, longitude values --------------------------------
IM2GPS3K = (
    "IMG_ID,AUTHOR,LON,LAT,S3_Label\n"
    "1000269685_e60e9cdfb4_1125_78841376@N00.jpg,78841376@N00,32.325436,-64.764404,2\n"
    "104132709_97b998c989_41_19355699@N00.jpg,19355699@N00,-33.861328,151.209039,2\n"
    "1005977048_5ccf8b05d3_1201_91728102@N00.jpg,91728102@N00,29.976052,122.390356,2\n"
)


def test_swapped_lat_lon_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "im2gps3k.csv"
    path.write_text(IM2GPS3K)
    swapped = r"\(LAT and LON look swapped: .* swap the two names in the header\)\.$"
    with pytest.raises(BadInputError, match=r"im2gps3k.csv' line 3: LAT is '151.209039'; expected a latitude in "
                       r"\[-90, 90\] " + swapped):  # fmt: skip
        read_geo_csv(path)
    # a latitude truly out of range, with columns that would not pass swapped either: no hint
    path.write_text(IM2GPS3K.replace("29.976052,122.390356", "129.976052,122.390356"))
    with pytest.raises(BadInputError, match=r"line 3: LAT is '151.209039'; expected a latitude in \[-90, 90\]\.$"):
        read_geo_csv(path)
    # a subset that passes both ways is read by name: nothing in it tells (docs/geolocation.md says so)
    path.write_text("".join(IM2GPS3K.splitlines(keepends=True)[:2]))
    assert read_geo_csv(path).lat.tolist() == [-64.764404]


# --- photos outside --data.cells are counted ------------------------------------------------------
def test_photos_outside_the_given_cells_are_counted(
    second: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train, _ = GeoPhotosDataModule(str(second), val_share=0.0).split_tables()
    cells = build_partition(train.lat, train.lon, 20, 4)
    with (tmp_path / "cells.csv").open("w") as handle:
        cells.write_csv(handle)
    outside = int((cells.assign(train.lat, train.lon) < 0).sum())
    assert 0 < outside <= 0.2 * len(train)
    said: list[str] = []
    monkeypatch.setattr("datasets.geo_photos.rank_zero_info", said.append)  # Lightning's logger does not propagate
    data = GeoPhotosDataModule(str(second), cells=str(tmp_path / "cells.csv"), val_share=0.0, resolution=32)
    assert len(data.train_dataset()) == len(train) - outside
    counted = [line for line in said if "lie in no cell" in line]
    share = f"({outside / len(train):.1%})"
    assert len(counted) == 1 and f"{outside} of the {len(train)} training photos" in counted[0] and share in counted[0]
