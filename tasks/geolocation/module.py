"""Photo geolocation as classification over adaptive S2 cells (PlaNet; the paper's Table 11).

    python -m tasks.geolocation fit --backbone 0.5 --resolution 64             # built-in demo
    python -m tasks.geolocation fit --config configs/geolocation/planet.yaml --data.root /data/mp16
    python -m tasks.geolocation test --data.root /data/mp16 --ckpt_path last --model.error_curve true
    python -m tasks.geolocation predict --ckpt_path last --data.predict_dir photos/
    python -m tasks.geolocation test --ckpt_path last --data.test_crops 5 \
        --data.test_sets.im2gps /data/im2gps --data.test_sets.yfcc4k /data/yfcc4k
    python -m tasks.geolocation partition --csv train.csv --max-photos 10000 --min-photos 50 --out cells.csv

The classes are the cells of PlaNet's adaptive partition (``datasets.geo_partition``), built by
the data module from the training photos; the number of cells is linked into the model. The
partition (cell ids, photo centroids, cell centers, the hierarchy) is kept in the module's buffers,
so it is saved in every checkpoint and test/predict use the training cells even where
``train.csv`` no longer exists. A photo's predicted location stands for its most likely cell:
``--model.predict_location centroid`` (the default: GeoEstimation's choice, Müller-Budack et al.,
ECCV 2018) is the centroid of the cell's training photos, ``center`` (PlaNet's, Weyand et al.
2016) the cell's own center (``PREDICT_LOCATIONS``). Validation and test log ``acc_1km`` ...
``acc_2500km`` and ``median_km`` (``GreatCircleAccuracy``); ``test`` with ``--data.test_sets``
logs them per set, as ``<set>/acc_25km`` ..., and ``--data.test_crops 5`` scores each photo by
five crops, GeoEstimation's protocol (``datasets.geo_test_sets``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_lightning.trainer.states import TrainerFn
from torch import Tensor

from backbone.errors import BadInputError
from backbone.mobilenet import Activation
from backbone.ranges import NonNegativeFloat, NonNegativeInt, PositiveInt, Share
from datasets.geo_partition import Partition
from datasets.s2cells import to_tokens
from tasks.base import TaskModule
from tasks.callbacks import run_folder
from tasks.geolocation.metrics import METRIC_NAMES, GreatCircleAccuracy
from tasks.geolocation.model import GeoNet, hierarchical_log_probs, multi_crop_log_probs
from tasks.geolocation.writer import write_cells_csv, write_error_curve

_BUFFERS = ("cell_ids", "cell_centroids", "cell_centers", "cell_parents")
# Where a prediction lands in its cell, and whose choice that is. The centroid: GeoEstimation's
# cell files carry each cell's latitude_mean/longitude_mean and their get_lat_lng predicts it
# (TIBHannover/GeoEstimation: create_cells.py, classification/s2_utils.py). They average degrees,
# this project averages unit vectors (datasets.geo_partition): the two agree closely for a small
# cell, not for one across the antimeridian (the mean of +179 and -179 degrees is 0) or at a pole.
# The center: PlaNet's class is the cell, which its center stands for. How far apart the two are
# on the demo, and what that does to the metrics: docs/geolocation.md.
PREDICT_LOCATIONS = {
    "centroid": "the mean location of the cell's training photos (GeoEstimation, Müller-Budack et al. 2018)",
    "center": "the cell's own center (PlaNet, Weyand et al. 2016)",
}


class GeolocationModule(TaskModule):
    """MobileNetV1 classifying photos into S2 cells, scored by great-circle distance.

    Args (beyond ``TaskModule``'s: width, resolution, optimizer, schedule):
        num_cells: cells of the (finest) partition, linked from the data module.
        coarse_num_cells: cells of each coarser partition (a head each, GeoEstimation's
            hierarchy), linked from the data module (``--data.coarse_max_photos``).
        dropout: dropout before the heads.
        activation: ``relu6`` or ``relu``.
        label_smoothing: of the cross-entropy of every head.
        weight_decay: L2 on conv/FC weights (0.01 suits the default AdamW); none on depthwise
            filters, BN or biases.
        backbone_weights: a checkpoint of any task of this project or a timm state dict.
        predict_location: ``centroid`` (the mean location of the predicted cell's training photos,
            GeoEstimation's choice) or ``center`` (the cell's own center, PlaNet's): ``PREDICT_LOCATIONS``.
        top_k: cells (with probabilities) per image in ``predictions.csv``.
        error_curve: ``test`` also writes ``error_curve.png`` (share within d km against d; one
            ``error_curve_<set>.png`` per ``--data.test_sets`` set).
        write_probabilities: ``predict`` also writes every cell's probability for every image
            (``probabilities.npy``, float16, images x cells, with ``probabilities_cells.csv``).
        world_maps: ``predict`` draws the top cells of the first N images on a world map each
            (``world_maps/*.png``); 0 draws none.
    """

    not_saved = (
        *TaskModule.not_saved,
        "predict_location",
        "top_k",
        "error_curve",
        "write_probabilities",
        "world_maps",
    )

    def __init__(
        self,
        num_cells: NonNegativeInt = 1,
        coarse_num_cells: list[PositiveInt] | None = None,
        dropout: Share = 0.001,
        activation: Activation = "relu6",
        label_smoothing: Share = 0.0,
        weight_decay: NonNegativeFloat = 0.01,
        backbone_weights: str | None = None,
        predict_location: Literal["centroid", "center"] = "centroid",
        top_k: PositiveInt = 5,
        error_curve: bool = False,
        write_probabilities: bool = False,
        world_maps: NonNegativeInt = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(weight_decay=weight_decay, **kwargs)
        sizes = [*(coarse_num_cells or []), num_cells]
        self.model = GeoNet(self.hparams.width, sizes, dropout, activation, backbone_weights)
        self.predict_location = predict_location
        self.top_k = top_k
        self.error_curve = error_curve
        self.write_probabilities = write_probabilities
        self.world_maps = world_maps
        self.metric = GreatCircleAccuracy()
        # test: one metric per set of --data.test_sets, by name ("": the root's test split). A plain
        # dict, not a ModuleDict: the sets are the run's, not part of the model or its checkpoint.
        self.test_metrics: dict[str, GreatCircleAccuracy] = {}
        self._empty_partition(sizes)

    # ----------------------------------------------------------------------------------------
    # the partition, kept in buffers so that every checkpoint carries it
    # ----------------------------------------------------------------------------------------
    def _empty_partition(self, sizes: Sequence[int]) -> None:
        n = max(sizes[-1], 1)
        # S2 ids are uint64; torch has no uint64 buffers, so the bits are stored as int64.
        self.register_buffer("cell_ids", torch.zeros(n, dtype=torch.int64))
        self.register_buffer("cell_centroids", torch.zeros(n, 2, dtype=torch.float64))
        self.register_buffer("cell_centers", torch.zeros(n, 2, dtype=torch.float64))
        self.register_buffer("cell_parents", torch.zeros(len(sizes) - 1, n, dtype=torch.int64))

    @property
    def has_partition(self) -> bool:
        return bool((self.cell_ids != 0).any())

    def set_partitions(self, partitions: Sequence[Partition]) -> None:
        """Copy the data module's partitions (coarse to fine) into the buffers."""
        fine = partitions[-1]
        if [len(p) for p in partitions] != self.model.num_cells:
            raise BadInputError(
                f"The model has heads for {self.model.num_cells} cells but the data has {[len(p) for p in partitions]}."
            )
        self.cell_ids.copy_(torch.from_numpy(fine.ids.view(np.int64).copy()))
        self.cell_centroids.copy_(torch.from_numpy(fine.centroids))
        self.cell_centers.copy_(torch.from_numpy(fine.centers))
        for level, coarse in enumerate(partitions[:-1]):
            self.cell_parents[level].copy_(torch.from_numpy(coarse.containing(fine)))

    def cell_tokens(self, rows: Sequence[int]) -> list[str]:
        """S2 tokens of the cells at ``rows``."""
        return to_tokens(self.cell_ids[list(rows)].cpu().numpy().view(np.uint64))

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" or (not self.has_partition and getattr(datamodule, "num_cells", 0)):
            self.set_partitions(datamodule.partitions)

    def on_fit_start(self) -> None:
        folder = run_folder(self.trainer)
        if self.trainer.is_global_zero:
            write_cells_csv(self.trainer.datamodule.partitions[-1], folder / "cells.csv")

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Take the heads' and the partition's sizes from the checkpoint (train.csv may be gone)."""
        state = checkpoint.get("state_dict", {})
        sizes = []
        while f"model.heads.{len(sizes)}.weight" in state:
            sizes.append(int(state[f"model.heads.{len(sizes)}.weight"].shape[0]))
        if sizes and all(name in state for name in _BUFFERS):
            fitting = self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING
            if fitting and self.has_partition and not torch.equal(self.cell_ids, state["cell_ids"]):
                raise BadInputError(
                    f"The checkpoint was trained on another partition ({sizes} cells) than the one built from "
                    f"the data now ({self.model.num_cells}); resume with the same --data settings."
                )
            if sizes != self.model.num_cells:
                self.model.resize_heads(sizes)
            for name in _BUFFERS:
                setattr(self, name, torch.zeros_like(state[name]))
        super().on_load_checkpoint(checkpoint)  # refuses any other shape mismatch (another width)

    # ----------------------------------------------------------------------------------------
    # training
    # ----------------------------------------------------------------------------------------
    def forward(self, images: Tensor) -> Tensor:
        """(B, N) log-probabilities of the cells (the product over the hierarchy, if any)."""
        return hierarchical_log_probs(self.model(images), self.cell_parents)

    deploy_outputs = ("log_probs",)

    def deploy_metadata(self) -> dict[str, Any]:
        """The cells travel with the model: each output's S2 token and the location it stands for."""
        tokens = self.cell_tokens(range(len(self.cell_ids)))
        return {
            "reading": "log-probabilities of the cells (the product over the hierarchy); a photo's location is, "
            f"for its most likely cell, {PREDICT_LOCATIONS[self.predict_location]}",
            "cells": [
                {"token": t, "centroid": [round(a, 6), round(b, 6)], "center": [round(c, 6), round(d, 6)]}
                for t, (a, b), (c, d) in zip(
                    tokens, self.cell_centroids.tolist(), self.cell_centers.tolist(), strict=True
                )
            ],
        }

    def training_step(self, batch: tuple[Tensor, dict[str, Tensor]], batch_idx: int) -> Tensor:
        images, target = batch
        cells = target["cells"]
        logits = self.model(images)
        smoothing = self.hparams.label_smoothing
        loss = sum(F.cross_entropy(out, cells[:, k], label_smoothing=smoothing) for k, out in enumerate(logits))
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_acc", (logits[-1].argmax(1) == cells[:, -1]).float().mean(), prog_bar=True)
        return loss

    # ----------------------------------------------------------------------------------------
    # evaluation: great-circle errors of every image, gathered across ranks
    # ----------------------------------------------------------------------------------------
    def locations(self) -> Tensor:
        """(N, 2) the location predicted for each cell."""
        if not self.has_partition:
            raise BadInputError(
                "This model holds no partition: pass --ckpt_path with a trained checkpoint "
                "or a data root with train.csv."
            )
        return self.cell_centers if self.predict_location == "center" else self.cell_centroids

    def cell_scores(self, images: Tensor) -> Tensor:
        """(B, N) log-scores of the cells for (B, C, H, W) images, or (B, K, C, H, W) K crops of
        each (``--data.test_crops``), read GeoEstimation's way: ``multi_crop_log_probs``."""
        if images.dim() == 4:
            return self(images)
        batch, crops = images.shape[:2]
        views = images.flatten(0, 1)
        if getattr(self, "deployed", None):  # an exported model gives only the product over the hierarchy:
            return self(views).unflatten(0, (batch, crops)).amax(dim=1)  # its max over crops (same for one head)
        return multi_crop_log_probs(self.model(views), crops, self.cell_parents)

    def _eval_step(self, batch: tuple[Tensor, dict[str, Any]], metric: GreatCircleAccuracy) -> None:
        images, target = batch
        predicted = self.locations()[self.cell_scores(images).argmax(1)]
        metric.update(predicted, target["latlon"])

    def validation_step(self, batch: tuple[Tensor, dict[str, Any]], batch_idx: int) -> None:
        self._eval_step(batch, self.metric)

    def on_test_start(self) -> None:
        names = getattr(self.trainer.datamodule, "test_set_names", None) or [""]
        self.test_metrics = {name: GreatCircleAccuracy().to(self.device) for name in names}

    def test_step(self, batch: tuple[Tensor, dict[str, Any]], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step(batch, list(self.test_metrics.values())[dataloader_idx])

    def _log_metrics(self, metric: GreatCircleAccuracy, prefix: str = "") -> None:
        values = metric.compute()  # already over every rank: log without another reduction
        for name in METRIC_NAMES:
            shown = not prefix and name in ("acc_750km", "median_km")
            self.log(prefix + name, values[name], prog_bar=shown, sync_dist=False, add_dataloader_idx=False)
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.metric)

    def on_test_epoch_end(self) -> None:
        folder = run_folder(self.trainer)
        for name, metric in self.test_metrics.items():
            self._log_metrics(metric, f"{name}/" if name else "")
            if self.error_curve and self.trainer.is_global_zero:
                file = f"error_curve_{name}.png" if name else "error_curve.png"
                write_error_curve(metric.errors_km, folder / file, title=name)

    # ----------------------------------------------------------------------------------------
    # predict: top-k cells and the location, per image (tasks.geolocation.writer)
    # ----------------------------------------------------------------------------------------
    def predict_records(self, batch: tuple[Tensor, Any]) -> list[dict[str, Any]]:
        images, infos = batch
        if isinstance(infos, Mapping):  # the test split: a collated dict of lists, with the true places
            rows = zip(infos["path"], infos["index"], infos["latlon"].tolist(), strict=True)
            infos = [{"path": p, "index": int(i), "truth": latlon} for p, i, latlon in rows]
        probs = self.cell_scores(images).softmax(1)  # the normalised product over the hierarchy
        top = probs.topk(min(self.top_k, probs.shape[1]), dim=1)
        locations = self.locations()[top.indices[:, 0]].cpu().tolist()
        records = [
            {
                "index": info["index"],
                "path": info["path"],
                "lat": lat,
                "lon": lon,
                "cells": self.cell_tokens(rows),
                "probs": p,
                "truth": info.get("truth"),  # the photo's own place, where the data gives it (a map shows it)
            }
            for info, (lat, lon), rows, p in zip(
                infos, locations, top.indices.cpu().tolist(), top.values.cpu().tolist(), strict=True
            )
        ]
        if self.write_probabilities:  # float16: a heat map needs 3 digits, and it halves the file
            for record, row in zip(records, probs.half().cpu().numpy(), strict=True):
                record["all_probs"] = row
        return records
