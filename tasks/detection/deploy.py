"""Deploying a detector (``export``, ``test --deployed``): the network and the box decoding in the
graph, the per-class selection and NMS as a documented step of the runner.

What the exported SSD300 computes (``SSDNetwork``), for images already transformed as
torchvision's ``GeneralizedRCNNTransform`` gives them (ImageNet mean/std normalised, resized to
the fixed ``resolution`` x ``resolution``; ``deploy.json``'s ``model_transform``):

* ``boxes`` (N, anchors, 4): the box regression decoded against the anchors (xyxy, pixels of the
  transformed image, not clipped). The anchors depend only on the fixed input size, so they are
  constants of the graph;
* ``scores`` (N, anchors, classes): the softmax class probabilities, column 0 the background.

What the runner does next (``SSDPostprocess``, written to ``deploy.json``'s ``postprocess``), which
is torchvision's ``SSD.postprocess_detections`` and ``GeneralizedRCNNTransform.postprocess``:

1. clip the boxes to the transformed image;
2. per foreground class: keep the anchors whose score is above ``score_thresh``, then the
   ``topk_candidates`` best of them;
3. ``torchvision.ops.batched_nms`` (per-class NMS) at IoU ``nms_thresh``, keep the first
   ``detections_per_img`` in decreasing score;
4. scale the boxes from the transformed size back to the size of the image given to the runner.

NMS stays outside the graph: its output has a data-dependent size, which the dynamo ONNX exporter
and int8 quantisation handle poorly, and a fixed-size graph runs the same in both runtimes.
Only SSD300 exports. Faster R-CNN's second stage runs on a data-dependent set of proposals (the
RPN's NMS), so its network cannot stop before NMS: the dynamo ONNX exporter fails on it
(``GuardOnDataDependentSymNode`` in ``batched_nms``); the legacy exporter and OpenVINO convert it
for one image with NMS inside, which needs a one-image graph with variable-length outputs that the
deploy mechanism (dynamic batch, fixed output shapes, int8 calibration) does not provide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.ssd import SSD

from backbone.errors import BadInputError

DEPLOY_OUTPUTS: tuple[str, ...] = ("boxes", "scores")


class SSDNetwork(nn.Module):
    """SSD's backbone, head and box decoding for transformed images: ``(N, 3, H, W)`` ->
    ``boxes`` (N, A, 4) xyxy in input pixels, ``scores`` (N, A, C) softmax probabilities.

    Made of the detector's own modules (``backbone``, ``head``, ``box_coder``); the anchors its
    ``anchor_generator`` makes for the fixed input size are computed once and held as a buffer.
    """

    def __init__(self, ssd: SSD) -> None:
        super().__init__()
        self.backbone = ssd.backbone
        self.head = ssd.head
        self.box_coder = ssd.box_coder
        height, width = fixed_size(ssd)
        example = torch.zeros(1, 3, height, width)
        with torch.no_grad():
            features = list(self.backbone(example).values())
            anchors = ssd.anchor_generator(ImageList(example, [(height, width)]), features)[0]
        self.register_buffer("anchors", anchors, persistent=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = list(self.backbone(images).values())
        head = self.head(features)
        regression, logits = head["bbox_regression"], head["cls_logits"]
        # decode_single decodes k boxes per anchor from (anchors, 4k) codes: the batch is k.
        codes = regression.transpose(0, 1).flatten(1)
        boxes = self.box_coder.decode_single(codes, self.anchors).unflatten(1, (-1, 4)).transpose(0, 1)
        return boxes, torch.softmax(logits, dim=-1)


class _AlreadyDecoded:
    """A box coder for boxes the network has already decoded: ``decode_single`` returns them."""

    @staticmethod
    def decode_single(rel_codes: Tensor, boxes: Tensor) -> Tensor:
        return rel_codes


@dataclass(frozen=True)
class SSDPostprocess:
    """The runner's step after the network (module docstring, 1-3): torchvision's own
    ``SSD.postprocess_detections``, called with these settings on the decoded boxes.

    That function takes logits and softmaxes them; the network's probabilities are passed as
    their logarithms, whose softmax is the same probabilities (to float rounding, they sum to 1).
    """

    score_thresh: float
    nms_thresh: float
    topk_candidates: int
    detections_per_img: int

    @property
    def box_coder(self) -> _AlreadyDecoded:
        return _AlreadyDecoded()

    @classmethod
    def of(cls, ssd: SSD) -> SSDPostprocess:
        return cls(
            float(ssd.score_thresh), float(ssd.nms_thresh), int(ssd.topk_candidates), int(ssd.detections_per_img)
        )

    def __call__(
        self, boxes: Tensor, scores: Tensor, image_sizes: Sequence[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """Per image: ``boxes`` xyxy (transformed pixels, clipped), ``scores``, ``labels`` 1..C-1."""
        outputs = {"bbox_regression": boxes, "cls_logits": torch.log(scores)}
        return SSD.postprocess_detections(self, outputs, list(boxes), list(image_sizes))  # type: ignore[arg-type]


class DeployedSSD(nn.Module):
    """The deployed SSD in place of ``DetectionModule.forward``: images (a batch or a list, in
    [0, 1]) -> per image ``{boxes, scores, labels}``, boxes in the pixels of the given image.

    The detector's ``transform`` (normalise, resize), then the runner, then ``postprocess`` and
    the transform's ``postprocess`` (back to each image's size): ``SSD.forward`` in eval mode with
    the network replaced by the deployed one.
    """

    def __init__(self, runner: Any, transform: nn.Module, postprocess: SSDPostprocess) -> None:
        super().__init__()
        self.runner = runner
        self.transform = transform
        self.postprocess = postprocess

    def forward(self, images: Tensor | Sequence[Tensor]) -> list[dict[str, Tensor]]:
        images = list(images)
        original_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        transformed, _ = self.transform(images)
        boxes, scores = (
            torch.from_numpy(out).to(transformed.tensors.device) for out in self.runner(transformed.tensors)
        )
        detections = self.postprocess(boxes, scores, transformed.image_sizes)
        return self.transform.postprocess(detections, transformed.image_sizes, original_sizes)


def fixed_size(ssd: SSD) -> tuple[int, int]:
    """The (height, width) every image is resized to (torchvision's ``fixed_size`` is (w, h))."""
    width, height = ssd.transform.fixed_size
    return int(height), int(width)


class DetectionDeploy:
    """The deploy hooks of ``DetectionModule`` (``tasks.base.TaskModule``'s, for SSD300).

    A mixin placed before ``TaskModule``: it reads the module's ``model`` and ``hparams``.
    """

    model: nn.Module
    hparams: Any
    deploy_outputs = DEPLOY_OUTPUTS

    def _deployable(self) -> SSD:
        if not isinstance(self.model, SSD):
            raise BadInputError(
                f"export takes an SSD300 detector; --model.arch {self.hparams.arch} does not export (only ssd300 does)."
            )
        return self.model

    def check_export(self, runtime: str, int8: bool) -> None:
        self._deployable()
        if runtime == "openvino" and int8:
            # Measured on the demo (step-180 SSD300, AVX2 machine): NNCF's int8 moved boxes by 6 px at
            # the median and mAP fell from 0.450 to 0.003, also with only the first 12 backbone convs
            # quantised, with the overflow fix on all layers, and with the decoding and softmax kept
            # fp32; ONNX Runtime's int8 of the same network kept 0.4496. Not shipped until understood.
            raise BadInputError(
                "OpenVINO int8 of the SSD detector loses its accuracy (demo mAP 0.450 -> 0.003, docs/deploy.md); "
                "export int8 with --runtime onnxruntime (demo mAP 0.4496)."
            )

    def deploy_network(self) -> nn.Module:
        return SSDNetwork(self._deployable())

    def deploy_inputs(self, batch: Any) -> Tensor:
        """A training batch's images as the network takes them: through the detector's transform."""
        ssd = self._deployable()
        images = batch[0]
        with torch.no_grad():
            return ssd.transform(list(images))[0].tensors

    def deploy_metadata(self) -> dict[str, Any]:
        """How to feed the network and read its outputs: the transform and the postprocess."""
        ssd = self._deployable()
        height, width = fixed_size(ssd)
        return {
            "model_transform": {
                "description": "images in [0, 1], RGB: (x - image_mean) / image_std, resized bilinearly to size",
                "image_mean": [float(v) for v in ssd.transform.image_mean],
                "image_std": [float(v) for v in ssd.transform.image_std],
                "size": [height, width],
            },
            "postprocess": {
                "steps": [
                    "clip boxes to the transformed image size",
                    "per class 1..C-1 (column 0 is the background): keep scores > score_thresh, "
                    "then the topk_candidates highest",
                    "torchvision.ops.batched_nms over all classes' candidates at IoU nms_thresh; "
                    "keep the detections_per_img highest",
                    "scale boxes from the transformed size to the original image size",
                ],
                "box_format": "xyxy, pixels of the transformed image",
                "labels": "score column k is label k; label k is output_names.categories[k - 1]",
                **asdict(SSDPostprocess.of(ssd)),
                "implementation": "torchvision.models.detection.SSD.postprocess_detections, then "
                "GeneralizedRCNNTransform.postprocess (tasks.detection.deploy.DeployedSSD)",
            },
        }

    def deployed_forward(self, runner: Any, record: Mapping[str, Any]) -> nn.Module:
        """The runner between the detector's transform and postprocess, with this module's
        inference options (``--model.score_thresh`` ..., as ``test --ckpt_path`` uses them)."""
        ssd = self._deployable()
        return DeployedSSD(runner, ssd.transform, SSDPostprocess.of(ssd))
