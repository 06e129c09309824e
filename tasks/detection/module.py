"""Object detection on COCO (Table 13): SSD300 or Faster R-CNN on MobileNetV1, as a LightningModule.

    python -m tasks.detection fit --backbone 0.5                                # built-in demo
    python -m tasks.detection fit --config configs/detection/ssd300.yaml --data.root /data/coco
    python -m tasks.detection fit --model.arch faster_rcnn --resolution 600 --data.root /data/coco
    python -m tasks.detection test --data.root /data/coco --ckpt_path last      # + detections.json
    python -m tasks.detection predict --ckpt_path last --data.predict_dir photos/ \
        --model.draw_predictions true                                           # JSON + PNGs
    python -m tasks.detection predict --ckpt_path last --data.root /data/coco \
        --data.predict_ann annotations/image_info_test-dev2017.json             # test-dev ids kept
    python -m tasks.detection fit --data.root my_set --model.init_from coco.ckpt  # fine-tune a detector

Validation and test log the 12 COCO stats under the README's names (``mAP``, ``mAP50`` ...,
``AR_large``), computed once over the whole val set across DDP ranks (``CocoEvaluator``); the
best checkpoint is picked by ``mAP``; ``AP/<category name>`` is logged for every category.
``test`` also writes ``detections.json`` (a standard COCO results file, the one the evaluation
server takes) next to ``metrics.json``; ``predict`` writes ``predictions.json`` (COCO results:
original pixels, original category ids) with
``predictions_images.json`` (the COCO ``images`` list: id <-> file name), and with
``--model.draw_predictions true`` one PNG per image with boxes, category names and scores;
``test --model.pr_curve true`` writes ``pr_curve.png``.

The code defaults are a recipe for a small custom set trained from scratch (SGD, momentum 0.9,
lr 0.05 at batch 16, one epoch of linear warm-up, the peak held for half the run, then a cosine
to zero, stepped per batch); the paper rows' recipes live
in ``configs/detection/``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.cli import OptimizerCallable
from pytorch_lightning.utilities.rank_zero import rank_zero_info
from torch import Tensor, nn
from torch.optim import Optimizer

from backbone.errors import BadInputError
from backbone.ranges import PositiveInt, Probability, Share
from tasks.base import TaskModule
from tasks.callbacks import run_folder
from tasks.detection.deploy import DetectionDeploy
from tasks.detection.evaluation import CocoEvaluator, to_original_pixels
from tasks.detection.faster_rcnn import build_faster_rcnn
from tasks.detection.pr_curve import write_pr_curve
from tasks.detection.ssd import build_ssd300
from tasks.detection.weights import load_detector_weights
from tasks.optim import configure_optimization

Arch = Literal["ssd300", "faster_rcnn"]
# Every detection lr (code default, configs/detection/*.yaml) is stated per 16 images, the global
# batch of torchvision's detection references (2 images x 8 GPUs).
LR_BASE_BATCH = 16


def sgd(params: Iterable[Any]) -> Optimizer:
    """SGD, momentum 0.9, lr 0.05 (batch 16): trains SSD300 from scratch on a small set.

    torchvision's detection references use plain SGD with momentum 0.9 (lr 0.02 per 16 images
    for Faster R-CNN, higher for SSD); 0.05 with warm-up is stable for both from scratch here.
    """
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def global_batch(trainer: Trainer) -> int | None:
    """Images per optimizer step over all processes; None when the batch size is unknown."""
    batch_size = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
    if not isinstance(batch_size, int):
        return None
    return trainer.world_size * batch_size * trainer.accumulate_grad_batches


@runtime_checkable
class DetectionData(Protocol):
    """What the detection module reads from its data module (``CocoDataModule`` provides it)."""

    @property
    def val_ground_truth(self) -> Any: ...  # builds the evaluated split's annotation dict (cleaned)

    label_to_category_id: Mapping[int, int]  # contiguous label 1..K -> category id
    category_names: Sequence[str]  # label k's name at index k - 1


def build_detector(
    arch: str,
    width: float,
    num_classes: int,
    resolution: int,
    backbone_weights: str | None = None,
    freeze_bn: bool = False,
    score_thresh: float = 0.01,
    nms_thresh: float = 0.6,
    detections_per_img: int = 100,
) -> nn.Module:
    """The torchvision detector of ``arch`` (``DetectionModule``'s, and what a checkpoint's
    hyper-parameters rebuild for inference outside the CLI, ``tasks.face_embedding.face_crops``)."""
    if arch == "ssd300":
        return build_ssd300(
            width,
            num_classes,
            resolution,
            backbone_weights,
            freeze_bn,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
        )
    if arch == "faster_rcnn":
        return build_faster_rcnn(
            width,
            num_classes,
            resolution,
            backbone_weights,
            freeze_bn,
            box_score_thresh=score_thresh,
            box_nms_thresh=nms_thresh,
            box_detections_per_img=detections_per_img,
        )
    # the CLI checks the Literal; this is for direct Python use
    raise BadInputError(f"The detector architecture {arch!r} is unknown; expected 'ssd300' or 'faster_rcnn'.")


def _model_targets(targets: Sequence[Mapping[str, Any]], device: torch.device) -> list[dict[str, Tensor]]:
    """Only what torchvision's losses read: ``boxes`` (xyxy, input pixels) and ``labels``."""
    return [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]


class DetectionModule(DetectionDeploy, TaskModule):
    """SSD300 or Faster R-CNN on a MobileNetV1 of width ``width``, scored with COCO mAP.

    Args (beyond ``TaskModule``'s: width, resolution, weight_decay, optimizer, schedule):
        num_classes: categories + 1 for background (linked from the data module).
        arch: ``ssd300`` (build_ssd300) or ``faster_rcnn`` (build_faster_rcnn); the resolution
            is 300 for SSD300, 300 or 600 for Faster R-CNN (Table 13).
        backbone_weights: a checkpoint of any task of this project (e.g. ImageNet pretraining
            by ``tasks.classification``) or a timm ``mobilenetv1_100`` state dict for the trunk.
        freeze_bn: the pretrained MobileNet's BatchNorms are frozen (``FrozenBatchNorm2d``, as TF's
            ``batch_norm_trainable: false`` and torchvision's detection backbones); default: on
            when ``backbone_weights`` is given, off from scratch.
        lr_base_batch: the global batch the optimizer's lr is stated for (16 images in the code
            default and in every config). The lr used is scaled by the real global batch,
            ``world_size x data.batch_size x accumulate_grad_batches``, over it (the linear
            scaling rule, Goyal et al. 2017), so a 1-GPU run of an 8-GPU recipe is not 8x too
            hot; None uses the optimizer's lr as given.
        optimizer: default SGD momentum 0.9, lr 0.05 per 16 images (``sgd``).
        score_thresh: detections under this score are dropped before NMS (evaluation keeps the
            low-score tail: it is part of the precision/recall curve COCO mAP integrates).
        nms_thresh: IoU of the per-class non-maximum suppression.
        detections_per_img: at most this many detections per image (COCO scores 100).
        draw_predictions: ``predict`` also writes one PNG per image with its boxes drawn.
        draw_score_thresh: only detections at or above this score are drawn.
        eval_backend: ``auto`` (faster-coco-eval, else pycocotools), ``faster`` or ``pycocotools``.
        pr_curve: ``test`` also writes ``pr_curve.png`` (precision/recall per category, at IoU 0.5
            and over 0.50:0.95) next to ``metrics.json``.
        lr_decay_start: the default schedule holds the peak lr for this share of the run (after
            the warm-up), then anneals it to zero with a cosine (``tasks.optim.warmup_cosine``).
            0.5 by default, chosen by the ablation at equal steps on the second generated set
            (see docs/detection.md, Measured).
        init_from: a detector checkpoint of this task (same ``arch`` and width, any number of
            classes) to start from: every weight is loaded but the class-dependent head (SSD's
            class predictors, Faster R-CNN's box predictor) when its class count differs.
    """

    # Inference-time options may be changed freely at test/predict time (see TaskModule).
    not_saved = (
        *TaskModule.not_saved,
        "score_thresh",
        "nms_thresh",
        "detections_per_img",
        "draw_predictions",
        "draw_score_thresh",
        "eval_backend",
        "pr_curve",
        "init_from",
    )

    def __init__(
        self,
        num_classes: PositiveInt = 91,
        arch: Arch = "ssd300",
        backbone_weights: str | None = None,
        freeze_bn: bool | None = None,
        lr_base_batch: PositiveInt | None = LR_BASE_BATCH,
        optimizer: OptimizerCallable = sgd,
        score_thresh: Probability = 0.01,
        nms_thresh: Probability = 0.6,
        detections_per_img: PositiveInt = 100,
        draw_predictions: bool = False,
        draw_score_thresh: Probability = 0.5,
        eval_backend: Literal["auto", "faster", "pycocotools"] = "auto",
        pr_curve: bool = False,
        init_from: str | None = None,
        lr_decay_start: Share = 0.5,
        **kwargs: Any,
    ) -> None:
        kwargs["lr_decay_start"] = lr_decay_start
        freeze_bn = freeze_bn if freeze_bn is not None else backbone_weights is not None
        super().__init__(optimizer=optimizer, **kwargs)
        # Saved resolved (the CLI records the parsed None): a checkpoint must rebuild the same
        # layers at test time, where backbone_weights (not saved) is no longer given.
        self.hparams["freeze_bn"] = freeze_bn
        if lr_base_batch is not None and lr_base_batch < 1:
            raise BadInputError(f"--model.lr_base_batch must be a positive number of images, not {lr_base_batch}.")
        self.model: nn.Module = build_detector(
            arch,
            self.hparams.width,
            num_classes,
            self.hparams.resolution,
            backbone_weights,
            freeze_bn,
            score_thresh,
            nms_thresh,
            detections_per_img,
        )
        if init_from is not None:
            load_detector_weights(self.model, init_from)
        self.draw_predictions = draw_predictions
        self.pr_curve = pr_curve
        self.draw_score_thresh = draw_score_thresh
        self.eval_backend = eval_backend
        self.evaluator: CocoEvaluator | None = None
        self._evaluator_source: int | None = None  # id() of the ground truth the evaluator holds

    def configure_optimizers(self) -> Any:
        """The shared optimisation (``tasks.optim.configure_optimization``), with the lr scaled
        linearly from ``lr_base_batch`` images to the run's global batch."""
        hp = self.hparams
        base = hp.lr_base_batch
        batch = global_batch(self.trainer) if base is not None else None
        factor = batch / base if batch is not None and base is not None else 1.0

        def scaled_optimizer(groups: list[dict[str, Any]]) -> Optimizer:
            optimizer = self.optimizer_factory(groups)
            for group in optimizer.param_groups:
                group["lr"] *= factor
            if factor != 1.0:
                rank_zero_info(
                    f"Learning rate {optimizer.param_groups[0]['lr'] / factor:g} per {base} images, "
                    f"{optimizer.param_groups[0]['lr']:g} for the global batch of {batch} (linear scaling)."
                )
            return optimizer

        return configure_optimization(
            self,
            scaled_optimizer,
            self.scheduler_factory,
            hp.weight_decay,
            hp.scheduler_interval,
            hp.warmup_epochs,
            hp.get("lr_decay_start", 0.0),
        )

    # ----------------------------------------------------------------------------------------
    # forward / training
    # ----------------------------------------------------------------------------------------
    def forward(self, images: Tensor | Sequence[Tensor]) -> list[dict[str, Tensor]]:
        """Detections (eval mode) for images in [0, 1]: boxes xyxy in input pixels, labels 1..K."""
        return self.model(list(images))

    def training_step(self, batch: tuple[Tensor, list[dict[str, Any]]], batch_idx: int) -> Tensor:
        images, targets = batch
        losses: dict[str, Tensor] = self.model(list(images), _model_targets(targets, self.device))
        total = sum(losses.values())
        batch_size = len(targets)
        for name, value in losses.items():
            self.log(f"train_{name}", value, batch_size=batch_size)
        self.log("train_loss", total, prog_bar=True, batch_size=batch_size)
        return total

    # ----------------------------------------------------------------------------------------
    # evaluation: COCO stats over the whole val set, gathered across ranks
    # ----------------------------------------------------------------------------------------
    def data(self) -> DetectionData:
        """The run's data module, which must provide the ``DetectionData`` interface."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if not isinstance(datamodule, DetectionData):
            raise BadInputError(
                "Detection needs a data module with val_ground_truth, label_to_category_id and category_names "
                f"(e.g. CocoDataModule); got {type(datamodule).__name__}."
            )
        return datamodule

    def _start_evaluation(self) -> None:
        data = self.data()
        ground_truth = data.val_ground_truth
        # the split behind it (a bound method is a new object on every access)
        source = id(getattr(ground_truth, "__self__", ground_truth))
        if self.evaluator is None or self._evaluator_source != source:
            # Built once and kept: it indexes the ground truth once per run, with its backend.
            self.evaluator = CocoEvaluator(ground_truth, data.label_to_category_id, backend=self.eval_backend)
            self._evaluator_source = source
        self.evaluator.reset()

    def on_validation_start(self) -> None:
        self._start_evaluation()

    def on_test_start(self) -> None:
        self._start_evaluation()

    def _eval_step(self, batch: tuple[Tensor, list[dict[str, Any]]]) -> None:
        images, targets = batch
        assert self.evaluator is not None
        self.evaluator.update(self(images), targets)

    def validation_step(self, batch: tuple[Tensor, list[dict[str, Any]]], batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: tuple[Tensor, list[dict[str, Any]]], batch_idx: int) -> None:
        self._eval_step(batch)

    def _log_stats(self, results_path: Any = None) -> dict[str, float]:
        assert self.evaluator is not None
        # compute() gathers every rank's detections, evaluates once on rank 0 and broadcasts, so
        # every rank logs the same numbers (no sync_dist needed) and ModelCheckpoint(monitor="mAP")
        # sees the whole-dataset mAP on every rank.
        # Also AP/<category name> for every category (metrics.json lists them).
        stats = self.evaluator.compute(results_path, per_category=True)
        self.evaluator.reset()
        for name, value in stats.items():
            # float64: a Python float would be logged as float32, and metrics.json would then hold
            # a figure 1e-8 away from what COCOeval gives on detections.json.
            value64 = torch.tensor(value, dtype=torch.float64)
            self.log(name, value64, prog_bar=name in ("mAP", "mAP50"), rank_zero_only=False, sync_dist=False)
        return stats

    def on_validation_epoch_end(self) -> None:
        self._log_stats()

    def on_test_epoch_end(self) -> None:
        folder = run_folder(self.trainer)  # every rank: it broadcasts from rank 0
        self._log_stats(results_path=folder / "detections.json")
        assert self.evaluator is not None
        if self.pr_curve and self.evaluator.last_result is not None:  # rank 0 holds the evaluation
            write_pr_curve(self.evaluator.last_result, folder / "pr_curve.png")

    # ----------------------------------------------------------------------------------------
    # predict: one record per image, written by tasks.detection.writer.DetectionWriter
    # ----------------------------------------------------------------------------------------
    def predict_records(self, batch: tuple[Tensor, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Per image: its path, id and size, and its detections in original pixels as COCO
        result records (original category ids)."""
        images, infos = batch
        mapping = self.data().label_to_category_id
        input_size = tuple(images.shape[-2:]) if isinstance(images, Tensor) else None
        records = []
        for output, info in zip(self(images), infos, strict=True):
            oh, ow = (int(v) for v in info["orig_size"])
            size = info.get("input_size", input_size)
            boxes = to_original_pixels(output["boxes"].detach().float().cpu().numpy(), (oh, ow), size)
            image_id = int(info.get("image_id", info.get("index", 0)))
            detections = [
                {
                    "image_id": image_id,
                    "category_id": int(mapping[int(label)]),
                    "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                    "score": float(score),
                    "label": int(label),
                }
                for (x1, y1, x2, y2), score, label in zip(
                    boxes.tolist(), output["scores"].tolist(), output["labels"].tolist(), strict=True
                )
                if int(label) in mapping
            ]
            name = info.get("name", Path(info["path"]).name)  # relative to --data.predict_dir
            records.append(
                {"image_id": image_id, "path": info["path"], "name": name, "width": ow, "height": oh,
                 "detections": detections}
            )  # fmt: skip
        return records
