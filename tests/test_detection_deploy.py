"""Detection's export (issue 17): SSD300's network and box decoding exported, NMS as the deployed
runner's documented step; ``test --deployed`` of an fp32 export scores what ``test --ckpt_path`` does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from backbone.errors import BadInputError
from tasks.detection.evaluation import STAT_NAMES
from tasks.detection.module import DetectionModule
from tasks.detection.task import TASK as DETECTION
from tests.probes import expect_one_sentence, one_torch_thread, tiny_run_args, write_coco

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_torch_thread()


def _args(root: Path, runs: Path, *extra: str) -> list[str]:
    # 3 val images at batch 4: the deployed model runs a batch of 3, not the export's example of 2.
    return tiny_run_args(root, runs, *extra, resolution=64, batch_size=4)


def _newest_log(runs: Path) -> Path:
    return max(runs.glob("lightning_logs/version_*"), key=lambda p: p.stat().st_mtime)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """(data root, runs folder, checkpoint): a few gentle SGD steps (a 0.05 lr on 8 images leaves
    a net so ill-conditioned that fp32 PyTorch itself differs from fp64 by 0.1 on its features)."""
    root = write_coco(tmp_path_factory.mktemp("coco"), train=8, val=3)
    runs = tmp_path_factory.mktemp("runs")
    sgd = ["--model.optimizer", "torch.optim.SGD", "--model.optimizer.lr", "0.005"]
    DETECTION.main(["fit", *_args(root, runs, "--trainer.max_steps", "4", "--trainer.limit_val_batches", "0", *sgd)])
    yield root, runs, runs / "checkpoints" / "last.ckpt"


def _test(root: Path, runs: Path, *how: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    DETECTION.main(["test", *_args(root, runs, *how)])
    log = _newest_log(runs)
    return json.loads((log / "metrics.json").read_text()), json.loads((log / "detections.json").read_text())


@pytest.fixture(scope="module")
def scored(fitted: tuple[Path, Path, Path]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``test --ckpt_path``'s metrics.json and detections.json."""
    root, runs, ckpt = fitted
    return _test(root, runs, "--ckpt_path", str(ckpt))


def _sorted(detections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(detections, key=lambda d: (d["image_id"], d["category_id"], -d["score"], d["bbox"]))


@pytest.mark.parametrize("runtime", ["onnxruntime"])  # OpenVINO fp32: tests/test_deploy_contract.py
def test_fp32_deployed_scores_as_the_checkpoint(
    fitted: tuple[Path, Path, Path], scored: tuple[dict[str, Any], list[dict[str, Any]]], tmp_path: Path, runtime: str
) -> None:
    root, runs, ckpt = fitted
    out = tmp_path / "deploy"
    DETECTION.main(["export", *_args(root, runs, "--ckpt_path", str(ckpt), "--out", str(out), "--runtime", runtime)])
    checkpoint, from_checkpoint = scored
    deployed, from_deployed = _test(root, runs, "--deployed", str(out))
    assert deployed["deployed"] == {"folder": str(out), "runtime": runtime, "precision": "fp32"}
    for name in STAT_NAMES:
        assert deployed["metrics"][name] == pytest.approx(checkpoint["metrics"][name], abs=1e-3), name
    # Stronger than the metric: the same detections, to float rounding.
    assert len(from_deployed) == len(from_checkpoint) > 0
    for got, want in zip(_sorted(from_deployed), _sorted(from_checkpoint), strict=True):
        assert (got["image_id"], got["category_id"]) == (want["image_id"], want["category_id"])
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
        assert got["bbox"] == pytest.approx(want["bbox"], abs=1e-2)

    record = json.loads((out / "deploy.json").read_text())
    assert [o["name"] for o in record["outputs"]] == ["boxes", "scores"]
    anchors = record["outputs"][0]["shape"][1]
    assert record["outputs"][0]["shape"] == ["batch", anchors, 4]
    assert record["outputs"][1]["shape"] == ["batch", anchors, 3]  # background + 2 categories
    assert record["model_transform"]["size"] == [64, 64]
    post = record["postprocess"]
    # The module's defaults: what a user's runner applies after the network.
    assert (post["score_thresh"], post["nms_thresh"], post["detections_per_img"]) == (0.01, 0.6, 100)
    assert post["topk_candidates"] == 400
    assert any("batched_nms" in step for step in post["steps"])


def test_openvino_int8_is_refused_before_any_work(
    fitted: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """(ONNX Runtime int8 of the detector: tests/test_deploy_contract.py.)"""
    root, runs, ckpt = fitted
    out = tmp_path / "int8"
    export = ["export", *_args(root, runs, "--ckpt_path", str(ckpt), "--out", str(out), "--int8")]
    expect_one_sentence(DETECTION.main, export, r"OpenVINO int8 of the SSD detector .* --runtime onnxruntime", capsys)
    assert not out.exists()


def test_deployed_network_is_the_detector() -> None:
    """The exported network + the runner's postprocess give ``forward``'s detections, in PyTorch."""
    module = DetectionModule(num_classes=3, width=0.25, resolution=64).eval()
    torch.manual_seed(0)
    images = torch.rand(3, 3, 80, 96)  # not the model's size: the transform resizes, postprocess scales back

    class Runner:  # the network run in PyTorch, as a deploy.runtime.Runner returns it
        network = module.deploy_network().eval()

        def __call__(self, batch: torch.Tensor) -> list[Any]:
            return [out.numpy() for out in self.network(batch)]

    with torch.no_grad():
        want = module(images)
        got = module.deployed_forward(Runner(), {})(images)
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g["labels"], w["labels"])
        torch.testing.assert_close(g["scores"], w["scores"], atol=1e-5, rtol=0)
        torch.testing.assert_close(g["boxes"], w["boxes"], atol=1e-3, rtol=0)


def test_faster_rcnn_export_is_refused() -> None:
    module = DetectionModule(num_classes=3, width=0.25, resolution=64, arch="faster_rcnn")
    with pytest.raises(BadInputError, match=r"--model\.arch faster_rcnn .*only ssd300"):
        module.deploy_network()
    with pytest.raises(BadInputError, match=r"--model\.arch faster_rcnn"):
        module.deploy_inputs((torch.rand(1, 3, 64, 64), []))
