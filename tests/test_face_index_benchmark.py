"""Smoke test of ``python -m benchmarks --section face_index --quick``: tables and JSON, no timings judged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.__main__ import main, parse_args


def test_quick_face_index_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "face.json"
    threads = torch.get_num_threads()
    try:
        results = main(["--quick", "--section", "face_index", "--json", str(out_json)])
    finally:  # the quick mode runs on one thread; the rest of the session keeps its threads
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    table = [line for line in printed.splitlines() if line.startswith("| ")]
    assert any(line.startswith("| index | parameters | build s | bytes/face | queries/s | recall@1") for line in table)
    for name in (
        "IndexFlatIP (exact)",
        "IndexHNSWFlat",
        "IndexIVFPQ + IndexRefineFlat (x16)",
        "IndexIVFPQ, codes only",
    ):
        assert sum(line.startswith(f"| {name} |") for line in table) == 1, name
    assert any(line.startswith("| BN folded + channels_last |") for line in table)
    data = json.loads(out_json.read_text())
    assert data == json.loads(json.dumps(results, default=str))
    rows = {r["kind"]: r for r in data["face_index"]["indexes"]}
    assert set(rows) == {"flat", "hnsw", "ivfpq", "ivfpq_codes"} and all(r["faces"] == 20_000 for r in rows.values())
    assert rows["flat"]["recall_at_1"] == 1.0 and rows["hnsw"]["recall_at_1"] > 0.8
    assert all(r["identity_at_1"] > 0.9 for r in rows.values())
    assert rows["ivfpq_codes"]["bytes_per_face"] < rows["flat"]["bytes_per_face"] / 4  # 16-byte codes vs 512 bytes
    # re-ranked by exact inner products: the top-1 similarity is the exact one; compressed, it is biased low
    assert abs(rows["ivfpq"]["similarity_error"]) < 1e-3 < -rows["ivfpq_codes"]["similarity_error"]
    assert data["face_index"]["embedding"]["eager_images_per_s"] > 0


def test_full_run_presets() -> None:
    full = parse_args(["--section", "face_index"])
    assert full.index_faces == [1_000_000] and full.face_resolution == 128
    assert parse_args(["--section", "face_index", "--index-faces", "1000000,10000000"]).index_faces == [10**6, 10**7]
