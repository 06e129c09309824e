"""Smoke test of ``python -m benchmarks --section deploy --quick``: one tiny model, both runtimes, the table's shape.

Timings are not checked (the machine is shared and noisy); only the printed table, the target
lines and the JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmarks.__main__ import main
from benchmarks.deploy import path_names


@pytest.fixture()
def keep_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_quick_deploy_section(tmp_path: Path, capsys: pytest.CaptureFixture[str], keep_threads: None) -> None:
    out_json = tmp_path / "deploy.json"
    results = main(["--quick", "--section", "deploy", "--json", str(out_json)])
    printed = capsys.readouterr().out

    assert "Limits measured in this run: fp32 `torch.mm`" in printed and "int8 GEMM" in printed
    table = [line for line in printed.splitlines() if line.startswith("| ")]
    names = path_names(["openvino", "onnxruntime"])
    assert table[0] == "| " + " | ".join(["model", "batch", "M mult-adds", *names]) + " |"
    for batch in (1, 2):
        row = next(line for line in table if line.startswith(f"| 0.25-64 | {batch} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 3 + len(names) and all("×" in c and "%" in c for c in cells[3:]), row
        assert cells[4].split(" · ")[1] == "1.00×"  # the optimised path is the reference of the ratios
    assert "Target 1 —" in printed and "Target 2 —" in printed

    data = json.loads(out_json.read_text())
    assert data == json.loads(json.dumps(results, default=str))
    section = data["deploy"]
    assert section["limits"]["fp32_gflops"] > 0 and section["limits"]["int8"]["gops"] > 0
    assert {(r["model"], r["batch"]) for r in section["rows"]} == {("0.25-64", 1), ("0.25-64", 2)}
    for row in section["rows"]:
        for name in names:
            for key in ("ms_per_image", "speedup_vs_optimised", "limit_share"):
                assert row[name][key] > 0, (name, key)
    targets = section["targets"]
    assert {"fp32_met", "int8_met", "int8_over_fp32_limit", "fastest_fp32", "fastest_int8"} <= set(targets)


def test_bad_runtime_is_one_sentence(capsys: pytest.CaptureFixture[str], keep_threads: None) -> None:
    from backbone.errors import BadInputError

    with pytest.raises(BadInputError, match="--deploy-runtime is 'tflite'"):
        main(["--quick", "--section", "deploy", "--deploy-runtime", "tflite"])
