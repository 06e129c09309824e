"""Smoke test of ``python -m benchmarks``: the quick mode of each section runs and prints the expected rows.

Timings are not checked (the machine is shared and noisy); only the structure of the printed
markdown tables and of the JSON.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmarks.__main__ import main, parse_args
from benchmarks.common import SECTIONS, Section, register


@pytest.fixture()
def keep_threads() -> Iterator[None]:
    """The quick mode sets torch to one thread; give the rest of the session its threads back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_quick_run_prints_expected_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str], keep_threads: None) -> None:
    out_json = tmp_path / "bench.json"
    start = time.perf_counter()
    results = main(["--quick", "--section", "backbone", "--json", str(out_json)])
    elapsed = time.perf_counter() - start
    printed = capsys.readouterr().out
    assert elapsed < 60, f"quick mode took {elapsed:.0f} s"  # < 20 s on an idle machine; slack for a busy one

    # The mm peak line, with the thread count.
    assert "fp32 `torch.mm` peak" in printed and "threads" in printed

    # The main markdown table: header, then one row per (model, resolution, batch).
    table = [line for line in printed.splitlines() if line.startswith("| ")]
    assert any(line.startswith("| model | α | res | batch | M mult-adds") for line in table)
    for label in (
        "MobileNetV1 | 0.25 | 32 | 1 ",
        "MobileNetV1 | 0.25 | 32 | 2 ",
        "mobilenet_v2 | 1 | 32 | 1 ",
        "mobilenet_v2 | 1 | 32 | 2 ",
        "mobilenet_v3_large | 1 | 32 | 1 ",
        "mobilenet_v3_large | 1 | 32 | 2 ",
    ):
        assert sum(line.startswith(f"| {label}") for line in table) == 1, label
    # mobilenet_v2 is the reference of the ratio columns: exactly 1.00 in both modes.
    v2_rows = [line for line in table if line.startswith("| mobilenet_v2 ")]
    assert all(line.rstrip(" |").endswith("1.00") for line in v2_rows)

    # The ablation table and the two target verdicts.
    assert "#### Ablation: MobileNetV1 0.25-32, batch 2" in printed
    for mode in ("eager fp32", "channels_last", "BN-fused", "BN-fused + channels_last"):
        assert any(line.startswith(f"| {mode} |") for line in table), mode
    assert "Target 1" in printed and "Target 2" in printed

    # JSON: the same rows, with the documented fields.
    data = json.loads(out_json.read_text())
    assert data == json.loads(json.dumps(results, default=str))
    section = data["backbone"]
    assert section["mm_peak"]["reference_gflops"] > 0
    rows = section["rows"]
    assert {(r["model"], r["resolution"], r["batch"]) for r in rows} == {
        (m, 32, b) for m in ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large") for b in (1, 2)
    }
    for row in rows:
        assert row["mult_adds"] > 0
        for mode in ("eager", "optimised"):
            for key in ("ms_per_image", "gflops", "peak_fraction", "ns_per_mult_add_vs_v2"):
                assert row[mode][key] > 0, (row["model"], mode, key)
    assert set(section["targets"]) >= {"peak_fraction_met", "not_slower_than_v2_met"}


def test_quick_detection_section(tmp_path: Path, capsys: pytest.CaptureFixture[str], keep_threads: None) -> None:
    """The detection section in quick mode: its three tables, the target lines and the JSON keys."""
    out_json = tmp_path / "detection.json"
    start = time.perf_counter()
    results = main(["--quick", "--section", "detection", "--json", str(out_json)])
    elapsed = time.perf_counter() - start
    printed = capsys.readouterr().out
    # ~30 s on an idle machine (a 3-step fit of the task included); a loose bound, not a timing
    assert elapsed < 180, f"quick detection section took {elapsed:.0f} s"

    # Inference table: our two detectors at α 0.25 and torchvision's two, at 64 px.
    table = [line for line in printed.splitlines() if line.startswith("| ")]
    assert any(line.startswith("| detector | backbone | α | res | M params | B mult-adds") for line in table)
    for label in (
        "SSD | MobileNetV1 | 0.25 | 64 ",
        "Faster R-CNN | MobileNetV1 | 0.25 | 64 ",
        "SSDLite (torchvision) | MobileNetV3-L | 1 | 64 ",
        "Faster R-CNN FPN (torchvision) | MobileNetV3-L | 1 | 64 ",
    ):
        assert sum(line.startswith(f"| {label}") for line in table) == 1, label
    ssdlite = next(line for line in table if line.startswith("| SSDLite"))
    cells = [c.strip() for c in ssdlite.strip("|").split("|")]
    assert cells[8] == "1.00" and cells[11] == "1.00"  # the reference of the ×ssdlite columns

    # Training and evaluation tables, the verdicts.
    assert any(line.startswith("| tasks.detection fit | 0.25 | 64 | 4 |") for line in table)
    assert any(line.startswith("| minimal loop | 0.25 | 64 | 4 |") for line in table)
    assert any(line.startswith("| faster-coco-eval |") for line in table)
    assert any(line.startswith("| pycocotools |") for line in table)
    assert "Target D1" in printed and "Target D2" in printed and "COCO evaluation — " in printed

    # JSON.
    data = json.loads(out_json.read_text())
    assert data == json.loads(json.dumps(results, default=str))
    section = data["detection"]
    assert {r["model"] for r in section["inference"]} == {
        "ssd300",
        "faster_rcnn",
        "ssdlite320_mobilenet_v3_large",
        "fasterrcnn_mobilenet_v3_large_320_fpn",
    }
    for row in section["inference"]:
        assert row["mult_adds"] > 0 and row["params"] > 0
        for mode in ("eager", "optimised"):
            for key in ("ms_per_image", "ns_per_mult_add", "ns_per_mult_add_vs_ssdlite"):
                assert row[mode][key] > 0, (row["model"], mode, key)
            assert row[mode]["detections"] >= 0
        if "faster" in row["model"]:
            assert row["optimised"]["proposals"] <= 16
    training = section["training"]
    assert training["steps_per_s"] > 0 and training["minimal_loop"]["steps_per_s"] > 0
    assert 0 <= training["data_wait_share"] <= 1 and 0 < training["validation_share"] < 1  # the end is validated
    assert training["num_workers"] >= 0 and training["steps"] == training["minimal_loop"]["steps"] == 3
    coco_eval = section["coco_eval"]
    assert set(coco_eval["backends"]) == {"faster", "pycocotools"}
    assert coco_eval["stats_identical"] and coco_eval["max_abs_stat_diff"] <= 1e-12
    assert len(coco_eval["backends"]["faster"]["stats"]) == 12
    assert set(section["targets"]) >= {
        "not_slower_than_ssdlite_met",
        "data_wait_met",
        "coco_eval_speedup",
        "coco_eval_stats_identical",
    }


def test_options_take_the_preset_unless_given() -> None:
    """Unset options take the full or the quick preset; a given option wins in both; sections are listed."""
    full, quick = parse_args([]), parse_args(["--quick", "--ssd-resolution", "96"])
    assert full.widths == [1.0, 0.75, 0.5, 0.25] and full.no_compile is False and full.threads is None
    assert quick.widths == [0.25] and quick.no_compile is True and quick.threads == 1
    assert full.ssd_resolution == 300 and quick.ssd_resolution == 96
    assert {"backbone", "detection"} <= set(SECTIONS)
    with pytest.raises(ValueError, match="already registered"):
        register(Section("backbone", SECTIONS["backbone"].run))


def test_quick_face_identification_section(capsys: pytest.CaptureFixture[str], keep_threads: None) -> None:
    """The face_id section: a short fit tested on the demo's LFW pairs, printed beside 6x6 thumbnails."""
    results = main(["--quick", "--section", "face_id"])["face_id"]
    printed = capsys.readouterr().out
    assert "| test metric | model | 6x6 thumbnails | target | met |" in printed
    for name in ("lfw_accuracy", "identification_top1"):
        assert 0 <= results["test"][name] <= 1 and 0 <= results["baseline"][name] <= 1
        assert any(line.startswith(f"| {name} |") for line in printed.splitlines())
    assert results["targets"]["lfw_accuracy"] == pytest.approx(results["baseline"]["lfw_accuracy"] + 0.10)


def test_thumbnail_baseline_is_cosine_of_6x6_thumbnails(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from benchmarks.face_identification import thumbnail_embeddings

    pixels = np.random.default_rng(0).integers(0, 256, (2, 30, 30, 3), dtype=np.uint8)
    paths = []
    for number, image in enumerate(pixels):
        Image.fromarray(image).save(tmp_path / f"{number}.png")
        paths.append(tmp_path / f"{number}.png")
    vectors = thumbnail_embeddings(paths)
    # a 6 x 6 area average of a 30 x 30 image: the mean of each 5 x 5 block
    expected = pixels.reshape(2, 6, 5, 6, 5, 3).mean((2, 4)).reshape(2, -1)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, atol=2e-3)
