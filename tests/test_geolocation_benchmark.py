"""Smoke test of ``python -m benchmarks --section geolocation --quick``: its tables, verdict and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.__main__ import main


def test_quick_geolocation_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "geo.json"
    results = main(["--quick", "--section", "geolocation", "--json", str(out_json), "--threads", "2"])
    printed = capsys.readouterr().out
    table = [line for line in printed.splitlines() if line.startswith("| ")]
    assert any(line.startswith("| photos | T1 / T2 | cells | numpy s | s2sphere loop s | speed-up") for line in table)
    assert any(line.startswith("| 10000 | 100 / 5 |") and "(from 2000, ×n)" in line for line in table)
    assert any(line.startswith("| 20000 |") for line in table)  # the scale table
    assert "Target G1" in printed and "cells identical" in printed
    data = json.loads(out_json.read_text())["geolocation"]
    assert data == json.loads(json.dumps(results["geolocation"], default=str))
    speedup = data["speedup"]
    assert speedup["identical"] and speedup["loop_extrapolated"] and speedup["loop_points"] == 2000
    assert speedup["vectorised_s"] > 0 and speedup["loop_s"] > 0 and speedup["peak_bytes_per_photo"] > 0
    assert [row["points"] for row in data["scale"]] == [20000] and data["scale"][0]["cells"] > 0
    assert set(data["targets"]) == {"speedup", "speedup_met", "identical_cells"}
