"""SSD300 on MobileNetV1 (the paper's Table 13, Section 4.7), built from torchvision's SSD parts.

The layout follows the TensorFlow Object Detection API's ``ssd_mobilenet_v1_coco.config`` that
the paper's SSD numbers come from (Huang et al. 2017, "Speed/accuracy trade-offs"):

* features: MobileNet's conv11 (19x19 at 300 px, stride 16) and conv13 (10x10, stride 32), plus
  four extra blocks (1x1 conv to d/2, then 3x3 stride-2 conv to d) giving 5x5, 3x3, 2x2 and 1x1;
* predictors: one 1x1 conv per map for the class scores and one for the box offsets
  (``box_predictor { convolutional_box_predictor { kernel_size: 1 } }``);
* anchors: ``ssd_anchor_generator`` with 6 layers, scales 0.2..0.95, aspect ratios
  {1, 2, 1/2, 3, 1/3} plus one box at the interpolated scale, and ``reduce_boxes_in_lowest_layer``:
  1917 anchors at 300x300.

Matching (IoU 0.5, every ground truth forced onto its best anchor), the box coder (10, 10, 5, 5),
hard negative mining at 3:1, smooth-L1 + cross-entropy and NMS are torchvision's ``SSD``. One
knowing difference from the TF config: TF scores classes with sigmoids, torchvision with softmax.

At alpha = 1 with 91 classes the model has 6.8M parameters and 1.2B mult-adds (Table 13).
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD, SSDScoringHead

from backbone.mobilenet import IMAGENET_MEAN, IMAGENET_STD, ConvBNAct, MobileNetV1, check_resolution, scaled_channels
from backbone.weights import load_backbone_weights
from tasks.detection.batchnorm import freeze_batchnorm

# The four extra feature layers of ssd_mobilenet_v1 (TF's feature_map_layout
# ``layer_depth: [-1, -1, 512, 256, 256, 128]``): depth d of each 3x3 stride-2 conv, preceded
# by a 1x1 conv to d/2. Both are scaled by the width multiplier, as TF's ``depth_multiplier``.
EXTRA_DEPTHS: tuple[int, ...] = (512, 256, 256, 128)

# ssd_anchor_generator of the TF config.
MIN_SCALE = 0.2
MAX_SCALE = 0.95
ASPECT_RATIOS: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
# reduce_boxes_in_lowest_layer: the 19x19 map gets 3 boxes as (scale, aspect ratio) pairs.
LOWEST_LAYER_BOXES: tuple[tuple[float, float], ...] = ((0.1, 1.0), (MIN_SCALE, 2.0), (MIN_SCALE, 0.5))


class MobileNetSSDFeatures(nn.Module):
    """The six SSD feature maps: conv11, conv13 and the four extra blocks.

    The whole ``MobileNetV1`` is kept as ``body`` so its parameter names stay those of a
    classification checkpoint (``body.stem.0.weight`` ...), which is what
    ``backbone.weights.extract_backbone_state`` looks for.
    """

    def __init__(self, body: MobileNetV1) -> None:
        super().__init__()
        self.body = body
        # conv11 / conv13 in the standard network; the taps by stride keep the shallow variant
        # (Table 5, no conv7..conv11) usable too.
        self.taps = (body.last_at_stride(16).name, body.last_at_stride(32).name)
        channels = body.feature(self.taps[1]).channels
        extra: list[nn.Module] = []
        out_channels = [body.feature(name).channels for name in self.taps]
        for depth in EXTRA_DEPTHS:
            mid, out = scaled_channels(depth // 2, body.width), scaled_channels(depth, body.width)
            # TF pads 'SAME' (0 before, 1 after); padding 1 on both sides gives the same
            # 5/3/2/1 map sizes, which is what the anchors depend on.
            extra.append(nn.Sequential(ConvBNAct(channels, mid, 1), ConvBNAct(mid, out, 3, stride=2)))
            out_channels.append(out)
            channels = out
        self.extra = nn.ModuleList(extra)
        self.out_channels: list[int] = out_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        taps = self.body.forward_taps(x, self.taps)
        features: OrderedDict[str, Tensor] = OrderedDict((name, taps[name]) for name in self.taps)
        x = taps[self.taps[1]]
        for index, block in enumerate(self.extra):
            x = block(x)
            features[f"extra{index + 1}"] = x
        return features


class SSDMobileNetAnchors(DefaultBoxGenerator):
    """TF's ``ssd_anchor_generator`` with ``reduce_boxes_in_lowest_layer: true``.

    torchvision's ``DefaultBoxGenerator`` cannot express this on its own: it always puts a box at
    scale s_k *and* one at sqrt(s_k s_{k+1}) on every map, with the same scale for all ratios,
    while TF's lowest map has 3 boxes, one of them at scale 0.1. So only the width/height table
    is replaced here; the tiling (centres at (i + 0.5) / f_k) and the conversion to pixels are
    the parent's and identical to TF's.

    ``clip=False``: TF does not clip anchors (the ratio-3 box at scale 0.95 is wider than the image).
    """

    def __init__(self, num_maps: int = 6) -> None:
        # The parent's evenly spaced scales with min 0.2, max 0.95 plus a final 1.0 are exactly
        # TF's ``scales`` (the 1.0 serves the interpolated box of the last map).
        super().__init__([[2, 3]] * num_maps, min_ratio=MIN_SCALE, max_ratio=MAX_SCALE, clip=False)

    def _boxes(self, k: int) -> list[tuple[float, float]]:
        """(scale, aspect ratio) of each box on map ``k``, in TF's order."""
        if k == 0:
            return list(LOWEST_LAYER_BOXES)
        boxes = [(self.scales[k], ratio) for ratio in ASPECT_RATIOS]
        boxes.append((math.sqrt(self.scales[k] * self.scales[k + 1]), 1.0))
        return boxes

    def _generate_wh_pairs(
        self, num_outputs: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None
    ) -> list[Tensor]:
        # TF: width = scale * sqrt(ratio), height = scale / sqrt(ratio), relative to the image.
        return [
            torch.as_tensor(
                [[s * math.sqrt(r), s / math.sqrt(r)] for s, r in self._boxes(k)], dtype=dtype, device=device
            )
            for k in range(num_outputs)
        ]

    def num_anchors_per_location(self) -> list[int]:
        return [len(self._boxes(k)) for k in range(len(self.aspect_ratios))]


class _Conv1x1ScoringHead(SSDScoringHead):
    """torchvision's ``SSDScoringHead`` with one 1x1 conv per feature map (TF's kernel_size: 1)."""

    def __init__(self, in_channels: list[int], num_anchors: list[int], num_columns: int) -> None:
        convs = nn.ModuleList(
            nn.Conv2d(c, num_columns * a, kernel_size=1) for c, a in zip(in_channels, num_anchors, strict=True)
        )
        for conv in convs:  # torchvision's SSD heads are Xavier-initialised with zero bias
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        super().__init__(convs, num_columns)


class SSDHead1x1(nn.Module):
    """Class and box predictors as torchvision's ``SSDHead``, but with 1x1 convolutions."""

    def __init__(self, in_channels: list[int], num_anchors: list[int], num_classes: int) -> None:
        super().__init__()
        self.classification_head = _Conv1x1ScoringHead(in_channels, num_anchors, num_classes)
        self.regression_head = _Conv1x1ScoringHead(in_channels, num_anchors, 4)

    def forward(self, x: list[Tensor]) -> dict[str, Tensor]:
        return {"bbox_regression": self.regression_head(x), "cls_logits": self.classification_head(x)}


def build_ssd300(
    width: float = 1.0,
    num_classes: int = 91,
    resolution: int = 300,
    backbone_weights: str | os.PathLike[str] | None = None,
    freeze_bn: bool = False,
    **detector_kwargs: Any,
) -> SSD:
    """SSD300 with a MobileNetV1 of width ``width`` (Table 13's "SSD 300 / MobileNet" row).

    Args:
        width: the width multiplier alpha of the backbone and of the extra layers.
        num_classes: number of classes *including* background (torchvision's convention; 91 for
            COCO's category-id space, 81 for the 80 used categories plus background).
        resolution: the square input size; the transform resizes every image to it.
        backbone_weights: a MobileNetV1 checkpoint (this project's or timm's) loaded into the
            trunk before the detector is assembled.
        freeze_bn: the MobileNet's BatchNorms become ``FrozenBatchNorm2d``
            (``tasks.detection.batchnorm``); the extra layers, trained from scratch, keep theirs.
        detector_kwargs: override any ``torchvision.models.detection.SSD`` argument.

    Defaults follow ``ssd_mobilenet_v1_coco.config``: NMS IoU 0.6, 100 detections per image,
    score threshold 0.01 (TF keeps scores above 1e-8; a small floor keeps NMS cheap at no cost
    to COCO mAP), matching IoU 0.5, 3:1 hard negatives. Images are normalised with the ImageNet
    mean/std the project's classification backbone is trained with.
    """
    resolution = check_resolution(resolution)
    body = MobileNetV1(width, num_classes=0)
    if backbone_weights is not None:
        load_backbone_weights(body, backbone_weights)
    if freeze_bn:
        freeze_batchnorm(body)
    features = MobileNetSSDFeatures(body)
    anchors = SSDMobileNetAnchors(num_maps=len(features.out_channels))
    head = SSDHead1x1(features.out_channels, anchors.num_anchors_per_location(), num_classes)
    options: dict[str, Any] = dict(
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        score_thresh=0.01,
        nms_thresh=0.6,
        detections_per_img=100,
        iou_thresh=0.5,
        positive_fraction=0.25,  # 3 negatives per positive
    )
    options.update(detector_kwargs)
    return SSD(features, anchors, (resolution, resolution), num_classes, head=head, **options)
