"""Inference-time preparation of a trained network for fast CPU execution.

Training keeps BatchNorm as a separate layer (it needs batch statistics); at inference a
BatchNorm that follows a convolution is just a per-channel affine map, so it can be folded into
the convolution's weights and bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``). That removes
one full read-and-write pass over every activation map; MobileNet's thin layers (in particular
the depthwise ones, 3% of its mult-adds) are limited by memory traffic rather than arithmetic, so
those passes are a noticeable part of its time.

Channels-last (NHWC) memory format lets oneDNN run the 1x1 pointwise convolutions -- 95% of
MobileNet's mult-adds (Table 2) -- as plain matrix multiplies without reordering the activations
between layers, and its depthwise kernels vectorise over channels.

Both transforms are exact up to float rounding; ``tests/test_inference.py`` checks the outputs
against the unprepared model.
"""

from __future__ import annotations

import copy

import torch
import torch._inductor.config as inductor_config
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every ``Conv2d -> BatchNorm2d`` pair that sits in an ``nn.Sequential`` into the conv.

    The model is changed in place and returned; it must be in eval mode (the fold uses the
    running statistics). Folded BatchNorms are replaced by ``nn.Identity`` rather than removed so
    that module names and indices -- which feature taps, ``layers_between`` and checkpoints rely
    on -- stay the same. Only pairs adjacent within one ``nn.Sequential`` are fused: that is how
    MobileNetV1 (``ConvBNAct``) and torchvision's MobileNetV2/V3 (``Conv2dNormActivation`` and
    the inverted-residual projection) are built, and the adjacency guarantees that nothing else
    consumes the conv's un-normalised output.
    """
    if model.training:
        raise ValueError("fuse_conv_bn needs a model in eval mode: BatchNorm is folded with its running statistics.")
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:], strict=False):
            conv, norm = module._modules[first], module._modules[second]
            if (
                type(conv) is nn.Conv2d
                and type(norm) is nn.BatchNorm2d
                and norm.track_running_stats
                and norm.running_mean is not None
            ):
                module._modules[first] = fuse_conv_bn_eval(conv, norm)
                module._modules[second] = nn.Identity()
    return model


def prepare_for_inference(model: nn.Module, channels_last: bool = True, fuse: bool = True) -> nn.Module:
    """Return an inference-ready copy of ``model``: eval mode, BN folded, channels-last weights.

    The caller's model is left untouched (a deep copy is prepared), so a training loop can keep
    training the original. Feed the result channels-last inputs
    (``x.contiguous(memory_format=torch.channels_last)``) to avoid one reorder of the input;
    NCHW inputs still work and give the same result.

    Args:
        model: any network built from ``nn.Sequential`` conv/BN units (MobileNetV1, torchvision
            MobileNetV2/V3, ...).
        channels_last: store 4-D weights in NHWC order so oneDNN keeps activations NHWC.
        fuse: fold BatchNorm into the preceding convolution.
    """
    prepared = copy.deepcopy(model).eval()
    # Parameters of an inference model never need gradients; dropping them lets the fused
    # weights be plain tensors and avoids autograd bookkeeping when called outside no_grad.
    for parameter in prepared.parameters():
        parameter.requires_grad_(False)
    if fuse:
        fuse_conv_bn(prepared)
    if channels_last:
        prepared = prepared.to(memory_format=torch.channels_last)
    return prepared


class MicroBatched(nn.Module):
    """Run ``module`` on a large batch as consecutive chunks of at most ``chunk`` images.

    The result is the same as one call on the whole batch (every layer of an inference-mode
    CNN treats images independently). Why: at batch 32 MobileNet's early activation maps are
    ~100 MB, far beyond the CPU caches, so every layer streams them from DRAM; a few images at a
    time keep a layer's output in cache for the next layer. Only tensor outputs are supported.
    """

    def __init__(self, module: nn.Module, chunk: int) -> None:
        super().__init__()
        if chunk < 1:
            raise ValueError(f"The micro-batch size must be at least 1; got {chunk}.")
        self.module = module
        self.chunk = chunk

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[0] <= self.chunk:
            return self.module(x)
        return torch.cat([self.module(part) for part in x.split(self.chunk)])


class FrozenCompiled(nn.Module):
    """``torch.compile`` of ``model`` whose every trace runs with Inductor's freezing on.

    Why not ``torch.compile(model, options={"freezing": True})``: torch 2.14 reads ``freezing``
    from the global Inductor config when it traces, not from ``options``, so that call compiled
    an unfrozen graph (all 27 conv weights repacked on every call), and whether a later model came
    back frozen depended on what else had set the global config in the process. Here the config is
    patched around each call, since any call may trace (a new input shape recompiles).
    """

    def __init__(self, model: nn.Module, dynamic: bool = False) -> None:
        super().__init__()
        self.compiled = torch.compile(model, dynamic=dynamic)

    def forward(self, x: Tensor) -> Tensor:
        # Freezing applies only to graphs traced without autograd.
        with inductor_config.patch(freezing=True), torch.no_grad():
            return self.compiled(x)


def compile_for_inference(model: nn.Module, dynamic: bool = False) -> nn.Module:
    """Compile an (already prepared) model with Inductor's freezing for CPU inference.

    Freezing turns the weights into constants, which lets Inductor pre-pack them in oneDNN's
    blocked layout once and fuse each convolution with its ReLU6 (removing the separate clamp
    pass over every activation map); ``tests/test_inference.py`` checks that the generated code
    holds the packed weights as constants. The weights are read at the first call: a model
    trained further afterwards needs compiling again. The first call per input shape compiles
    (seconds); ``dynamic=False`` trades one compile per shape for the fastest kernels.
    """
    return FrozenCompiled(model, dynamic)
