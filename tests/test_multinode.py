"""Many nodes (issue 20): the same command started once per simulated node (NODE_RANK, MASTER_ADDR
127.0.0.1, ``--trainer.num_nodes 2``) trains, and testing its checkpoint across the nodes gives
the metrics of one process. Two nodes of one process each, on the tiny classification set (CI's
two cores); the benchmark section ``multinode`` runs 2 nodes x 2 processes for every task on its
demo (docs/architecture.md, "Many nodes")."""

from __future__ import annotations

from pathlib import Path

from benchmarks.multinode import agrees, simulate
from tests.tiny_tasks import tiny_tasks


def test_two_simulated_nodes_train_and_test_like_one_process(tmp_path: Path) -> None:
    case = next(t for t in tiny_tasks() if t.name == "classification")
    data = case.write(tmp_path / "data")
    sizes = ["--backbone", "0.25", "--resolution", str(case.resolution), "--data.batch_size", "4"]
    row = simulate(case.name, data, sizes, tmp_path / "runs", nodes=2, devices=1, steps=2)
    assert row["metrics"]["one"] and agrees(row), row
