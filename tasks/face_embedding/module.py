"""Face embeddings (Table 14): triplet loss and distillation on MobileNetV1, verified on LFW.

    python -m tasks.face_embedding fit                                   # built-in demo identities + demo LFW
    python -m tasks.face_embedding fit --data.root /data/vggface2 --data.lfw_root /data/lfw
    python -m tasks.face_embedding fit --data.root IDS --model.teacher facenet.ckpt --model.triplet_weight 0
    python -m tasks.face_embedding test --ckpt_path last --data.lfw_root /data/lfw
    python -m tasks.face_embedding predict --ckpt_path last --data.predict_dir photos/   # embeddings.npy + paths.txt
    python -m tasks.face_embedding index build|add|remove|search ...     # the faiss face index (index_cli.py)

Validation and test log ``lfw_accuracy``, ``lfw_accuracy_std`` and ``val_at_far_1e-3`` on LFW
(``metrics.py``), and ``tar_at_far_1e-4`` over all pairs of the held-out identities; embeddings are
gathered from every rank (each image once) and scored once. The best checkpoint is picked by
``lfw_accuracy``, or by ``tar_at_far_1e-4`` when there is no LFW set.
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
from torch import Tensor
from torch.optim import Optimizer

from backbone.errors import BadInputError
from backbone.mobilenet import Activation
from backbone.ranges import NonNegativeFloat, PositiveInt, Share
from backbone.weights import load_backbone_weights
from datasets.face_identities import SOURCE_HELDOUT, SOURCE_LFW, FaceImages, batch_teacher, validates_on_lfw
from tasks.base import TaskModule
from tasks.callbacks import run_folder
from tasks.distributed import broadcast_from_zero, gather_objects
from tasks.face_embedding.losses import TRIPLET_MARGIN, TripletMargin, distillation_loss, triplet_semihard_loss
from tasks.face_embedding.metrics import score_embedded
from tasks.face_embedding.model import EMBEDDING_SIZE, FaceEmbedder
from tasks.outputs import atomic_path
from tasks.teacher import FrozenTeacher, model_state, read_task_checkpoint

TASK = "face_embedding"
MONITOR, FALLBACK_MONITOR = "lfw_accuracy", "tar_at_far_1e-4"


def checkpoint_monitor(data: Mapping[str, Any]) -> str | None:
    """Without LFW the best checkpoint is picked by the held-out TAR (decided at parse time)."""
    return None if validates_on_lfw(data.get("root"), data.get("lfw_root")) else FALLBACK_MONITOR


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
        triplet_weight: weight of the triplet loss (0 = pure distillation, the paper's way).
        distillation_weight: weight of the distillation loss when there is a teacher.
        backbone_weights: a checkpoint of any task of this project or a timm state dict.
        roc_curve: validation/test also write ``roc.png`` (LFW, mean over folds) in the run folder.
        optimizer: default AdamW lr 1e-2 (``adamw_1e2``).
    """

    not_saved = (*TaskModule.not_saved, "teacher", "roc_curve")

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
        self._outputs: list[tuple[np.ndarray, np.ndarray]] = []

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    deploy_outputs = ("embeddings",)

    def deploy_metadata(self) -> dict[str, Any]:
        """The identity space: unit-length embeddings, compared by cosine similarity (a dot product)."""
        return {
            "embedding": {"size": self.hparams.embedding_size, "normalised": "L2, unit length"},
            "reading": "embeddings in the identity space: the cosine similarity of two faces is their dot product",
        }

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
            triplet = triplet_semihard_loss(embeddings, batch["label"], hp.margin)
            self.log("train_triplet", triplet)
            loss = loss + hp.triplet_weight * triplet
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

    def setup(self, stage: str) -> None:
        data = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and data is not None:
            self._check_teacher(data)

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
        embeddings = self(batch["image"]).float().cpu().numpy()
        self._outputs.append((batch["index"].cpu().numpy(), embeddings))

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch)

    def _score(self, dataset: FaceImages, embeddings: np.ndarray, seen: np.ndarray, folder: Path) -> dict[str, float]:
        """The metrics of the evaluation split (rank 0) over the images embedded (``seen``): all of
        them, or part under --trainer.limit_val_batches / fast_dev_run (said once, with what is left out)."""
        data = self.trainer.datamodule
        sources, labels = np.asarray(dataset.sources), np.asarray(dataset.labels)
        pairs = getattr(data, "lfw_pairs", None)
        heldout = np.flatnonzero(sources == SOURCE_HELDOUT)
        scores = score_embedded(
            embeddings,
            seen,
            np.flatnonzero(sources == SOURCE_LFW),  # LFW's images come first, in pairs.images order
            None if pairs is None else (pairs.first, pairs.second, pairs.same, pairs.fold),
            heldout,
            labels[heldout],
        )
        if not seen.all():
            rank_zero_warn(scores.summary(int(seen.sum()), len(seen)))
        if scores.lfw_result is not None and self.roc_curve:
            write_roc_png(scores.lfw_result.fpr, scores.lfw_result.tpr, folder / "roc.png")
        return scores.metrics

    def _finish_evaluation(self, split: str) -> None:
        local = self._outputs
        self._outputs = []
        if self.trainer.sanity_checking:
            return  # a few batches only: pairs would name images not embedded
        parts = gather_objects(local)
        folder = run_folder(self.trainer)  # a collective under DDP: every rank asks
        metrics: dict[str, float] | None = None
        if self.trainer.is_global_zero:
            dataset = self.trainer.datamodule.dataset(split)
            embeddings = np.zeros((len(dataset), self.hparams.embedding_size), dtype=np.float32)
            seen = np.zeros(len(dataset), dtype=bool)
            for rank_parts in parts:
                for indices, vectors in rank_parts:
                    embeddings[indices] = vectors
                    seen[indices] = True
            metrics = self._score(dataset, embeddings, seen, folder)
        metrics = broadcast_from_zero(metrics)
        assert metrics is not None
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
        embeddings = self(images).float().cpu().numpy()
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
