"""The authors' released ImageNet checkpoints: the 16 width x resolution MobileNetV1 models.

The paper's Tables 6 and 7 give only some of the 16 models of its Figures 4 and 5; the released
float checkpoints (2018-02-22) cover all of them, with the complexity and single-crop accuracy
listed below, copied from ``SOURCE``. Their top-1 differs a little from the paper's tables
(70.9% against 70.6% at 1.0-224: retrained checkpoints), and the MAC counts of the 0.75 rows are
the source's (317M, where Table 6 prints 325M for 0.75 MobileNet-224).

Imported by ``python -m benchmarks --section paper`` (Figures 4 and 5) and by the latency picker.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE = (
    "TensorFlow-Slim's research/slim/nets/mobilenet_v1.md in tensorflow/models "
    "(float checkpoints mobilenet_v1_2018_02_22; Million MACs, Million Parameters, Top-1, Top-5)"
)


@dataclass(frozen=True)
class PublishedModel:
    """One released checkpoint: width alpha, input resolution, complexity (M) and accuracy (%)."""

    width: float
    resolution: int
    mult_adds_m: float
    params_m: float
    top1: float
    top5: float

    @property
    def name(self) -> str:
        """As the source names it: ``MobileNet_v1_0.75_192``."""
        return f"MobileNet_v1_{self.width:.2f}_{self.resolution}".replace("1.00", "1.0")


# fmt: off
PUBLISHED: tuple[PublishedModel, ...] = (
    PublishedModel(1.0, 224, 569, 4.24, 70.9, 89.9),
    PublishedModel(1.0, 192, 418, 4.24, 70.0, 89.2),
    PublishedModel(1.0, 160, 291, 4.24, 68.0, 87.7),
    PublishedModel(1.0, 128, 186, 4.24, 65.2, 85.8),
    PublishedModel(0.75, 224, 317, 2.59, 68.4, 88.2),
    PublishedModel(0.75, 192, 233, 2.59, 67.2, 87.3),
    PublishedModel(0.75, 160, 162, 2.59, 65.3, 86.0),
    PublishedModel(0.75, 128, 104, 2.59, 62.1, 83.9),
    PublishedModel(0.5, 224, 150, 1.34, 63.3, 84.9),
    PublishedModel(0.5, 192, 110, 1.34, 61.7, 83.6),
    PublishedModel(0.5, 160, 77, 1.34, 59.1, 81.9),
    PublishedModel(0.5, 128, 49, 1.34, 56.3, 79.4),
    PublishedModel(0.25, 224, 41, 0.47, 49.8, 74.2),
    PublishedModel(0.25, 192, 34, 0.47, 47.7, 72.3),
    PublishedModel(0.25, 160, 21, 0.47, 45.5, 70.3),
    PublishedModel(0.25, 128, 14, 0.47, 41.5, 66.3),
)
# fmt: on


def published(width: float, resolution: int) -> PublishedModel:
    """The released model of ``width`` and ``resolution``; a KeyError names the 16 that exist."""
    for model in PUBLISHED:
        if model.width == width and model.resolution == resolution:
            return model
    raise KeyError(f"No released MobileNetV1 {width}-{resolution}; widths 1.0/0.75/0.5/0.25 x 224/192/160/128.")
