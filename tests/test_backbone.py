"""MobileNetV1 against the paper: Table 1's shapes and every complexity row of Tables 4-9."""

from __future__ import annotations

import pytest
import torch

from backbone import BLOCKS, MobileNetV1, count_complexity, scaled_channels
from backbone.errors import BadInputError
from backbone.paper_tables import ROWS, PaperRow, tolerance

# Every MobileNet row of Tables 4-9 (Howard et al. 2017, arXiv:1704.04861), once per distinct
# network (1.0 MobileNet-224 is in four tables): the printed figures live in backbone.paper_tables.
PAPER_ROWS = list({row.model: row for row in ROWS if row.table <= 9 and row.model is not None}.values())


@pytest.mark.parametrize("row", PAPER_ROWS, ids=[row.key for row in PAPER_ROWS])
def test_complexity_matches_paper(row: PaperRow) -> None:
    assert row.model is not None and row.mult_adds_m is not None and row.params_m is not None
    model = MobileNetV1(row.model.width, 1000, full_conv=row.model.full_conv, shallow=row.model.shallow)
    result = count_complexity(model, row.model.resolution)
    # The paper rounds to the unit (or to 0.5%); parameters are printed to 0.1M (0.01M for 1.32).
    mult_adds_tol, params_tol = tolerance(row)
    assert abs(result.mult_adds_m - row.mult_adds_m) <= mult_adds_tol, result
    assert abs(result.params_m - row.params_m) <= params_tol, result


def test_plain_count_at_224_is_568_74m() -> None:
    # Table 1 counted with the paper's convention (convolutions and FC only, no BN, activation or
    # bias): 568.74M at alpha 1.0 / 224, printed as 569M in Table 8.
    assert round(count_complexity(MobileNetV1(), 224).mult_adds / 1e6, 2) == 568.74


def test_pointwise_convs_hold_95_percent_of_mult_adds() -> None:
    """Table 2: 1x1 convolutions hold ~95% of mult-adds and ~75% of parameters."""
    model = MobileNetV1()
    pointwise = sum(
        b.pointwise[0].weight.numel() * (224 // info.stride) ** 2
        for b, info in zip(model.blocks.values(), model.feature_info[1:], strict=False)
    )
    total = count_complexity(model, 224).mult_adds
    assert 0.94 < pointwise / total < 0.96
    pw_params = sum(b.pointwise[0].weight.numel() for b in model.blocks.values())
    assert 0.73 < pw_params / sum(p.numel() for p in model.parameters()) < 0.76


@pytest.mark.parametrize("width", [1.0, 0.75, 0.5, 0.25])
def test_channels_follow_the_width_rule(width: float) -> None:
    model = MobileNetV1(width, num_classes=0)
    expected = [max(int(32 * width), 8)] + [max(int(c * width), 8) for c, _ in BLOCKS]
    assert [i.channels for i in model.feature_info] == expected
    assert scaled_channels(1024, 0.75) == 768


@pytest.mark.parametrize("resolution", [224, 300, 128, 33])
def test_feature_taps_strides_and_shapes(resolution: int) -> None:
    model = MobileNetV1(0.25, num_classes=0).eval()
    taps = model.forward_taps(torch.randn(1, 3, resolution, resolution), ["conv5", "conv11", "conv13"])
    assert list(taps) == ["conv5", "conv11", "conv13"]
    for name, tensor in taps.items():
        info = model.feature(name)
        assert tensor.shape[1] == info.channels
        assert tensor.shape[-1] == -(-resolution // info.stride)  # TF "SAME" padding: ceil
    if resolution == 300:  # SSD's maps (Section 4.7)
        assert taps["conv11"].shape[-1] == 19 and taps["conv13"].shape[-1] == 10


def test_paper_layout_at_224() -> None:
    model = MobileNetV1()
    assert (model.feature("conv11").stride, model.feature("conv11").channels) == (16, 512)
    assert (model.feature("conv13").stride, model.feature("conv13").channels) == (32, 1024)
    assert len(model.blocks) == 13
    x = torch.randn(2, 3, 64, 64)
    assert model(x).shape == (2, 1000)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 1024)


def test_shallow_and_full_conv_variants() -> None:
    shallow = MobileNetV1(shallow=True, num_classes=0)
    assert "conv11" not in shallow.blocks and len(shallow.blocks) == 8
    assert shallow.last_at_stride(16).name == "conv6"
    full = MobileNetV1(0.25, full_conv=True, num_classes=0)
    assert all(block[0].groups == 1 and block[0].kernel_size == (3, 3) for block in full.blocks.values())


def test_layers_between_splits_the_trunk_exactly() -> None:
    model = MobileNetV1(0.25, num_classes=0).eval()
    x = torch.randn(1, 3, 96, 96)
    head, tail = model.layers_between(None, "conv11"), model.layers_between("conv11", "conv13")
    torch.testing.assert_close(tail(head(x)), model.forward_features(x))


def test_relu_variant_is_selectable() -> None:
    model = MobileNetV1(0.25, activation="relu")
    assert not any(isinstance(m, torch.nn.ReLU6) for m in model.modules())


@pytest.mark.parametrize("width", [0.0, -0.5, 1.1, 2.0])
def test_bad_width_is_one_clear_sentence(width: float) -> None:
    with pytest.raises(BadInputError, match=r"width multiplier must be in \(0, 1\]"):
        MobileNetV1(width)


def test_width_1_25_is_allowed() -> None:
    assert MobileNetV1(1.25, num_classes=0).feature("conv13").channels == 1280
