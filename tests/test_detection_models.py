"""The detection models of Table 13: complexity, anchors, training/eval forwards, weight import."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.ops.misc import FrozenBatchNorm2d

from backbone.mobilenet import MobileNetV1
from backbone.paper_tables import ROWS, PaperRow
from backbone.weights import extract_backbone_state
from tasks.detection.complexity import detection_complexity
from tasks.detection.faster_rcnn import build_faster_rcnn
from tasks.detection.ssd import SSDMobileNetAnchors, build_ssd300

Builder = Callable[..., nn.Module]


# Table 13's MobileNet rows (alpha = 1, 91 classes), as printed in backbone.paper_tables (mult-adds
# in millions there; the paper prints billions). The paper prints one decimal, so a measurement
# matches when it rounds to the printed number (+-0.05): SSD's 1.237B mult-adds is 1.2 as printed,
# though 3.1% above 1.2 itself.
BUILDERS: dict[str, Builder] = {"ssd300": build_ssd300, "faster_rcnn": build_faster_rcnn}
TABLE_13 = [row for row in ROWS if row.table == 13 and row.model is not None]


@pytest.mark.parametrize("row", TABLE_13, ids=[row.key.split("/")[1] for row in TABLE_13])
def test_table13_complexity(row: PaperRow) -> None:
    assert row.model is not None and row.mult_adds_m is not None
    resolution = row.model.resolution
    complexity = detection_complexity(BUILDERS[row.model.kind](row.model.width, resolution=resolution), resolution)
    assert complexity.mult_adds / 1e9 == pytest.approx(row.mult_adds_m / 1000, abs=0.05)
    assert complexity.params / 1e6 == pytest.approx(row.params_m, abs=0.05)


def test_width_shrinks_ssd() -> None:
    sizes = [detection_complexity(build_ssd300(w), 300) for w in (1.0, 0.75, 0.5)]
    assert sizes[0].mult_adds > sizes[1].mult_adds > sizes[2].mult_adds
    assert sizes[0].params > sizes[1].params > sizes[2].params


def test_ssd_anchors_and_feature_maps() -> None:
    model = build_ssd300(0.25).eval()
    with torch.no_grad():
        images, _ = model.transform([torch.rand(3, 240, 320)])
        features = list(model.backbone(images.tensors).values())
        anchors = model.anchor_generator(images, features)
    assert images.tensors.shape[-2:] == (300, 300)
    assert [f.shape[-1] for f in features] == [19, 10, 5, 3, 2, 1]
    assert [f.shape[-2] for f in features] == [19, 10, 5, 3, 2, 1]
    assert anchors[0].shape == (1917, 4)  # 19^2*3 + (10^2 + 5^2 + 3^2 + 2^2 + 1^2)*6
    assert model.anchor_generator.num_anchors_per_location() == [3, 6, 6, 6, 6, 6]


def test_ssd_anchor_shapes_follow_tf() -> None:
    generator = SSDMobileNetAnchors()
    lowest = generator._wh_pairs[0]
    assert torch.allclose(lowest[0], torch.tensor([0.1, 0.1]))  # reduce_boxes_in_lowest_layer
    assert torch.allclose(lowest[1, 0] * lowest[1, 1], torch.tensor(0.2**2))
    last = generator._wh_pairs[5]
    assert torch.allclose(last[-1], torch.full((2,), (0.95 * 1.0) ** 0.5))  # interpolated scale


def test_faster_rcnn_count_matches_a_real_forward() -> None:
    """The replayed count equals FlopCounterMode on a real CPU inference that keeps 300 proposals."""
    torch.manual_seed(0)
    model = build_faster_rcnn(0.25, resolution=128).eval()
    model.rpn.nms_thresh = 1.0  # keep all top-1000 boxes, so exactly 300 reach the box head
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model([torch.rand(3, 128, 128)])
    assert counter.get_total_flops() // 2 == detection_complexity(model, 128).mult_adds


def _targets(num_images: int) -> list[dict[str, torch.Tensor]]:
    boxes = [torch.tensor([[10.0, 20.0, 70.0, 90.0], [40.0, 5.0, 100.0, 60.0]]), torch.tensor([[0.0, 0.0, 50.0, 50.0]])]
    labels = [torch.tensor([1, 3]), torch.tensor([2])]
    return [{"boxes": boxes[i], "labels": labels[i]} for i in range(num_images)]


DETECTORS = [
    pytest.param(lambda: build_ssd300(0.25, num_classes=4, resolution=128), id="ssd"),
    pytest.param(lambda: build_faster_rcnn(0.25, num_classes=4, resolution=128), id="faster_rcnn"),
]


@pytest.mark.parametrize("make", DETECTORS)
def test_train_step_and_eval(make: Callable[[], nn.Module]) -> None:
    torch.manual_seed(0)
    model = make()
    images = [torch.rand(3, 120, 110), torch.rand(3, 100, 128)]
    model.train()
    losses = model(images, _targets(2))
    total = sum(losses.values())
    assert all(torch.isfinite(v) for v in losses.values()), losses
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)

    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    for det in detections:
        assert set(det) >= {"boxes", "labels", "scores"}
        assert det["boxes"].shape[0] == det["scores"].shape[0] == det["labels"].shape[0] <= 100


@pytest.mark.parametrize("build", [build_ssd300, build_faster_rcnn], ids=["ssd", "faster_rcnn"])
def test_backbone_weights_load(build: Builder, tmp_path: Path) -> None:
    classifier = MobileNetV1(0.25, num_classes=1000)
    path = tmp_path / "mobilenet.pt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in classifier.state_dict().items()}}, path)

    model = build(0.25, num_classes=5, resolution=128, backbone_weights=str(path))
    body = model.backbone.body
    assert torch.equal(body.stem[0].weight, classifier.stem[0].weight)

    # The detector's own state dict gives the whole MobileNetV1 back under its normal key names
    # (Faster R-CNN's conv12-13 live in its box head), with every weight as loaded.
    trunk = MobileNetV1(0.25, num_classes=0)
    trunk.load_state_dict(extract_backbone_state(model.state_dict()))
    for key, value in trunk.state_dict().items():
        assert torch.equal(value, classifier.state_dict()[key]), key


def test_faster_rcnn_box_head_is_its_own_modules() -> None:
    """conv12-13 are moved out of the trunk, not shared: each weight is held once, and the trunk's
    feature_info ends at the stride-16 map it returns."""
    model = build_faster_rcnn(0.25, num_classes=4, resolution=128).eval()
    trunk, head = model.backbone, model.roi_heads.box_head
    assert trunk.body.feature_info[-1].name == "conv11" and trunk.body.feature_info[-1].stride == 16
    assert set(trunk.body.blocks) == {f"conv{n}" for n in range(1, 12)} and list(head.blocks) == ["conv12", "conv13"]
    assert not {id(p) for p in trunk.parameters()} & {id(p) for p in head.parameters()}
    keys = list(model.state_dict())
    assert not [k for k in keys if ".conv12." in k and not k.startswith("roi_heads.box_head.")]
    with torch.no_grad():
        features = trunk(torch.rand(1, 3, 128, 128))
        assert features["conv11"].shape[-1] == 128 // 16
        # conv12 keeps its stride 2 (Table 1): a 14x14 crop leaves conv13 at 7x7.
        crops = torch.rand(2, trunk.out_channels, 14, 14)
        assert head.blocks.conv13(head.blocks.conv12(crops)).shape[-2:] == (7, 7)


@pytest.mark.parametrize("build", [build_ssd300, build_faster_rcnn], ids=["ssd", "faster_rcnn"])
def test_freeze_bn_keeps_the_loaded_statistics(build: Builder, tmp_path: Path) -> None:
    """freeze_bn: the MobileNet's BatchNorms become FrozenBatchNorm2d with the loaded values, and a
    training step changes neither them nor their statistics; SSD's new extra layers keep plain BN."""
    classifier = MobileNetV1(0.25, num_classes=0)
    for module in classifier.modules():
        if isinstance(module, nn.BatchNorm2d):  # non-trivial statistics to carry over
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    path = tmp_path / "mobilenet.pt"
    torch.save(classifier.state_dict(), path)
    model = build(0.25, num_classes=4, resolution=128, backbone_weights=str(path), freeze_bn=True)
    mobilenet = [model.backbone.body]
    if hasattr(model, "roi_heads"):
        mobilenet.append(model.roi_heads.box_head)
    assert not any(isinstance(m, nn.BatchNorm2d) for part in mobilenet for m in part.modules())
    frozen = [m for part in mobilenet for m in part.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(frozen) == 27  # the stem + 13 blocks x (depthwise, pointwise)
    if hasattr(model, "head"):  # SSD: the extra layers train their BN
        assert any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.extra.modules())
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    stem_bn = model.backbone.body.stem[1]
    assert torch.equal(stem_bn.running_mean, classifier.stem[1].running_mean)
    model.train()
    sum(model([torch.rand(3, 128, 128), torch.rand(3, 128, 128)], _targets(2)).values()).backward()
    for key, value in model.state_dict().items():
        if key in before and (".body." in key or "box_head" in key):
            assert torch.equal(value, before[key]), key
