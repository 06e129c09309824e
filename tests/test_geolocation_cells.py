"""Geolocation data: vectorised S2 ids against s2sphere, PlaNet's partition, distances, the CSV reader."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import s2sphere
import torch
from sklearn.metrics.pairwise import haversine_distances

from backbone.errors import BadInputError
from benchmarks.geolocation import plain_partition, same_cells, synthetic_photos
from datasets import s2cells
from datasets.geo_partition import Partition, build_partition
from datasets.geo_photos import read_geo_csv
from tasks.geolocation import partition as partition_command
from tasks.geolocation.metrics import EARTH_RADIUS_KM, GreatCircleAccuracy, haversine_km
from tasks.geolocation.model import hierarchical_log_probs

CORNER_LAT = math.degrees(math.atan(1 / math.sqrt(2)))  # a cube corner: |x| = |y| = |z|


def special_points() -> tuple[np.ndarray, np.ndarray]:
    """Poles, the antimeridian, the equator, cube-face edges and corners, and points just beside them."""
    points = [(90.0, 0.0), (-90.0, 0.0), (90.0, 123.0), (-90.0, -45.0), (0.0, 0.0)]
    points += [(lat, lon) for lat in (-60.0, -1e-9, 0.0, 1e-9, 33.3, 89.999999) for lon in (-180.0, 180.0, 179.9999999)]
    for lon in (-135.0, -90.0, -45.0, 0.0, 45.0, 90.0, 135.0, 180.0):  # |x| = |y| on the equator, |z| = |x| ...
        for lat in (0.0, 45.0, -45.0, CORNER_LAT, -CORNER_LAT):
            for eps in (0.0, 1e-12, -1e-12, 1e-7):
                points.append((min(max(lat + eps, -90.0), 90.0), lon + eps))
    lat, lon = np.array(points).T
    return lat, lon


def s2sphere_leaf(lat: float, lon: float) -> int:
    return s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(lat, lon)).id()


def test_leaf_ids_are_s2spheres_on_random_and_edge_points() -> None:
    rng = np.random.default_rng(7)
    edge_lat, edge_lon = special_points()
    lat = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, 3000))), edge_lat])
    lon = np.concatenate([rng.uniform(-180, 180, 3000), edge_lon])
    ids = s2cells.leaf_ids(lat, lon, chunk=1000)  # several chunks
    expected = np.array([s2sphere_leaf(a, b) for a, b in zip(lat, lon, strict=True)], dtype=np.uint64)
    assert np.array_equal(ids, expected), np.flatnonzero(ids != expected)[:5]
    assert set(np.unique(ids >> np.uint64(61)).tolist()) == set(range(6))  # all six faces seen
    for level in (0, 1, 7, 16, 29, 30):
        parents = s2cells.parent_ids(ids[::7], level)
        assert [int(p) for p in parents] == [s2sphere.CellId(int(i)).parent(level).id() for i in ids[::7]]
        assert (s2cells.id_levels(parents) == level).all()


def test_tokens_ranges_and_centers_are_s2spheres() -> None:
    ids = s2cells.parent_ids(s2cells.leaf_ids(np.array([48.85, -33.9, 0.0]), np.array([2.35, 151.2, -180.0])), 9)
    cells = [s2sphere.CellId(int(i)) for i in ids]
    assert s2cells.to_tokens(ids) == [c.to_token() for c in cells]
    assert np.array_equal(s2cells.from_tokens(s2cells.to_tokens(ids)), ids)
    assert [int(v) for v in s2cells.range_min(ids)] == [c.range_min().id() for c in cells]
    assert [int(v) for v in s2cells.range_max(ids)] == [c.range_max().id() for c in cells]
    centers = s2cells.centers(ids)
    assert np.allclose(centers, [(c.to_lat_lng().lat().degrees, c.to_lat_lng().lng().degrees) for c in cells])


@pytest.mark.parametrize(("max_photos", "min_photos", "min_level"), [(40, 5, 0), (15, 1, 3), (100, 0, 0)])
def test_partition_equals_the_plain_s2sphere_rule(max_photos: int, min_photos: int, min_level: int) -> None:
    lat, lon = synthetic_photos(1500, seed=3)
    fast = build_partition(lat, lon, max_photos, min_photos, min_level)
    reference = plain_partition(lat, lon, max_photos, min_photos, min_level)
    assert len(fast) > 5 and same_cells(fast, reference)
    assert (fast.counts <= max_photos).all() and (fast.counts >= min_photos).all()
    assert (fast.levels >= min_level).all()
    # every kept photo is in exactly the cell that counts it
    rows = fast.assign(lat, lon)
    assert np.array_equal(np.bincount(rows[rows >= 0], minlength=len(fast)), fast.counts)


def test_split_stops_at_leaves_and_drops_small_cells() -> None:
    lat = np.array([10.0] * 30 + [-40.0] * 3)  # 30 photos on one spot: never fewer than 30 per cell
    lon = np.array([20.0] * 30 + [100.0] * 3)
    cells = build_partition(lat, lon, max_photos=5, min_photos=4)
    assert len(cells) == 1 and cells.levels.tolist() == [30] and cells.counts.tolist() == [30]
    assert cells.assign(lat, lon).tolist() == [0] * 30 + [-1] * 3  # the 3 photos were dropped


def test_centroid_is_the_mean_on_the_sphere_across_the_antimeridian() -> None:
    lat = np.array([-17.0, -17.0, -17.2, -17.2])
    lon = np.array([179.9, -179.9, 179.95, -179.95])
    cells = build_partition(lat, lon, max_photos=10, min_photos=1)
    ((c_lat, c_lon),) = cells.centroids
    assert abs(abs(c_lon) - 180.0) < 1e-6 and c_lat == pytest.approx(-17.1, abs=1e-3)  # not lon 0


def test_cells_csv_round_trip_and_bad_files(tmp_path: Path) -> None:
    lat, lon = synthetic_photos(800, seed=5)
    cells = build_partition(lat, lon, 30, 3)
    out = tmp_path / "cells.csv"
    partition_command.main(["--csv", str(write_csv(tmp_path / "t.csv", lat, lon)), "--max-photos", "30",
                            "--min-photos", "3", "--out", str(out)])  # fmt: skip
    assert out.read_text().splitlines()[0] == "token,count,lat,lon,center_lat,center_lon"
    loaded = Partition.load_csv(out)
    assert same_cells(loaded, cells, tolerance_deg=1e-7)  # 7 decimals in the file
    lines = out.read_text().splitlines()
    (tmp_path / "overlap.csv").write_text("\n".join([lines[0], lines[1], lines[1]]) + "\n")
    with pytest.raises(
        BadInputError, match=r"line 3: token is '\w+'; expected each token once \(it is also on line 2\)"
    ):
        Partition.load_csv(tmp_path / "overlap.csv")
    (tmp_path / "token.csv").write_text(lines[0] + "\nxyz,3,0,0,0,0\n")
    with pytest.raises(BadInputError, match=r"line 2: token is 'xyz'; expected the token of a valid S2 cell"):
        Partition.load_csv(tmp_path / "token.csv")


def write_csv(path: Path, lat: np.ndarray, lon: np.ndarray) -> Path:
    rows = [f"{k}.jpg,{a!r},{b!r}" for k, (a, b) in enumerate(zip(lat.tolist(), lon.tolist(), strict=True))]
    path.write_text("IMG_ID,LAT,LON\n" + "\n".join(rows) + "\n")
    return path


def test_csv_columns_by_name_and_extra_columns_ignored(tmp_path: Path) -> None:
    path = tmp_path / "mp16.csv"
    path.write_bytes(b'LON,AUTHOR,IMG_ID,lat\r\n2.35,"a, b",x/#1.jpg,48.85\r\n\r\n-179.5,c,y/2.jpg,-17\r\n')
    table = read_geo_csv(path)
    assert table.ids.tolist() == [b"x/#1.jpg", b"y/2.jpg"]
    assert table.lat.tolist() == [48.85, -17.0] and table.lon.tolist() == [2.35, -179.5]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("IMG_ID,LAT\na.jpg,1\n", r"line 1: the header 'IMG_ID,LAT' has no column 'LON'"),
        ("IMG_ID,LAT,LON\na.jpg,1,2\nb.jpg,90.5,2\n", r"line 3: LAT is '90.5'; expected a latitude in \[-90, 90\]"),
        ("IMG_ID,LAT,LON\na.jpg,1,-180.01\n", r"line 2: LON is '-180.01'; expected a longitude in \[-180, 180\]"),
        ("IMG_ID,LAT,LON\na.jpg,1,2\nb.jpg,nan,2\n", r"line 3: LAT is 'nan'"),
        ("IMG_ID,LAT,LON\na.jpg,north,2\n", r"line 2: LAT is 'north'"),
        ("IMG_ID,LAT,LON\na.jpg,1,2\nb.jpg,1\n", r"line 3: LON is missing \(the line has 2 fields\)"),
        ("IMG_ID,LAT,LON\n", r"holds no photos"),
    ],
)
def test_bad_csv_rows_are_named(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "train.csv"
    path.write_text(body)
    with pytest.raises(BadInputError, match=message):
        read_geo_csv(path)


def test_partition_command_keeps_the_old_file_on_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cells.csv"
    out.write_text("old\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("IMG_ID,LAT,LON\na.jpg,1,2\nb.jpg,91,2\n")
    with pytest.raises(SystemExit) as exit_info:
        partition_command.main(["--csv", str(bad), "--max-photos", "10", "--min-photos", "1", "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "line 3: LAT is '91'" in err[0]
    assert out.read_text() == "old\n" and sorted(tmp_path.iterdir()) == sorted([out, bad])  # no temporary left


def test_haversine_against_scikit_learn_including_antipodes_and_the_antimeridian() -> None:
    rng = np.random.default_rng(11)
    a = np.stack([np.degrees(np.arcsin(rng.uniform(-1, 1, 500))), rng.uniform(-180, 180, 500)], axis=1)
    b = np.stack([np.degrees(np.arcsin(rng.uniform(-1, 1, 500))), rng.uniform(-180, 180, 500)], axis=1)
    special_a = np.array([[0.0, 0.0], [10.0, 179.9], [45.0, 30.0], [90.0, 0.0], [-33.9, 151.2], [1.0, 1.0]])
    special_b = np.array(
        [[0.0, 180.0], [10.0, -179.9], [-45.0, -150.0], [-90.0, 77.0], [-33.9, 151.2], [1.0, 1.0 + 1e-7]]
    )
    a, b = np.concatenate([a, special_a]), np.concatenate([b, special_b])
    ours = haversine_km(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    reference = np.array(
        [haversine_distances(np.radians([p]), np.radians([q]))[0, 0] for p, q in zip(a, b, strict=True)]
    )
    assert np.allclose(ours, reference * EARTH_RADIUS_KM, rtol=1e-9, atol=1e-6)
    half = math.pi * EARTH_RADIUS_KM
    assert ours[-6] == pytest.approx(half) and ours[-4] == pytest.approx(half) and ours[-3] == pytest.approx(half)
    assert ours[-5] == pytest.approx(2 * math.pi * EARTH_RADIUS_KM * math.cos(math.radians(10)) * 0.2 / 360, rel=1e-6)
    assert ours[-2] == 0.0 and 0 < ours[-1] < 0.02


def test_accuracies_count_errors_up_to_and_including_d_and_the_median() -> None:
    metric = GreatCircleAccuracy()
    km_per_degree = math.pi * EARTH_RADIUS_KM / 180
    errors_km = np.array([0.5, 24.99, 25.01, 199.0, 760.0, 2400.0, 5000.0, 12000.0])
    target = np.zeros((len(errors_km), 2))
    predicted = np.stack([errors_km / km_per_degree, np.zeros(len(errors_km))], axis=1)  # along a meridian
    metric.update(torch.from_numpy(predicted[:5]), torch.from_numpy(target[:5]))
    metric.update(torch.from_numpy(predicted[5:]), torch.from_numpy(target[5:]))
    values = {k: float(v) for k, v in metric.compute().items()}
    assert values == pytest.approx(
        {
            "acc_1km": 1 / 8,
            "acc_25km": 2 / 8,
            "acc_200km": 4 / 8,
            "acc_750km": 4 / 8,
            "acc_2500km": 6 / 8,
            "median_km": (199.0 + 760.0) / 2,
        }  # fmt: skip
    )


def test_hierarchy_multiplies_each_cells_probability_by_its_ancestors() -> None:
    coarse, fine = torch.randn(3, 2), torch.randn(3, 5)
    parents = torch.tensor([[0, 0, 1, 1, 1]])
    expected = fine.softmax(1) * coarse.softmax(1)[:, parents[0]]
    assert torch.allclose(hierarchical_log_probs([coarse, fine], parents).exp(), expected, atol=1e-6)
    assert torch.allclose(hierarchical_log_probs([fine], parents[:0]), fine.log_softmax(1))


def test_data_module_labels_photos_with_the_given_cells(tmp_path: Path) -> None:
    from datasets.demo.geo import write_geo_demo
    from datasets.geo_photos import GeoPhotosDataModule

    write_geo_demo(tmp_path, train=40, test=3, size=32)
    table = read_geo_csv(tmp_path / "train.csv")
    cells = build_partition(table.lat, table.lon, 8, 3)
    with (tmp_path / "cells.csv").open("w") as handle:
        cells.write_csv(handle)
    data = GeoPhotosDataModule(str(tmp_path), cells=str(tmp_path / "cells.csv"), val_share=0.25, resolution=32)
    assert data.num_cells == len(cells) and data.coarse_num_cells == []
    train, val = data.split_tables()
    assert len(train) == 30 and len(val) == 10 and not set(train.ids.tolist()) & set(val.ids.tolist())
    labels = cells.assign(train.lat, train.lon)
    dataset = data.train_dataset()
    assert len(dataset) == int((labels >= 0).sum())  # photos outside the cells are not trained on
    assert dataset.cells[:, -1].tolist() == labels[labels >= 0].tolist()
    image, target = dataset[0]
    assert image.shape == (3, 32, 32) and int(target["cells"][-1]) == labels[labels >= 0][0]
