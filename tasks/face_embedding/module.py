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
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_lightning.cli import OptimizerCallable
from torch import Tensor
from torch.optim import Optimizer

from backbone.errors import BadInputError
from backbone.mobilenet import Activation
from backbone.ranges import NonNegativeFloat, PositiveInt, Share
from backbone.weights import load_backbone_weights
from datasets.face_identities import SOURCE_HELDOUT, SOURCE_LFW, FaceImages, batch_teacher
from tasks import checkpoints
from tasks.base import TaskModule
from tasks.callbacks import run_folder
from tasks.distributed import broadcast_from_zero, gather_objects
from tasks.face_embedding.losses import TRIPLET_MARGIN, TripletMargin, distillation_loss, triplet_semihard_loss
from tasks.face_embedding.metrics import lfw_metrics, tar_at_far
from tasks.face_embedding.model import EMBEDDING_SIZE, FaceEmbedder
from tasks.outputs import atomic_path

MONITOR, FALLBACK_MONITOR = "lfw_accuracy", "tar_at_far_1e-4"


def adamw_1e2(params: Iterable[Any]) -> Optimizer:
    """AdamW, lr 1e-2: the default for a short from-scratch triplet run on a small set.

    Measured on the built-in demo (0.5-64, 250 steps of 16 x 4 faces): LFW accuracy 0.77 at
    lr 1e-2 against 0.63 at the classification default of 3e-3; semi-hard mining's gradients
    are small (most triplets sit inside the margin), so a larger step pays off here.
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
        kwargs.setdefault("resolution", 128)
        super().__init__(optimizer=optimizer, **kwargs)
        self.model = FaceEmbedder(self.hparams.width, embedding_size, dropout=dropout, activation=activation)
        if backbone_weights:
            load_backbone_weights(self.model.backbone, backbone_weights, classifier=False)
        # The teacher is kept out of the module's children: it is neither trained nor saved.
        self._teacher: list[tuple[FaceEmbedder, int]] = []
        if teacher:
            model, hparams = load_face_embedder(teacher)
            if hparams["embedding_size"] != embedding_size:
                raise BadInputError(
                    f"The teacher {teacher!r} makes {hparams['embedding_size']}-d embeddings; the student's are "
                    f"{embedding_size}-d (--model.embedding_size)."
                )
            self._teacher.append((model.requires_grad_(False), int(hparams.get("resolution", 128))))
        self.roc_curve = roc_curve
        self._outputs: list[tuple[np.ndarray, np.ndarray]] = []

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images)

    # --- training ---------------------------------------------------------------------------
    def teacher_embeddings(self, batch: dict[str, Any]) -> Tensor | None:
        """The teacher's embeddings of the batch: precomputed (data) or from the teacher model."""
        given = batch_teacher(batch)
        if given is not None or not self._teacher:
            return given
        model, resolution = self._teacher[0]
        images = batch["image"]
        if images.shape[-1] != resolution:
            images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", antialias=True)
        with torch.no_grad():
            return model.to(self.device).eval()(images)

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
        # Without LFW the best checkpoint is picked by the held-out TAR (set before checkpoint
        # states are restored, so a resumed run keeps its best score).
        data = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and data is not None:
            self._check_teacher(data)
        if stage == "fit" and getattr(data, "lfw_pairs", True) is None:
            for callback in self.trainer.checkpoint_callbacks:
                if getattr(callback, "monitor", None) == MONITOR:
                    callback.monitor = FALLBACK_MONITOR

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
        if self.hparams.triplet_weight <= 0 and given is None and not self._teacher:
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

    def _score(self, dataset: FaceImages, embeddings: np.ndarray, folder: Path) -> dict[str, float]:
        """The metrics of the whole evaluation split (rank 0, every embedding present)."""
        data = self.trainer.datamodule
        sources, labels = np.asarray(dataset.sources), np.asarray(dataset.labels)
        metrics: dict[str, float] = {}
        pairs = getattr(data, "lfw_pairs", None)
        if pairs is not None:
            lfw = embeddings[sources == SOURCE_LFW]  # LFW's images come first, in pairs.images order
            result = lfw_metrics(lfw, pairs.first, pairs.second, pairs.same, pairs.fold)
            metrics["lfw_accuracy"] = float(result.accuracy.mean())
            metrics["lfw_accuracy_std"] = float(result.accuracy.std())
            metrics["val_at_far_1e-3"] = float(result.val.mean())
            if self.roc_curve:
                write_roc_png(result.fpr, result.tpr, folder / "roc.png")
        heldout = sources == SOURCE_HELDOUT
        if heldout.any():
            metrics["tar_at_far_1e-4"] = tar_at_far(embeddings[heldout], labels[heldout])
        return metrics

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
            if not seen.all():
                raise RuntimeError(f"{int((~seen).sum())} evaluation images were not embedded by any rank.")
            metrics = self._score(dataset, embeddings, folder)
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


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint of this task (Lightning ``.ckpt``), or one sentence saying why it is not one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BadInputError(f"The face embedding checkpoint {str(path)!r} does not exist.")
    checkpoint = checkpoints.read_checkpoint(str(path))
    task = (checkpoint.get(checkpoints.STAMP_KEY) or {}).get("task", "face_embedding")
    if task != "face_embedding" or "embedding_size" not in (checkpoint.get("hyper_parameters") or {}):
        raise BadInputError(
            f"{str(path)!r} is not a checkpoint of tasks.face_embedding (it was written by {task}); "
            "give one written by 'python -m tasks.face_embedding fit'."
        )
    return checkpoint


def load_face_embedder(path: str | os.PathLike[str]) -> tuple[FaceEmbedder, dict[str, Any]]:
    """The embedder of a ``tasks.face_embedding`` checkpoint (eval mode) and its hyper-parameters."""
    checkpoint = read_checkpoint(path)
    hparams = dict(checkpoint["hyper_parameters"])
    model = FaceEmbedder(
        hparams.get("width", 1.0),
        hparams["embedding_size"],
        activation=hparams.get("activation", "relu6"),
    )
    state = {k[len("model.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    model.load_state_dict(state)
    return model.eval(), hparams


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


def main(args: list[str] | None = None) -> None:
    """Entry point of ``python -m tasks.face_embedding`` (training, evaluation, predict)."""
    from datasets.face_identities import FaceDataModule
    from tasks.cli import main as cli_main
    from tasks.face_embedding.writer import EmbeddingWriter

    cli_main(
        FaceEmbeddingModule,
        FaceDataModule,
        task="face_embedding",
        monitor=MONITOR,
        resolution=128,
        default_steps=540,  # 20 epochs of the demo's 1728 training faces at batch 64
        callbacks=[EmbeddingWriter()],
        args=args,
    )
