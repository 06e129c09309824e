"""Face embeddings (Table 14): triplet loss and distillation on MobileNetV1, verified on LFW.

    python -m tasks.face_embedding fit                                   # built-in demo identities + demo LFW
    python -m tasks.face_embedding fit --data.root /data/vggface2 --data.lfw_root /data/lfw
    python -m tasks.face_embedding fit --data.root IDS --model.teacher facenet.ckpt --model.triplet_weight 0
    python -m tasks.face_embedding test --ckpt_path last --data.lfw_root /data/lfw
    python -m tasks.face_embedding predict --ckpt_path last --data.predict_dir photos/   # embeddings.npy + paths.txt
    python -m tasks.face_embedding index build|add|remove|search ...     # the faiss face index (index_cli.py)

Validation runs on identities held out of training (``datasets.face_identities``): it picks the
best checkpoint by ``identification_top1`` and calibrates the match threshold at ``--model.far``
(``threshold.py``: ``threshold``, ``threshold_tar``, ``threshold_far`` in ``metrics.json``; the value
travels in every checkpoint). Test reports pairs that played no part in either: ``lfw_accuracy``,
``lfw_accuracy_std`` and ``val_at_far_1e-3`` on LFW, ``identification_top1`` and
``tar_at_far_1e-4`` over its identities, and ``far_at_threshold`` / ``tar_at_threshold``, what the
checkpoint's calibrated threshold gives on them. Embeddings are gathered from every rank (each
image once) and scored once; with ``--model.flip_test`` (default) each is the average of the image's
and its mirror image's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning.cli import OptimizerCallable
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.optim import Optimizer

from backbone.errors import BadInputError
from backbone.mobilenet import Activation
from backbone.ranges import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Share
from backbone.weights import load_backbone_weights
from datasets.face_identities import SOURCE_LFW, FaceImages, batch_teacher, validates_on_lfw
from tasks.base import TaskModule
from tasks.callbacks import run_folder
from tasks.distributed import broadcast_from_zero, gather_objects
from tasks.face_embedding.losses import (
    DEFAULT_MARGIN,
    DEFAULT_MARGIN_WARMUP,
    DEFAULT_SCALE,
    TRIPLET_MARGIN,
    IdentityLoss,
    SoftmaxMargin,
    TripletMargin,
    distillation_loss,
    margin_softmax,
    set_margin,
    triplet_semihard_loss,
)
from tasks.face_embedding.metrics import score_embedded
from tasks.face_embedding.model import EMBEDDING_SIZE, FaceEmbedder, embed
from tasks.face_embedding.threshold import (
    DEFAULT_FAR,
    THRESHOLD_KEY,
    Calibration,
    FalseAcceptRate,
    PairMetrics,
    checkpoint_calibration,
    pair_metrics_spread,
)
from tasks.outputs import atomic_path
from tasks.teacher import FrozenTeacher, model_state, read_task_checkpoint

TASK = "face_embedding"


MONITOR, FALLBACK_MONITOR = "identification_top1", "lfw_accuracy"


def checkpoint_monitor(data: Mapping[str, Any]) -> str | None:
    """Without validation identities the best checkpoint is picked on LFW (decided at parse time)."""
    no_heldout = not data.get("heldout_root") and not data.get("heldout_fraction", 0.1)
    return FALLBACK_MONITOR if no_heldout and validates_on_lfw(data.get("root"), data.get("lfw_root")) else None


def adamw_1e2(params: Iterable[Any]) -> Optimizer:
    """AdamW, lr 1e-2: the default for a short from-scratch triplet run on a small set.

    Chosen against the classification default (3e-3) on the built-in demo: see
    docs/face_embedding.md, Measured. Semi-hard mining's gradients are small (most triplets sit
    inside the margin), so a larger step pays off here.
    """
    return torch.optim.AdamW(params, lr=1e-2)


class FaceEmbeddingModule(TaskModule):
    """MobileNetV1 -> 128-d L2-normalised embedding, trained by triplet loss and/or distillation.

    Args (beyond ``TaskModule``'s: width, resolution, weight_decay, optimizer, schedule):
        embedding_size: the embedding dimension (FaceNet: 128).
        margin: the triplet margin on squared L2 distances (FaceNet: 0.2).
        dropout: dropout before the bottleneck.
        activation: ``relu6`` or ``relu``.
        teacher: a checkpoint of this task whose (frozen, eval-mode) embeddings the student
            regresses; or give precomputed ones with ``--data.teacher_embeddings``.
        loss: the identity loss: FaceNet's ``triplet`` loss, or a margin softmax over the training
            identities, ``arcface`` (additive angular margin) or ``cosface`` (large-margin cosine).
        softmax_margin: the margin of arcface (radians) / cosface (cosine); the papers' 0.5 / 0.35 for
            large data (configs/face_embedding/), 0.2 by default (measured on short runs: losses.py).
        softmax_scale: the logit scale s of arcface/cosface (the papers' 64; 30 by default).
        margin_warmup_steps: the margin grows linearly from 0 over these first steps (an easy start
            for a margin softmax trained from scratch; see docs/face_embedding.md, Measured).
        flip_test: evaluate, predict and index with the average of each image's and its mirror
            image's embeddings (``model.embed``).
        far: the false accept rate the match threshold is calibrated at on the validation identities.
        triplet_weight: weight of the identity loss, ``--model.loss`` (0 = pure distillation, the paper's way).
        distillation_weight: weight of the distillation loss when there is a teacher.
        backbone_weights: a checkpoint of any task of this project or a timm state dict.
        roc_curve: validation/test also write ``roc.png`` (LFW, mean over folds) in the run folder.
        optimizer: default AdamW lr 1e-2 (``adamw_1e2``).
    """

    not_saved = (*TaskModule.not_saved, "teacher", "roc_curve", "flip_test")

    def __init__(
        self,
        embedding_size: PositiveInt = EMBEDDING_SIZE,
        margin: TripletMargin = TRIPLET_MARGIN,
        dropout: Share = 0.0,
        activation: Activation = "relu6",
        teacher: str | None = None,
        triplet_weight: NonNegativeFloat = 1.0,
        distillation_weight: NonNegativeFloat = 1.0,
        backbone_weights: str | None = None,
        roc_curve: bool = False,
        optimizer: OptimizerCallable = adamw_1e2,
        loss: IdentityLoss = "triplet",
        softmax_margin: SoftmaxMargin = DEFAULT_MARGIN,
        softmax_scale: PositiveFloat = DEFAULT_SCALE,
        margin_warmup_steps: NonNegativeInt = DEFAULT_MARGIN_WARMUP,
        flip_test: bool = True,
        far: FalseAcceptRate = DEFAULT_FAR,
        **kwargs: Any,
    ) -> None:
        super().__init__(optimizer=optimizer, **kwargs)
        self.model = FaceEmbedder(self.hparams.width, embedding_size, dropout=dropout, activation=activation)
        if backbone_weights:
            load_backbone_weights(self.model.backbone, backbone_weights, classifier=False)
        # A plain attribute, not a submodule (see tasks.teacher): neither trained, saved nor wrapped by DDP.
        self.teacher: FrozenTeacher | None = None
        if teacher:
            self.teacher = FrozenTeacher.load(teacher, TASK, build_embedder, needs=("embedding_size",))
            if self.teacher.hparams["embedding_size"] != embedding_size:
                raise BadInputError(
                    f"The teacher {teacher!r} makes {self.teacher.hparams['embedding_size']}-d embeddings; the "
                    f"student's are {embedding_size}-d (--model.embedding_size)."
                )
        self.roc_curve = roc_curve
        self.flip_test = flip_test
        # The margin softmax's class weights: built for the training identities at fit (``setup``),
        # training state only (never part of ``self.model``, the embedder).
        self.margin_loss: nn.Module | None = None
        self.calibration: Calibration | None = None  # the match threshold of the current weights
        self._outputs: list[tuple[np.ndarray, np.ndarray]] = []

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    deploy_outputs = ("embeddings",)

    def deploy_metadata(self) -> dict[str, Any]:
        """The identity space (unit-length embeddings, compared by cosine similarity, a dot product),
        how the model was evaluated (flip-averaged) and its calibrated match threshold."""
        return {
            "embedding": {"size": self.hparams.embedding_size, "normalised": "L2, unit length"},
            "reading": "embeddings in the identity space: the cosine similarity of two faces is their dot product",
            "flip_test": "evaluated with the average of the embeddings of an image and its mirror image, renormalised"
            if self.flip_test
            else "evaluated on the image alone",
            "threshold": None if self.calibration is None else self.calibration.to_dict(),
        }

    def deployed_forward(self, runner: Any, record: Mapping[str, Any]) -> nn.Module:
        """The deployed model, and the threshold the export carries (``test --deployed`` reports it)."""
        entry = record.get("threshold")
        self.calibration = None if entry is None else Calibration.from_dict(entry, "The deploy.json")
        return super().deployed_forward(runner, record)

    # --- training ---------------------------------------------------------------------------
    def teacher_embeddings(self, batch: dict[str, Any]) -> Tensor | None:
        """The teacher's embeddings of the batch: precomputed (data) or from the teacher model."""
        given = batch_teacher(batch)
        if given is not None or self.teacher is None:
            return given
        return self.teacher(batch["image"])

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        embeddings = self(batch["image"])
        hp = self.hparams
        loss = embeddings.new_zeros(())
        if hp.triplet_weight > 0:
            identity = self.identity_loss(embeddings, batch["label"])
            self.log(f"train_{hp.get('loss', 'triplet')}", identity)
            loss = loss + hp.triplet_weight * identity
        teacher = self.teacher_embeddings(batch)
        if teacher is not None:
            if teacher.shape[1] != embeddings.shape[1]:
                raise BadInputError(
                    f"The teacher embeddings are {teacher.shape[1]}-d; the student's are {embeddings.shape[1]}-d."
                )
            distill = distillation_loss(embeddings, teacher)
            self.log("train_distill", distill)
            loss = loss + hp.distillation_weight * distill
        elif hp.triplet_weight <= 0:
            raise BadInputError(
                "--model.triplet_weight 0 needs a teacher (--model.teacher or --data.teacher_embeddings)."
            )
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def identity_loss(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """``--model.loss``: the triplet loss, or the margin softmax with its (warming-up) margin."""
        hp = self.hparams
        if self.margin_loss is None:
            return triplet_semihard_loss(embeddings, labels, hp.margin)
        ramp = min(1.0, self.global_step / hp.margin_warmup_steps) if hp.margin_warmup_steps else 1.0
        set_margin(self.margin_loss, hp.softmax_margin * ramp)
        return self.margin_loss(embeddings.float(), labels)

    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and data is not None:
            self._check_teacher(data)
            if self.hparams.get("loss", "triplet") != "triplet" and self.margin_loss is None:
                # Before the optimizer is built and a checkpoint restored (Lightning calls setup first).
                identities = len(data.train_identities)
                self.margin_loss = margin_softmax(
                    self.hparams.loss, identities, self.hparams.embedding_size, self.hparams.softmax_scale
                )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The checkpoint's calibrated threshold; margin-softmax class weights are dropped unless training."""
        if self.margin_loss is None:
            state = checkpoint.get("state_dict", {})
            for key in [k for k in state if k.startswith("margin_loss.")]:
                del state[key]
        path = getattr(self._trainer, "ckpt_path", None) or "given"
        self.calibration = checkpoint_calibration(checkpoint, path)
        super().on_load_checkpoint(checkpoint)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[THRESHOLD_KEY] = None if self.calibration is None else self.calibration.to_dict()

    def _check_teacher(self, data: Any) -> None:
        """Before the first step: the teacher file's rows fit the student, and a run without the
        triplet loss has a teacher (the data module has read the file by now)."""
        train = data.dataset("train") if hasattr(data, "dataset") else None
        given = getattr(train, "teacher", None)
        if given is not None and given.shape[1] != self.hparams.embedding_size:
            raise BadInputError(
                f"The teacher embeddings file {str(data.teacher_embeddings)!r} holds {given.shape[1]}-d rows; "
                f"expected {self.hparams.embedding_size}-d ones, the student's --model.embedding_size."
            )
        if self.hparams.triplet_weight <= 0 and given is None and self.teacher is None:
            raise BadInputError(
                "--model.triplet_weight 0 needs a teacher (--model.teacher or --data.teacher_embeddings)."
            )

    # --- evaluation -------------------------------------------------------------------------
    def _eval_step(self, batch: dict[str, Any]) -> None:
        embeddings = embed(self, batch["image"], self.flip_test).float().cpu().numpy()
        self._outputs.append((batch["index"].cpu().numpy(), embeddings))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def _score(
        self, split: str, dataset: FaceImages, embeddings: np.ndarray, seen: np.ndarray, folder: Path,
        pair_metrics: PairMetrics,
    ) -> tuple[dict[str, float], Calibration | None]:  # fmt: skip
        """The metrics of the evaluation split (rank 0) over the images embedded (``seen``): all of
        them, or part under --trainer.limit_val_batches / fast_dev_run (said once, with what is left
        out); at validation also the threshold calibrated on the validation identities."""
        data = self.trainer.datamodule
        sources, labels = np.asarray(dataset.sources), np.asarray(dataset.labels)
        pairs = data.lfw_pairs if split == "test" or not data.heldout_identities else None
        labelled = np.flatnonzero(labels >= 0)
        scores = score_embedded(
            embeddings,
            seen,
            np.flatnonzero(sources == SOURCE_LFW),  # LFW's images come first, in pairs.images order
            None if pairs is None else (pairs.first, pairs.second, pairs.same, pairs.fold),
            labelled,
            labels[labelled],
            tar=pair_metrics.tar_at_far,
        )
        if not seen.all():
            rank_zero_warn(scores.summary(int(seen.sum()), len(seen)))
        if scores.lfw_result is not None and self.roc_curve:
            write_roc_png(scores.lfw_result.fpr, scores.lfw_result.tpr, folder / "roc.png")
        metrics = dict(scores.metrics)
        calibration = self.calibration
        if split == "val":  # calibrated on the validation identities (never the test pairs)
            calibration = pair_metrics.calibration
            if calibration is not None:
                metrics.update(
                    threshold=calibration.cosine, threshold_tar=calibration.tar, threshold_far=calibration.far_reached
                )
        elif calibration is not None and pair_metrics.rates is not None:  # the checkpoint's threshold on the test
            tar, far = pair_metrics.rates
            metrics.update(threshold=calibration.cosine, tar_at_threshold=tar, far_at_threshold=far)
        return metrics, calibration

    def _finish_evaluation(self, split: str) -> None:
        local = self._outputs
        self._outputs = []
        if self.trainer.sanity_checking:
            return  # a few batches only: pairs would name images not embedded
        parts = gather_objects(local)  # every rank receives every rank's embeddings
        folder = run_folder(self.trainer)  # a collective under DDP: every rank asks
        dataset = self.trainer.datamodule.dataset(split)
        embeddings = np.zeros((len(dataset), self.hparams.embedding_size), dtype=np.float32)
        seen = np.zeros(len(dataset), dtype=bool)
        for rank_parts in parts:
            for indices, vectors in rank_parts:
                embeddings[indices] = vectors
                seen[indices] = True
        labels = np.asarray(dataset.labels)
        labelled = np.flatnonzero(labels >= 0)
        kept = labelled[seen[labelled]]
        # all pairs of the images with an identity: every rank scans its share (a collective)
        far = float(self.hparams.get("far", DEFAULT_FAR))
        pair_metrics = pair_metrics_spread(
            embeddings[kept], labels[kept], far if split == "val" else None, self.calibration
        )
        result: tuple[dict[str, float], Calibration | None] | None = None
        if self.trainer.is_global_zero:
            assert pair_metrics is not None
            result = self._score(split, dataset, embeddings, seen, folder, pair_metrics)
        result = broadcast_from_zero(result)
        assert result is not None
        metrics, self.calibration = result
        for name, value in metrics.items():
            self.log(name, value, prog_bar=name in (MONITOR, FALLBACK_MONITOR), rank_zero_only=False, sync_dist=False)

    def on_validation_epoch_end(self) -> None:
        self._finish_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._finish_evaluation("test")

    # --- predict ----------------------------------------------------------------------------
    def predict_records(self, batch: Any) -> list[dict[str, Any]]:
        """Per image: its path, its index in the predicted set and its embedding (float32)."""
        if isinstance(batch, dict):  # the test split (FaceImages)
            images, infos = (
                batch["image"],
                [{"path": p, "index": int(i)} for p, i in zip(batch["path"], batch["index"], strict=True)],
            )
        else:  # --data.predict_dir (PredictFolder)
            images, infos = batch
        embeddings = embed(self, images, self.flip_test).float().cpu().numpy()
        return [
            {"path": info["path"], "index": int(info["index"]), "embedding": vector}
            for info, vector in zip(infos, embeddings, strict=True)
        ]


def build_embedder(hparams: Mapping[str, Any], state: dict[str, Tensor]) -> FaceEmbedder:
    """The embedder a checkpoint of this task describes (``hparams``), with its weights ``state``."""
    model = FaceEmbedder(
        hparams.get("width", 1.0),
        hparams["embedding_size"],
        activation=hparams.get("activation", "relu6"),
    )
    model.load_state_dict(state)
    return model.eval()


def load_face_embedder(path: str | os.PathLike[str]) -> tuple[FaceEmbedder, dict[str, Any]]:
    """The embedder of a ``tasks.face_embedding`` checkpoint (eval mode) and its hyper-parameters."""
    checkpoint = read_task_checkpoint(path, TASK, needs=("embedding_size",))
    hparams = dict(checkpoint["hyper_parameters"])
    return build_embedder(hparams, model_state(checkpoint)), hparams


def write_roc_png(fpr: np.ndarray, tpr: np.ndarray, path: Path) -> None:
    """The LFW ROC curve (mean over folds) as a PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(4, 4))
    axis.plot(fpr, tpr)
    axis.set(xlabel="false accept rate", ylabel="true accept rate", title="LFW ROC (mean over 10 folds)", xscale="log")
    axis.grid(True, alpha=0.3)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
