"""Mult-adds of a whole detector for one image, with the paper's convention (Table 13).

``backbone.complexity.count_complexity`` runs a model on the meta device under
``FlopCounterMode``, which counts convolutions and matrix multiplies only (the paper's
convention: no BN, activations, pooling, RoIAlign or box arithmetic). torchvision's detectors
cannot run end to end on the meta device: their post-processing (score thresholds, NMS) needs
``nonzero``, whose output size depends on the data. But post-processing has no convolution or
matrix multiply, so it adds nothing to the count. The inference forward is therefore replayed
here up to the last layer that does count, through the detector's own modules:

* SSD: transform -> backbone (+ extra layers) -> class/box predictors. That is all of SSD's
  convolutions; decoding and NMS follow.
* Faster R-CNN: transform -> trunk -> RPN head, then the box head and predictor on exactly
  ``rpn.post_nms_top_n()`` proposals (300): the number the RPN keeps at test time and the
  number the paper counts. (An image whose RPN NMS leaves fewer than 300 boxes costs less.)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.ssd import SSD

from backbone.complexity import Complexity, count_complexity


def _ssd_inference(model: SSD, image: Tensor) -> None:
    images, _ = model.transform(list(image))
    features = list(model.backbone(images.tensors).values())
    model.head(features)


def _faster_rcnn_inference(model: FasterRCNN, image: Tensor) -> None:
    images, _ = model.transform(list(image))
    features = model.backbone(images.tensors)
    model.rpn.head(list(features.values()))
    # The RPN's proposals are data-dependent (NMS); only their number matters for the count.
    height, width = images.image_sizes[0]
    proposals = torch.tensor([0.0, 0.0, width, height], device=image.device).expand(model.rpn.post_nms_top_n(), 4)
    regions = model.roi_heads.box_roi_pool(features, [proposals], images.image_sizes)
    model.roi_heads.box_predictor(model.roi_heads.box_head(regions))


def detection_complexity(model: nn.Module, resolution: int) -> Complexity:
    """Mult-adds of ``model``'s inference on one ``resolution`` x ``resolution`` image, and its parameters.

    The model is counted in eval mode on the meta device (a copy; ``model`` is untouched).
    Supports torchvision ``SSD`` and ``FasterRCNN`` (see the module docstring for what is replayed).
    """
    if isinstance(model, SSD):
        return count_complexity(model, resolution, run=_ssd_inference)
    if isinstance(model, FasterRCNN):
        return count_complexity(model, resolution, run=_faster_rcnn_inference)
    raise TypeError(f"detection_complexity counts SSD and FasterRCNN models, not {type(model).__name__}.")
