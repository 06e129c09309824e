"""scripts/face_attributes_compression.py, the compression Table 12 is about on the user's data: its
table (each network against the teacher) and its complexity counts, without the runs themselves."""

from __future__ import annotations

import argparse

import pytest


def test_the_table_puts_each_network_against_the_teacher() -> None:
    from scripts.face_attributes_compression import complexity, network, table

    assert network("0.5-96") == (0.5, 96)
    with pytest.raises(argparse.ArgumentTypeError, match="is not WIDTH-RESOLUTION"):
        network("0.5x96")
    assert complexity(1.0, 224, 40) == pytest.approx((567.8, 3.25), abs=0.05)  # Table 12's 568M and 3.2M
    test = {"mean_ap": 0.75, "mean_accuracy": 0.8, "mean_accuracy_tuned": 0.85}
    records = [
        {"role": "teacher", "width": 0.5, "resolution": 96, "mult_adds_m": 27.4, "params_m": 0.82, "test": test},
        {"role": "student", "width": 0.25, "resolution": 64, "mult_adds_m": 3.3, "params_m": 0.22,
         "test": {**test, "mean_ap": 0.7, "emulation_ce": 0.336}},
    ]  # fmt: skip
    lines = table(records).splitlines()
    assert lines[2] == "| teacher 0.5 MobileNet-96 | 27.4 | 1.000 | 0.82 | 0.750 | +0.000 | – | 0.800 (0.850) |"
    assert lines[3] == "| student 0.25 MobileNet-64 | 3.3 | 0.120 | 0.22 | 0.700 | -0.050 | 0.336 | 0.800 (0.850) |"
