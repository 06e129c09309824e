"""MobileNetV1 (Howard et al., 2017, arXiv:1704.04861), Table 1 kept as data.

One class serves every task of this project and the paper's ablations:

* ``width`` is the width multiplier alpha (Section 3.3): every layer's channels become
  ``max(int(c * alpha), 8)``.
* the resolution multiplier rho (Section 3.4) is simply the input size; any input of at least
  32 px is accepted (the stride-32 map must hold at least one pixel).
* ``full_conv=True`` replaces each depthwise-separable block with a full 3x3 convolution
  ("Conv MobileNet", Table 4).
* ``shallow=True`` drops the five 14x14x512 separable blocks ("Shallow MobileNet", Table 5).

The network exposes named feature taps (``feature_info``), in the spirit of timm's
``feature_info`` and detectron2's ``output_shape()``, so that the detection, face and
geolocation heads plug in without reaching into the module's internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from backbone.errors import BadInputError

# Table 1 of the paper: the stem (3x3 conv, stride 2, 32 channels) followed by 13
# depthwise-separable blocks, each given here as (output channels, stride of its depthwise conv).
# Table 1 prints stride 2 on the 13th depthwise conv; its input is already 7x7 at 224 px and
# every reference implementation uses stride 1 there, so the table's typo is not reproduced.
STEM_CHANNELS = 32
BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1),  # conv1   112x112
    (128, 2),  # conv2   56x56
    (128, 1),  # conv3
    (256, 2),  # conv4   28x28
    (256, 1),  # conv5
    (512, 2),  # conv6   14x14
    (512, 1),  # conv7   } the five 14x14x512 blocks that
    (512, 1),  # conv8   } the shallow variant of Table 5
    (512, 1),  # conv9   } removes
    (512, 1),  # conv10  }
    (512, 1),  # conv11  }  <- SSD's and Faster R-CNN's stride-16 feature (Section 4.7)
    (1024, 2),  # conv12  7x7
    (1024, 1),  # conv13     <- SSD's stride-32 feature
)
SHALLOW_REMOVED = frozenset({7, 8, 9, 10, 11})  # 1-based block numbers dropped by Table 5
FEATURE_DIM = 1024
MIN_RESOLUTION = 32
# Above this one image's activations take gigabytes: a typo (an extra zero), not a setting.
MAX_RESOLUTION = 4096
# Input normalisation of every model in this project (torchvision's and timm's ImageNet
# statistics, so that imported ImageNet weights see the inputs they were trained on).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Activation = Literal["relu6", "relu"]


def scaled_channels(channels: int, width: float) -> int:
    """Channels of a layer under width multiplier ``width`` (Section 3.3): ``max(int(c*a), 8)``."""
    return max(int(channels * width), 8)


def check_width(width: float) -> float:
    """Return ``width`` if it is a usable width multiplier, else raise one clear BadInputError."""
    try:
        value = float(width)
    except (TypeError, ValueError):
        raise BadInputError(f"The width multiplier must be a number in (0, 1] (or 1.25); got {width!r}.") from None
    if not (0.0 < value <= 1.0 or value == 1.25):
        raise BadInputError(f"The width multiplier must be in (0, 1] (or the common 1.25); got {width!r}.")
    return value


def check_resolution(resolution: int) -> int:
    """Return ``resolution`` if MobileNetV1 can take it, else raise one clear BadInputError."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < MIN_RESOLUTION:
        raise BadInputError(
            f"The input resolution must be a whole number of pixels of at least {MIN_RESOLUTION} "
            f"(the network downsamples by 32); got {resolution!r}."
        )
    if resolution > MAX_RESOLUTION:
        raise BadInputError(
            f"The input resolution must be at most {MAX_RESOLUTION} pixels (the stem's output alone takes "
            f"{32 * (MAX_RESOLUTION // 2) ** 2 * 4 // 2**20} MB per image there; the paper uses 128-224); "
            f"got {resolution}."
        )
    return resolution


def _activation(kind: Activation) -> nn.Module:
    if kind == "relu6":
        return nn.ReLU6(inplace=True)
    if kind == "relu":
        return nn.ReLU(inplace=True)
    raise BadInputError(f"The activation must be 'relu6' or 'relu'; got {kind!r}.")


class ConvBNAct(nn.Sequential):
    """Conv (no bias, BN follows) -> BatchNorm -> ReLU6/ReLU, the unit of every MobileNet layer."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        activation: Activation = "relu6",
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            _activation(activation),
        )
        self.out_channels = out_channels


class DepthwiseSeparable(nn.Sequential):
    """Fig. 3 right: 3x3 depthwise conv -> BN -> ReLU, then 1x1 pointwise conv -> BN -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, activation: Activation) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(in_channels, in_channels, 3, stride, groups=in_channels, activation=activation)
        self.pointwise = ConvBNAct(in_channels, out_channels, 1, activation=activation)
        self.out_channels = out_channels


@dataclass(frozen=True)
class FeatureInfo:
    """A named feature tap: the output of ``name`` has ``channels`` channels at ``stride``."""

    name: str
    channels: int
    stride: int


class MobileNetV1(nn.Module):
    """MobileNetV1 as in Table 1, with the width multiplier and the paper's ablation variants.

    Layers are named ``stem`` (the first full conv) and ``conv1`` .. ``conv13`` (the separable
    blocks, numbered as in the TensorFlow reference that the paper's detection results use:
    ``Conv2d_11_pointwise`` is ``conv11``). In the shallow variant ``conv7``..``conv11`` are absent.

    Args:
        width: the width multiplier alpha, in (0, 1] or 1.25.
        num_classes: size of the classifier; 0 builds the trunk only (``forward`` returns pooled
            features), as the detection heads use it.
        dropout: dropout before the classifier (Table 1's head is avgpool -> FC -> softmax; the
            reference implementation adds a light dropout).
        activation: ``"relu6"`` (the TensorFlow reference) or ``"relu"`` (the paper's text).
        full_conv: "Conv MobileNet" of Table 4, full 3x3 convolutions instead of separable ones.
        shallow: "Shallow MobileNet" of Table 5, without the five 14x14x512 blocks.
        in_channels: channels of the input image.
    """

    def __init__(
        self,
        width: float = 1.0,
        num_classes: int = 1000,
        dropout: float = 0.001,
        activation: Activation = "relu6",
        full_conv: bool = False,
        shallow: bool = False,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.width = check_width(width)
        self.full_conv = full_conv
        self.shallow = shallow
        _activation(activation)  # validates the name early, with a clear message

        channels = scaled_channels(STEM_CHANNELS, self.width)
        self.stem = ConvBNAct(in_channels, channels, 3, stride=2, activation=activation)
        stride = 2
        infos = [FeatureInfo("stem", channels, stride)]
        layers: dict[str, nn.Module] = {}
        for number, (out, block_stride) in enumerate(BLOCKS, start=1):
            if shallow and number in SHALLOW_REMOVED:
                continue
            out = scaled_channels(out, self.width)
            if full_conv:
                layers[f"conv{number}"] = ConvBNAct(channels, out, 3, block_stride, activation=activation)
            else:
                layers[f"conv{number}"] = DepthwiseSeparable(channels, out, block_stride, activation)
            channels, stride = out, stride * block_stride
            infos.append(FeatureInfo(f"conv{number}", channels, stride))
        self.blocks = nn.ModuleDict(layers)
        self.feature_info: tuple[FeatureInfo, ...] = tuple(infos)
        self.num_features = channels

        self.num_classes = num_classes
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier: nn.Module = nn.Linear(channels, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        # Kaiming-normal (fan_out) convolutions and a small-normal classifier, as torchvision's
        # MobileNetV2/V3 do: from-scratch training on small data is sensitive to this.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    # --- feature taps -----------------------------------------------------------------------
    def feature(self, name: str) -> FeatureInfo:
        """The ``FeatureInfo`` of tap ``name`` (``"stem"``, ``"conv1"`` .. ``"conv13"``)."""
        for info in self.feature_info:
            if info.name == name:
                return info
        names = ", ".join(i.name for i in self.feature_info)
        raise KeyError(f"This MobileNetV1 has no feature tap {name!r}; it has: {names}.")

    def last_at_stride(self, stride: int) -> FeatureInfo:
        """The deepest tap at ``stride`` (conv11 at 16, or conv6 in the shallow variant)."""
        found = [i for i in self.feature_info if i.stride == stride]
        if not found:
            raise KeyError(f"This MobileNetV1 has no feature at stride {stride}.")
        return found[-1]

    def layers_between(self, after: str | None, until: str) -> nn.Sequential:
        """The layers that follow tap ``after`` (exclusive; None = from the input) up to ``until``.

        Faster R-CNN uses this to split the trunk into the part under the RPN (stem..conv11) and
        the part that runs on each cropped region (conv12..conv13).
        """
        names = [i.name for i in self.feature_info]
        start = 0 if after is None else names.index(self.feature(after).name) + 1
        stop = names.index(self.feature(until).name) + 1
        modules = [self.stem, *self.blocks.values()]
        return nn.Sequential(*modules[start:stop])

    def forward_taps(self, x: Tensor, taps: Sequence[str]) -> dict[str, Tensor]:
        """Run the trunk as far as the deepest requested tap and return those outputs by name."""
        wanted = set(taps)
        for name in wanted:
            self.feature(name)
        out: dict[str, Tensor] = {}
        x = self.stem(x)
        if "stem" in wanted:
            out["stem"] = x
        for name, block in self.blocks.items():
            if len(out) == len(wanted):
                break
            x = block(x)
            if name in wanted:
                out[name] = x
        return out

    # --- timm-style forward -----------------------------------------------------------------
    def forward_features(self, x: Tensor) -> Tensor:
        """The conv13 feature map (N, 1024*alpha, H/32, W/32)."""
        x = self.stem(x)
        for block in self.blocks.values():
            x = block(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Average pool -> dropout -> FC (Table 1's head; softmax lives in the loss)."""
        x = torch.flatten(self.pool(x), 1)
        if pre_logits:
            return x
        return self.classifier(self.dropout(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the FC layer, e.g. to fine-tune an ImageNet backbone on 120 dog breeds."""
        self.num_classes = num_classes
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if isinstance(self.classifier, nn.Linear):
            nn.init.normal_(self.classifier.weight, 0.0, 0.01)
            nn.init.zeros_(self.classifier.bias)

    def extra_repr(self) -> str:
        return f"width={self.width}, full_conv={self.full_conv}, shallow={self.shallow}"
