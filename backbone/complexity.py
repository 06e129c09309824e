"""Mult-adds and parameters with the paper's convention (Section 3 and Tables 2, 4-9).

The paper counts the multiply-adds of the convolutions and the fully connected layer only: no
batch norm, activation, pooling or bias. ``torch.utils.flop_counter.FlopCounterMode`` counts
exactly those ops (convolutions, including depthwise ones, and matrix multiplies) at two FLOPs
per multiply-add, so mult-adds = FLOPs / 2. Running on the meta device makes counting free:
no memory for activations, no arithmetic.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Complexity:
    """What the paper's tables report for a model: mult-adds for one input, and parameters."""

    mult_adds: int
    params: int

    @property
    def mult_adds_m(self) -> float:
        """Mult-adds in millions, as Tables 4-12 print them."""
        return self.mult_adds / 1e6

    @property
    def params_m(self) -> float:
        """Parameters in millions."""
        return self.params / 1e6

    def __str__(self) -> str:
        return f"{self.mult_adds_m:.1f}M mult-adds, {self.params_m:.2f}M parameters"


def count_params(model: nn.Module) -> int:
    """All learnable parameters (conv and FC weights, BN affine terms and biases)."""
    return sum(p.numel() for p in model.parameters())


def count_complexity(
    model: nn.Module,
    resolution: int | tuple[int, int] = 224,
    in_channels: int = 3,
    run: Callable[[nn.Module, torch.Tensor], Any] | None = None,
) -> Complexity:
    """Count ``model``'s mult-adds on one ``resolution`` image and its parameters.

    The model is copied to the meta device and run in eval mode, so nothing is computed and the
    caller's model is untouched. ``run(model, image)`` overrides how the model is called (a
    detection model takes a list of images, for instance); by default it is ``model(image)``.
    """
    height, width = (resolution, resolution) if isinstance(resolution, int) else resolution
    meta_model = copy.deepcopy(model).to("meta").eval()
    image = torch.zeros(1, in_channels, height, width, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        if run is None:
            meta_model(image)
        else:
            run(meta_model, image)
    return Complexity(mult_adds=counter.get_total_flops() // 2, params=count_params(model))
