"""The paper's Tables 4-14 as data: every row's mult-adds, parameters and accuracy as printed.

Howard et al. 2017, "MobileNets" (arXiv:1704.04861). The tests that check the project's counts
(``tests/test_backbone.py``, ``tests/test_face_attributes_model.py``,
``tests/test_detection_models.py``, ``tests/test_paper_section.py``) and the benchmark section
that prints the tables side by side (``python -m benchmarks --section paper``) all read these
rows: the numbers are written once, here.

A row names the network the project builds for it (``Model``: which builder, width,
resolution, classes) when the project has one; rows of other papers' networks (VGG, Inception,
FaceNet ...) have none. Accuracies are percentages as printed; ``metric`` is the project's stable
metric name (the README's table) that a run's ``metrics.json`` holds as a fraction.

Where the project's count differs from the printed figure by more than ``tolerance``, the row
says why in ``deviation``: those are facts about the paper's table (a misprint, an unstated
head), checked by the tests to stay exactly that set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ModelKind = Literal["classifier", "attributes", "face_embedder", "ssd300", "faster_rcnn"]


@dataclass(frozen=True)
class Model:
    """The project's network for a row: ``kind`` names the task's builder (``benchmarks.paper_counts``)."""

    kind: ModelKind
    width: float
    resolution: int
    num_classes: int = 1000
    full_conv: bool = False  # "Conv MobileNet", Table 4
    shallow: bool = False  # "Shallow MobileNet", Table 5


@dataclass(frozen=True)
class Accuracy:
    """One accuracy cell: the column's header, the project's metric name, the paper's percentage."""

    column: str
    metric: str
    paper: float


@dataclass(frozen=True)
class PaperRow:
    """One row of Tables 4-14. Mult-adds and parameters in millions (Table 13's billions x 1000)."""

    key: str  # what ``--paper-metrics KEY=PATH`` names, "table6/0.75-224"
    table: int
    label: str  # as the paper prints it
    mult_adds_m: float | None
    params_m: float | None
    accuracy: tuple[Accuracy, ...]
    model: Model | None = None  # None: another paper's network, not built by this project
    project: bool = False  # a MobileNet row a user can train with this project (a "yours" column)
    deviation: str = ""  # why the project's count is outside the tolerance, when it is


def _mobilenet(
    table: int,
    width: float,
    resolution: int,
    top1: float,
    mult_adds: float,
    params: float,
    dataset: str = "ImageNet",
    num_classes: int = 1000,
) -> PaperRow:
    """A MobileNet classifier row: ImageNet (Tables 6-9) or Stanford Dogs (Table 10)."""
    return PaperRow(
        f"table{table}/{width}-{resolution}",
        table,
        f"{width} MobileNet-{resolution}",
        mult_adds,
        params,
        (Accuracy(f"{dataset} top-1", "top1", top1),),
        Model("classifier", width, resolution, num_classes=num_classes),
        project=True,
    )


def _other(table: int, key: str, label: str, mult_adds: float | None, params: float | None, *acc: Accuracy) -> PaperRow:
    return PaperRow(f"table{table}/{key}", table, label, mult_adds, params, acc)


def _top1(value: float) -> Accuracy:
    return Accuracy("ImageNet top-1", "top1", value)


def _dogs(table: int, width: float, resolution: int, top1: float, mult_adds: float, params: float) -> PaperRow:
    return _mobilenet(table, width, resolution, top1, mult_adds, params, "Stanford Dogs", num_classes=120)


# Table 12 was measured on an in-house web-scale attribute set, students against a 1600M mult-add
# in-house teacher: its mean AP is not a CelebA figure, and the column says so wherever it is printed.
_IN_HOUSE_MEAN_AP = "mean AP, in-house set (not CelebA)"


def _attributes(width: float, resolution: int, mean_ap: float, mult_adds: float, params: float) -> PaperRow:
    deviation = ""
    if width == 0.25:
        deviation = (
            "the paper's 0.25 students (45M at 224, 15M at 128) cost more than its own 0.25 MobileNet-224 "
            "with 1000 classes (41M, Table 6); the project's student is that network with 40 outputs"
        )
    return PaperRow(
        f"table12/{width}-{resolution}",
        12,
        f"{width} MobileNet-{resolution}",
        mult_adds,
        params,
        (Accuracy(_IN_HOUSE_MEAN_AP, "mean_ap", mean_ap),),
        Model("attributes", width, resolution, num_classes=40),
        project=True,
        deviation=deviation,
    )


_COCO = "COCO mAP"
_FACE_DEVIATION = (
    "the paper's students do not match a 128-d head on the stated trunk (two 0.75 MobileNet-128 rows "
    "with different counts; 166M is what 0.75 MobileNet-160 costs); the project's student is the "
    "trunk plus a 128-d bottleneck"
)


def _face(key: str, width: float, resolution: int, accuracy: float, mult_adds: float, params: float) -> PaperRow:
    return PaperRow(
        f"table14/{key}",
        14,
        f"{width} MobileNet-{resolution}",
        mult_adds,
        params,
        (Accuracy("1e-4 accuracy", "tar_at_far_1e-4", accuracy),),
        Model("face_embedder", width, resolution),
        project=True,
        deviation=_FACE_DEVIATION,
    )


def _geo(key: str, label: str, *shares: float, project: bool = False) -> PaperRow:
    columns = (("2500 km", "acc_2500km"), ("750 km", "acc_750km"), ("200 km", "acc_200km"),
               ("25 km", "acc_25km"), ("1 km", "acc_1km"))  # fmt: skip
    accuracy = tuple(Accuracy(c, m, s) for (c, m), s in zip(columns, shares, strict=True))
    return PaperRow(f"table11/{key}", 11, label, None, None, accuracy, project=project)


TABLE_TITLES = {
    4: "Depthwise separable vs full convolution MobileNet",
    5: "Narrow vs shallow MobileNet",
    6: "MobileNet width multiplier",
    7: "MobileNet resolution",
    8: "MobileNet comparison to popular models",
    9: "Smaller MobileNet comparison to popular models",
    10: "MobileNet for Stanford Dogs",
    11: "PlaNet with the MobileNet architecture (share of Im2GPS photos within a distance)",
    12: "Face attribute classification with MobileNet (distilled)",
    13: "COCO object detection with MobileNet",
    14: "MobileNet distilled from FaceNet",
}

ROWS: tuple[PaperRow, ...] = (
    # Table 4: the same network with full 3x3 convolutions in place of the depthwise separable ones.
    PaperRow("table4/conv-1.0-224", 4, "Conv MobileNet", 4866, 29.3, (_top1(71.7),),
             Model("classifier", 1.0, 224, full_conv=True), project=True),
    _mobilenet(4, 1.0, 224, 70.6, 569, 4.2),
    # Table 5: thinner (alpha 0.75) against shallower (the five 14x14x512 blocks removed).
    _mobilenet(5, 0.75, 224, 68.4, 325, 2.6),
    PaperRow("table5/shallow-1.0-224", 5, "Shallow MobileNet", 307, 2.9, (_top1(65.3),),
             Model("classifier", 1.0, 224, shallow=True), project=True),
    _mobilenet(6, 1.0, 224, 70.6, 569, 4.2),
    _mobilenet(6, 0.75, 224, 68.4, 325, 2.6),
    _mobilenet(6, 0.5, 224, 63.7, 149, 1.3),
    _mobilenet(6, 0.25, 224, 50.6, 41, 0.5),
    _mobilenet(7, 1.0, 224, 70.6, 569, 4.2),
    _mobilenet(7, 1.0, 192, 69.1, 418, 4.2),
    _mobilenet(7, 1.0, 160, 67.2, 290, 4.2),
    _mobilenet(7, 1.0, 128, 64.4, 186, 4.2),
    # Tables 8 and 9: the reference networks are other papers' (counts as the MobileNet paper prints them).
    _mobilenet(8, 1.0, 224, 70.6, 569, 4.2),
    _other(8, "googlenet", "GoogleNet", 1550, 6.8, _top1(69.8)),
    _other(8, "vgg16", "VGG 16", 15300, 138, _top1(71.5)),
    _mobilenet(9, 0.5, 160, 60.2, 76, 1.32),
    _other(9, "squeezenet", "Squeezenet", 1700, 1.25, _top1(57.5)),
    _other(9, "alexnet", "AlexNet", 720, 60, _top1(57.2)),
    # Table 10: 120 breeds, so the classifier is 120 wide (3.3M parameters at alpha 1).
    _other(10, "inception-v3", "Inception V3", 5000, 23.2, Accuracy("Stanford Dogs top-1", "top1", 84.0)),
    _dogs(10, 1.0, 224, 83.3, 569, 3.3),
    _dogs(10, 0.75, 224, 81.9, 325, 1.9),
    _dogs(10, 1.0, 192, 81.9, 418, 3.3),
    _dogs(10, 0.75, 192, 80.5, 239, 1.9),
    # Table 11 prints no complexity; its columns are the distance scales.
    _geo("im2gps", "Im2GPS", 51.9, 35.4, 32.1, 21.9, 2.5),
    _geo("planet", "PlaNet", 77.6, 64.0, 51.1, 31.7, 11.0),
    _geo("planet-mobilenet", "PlaNet MobileNet", 79.3, 60.3, 45.2, 31.7, 11.4, project=True),
    # Table 12: students distilled from the in-house baseline; the counts are of a network with one
    # output per CelebA attribute (40), as the project builds it.
    _attributes(1.0, 224, 88.7, 568, 3.2),
    _attributes(0.5, 224, 88.1, 149, 0.8),
    _attributes(0.25, 224, 87.2, 45, 0.2),
    _attributes(1.0, 128, 88.1, 185, 3.2),
    _attributes(0.5, 128, 87.7, 48, 0.8),
    _attributes(0.25, 128, 86.4, 15, 0.2),
    _other(12, "baseline", "Baseline", 1600, 7.5, Accuracy(_IN_HOUSE_MEAN_AP, "mean_ap", 86.9)),
    # Table 13: mult-adds printed in billions; MobileNet rows at alpha 1 with COCO's 91 classes.
    _other(13, "ssd300-vgg", "SSD 300 deeplab-VGG", 34900, 33.1, Accuracy(_COCO, "mAP", 21.1)),
    _other(13, "ssd300-inception-v2", "SSD 300 Inception V2", 3800, 13.7, Accuracy(_COCO, "mAP", 22.0)),
    PaperRow("table13/ssd300-mobilenet", 13, "SSD 300 MobileNet", 1200, 6.8, (Accuracy(_COCO, "mAP", 19.3),),
             Model("ssd300", 1.0, 300, num_classes=91), project=True),
    _other(13, "faster-rcnn300-vgg", "Faster-RCNN 300 VGG", 64300, 138.5, Accuracy(_COCO, "mAP", 22.9)),
    _other(13, "faster-rcnn300-inception-v2", "Faster-RCNN 300 Inception V2", 118200, 13.3,
           Accuracy(_COCO, "mAP", 15.4)),
    PaperRow("table13/faster-rcnn300-mobilenet", 13, "Faster-RCNN 300 MobileNet", 25200, 6.1,
             (Accuracy(_COCO, "mAP", 16.4),), Model("faster_rcnn", 1.0, 300, num_classes=91), project=True),
    _other(13, "faster-rcnn600-vgg", "Faster-RCNN 600 VGG", 149600, 138.5, Accuracy(_COCO, "mAP", 25.7)),
    _other(13, "faster-rcnn600-inception-v2", "Faster-RCNN 600 Inception V2", 129600, 13.3,
           Accuracy(_COCO, "mAP", 21.9)),
    PaperRow("table13/faster-rcnn600-mobilenet", 13, "Faster-RCNN 600 MobileNet", 30500, 6.1,
             (Accuracy(_COCO, "mAP", 19.8),), Model("faster_rcnn", 1.0, 600, num_classes=91), project=True),
    # Table 14: "1e-4 accuracy" is the project's tar_at_far_1e-4 (docs/face_embedding.md).
    _other(14, "facenet", "FaceNet", 1600, 7.5, Accuracy("1e-4 accuracy", "tar_at_far_1e-4", 83.0)),
    _face("1.0-160", 1.0, 160, 79.4, 286, 4.9),
    _face("1.0-128", 1.0, 128, 78.3, 185, 5.5),
    _face("0.75-128-166M", 0.75, 128, 75.2, 166, 3.4),  # the paper prints 0.75 MobileNet-128 twice
    _face("0.75-128-108M", 0.75, 128, 72.5, 108, 3.8),
)  # fmt: skip

ROWS_BY_KEY: dict[str, PaperRow] = {row.key: row for row in ROWS}


def tolerance(row: PaperRow) -> tuple[float, float]:
    """How far (mult-adds M, parameters M) a count may sit from ``row``'s printed figures and match.

    The paper rounds mult-adds to the unit (0.5% on large ones) and parameters to 0.1M, so a count
    matches within max(1M, 0.5%) and 0.05M; Table 13 prints billions to one decimal: 50M.
    """
    if row.table == 13:
        return 50.0, 0.05
    return max(1.0, 0.005 * (row.mult_adds_m or 0.0)), 0.05


def matches(row: PaperRow, mult_adds_m: float, params_m: float) -> bool:
    """Whether a count of ``row``'s network agrees with the printed figures within ``tolerance``."""
    mult_adds_tol, params_tol = tolerance(row)
    assert row.mult_adds_m is not None and row.params_m is not None
    return abs(mult_adds_m - row.mult_adds_m) <= mult_adds_tol and abs(params_m - row.params_m) <= params_tol
