"""The precision/recall curves of a COCO evaluation as a PNG (``--model.pr_curve true`` at test time).

The curves are COCOeval's own: precision interpolated at 101 recall points (all areas, 100
detections per image), the numbers whose mean is the AP. One line per category at IoU 0.5 (left)
and averaged over IoU 0.50:0.95 (right), with the mean over categories in black.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from tasks.detection.evaluation import RECALL_POINTS, CocoResult
from tasks.outputs import atomic_path

LEGEND_MAX = 20  # more categories than this (COCO's 80) and a legend would hide the curves


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    with warnings.catch_warnings():  # an all-NaN slice (no ground truth) stays NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(values, axis=axis)


def write_pr_curve(result: CocoResult, path: str | os.PathLike[str]) -> None:
    """Write ``path`` (PNG): the PR curves of ``result`` at IoU 0.5 and over IoU 0.50:0.95."""
    # Imported here: only a run that asks for the plot pays matplotlib's import.
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a training node
    from matplotlib import pyplot as plt

    # (T, R, K) -> (R, K): the mean over IoU thresholds, NaN where COCO marks "no ground truth".
    precision = np.where(result.precision > -1, result.precision, np.nan)
    panels = (
        ("IoU 0.50", _nanmean(precision[:1], 0), result.stats["mAP50"]),
        ("IoU 0.50:0.95", _nanmean(precision, 0), result.stats["mAP"]),
    )
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
    for axis, (title, curves, ap) in zip(axes, panels, strict=True):
        for k, name in enumerate(result.category_names):
            if not np.isnan(curves[:, k]).all():
                axis.plot(RECALL_POINTS, curves[:, k], linewidth=1, alpha=0.8, label=name)
        axis.plot(RECALL_POINTS, _nanmean(curves, 1), color="black", linewidth=2.5, label="mean")
        axis.set(title=f"{title} (AP {ap:.3f})", xlabel="recall", xlim=(0, 1), ylim=(0, 1.02))
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("precision")
    if len(result.category_names) <= LEGEND_MAX:
        axes[1].legend(loc="lower left", fontsize="small")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
