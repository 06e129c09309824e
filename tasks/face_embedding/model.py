"""The face embedding network: MobileNetV1 trunk -> 128-d bottleneck -> L2 normalisation.

FaceNet (Schroff et al., 2015, Section 3) ends in a linear bottleneck whose output is
L2-normalised onto the unit hypersphere, so squared distances lie in [0, 4] and the triplet
margin (0.2) has a fixed scale; the reference implementation batch-normalises the bottleneck.
The paper's MobileNet student keeps that head (Table 14: "128-d L2-normalised embedding").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbone.errors import BadInputError
from backbone.mobilenet import Activation, MobileNetV1

EMBEDDING_SIZE = 128  # FaceNet's embedding dimension (Section 4.3, "we use 128 dimensions")


class FaceEmbedder(nn.Module):
    """MobileNetV1 of width ``width`` followed by a linear + BN bottleneck of ``embedding_size``.

    ``forward`` returns unit-length embeddings (N, embedding_size).
    """

    def __init__(
        self,
        width: float = 1.0,
        embedding_size: int = EMBEDDING_SIZE,
        dropout: float = 0.0,
        activation: Activation = "relu6",
    ) -> None:
        super().__init__()
        self.backbone = MobileNetV1(width, num_classes=0, activation=activation)
        self.dropout = nn.Dropout(dropout)
        self.bottleneck = nn.Linear(self.backbone.num_features, embedding_size, bias=False)
        self.norm = nn.BatchNorm1d(embedding_size)
        self.embedding_size = embedding_size

    def forward(self, images: Tensor) -> Tensor:
        features = self.backbone.forward_head(self.backbone.forward_features(images), pre_logits=True)
        return F.normalize(self.norm(self.bottleneck(self.dropout(features))), dim=1)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint of this task (Lightning ``.ckpt``), or one sentence saying why it is not one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise BadInputError(f"The face embedding checkpoint {str(path)!r} does not exist.")
    try:
        # weights_only: opening a checkpoint must not be able to run code.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise BadInputError(f"Could not read {str(path)!r} as a checkpoint: {error}") from None
    hparams = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    if "embedding_size" not in hparams or "state_dict" not in checkpoint:
        raise BadInputError(
            f"{str(path)!r} is not a checkpoint of tasks.face_embedding (it has no embedding_size hyper-parameter)."
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
