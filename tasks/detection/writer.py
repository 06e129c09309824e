"""What ``python -m tasks.detection predict`` writes, once, on rank 0.

``predictions.json``: a standard COCO results file (original pixels, original category ids);
``predictions_images.json``: the COCO ``images`` list of the predicted images (id <-> file name,
size), so the results can be joined back to files; with ``--model.draw_predictions true``,
``predictions/<image path>.png`` (the image's path under ``--data.predict_dir``, subfolders kept, its
extension replaced, or kept before ``.png`` when two images differ only by it) with the
boxes, category names and scores drawn.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning import LightningModule, Trainer
from torchvision.io import write_png
from torchvision.utils import draw_bounding_boxes

from datasets.images import read_rgb_array
from tasks.callbacks import PredictionWriter
from tasks.detection.evaluation import write_results_json
from tasks.outputs import atomic_path, write_json_atomic


def draw_detections(
    path: Path, detections: list[dict[str, Any]], names: list[str], min_score: float, out: Path
) -> None:
    """Write ``out`` (PNG): the image at ``path`` with its detections at or above ``min_score``."""
    kept = [d for d in detections if d["score"] >= min_score]
    image = torch.from_numpy(np.ascontiguousarray(read_rgb_array(path))).permute(2, 0, 1)
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in kept)]).reshape(-1, 4)
    captions = [
        f"{names[d['label'] - 1] if 0 < d['label'] <= len(names) else d['category_id']} {d['score']:.2f}" for d in kept
    ]
    width = max(1, round(max(image.shape[1:]) / 200))
    drawn = draw_bounding_boxes(image, boxes, labels=captions, colors="red", width=width)
    with atomic_path(out) as tmp:
        write_png(drawn, str(tmp))


class DetectionWriter(PredictionWriter):
    """Writes the detection outputs of ``predict`` (see the module docstring)."""

    def write(self, folder: Path, records: list[dict[str, Any]], trainer: Trainer, pl_module: LightningModule) -> None:
        images = {r["image_id"]: r for r in records}  # an image seen by two ranks is kept once
        ordered = [images[i] for i in sorted(images)]
        detections = [{k: v for k, v in d.items() if k != "label"} for r in ordered for d in r["detections"]]
        write_json_atomic(
            folder / "predictions_images.json",
            [
                {"id": r["image_id"], "file_name": r["name"], "width": r["width"], "height": r["height"]}
                for r in ordered
            ],
        )
        write_results_json(detections, folder / "predictions.json")
        if getattr(pl_module, "draw_predictions", False):
            names = list(pl_module.data().category_names)
            stems = Counter(Path(r["name"]).with_suffix("").as_posix() for r in ordered)
            for r in ordered:
                # a.jpg -> a.png; when a.jpg and a.png are both in the folder, a.jpg.png and a.png.png
                shared = stems[Path(r["name"]).with_suffix("").as_posix()] > 1
                out = folder / "predictions" / (r["name"] + ".png" if shared else Path(r["name"]).with_suffix(".png"))
                draw_detections(Path(r["path"]), r["detections"], names, pl_module.draw_score_thresh, out)
        print(f"Wrote {len(detections)} detections on {len(ordered)} images to {folder}.", flush=True)
