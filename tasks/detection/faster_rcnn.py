"""Faster R-CNN on MobileNetV1 (the paper's Table 13, Section 4.7), from torchvision's parts.

The layout is the TensorFlow Object Detection API's Faster R-CNN with the MobileNet feature
extractor, which the paper's numbers come from (Huang et al. 2017, "Speed/accuracy trade-offs"):

* the RPN runs on conv11 (stride 16): a 3x3 conv (512 channels at alpha = 1, TF's
  ``first_stage_box_predictor_depth``) then 1x1 objectness and box convs, 12 anchors per
  location (sizes 64, 128, 256, 512 x aspect ratios 1/2, 1, 2: TF's ``grid_anchor_generator``
  with base size 256 and scales 0.25..2);
* 300 proposals per image at test time (``first_stage_max_proposals: 300``);
* each proposal is cropped from conv11 to 14x14 (``initial_crop_size: 14``, here RoIAlign);
* the box head is the rest of MobileNet, conv12 and conv13, as its own modules: conv12 keeps its
  stride 2 (Table 1), which takes the 14x14 crop to 7x7 (TF's feature extractors reach 7x7 with
  a 2x2 max pool instead; pooling has no mult-adds, and conv12's output is 7x7 either way), then
  average pooling and the class/box layers (``FastRCNNPredictor``). The trunk under the RPN ends
  at conv11, so its ``feature_info`` (stride 16) describes what it returns, and every weight is
  held once. Both parts start from the same MobileNetV1 (and its ``backbone_weights``).

Mult-adds (Table 13: 25.2B at 300 px, 30.5B at 600 px, 6.1M parameters at alpha = 1): the box
head on 300 proposals dominates. conv12 + conv13 with a 7x7 output cost 77.8M mult-adds per
crop, so 300 crops cost 23.3B at either resolution; trunk + RPN add ~1.7B at 300 px and ~6.9B at
600 px. This reproduces the paper's numbers only with conv12's output at 7x7 (conv12 at stride 2
on a 7x7 crop would leave a 4x4 map and ~7.5B for the box head), and only for a square 300x300 /
600x600 input, which is why the transform resizes every image to exactly that (the paper's rows
name the input size; an aspect-preserving resize would make the cost depend on each image's
shape).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FasterRCNN, FastRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

from backbone.mobilenet import IMAGENET_MEAN, IMAGENET_STD, MobileNetV1, check_resolution
from backbone.weights import load_backbone_weights
from tasks.detection.batchnorm import freeze_batchnorm

# TF's grid_anchor_generator: base 256 x scales (0.25, 0.5, 1, 2), ratios (0.5, 1, 2).
ANCHOR_SIZES: tuple[int, ...] = (64, 128, 256, 512)
ANCHOR_RATIOS: tuple[float, ...] = (0.5, 1.0, 2.0)
PROPOSALS = 300  # first_stage_max_proposals
CROP_SIZE = 14  # initial_crop_size; conv12's stride 2 takes it to 7x7


class MobileNetRPNTrunk(nn.Module):
    """The trunk under the RPN: MobileNet's stem..conv11 (stride 16), as torchvision's ``backbone``.

    ``body`` is the MobileNetV1 cut after its stride-16 tap: the later blocks are *moved out*
    (``split_off``) to the box head, so the trunk's ``feature_info`` ends at the stride it returns
    and parameter names stay those of a classification checkpoint (``body.stem.0.weight`` ...),
    which is what ``backbone.weights.extract_backbone_state`` looks for.
    """

    def __init__(self, body: MobileNetV1) -> None:
        super().__init__()
        self.tap = body.last_at_stride(16).name  # conv11 (conv6 in the shallow variant)
        self.body = body
        self.out_channels = body.feature(self.tap).channels  # read by FasterRCNN for the RPN head

    def split_off(self) -> nn.ModuleDict:
        """Remove the blocks after the tap from ``body`` and return them (name -> module)."""
        names = [info.name for info in self.body.feature_info]
        after = names[names.index(self.tap) + 1 :]
        moved = nn.ModuleDict({name: self.body.blocks.pop(name) for name in after})
        self.body.feature_info = self.body.feature_info[: names.index(self.tap) + 1]
        self.body.num_features = self.out_channels
        return moved

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return OrderedDict(self.body.forward_taps(x, [self.tap]))


class MobileNetBoxHead(nn.Module):
    """Per-region head: conv12..conv13 on the 14x14 crop (conv12's stride 2 -> 7x7), average pool.

    ``blocks`` are MobileNet's own conv12/conv13, moved out of the trunk with their weights
    (``MobileNetRPNTrunk.split_off``) and unchanged: conv12 keeps the stride 2 of Table 1.
    """

    def __init__(self, blocks: nn.ModuleDict, out_channels: int) -> None:
        super().__init__()
        self.blocks = blocks
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks.values():
            x = block(x)
        return x.mean(dim=(2, 3))


def build_faster_rcnn(
    width: float = 1.0,
    num_classes: int = 91,
    resolution: int = 600,
    backbone_weights: str | os.PathLike[str] | None = None,
    freeze_bn: bool = False,
    **detector_kwargs: Any,
) -> FasterRCNN:
    """Faster R-CNN with a MobileNetV1 of width ``width`` (Table 13's "Faster-RCNN 300/600" rows).

    Args:
        width: the width multiplier alpha. The RPN's 3x3 conv keeps conv11's width (torchvision's
            ``RPNHead``), i.e. TF's fixed 512 at alpha = 1 and scaled with alpha below it, so that
            alpha shrinks the whole detector.
        num_classes: number of classes *including* background (torchvision's convention).
        resolution: every image is resized to ``resolution x resolution`` (300 or 600 in Table 13);
            ``size_divisible=1`` so no padding changes the cost the paper counts.
        backbone_weights: a MobileNetV1 checkpoint (this project's or timm's) loaded into the
            trunk before it is split between the RPN trunk and the box head.
        freeze_bn: every BatchNorm of the MobileNet (trunk and box head) becomes a
            ``FrozenBatchNorm2d`` (``tasks.detection.batchnorm``), for fine-tuning from
            ``backbone_weights`` at a few images per process.
        detector_kwargs: override any ``torchvision.models.detection.FasterRCNN`` argument.

    Defaults from TF's faster_rcnn COCO configs: 300 proposals after the RPN's NMS (IoU 0.7) in
    training and test, 64 sampled regions per image for the box head
    (``second_stage_batch_size``), second-stage NMS IoU 0.6, 100 detections per image. The score
    floor is 0.01 (TF: 0.0) to keep the per-class NMS cheap at no cost to COCO mAP.
    """
    resolution = check_resolution(resolution)
    body = MobileNetV1(width, num_classes=0)
    if backbone_weights is not None:
        load_backbone_weights(body, backbone_weights)
    out_channels = body.num_features
    trunk = MobileNetRPNTrunk(body)
    box_head = MobileNetBoxHead(trunk.split_off(), out_channels)
    if freeze_bn:
        freeze_batchnorm(trunk)
        freeze_batchnorm(box_head)
    anchors = AnchorGenerator(sizes=(ANCHOR_SIZES,), aspect_ratios=(ANCHOR_RATIOS,))
    options: dict[str, Any] = dict(
        min_size=resolution,
        max_size=resolution,
        fixed_size=(resolution, resolution),
        size_divisible=1,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(trunk.out_channels, anchors.num_anchors_per_location()[0]),
        rpn_post_nms_top_n_train=PROPOSALS,
        rpn_post_nms_top_n_test=PROPOSALS,
        box_roi_pool=MultiScaleRoIAlign(featmap_names=[trunk.tap], output_size=CROP_SIZE, sampling_ratio=2),
        box_head=box_head,
        box_predictor=FastRCNNPredictor(box_head.out_channels, num_classes),
        box_batch_size_per_image=64,
        box_nms_thresh=0.6,
        box_score_thresh=0.01,
        box_detections_per_img=100,
    )
    options.update(detector_kwargs)
    return FasterRCNN(trunk, num_classes=None, **options)
