"""Face attributes by distillation (Table 12): MobileNetV1 with one logit per attribute, scored by mean AP."""
