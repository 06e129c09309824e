"""Object detection on COCO (Table 13): SSD300 or Faster R-CNN on MobileNetV1, as a LightningModule.

    python -m tasks.detection fit --backbone 0.5                                # built-in demo
    python -m tasks.detection fit --config configs/detection/ssd300.yaml --data.root /data/coco
    python -m tasks.detection fit --model.arch faster_rcnn --resolution 600 --data.root /data/coco
    python -m tasks.detection test --data.root /data/coco --ckpt_path last      # + detections.json
    python -m tasks.detection predict --ckpt_path last --data.predict_dir photos/ \
        --model.draw_predictions true                                           # JSON + PNGs

Validation and test log the 12 COCO stats under DESIGN.md's names (``mAP``, ``mAP50`` ...,
``AR_large``), computed once over the whole val set across DDP ranks (``CocoEvaluator``); the
best checkpoint is picked by ``mAP``. ``test`` also writes ``detections.json`` (a standard COCO
results file, the one the evaluation server takes) next to ``metrics.json``; ``predict`` writes
``predictions.json`` (COCO results: original pixels, original category ids) with
``predictions_images.json`` (the COCO ``images`` list: id <-> file name), and with
``--model.draw_predictions true`` one PNG per image with boxes, category names and scores.

The code defaults are a recipe for a small custom set trained from scratch (SGD, momentum 0.9,
lr 0.05 at batch 16, linear warm-up then cosine, stepped per batch); the paper rows' recipes live
in ``configs/detection/``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from pytorch_lightning import LightningModule
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.optim import Optimizer

from backbone.errors import BadInputError
from tasks.common import configure_optimization, write_json_atomic
from tasks.detection.evaluation import STAT_NAMES, CocoEvaluator, write_results_json
from tasks.detection.faster_rcnn import build_faster_rcnn
from tasks.detection.ssd import build_ssd300

Arch = Literal["ssd300", "faster_rcnn"]
# Options that only change inference/outputs; a test or predict run may set them freely.
INFERENCE_OPTIONS = (
    "score_thresh",
    "nms_thresh",
    "detections_per_img",
    "draw_predictions",
    "draw_score_thresh",
    "eval_backend",
)


def default_optimizer(params: Iterable[Any]) -> Optimizer:
    """SGD, momentum 0.9, lr 0.05 (batch 16): trains SSD300 from scratch on a small set.

    torchvision's detection references use plain SGD with momentum 0.9 (lr 0.02 per 16 images
    for Faster R-CNN, higher for SSD); 0.05 with warm-up is stable for both from scratch here.
    """
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def _model_targets(targets: Sequence[Mapping[str, Any]], device: torch.device) -> list[dict[str, Tensor]]:
    """Only what torchvision's losses read: ``boxes`` (xyxy, input pixels) and ``labels``."""
    return [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class DetectionModule(LightningModule):
    """SSD300 or Faster R-CNN on a MobileNetV1 of width ``width``, scored with COCO mAP.

    Args:
        width: width multiplier alpha (linked from ``--backbone``).
        resolution: square input size (linked from ``--resolution``): 300 for SSD300, 300 or
            600 for Faster R-CNN (Table 13).
        num_classes: categories + 1 for background (linked from the data module).
        arch: ``ssd300`` (build_ssd300) or ``faster_rcnn`` (build_faster_rcnn).
        backbone_weights: a checkpoint of any task of this project (e.g. ImageNet pretraining
            by ``tasks.classification``) or a timm ``mobilenetv1_100`` state dict for the trunk.
        weight_decay: L2 on conv/FC weights; never on depthwise filters, BN or biases (Section 3.4).
        optimizer: any ``torch.optim`` optimizer (``--optimizer RMSprop --optimizer.lr ...``).
        lr_scheduler: a scheduler stepped every ``scheduler_interval``; None means linear
            warm-up over ``warmup_epochs`` then cosine to zero, stepped every batch.
        scheduler_interval: ``epoch`` or ``step``, for a given ``lr_scheduler``.
        warmup_epochs: linear warm-up length, before the cosine or in front of ``lr_scheduler``.
        score_thresh: detections under this score are dropped before NMS (evaluation keeps the
            low-score tail: it is part of the precision/recall curve COCO mAP integrates).
        nms_thresh: IoU of the per-class non-maximum suppression.
        detections_per_img: at most this many detections per image (COCO scores 100).
        draw_predictions: ``predict`` also writes one PNG per image with its boxes drawn.
        draw_score_thresh: only detections at or above this score are drawn.
        eval_backend: ``auto`` (faster-coco-eval, else pycocotools), ``faster`` or ``pycocotools``.
    """

    def __init__(
        self,
        width: float = 1.0,
        resolution: int = 300,
        num_classes: int = 91,
        arch: Arch = "ssd300",
        backbone_weights: str | None = None,
        weight_decay: float = 4e-5,
        optimizer: OptimizerCallable = default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: str = "epoch",
        warmup_epochs: float = 1.0,
        score_thresh: float = 0.01,
        nms_thresh: float = 0.6,
        detections_per_img: int = 100,
        draw_predictions: bool = False,
        draw_score_thresh: float = 0.5,
        eval_backend: Literal["auto", "faster", "pycocotools"] = "auto",
    ) -> None:
        super().__init__()
        # Inference-time options stay out of the checkpoint's hyper-parameters: LightningCLI's
        # ``--ckpt_path`` applies a checkpoint's hparams *over* the command line, so a saved
        # ``draw_predictions: false`` would silently win over ``--model.draw_predictions true``
        # at predict time. ``backbone_weights`` is left out too: the checkpoint holds the
        # trained weights, and the original file need not exist where the checkpoint is used.
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler", *INFERENCE_OPTIONS, "backbone_weights"])
        if arch == "ssd300":
            self.model: nn.Module = build_ssd300(
                width,
                num_classes,
                resolution,
                backbone_weights,
                score_thresh=score_thresh,
                nms_thresh=nms_thresh,
                detections_per_img=detections_per_img,
            )
        elif arch == "faster_rcnn":
            self.model = build_faster_rcnn(
                width,
                num_classes,
                resolution,
                backbone_weights,
                box_score_thresh=score_thresh,
                box_nms_thresh=nms_thresh,
                box_detections_per_img=detections_per_img,
            )
        else:  # the CLI checks the Literal; this is for direct Python use
            raise BadInputError(f"The detector architecture {arch!r} is unknown; expected 'ssd300' or 'faster_rcnn'.")
        self.draw_predictions = draw_predictions
        self.draw_score_thresh = draw_score_thresh
        self.eval_backend = eval_backend
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.evaluator: CocoEvaluator | None = None
        self._evaluator_source: int | None = None  # id() of the ground truth the evaluator holds
        self._predictions: list[dict[str, Any]] = []
        self._predicted_images: list[dict[str, Any]] = []
        self._predict_dir: Path | None = None

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
    def _ground_truth(self) -> tuple[Any, Mapping[int, int]]:
        """(val COCO ground truth, label -> category id) from the data module, or the val set."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "val_coco"):
            return datamodule.val_coco, datamodule.label_to_category_id
        loaders = self.trainer.test_dataloaders if self.trainer.testing else self.trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
        dataset = getattr(loader, "dataset", None)
        if dataset is not None and hasattr(dataset, "coco") and hasattr(dataset, "label_to_category_id"):
            return dataset.coco, dataset.label_to_category_id
        raise BadInputError(
            "Detection evaluation needs COCO ground truth; expected a CocoDataModule (--data) or a "
            "dataloader whose dataset has .coco and .label_to_category_id."
        )

    def _start_evaluation(self) -> None:
        coco, mapping = self._ground_truth()
        if self.evaluator is None or self._evaluator_source != id(coco):
            # Built once and kept: its ground-truth index is then indexed only once per run.
            self.evaluator = CocoEvaluator(coco, mapping, backend=self.eval_backend)
            self._evaluator_source = id(coco)
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

    def _log_stats(self, results_path: Path | None = None) -> dict[str, float]:
        assert self.evaluator is not None
        # compute() gathers every rank's detections, evaluates once on rank 0 and broadcasts, so
        # every rank logs the same numbers (no sync_dist needed) and ModelCheckpoint(monitor="mAP")
        # sees the whole-dataset mAP on every rank.
        stats = self.evaluator.compute(results_path)
        self.evaluator.reset()
        for name in STAT_NAMES:
            self.log(name, stats[name], prog_bar=name in ("mAP", "mAP50"), rank_zero_only=False, sync_dist=False)
        return stats

    def on_validation_epoch_end(self) -> None:
        self._log_stats()

    def on_test_epoch_end(self) -> None:
        # ``trainer.log_dir`` broadcasts from rank 0: every rank asks before rank 0 writes.
        log_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        self._log_stats(results_path=log_dir / "detections.json")

    # ----------------------------------------------------------------------------------------
    # predict: a COCO results JSON (+ PNGs with the boxes drawn)
    # ----------------------------------------------------------------------------------------
    def _category_names(self) -> list[str]:
        datamodule = getattr(self.trainer, "datamodule", None)
        names = getattr(datamodule, "category_names", None)
        return list(names) if names else [str(i) for i in range(1, self.hparams.num_classes)]

    def _label_to_category(self) -> Mapping[int, int]:
        datamodule = getattr(self.trainer, "datamodule", None)
        mapping = getattr(datamodule, "label_to_category_id", None)
        return mapping if mapping else {i: i for i in range(1, self.hparams.num_classes)}

    def _image_path(self, target: Mapping[str, Any]) -> Path | None:
        """The file an image of the predict set was read from (for its name and for drawing)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        dataset = getattr(datamodule, "predict_set", None)
        if "file_name" in target and hasattr(dataset, "folder"):
            return Path(dataset.folder) / target["file_name"]
        if hasattr(dataset, "coco") and hasattr(dataset, "image_dir"):
            return Path(dataset.image_dir) / dataset.coco.imgs[int(target["image_id"])]["file_name"]
        return Path(target["file_name"]) if "file_name" in target else None

    def on_predict_start(self) -> None:
        self._predictions = []
        self._predicted_images = []
        self._predict_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)  # all ranks ask

    def predict_step(self, batch: tuple[Tensor, list[dict[str, Any]]], batch_idx: int) -> list[dict[str, Any]]:
        images, targets = batch
        outputs = self(images)
        mapping = self._label_to_category()
        records: list[dict[str, Any]] = []
        for output, target in zip(outputs, targets, strict=True):
            oh, ow = (int(v) for v in target["orig_size"])
            ih, iw = (int(v) for v in target["input_size"])
            boxes = output["boxes"].detach().float().cpu() * torch.tensor([ow / iw, oh / ih, ow / iw, oh / ih])
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, ow)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, oh)
            scores = output["scores"].detach().float().cpu()
            labels = output["labels"].detach().cpu()
            path = self._image_path(target)
            image_id = int(target["image_id"])
            self._predicted_images.append(
                {"id": image_id, "file_name": path.name if path else str(image_id), "width": ow, "height": oh}
            )
            image_records = [
                {
                    "image_id": image_id,
                    "category_id": int(mapping[int(label)]),
                    "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                    "score": float(score),
                }
                for (x1, y1, x2, y2), score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist(), strict=True)
                if int(label) in mapping
            ]
            records.extend(image_records)
            if self.draw_predictions and path is not None:
                self._draw(path, boxes, scores, labels)
        self._predictions.extend(records)
        return records

    def _draw(self, path: Path, boxes: Tensor, scores: Tensor, labels: Tensor) -> None:
        """``<log_dir>/predictions/<image stem>.png``: boxes, category names and scores drawn."""
        from torchvision.io import write_png
        from torchvision.utils import draw_bounding_boxes

        from datasets.coco import read_image_rgb

        assert self._predict_dir is not None
        keep = scores >= self.draw_score_thresh
        names = self._category_names()
        captions = [
            f"{names[int(label) - 1] if 0 < int(label) <= len(names) else int(label)} {float(score):.2f}"
            for label, score in zip(labels[keep], scores[keep], strict=True)
        ]
        image = torch.from_numpy(np.ascontiguousarray(read_image_rgb(path))).permute(2, 0, 1)
        width = max(1, round(max(image.shape[1:]) / 200))
        drawn = draw_bounding_boxes(image, boxes[keep], labels=captions, colors="red", width=width)
        out_dir = self._predict_dir / "predictions"
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / f".{path.stem}.png.tmp"
        write_png(drawn, str(tmp))
        tmp.replace(out_dir / f"{path.stem}.png")

    def on_predict_epoch_end(self) -> None:
        local = (self._predicted_images, self._predictions)
        if _distributed():
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, local)
        else:
            parts = [local]
        if self.trainer.is_global_zero and self._predict_dir is not None:
            images = {im["id"]: im for part in parts for im in part[0]}
            detections = [d for part in parts for d in part[1]]
            write_json_atomic(self._predict_dir / "predictions_images.json", [images[i] for i in sorted(images)])
            write_results_json(detections, self._predict_dir / "predictions.json")
            print(f"Wrote {len(detections)} detections on {len(images)} images to {self._predict_dir}.", flush=True)

    # ----------------------------------------------------------------------------------------
    # optimisation
    # ----------------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        return configure_optimization(
            self,
            self.optimizer_factory,
            self.scheduler_factory,
            hp.weight_decay,
            hp.scheduler_interval,
            hp.warmup_epochs,
        )


def main(args: list[str] | None = None) -> None:
    """Entry point of ``python -m tasks.detection``."""
    from datasets.coco import CocoDataModule
    from tasks.cli import main as cli_main

    cli_main(DetectionModule, CocoDataModule, task="detection", monitor="mAP", resolution=300, max_epochs=20, args=args)


if __name__ == "__main__":
    # Re-enter through the package so that classes are named tasks.detection.module.*, not
    # __main__.*, in saved configs and checkpoints.
    from tasks.detection.module import main as package_main

    package_main()
