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

``ssd_network`` is the SSD replay on its own: the benchmark also times it, to compare networks
on what the mult-adds count, without decoding and NMS.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.ssd import SSD

from backbone.complexity import Complexity, count_complexity


def ssd_network(model: SSD, images: Tensor | Sequence[Tensor]) -> dict[str, Tensor]:
    """SSD up to its last convolution (transform, backbone, predictors): the raw head outputs.

    ``images`` is a batch or a list of images, as the detector itself takes them.
    """
    batched, _ = model.transform(list(images))
    return model.head(list(model.backbone(batched.tensors).values()))


def _faster_rcnn_inference(model: FasterRCNN, image: Tensor) -> None:
    images, _ = model.transform(list(image))
    features = model.backbone(images.tensors)
    model.rpn.head(list(features.values()))
    # The RPN's proposals are data-dependent (NMS); only their number matters for the count.
    height, width = images.image_sizes[0]
    proposals = torch.tensor([0.0, 0.0, width, height], device=image.device).expand(model.rpn.post_nms_top_n(), 4)
    regions = model.roi_heads.box_roi_pool(features, [proposals], images.image_sizes)
    model.roi_heads.box_predictor(model.roi_heads.box_head(regions))


def _assume_all_nonzero() -> contextlib.AbstractContextManager[object]:
    """Let ``nonzero`` run on the meta device, as if every element were non-zero.

    torchvision's FPN Faster R-CNN assigns each proposal to a pyramid level in
    ``MultiScaleRoIAlign`` with ``torch.where`` (``nonzero``), which the meta device refuses.
    Assuming all non-zero sends every proposal through every level, but the box head still runs
    on exactly ``post_nms_top_n`` regions (RoIAlign itself is not counted), so the count stays
    exact: it equals a real CPU forward under ``FlopCounterMode`` (checked by hand, 2.87 B for
    ``fasterrcnn_mobilenet_v3_large_320_fpn``). Single-level models never call it.
    """
    try:
        from torch.fx.experimental import _config as fx_config

        return fx_config.patch(meta_nonzero_assume_all_nonzero=True)
    except (ImportError, AttributeError):  # an older torch: the single-level models count anyway
        return contextlib.nullcontext()


def detection_complexity(model: nn.Module, resolution: int) -> Complexity:
    """Mult-adds of ``model``'s inference on one ``resolution`` x ``resolution`` image, and its parameters.

    The model is counted in eval mode on the meta device (a copy; ``model`` is untouched).
    Supports torchvision ``SSD`` and ``FasterRCNN``, with or without FPN (see the module docstring
    for what is replayed).
    """
    if isinstance(model, SSD):
        return count_complexity(model, resolution, run=ssd_network)
    if isinstance(model, FasterRCNN):
        with _assume_all_nonzero():
            return count_complexity(model, resolution, run=_faster_rcnn_inference)
    raise TypeError(f"detection_complexity counts SSD and FasterRCNN models, not {type(model).__name__}.")
