"""The face detector's figures of docs/detection.md: mAP on the demo and on a second set, and speed.

    python scripts/face_detector.py --ckpt runs/detection/.../checkpoints/last.ckpt [--threads 1]

For a ``tasks.detection`` checkpoint trained on faces (``--data.layout wider_face``):

* COCO mAP / mAP@0.5 on the demo's val split and on the val split of the second generated set
  (``datasets.demo.wider_face.SECOND_STYLE``: other seeds, 160-256 px scenes, 1-6 faces of other
  sizes), each by ``python -m tasks.detection validate --data.layout wider_face --ckpt_path CKPT``
  in its own process (its ``metrics.json``): does the detector generalise beyond its own scenes?
* detector + crop throughput (``FaceDetector.detect`` on a batch, then ``crop_face`` of every face
  at ``--crop`` px), images/s as the median of ``benchmarks.common.time_call`` after warm-up, with
  denormals flushed, on the demo's val photos.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks.task_runs import ROOT, run_env


def validate(ckpt: str, root: str | None, folder: Path, threads: int | None) -> dict[str, float]:
    """``validate`` of ``ckpt`` on the WIDER-FACE-layout set ``root`` (None: the demo); its metrics."""
    command = [sys.executable, "-m", "tasks.detection", "validate", "--data.layout", "wider_face", "--ckpt_path", ckpt]
    command += ["--trainer.default_root_dir", str(folder), "--trainer.enable_progress_bar", "false"]
    command += ["--data.num_workers", "0"] + ([] if root is None else ["--data.root", root])
    subprocess.run(command, check=True, cwd=ROOT, env=run_env(threads), stdout=subprocess.DEVNULL)
    newest = max(folder.glob("lightning_logs/version_*/metrics.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(newest.read_text())["metrics"]


def throughput(ckpt: str, batch_size: int, crop: int, score_threshold: float) -> tuple[float, float, float]:
    """(images/s of detect + crop, of detect alone, faces per image) on the demo's val photos."""
    import torch
    from PIL import Image

    from benchmarks.common import flush_denormals, time_call
    from datasets.demo.wider_face import ensure_demo_wider_face
    from tasks.face_embedding.face_crops import FaceDetector, crop_face

    flush_denormals()
    detector = FaceDetector.load(ckpt, score_threshold)
    photos = sorted((ensure_demo_wider_face() / "WIDER_val" / "images").rglob("*.jpg"))
    images = [Image.open(p).convert("RGB") for p in photos][:batch_size]
    faces = detector.detect(images)

    def detect_and_crop() -> None:
        for image, found in zip(images, detector.detect(images), strict=True):
            for face in found:
                crop_face(image, face.box, crop)

    with torch.inference_mode():
        both = time_call(detect_and_crop, warmup=2, min_repeats=5, budget_s=5.0).median
        alone = time_call(lambda: detector.detect(images), warmup=2, min_repeats=5, budget_s=5.0).median
    return len(images) / both, len(images) / alone, sum(map(len, faces)) / len(images)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="a tasks.detection checkpoint trained on faces")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every run (default: torch's)")
    parser.add_argument("--batch-size", type=int, default=16, help="photos per detector batch (throughput)")
    parser.add_argument("--crop", type=int, default=128, help="the embedder's resolution the faces are cropped to")
    parser.add_argument("--score-threshold", type=float, default=0.5, help="FaceDetector's score threshold")
    args = parser.parse_args(argv)
    if args.threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        import torch

        torch.set_num_threads(args.threads)
    from datasets.demo.wider_face import ensure_second_wider_face

    rows = []
    with tempfile.TemporaryDirectory(prefix="face-detector-") as tmp:
        for name, root in (("demo val (60)", None), ("second set val (60)", str(ensure_second_wider_face()))):
            metrics = validate(args.ckpt, root, Path(tmp) / name.split()[0], args.threads)
            rows.append(f"| {name} | {metrics['mAP']:.3f} | {metrics['mAP50']:.3f} | {metrics['AR100']:.3f} |")
    print("| set | mAP | mAP@0.5 | AR@100 |\n|---|---|---|---|\n" + "\n".join(rows))
    both, alone, per_image = throughput(args.ckpt, args.batch_size, args.crop, args.score_threshold)
    print(
        f"\ndetect + crop: {both:.1f} images/s; detect alone: {alone:.1f} images/s (batch {args.batch_size}, "
        f"{per_image:.2f} faces per photo at score >= {args.score_threshold:g}, crops {args.crop} px, "
        f"{os.environ.get('OMP_NUM_THREADS', 'default')} threads)"
    )


if __name__ == "__main__":
    main()
