"""Weight import: timm's mobilenetv1 family (identical outputs) and this project's checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from backbone import MobileNetV1, load_backbone_weights, timm_to_mobilenet
from backbone.errors import BadInputError

timm = pytest.importorskip("timm")


@pytest.mark.parametrize(("name", "width"), [("mobilenetv1_100", 1.0), ("mobilenetv1_125", 1.25)])
def test_timm_state_dict_gives_identical_outputs(name: str, width: float, tmp_path: Path) -> None:
    torch.manual_seed(0)
    reference = timm.create_model(name, pretrained=False, num_classes=10).eval()
    # Random BN statistics, so that a swapped BN or block would show in the outputs.
    for module in reference.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    path = tmp_path / "timm.pth"
    torch.save(reference.state_dict(), path)
    ours = MobileNetV1(width, num_classes=10).eval()
    assert load_backbone_weights(ours, path) == []
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-4)


def test_timm_head_conv_variant_is_refused() -> None:
    state = timm.create_model("mobilenetv1_100h", pretrained=False).state_dict()
    with pytest.raises(BadInputError, match="conv_head"):
        timm_to_mobilenet(state)


def test_project_checkpoint_with_prefix_and_other_classifier(tmp_path: Path) -> None:
    source = MobileNetV1(0.25, num_classes=1000).eval()
    path = tmp_path / "task.ckpt"
    # As a Lightning checkpoint of any task stores it: under "state_dict", with a prefix.
    torch.save({"state_dict": {f"model.backbone.{k}": v for k, v in source.state_dict().items()}}, path)
    target = MobileNetV1(0.25, num_classes=120).eval()
    skipped = load_backbone_weights(target, path)
    assert skipped == ["classifier.weight", "classifier.bias"]
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(target.forward_features(x), source.forward_features(x))


def test_width_mismatch_is_named(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save(MobileNetV1(0.5).state_dict(), path)
    with pytest.raises(BadInputError, match=r"do not fit this MobileNetV1 \(width=0.25\).*shape"):
        load_backbone_weights(MobileNetV1(0.25), path)


def test_missing_and_foreign_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="does not exist"):
        load_backbone_weights(MobileNetV1(0.25), tmp_path / "nope.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(BadInputError, match="no MobileNetV1 weights"):
        load_backbone_weights(MobileNetV1(0.25), foreign)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(BadInputError, match="junk.pt"):
        load_backbone_weights(MobileNetV1(0.25), junk)
