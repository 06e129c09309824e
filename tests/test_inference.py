"""backbone.inference: BN folding, channels-last and micro-batching keep the outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from backbone import MobileNetV1
from backbone.inference import MicroBatched, fuse_conv_bn, prepare_for_inference


def trained_like(model: nn.Module, resolution: int) -> nn.Module:
    """Non-trivial BN statistics and affine terms, so that folding them is really tested."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data.uniform_(0.5, 1.5, generator=generator)
            module.bias.data.uniform_(-0.2, 0.2, generator=generator)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, resolution, resolution, generator=generator))
    return model.eval()


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("width", [1.0, 0.25])
def test_prepared_mobilenet_matches_unfused(width: float, channels_last: bool) -> None:
    model = trained_like(MobileNetV1(width, num_classes=10), 64)
    prepared = prepare_for_inference(model, channels_last=channels_last)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
        got = prepared(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # Feature taps keep their names: the folded BNs are Identity, not removed.
    assert set(dict(prepared.named_modules())) == set(dict(model.named_modules()))


def test_torchvision_mobilenet_v2_is_fused_exactly() -> None:
    torchvision = pytest.importorskip("torchvision")
    model = trained_like(torchvision.models.mobilenet_v2(weights=None, num_classes=10), 64)
    prepared = prepare_for_inference(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prepared.modules())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(prepared(x), model(x), atol=1e-4, rtol=1e-4)


def test_fuse_requires_eval_mode() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fuse_conv_bn(MobileNetV1(0.25, num_classes=10).train())


def test_micro_batched_matches_whole_batch() -> None:
    model = trained_like(MobileNetV1(0.25, num_classes=10), 32)
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(MicroBatched(model, 2)(x), model(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        MicroBatched(model, 0)


def test_compiled_model_is_frozen_with_packed_weights() -> None:
    """The compiled graph holds the weights as constants, pre-packed for oneDNN and fused with
    ReLU6: no weight is an input of the call, so none is repacked per call. torch 2.14 ignored
    ``options={"freezing": True}``: its graph took all 27 conv weights as arguments."""
    from torch._inductor.utils import run_and_get_code

    from backbone.inference import compile_for_inference

    model = prepare_for_inference(trained_like(MobileNetV1(0.25, num_classes=10), 32))
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    torch.compile(prepare_for_inference(MobileNetV1(0.25, num_classes=10).eval()))(x)  # an unfrozen compile first
    compiled = compile_for_inference(model)
    out, code = run_and_get_code(compiled, x)
    source = "\n".join(code)
    assert "_frozen_param" in source
    assert "extern_kernels.convolution(" not in source  # the unfrozen conv, weights passed per call
    with torch.no_grad():
        torch.testing.assert_close(out, model(x), atol=1e-4, rtol=1e-4)
