"""Shared task helpers: parameter groups (Section 3.4), the default schedule, atomic JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from backbone import MobileNetV1
from tasks.optim import param_groups, warmup_cosine
from tasks.outputs import write_json_atomic


def test_no_weight_decay_on_depthwise_bn_and_bias() -> None:
    model = MobileNetV1(0.25, num_classes=10)
    decay, no_decay = param_groups(model, 4e-5)
    assert decay["weight_decay"] == 4e-5 and no_decay["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    for block in model.blocks.values():
        assert id(block.depthwise[0].weight) not in decayed  # Section 3.4
        assert id(block.pointwise[0].weight) in decayed
        assert id(block.pointwise[1].weight) not in decayed  # BN scale
    assert id(model.stem[0].weight) in decayed and id(model.classifier.weight) in decayed
    assert id(model.classifier.bias) not in decayed
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_warmup_then_cosine_to_zero() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = warmup_cosine(optimizer, total_steps=100, warmup_steps=9)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:9], lrs[1:10], strict=True))
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lrs[-1] < 0.001


def test_write_json_atomic_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    write_json_atomic(path, {"top1": 0.5})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"top1": object()})
    assert json.loads(path.read_text()) == {"top1": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left behind
