"""The shared MobileNetV1 backbone: the network, its complexity, and weight import."""

from backbone.complexity import Complexity, count_complexity, count_params
from backbone.mobilenet import (
    BLOCKS,
    FeatureInfo,
    MobileNetV1,
    check_resolution,
    check_width,
    scaled_channels,
)
from backbone.weights import (
    extract_backbone_state,
    load_backbone_weights,
    read_state_dict,
    timm_to_mobilenet,
)

__all__ = [
    "BLOCKS",
    "Complexity",
    "FeatureInfo",
    "MobileNetV1",
    "check_resolution",
    "check_width",
    "count_complexity",
    "count_params",
    "extract_backbone_state",
    "load_backbone_weights",
    "read_state_dict",
    "timm_to_mobilenet",
    "scaled_channels",
]
