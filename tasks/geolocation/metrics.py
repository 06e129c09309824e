"""Great-circle accuracies of predicted photo locations, over the whole test set across DDP ranks.

The street/city/region/country/continent scales of Im2GPS (Hays & Efros 2008), used by PlaNet and
every later geolocation paper (the MobileNet paper's Table 11): the share of test photos whose
great-circle error is at most 1, 25, 200, 750 and 2500 km, plus the median error.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

EARTH_RADIUS_KM = 6371.0  # the mean Earth radius (IUGG), the one geolocation papers use
# Metric name -> distance in km (Im2GPS's scales: street, city, region, country, continent).
THRESHOLDS_KM: dict[str, float] = {
    "acc_1km": 1.0,
    "acc_25km": 25.0,
    "acc_200km": 200.0,
    "acc_750km": 750.0,
    "acc_2500km": 2500.0,
}
METRIC_NAMES: tuple[str, ...] = (*THRESHOLDS_KM, "median_km")


def haversine_km(a: Tensor, b: Tensor) -> Tensor:
    """Great-circle distance in km between (..., 2) latitude/longitude pairs in degrees.

    The haversine form stays accurate for nearby points (where the spherical law of cosines loses
    digits); the clamp keeps rounding from pushing an antipodal pair past asin's domain.
    """
    a, b = torch.deg2rad(a.double()), torch.deg2rad(b.double())
    dlat, dlon = b[..., 0] - a[..., 0], b[..., 1] - a[..., 1]
    h = torch.sin(dlat / 2) ** 2 + torch.cos(a[..., 0]) * torch.cos(b[..., 0]) * torch.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_KM * torch.asin(torch.sqrt(h.clamp(0.0, 1.0)))


class GreatCircleAccuracy(Metric):
    """``acc_<d>km`` (share of errors ``<=`` d) and ``median_km`` over every image seen on every rank.

    The per-image errors are a ``cat`` state: torchmetrics gathers them from all ranks before
    ``compute``, and the evaluation loaders visit each image exactly once across ranks, so the
    numbers are those of a single-process run. ``errors_km`` keeps the gathered errors of the
    last ``compute`` (for the error-curve plot).
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("errors", default=[], dist_reduce_fx="cat")
        self.errors_km = np.empty(0)

    def update(self, predicted: Tensor, target: Tensor) -> None:
        """``predicted`` and ``target``: (N, 2) latitude/longitude in degrees."""
        self.errors.append(haversine_km(predicted, target))

    def compute(self) -> dict[str, Tensor]:
        # A list on one process, one gathered tensor after torchmetrics' sync under DDP.
        empty = isinstance(self.errors, list) and not self.errors
        errors = torch.empty(0, dtype=torch.float64) if empty else dim_zero_cat(self.errors).double()
        self.errors_km = errors.cpu().numpy()
        out = {name: (errors <= km).double().mean() for name, km in THRESHOLDS_KM.items()}
        # The mean of the two middle values for an even count (numpy's median), not torch's lower one.
        out["median_km"] = torch.tensor(float(np.median(self.errors_km)) if errors.numel() else float("nan"))
        return out
