"""``python -m benchmarks --section face_id``: does a short run identify faces, next to a trivial baseline?

Trains the face embedder for a fixed CPU budget (default: 4 minutes at alpha 0.5 / 96 px, the
budget issue 18 sets) on a generated identity set, tests it on that set's LFW-layout pairs, and
prints its figures beside a baseline with no learning at all: each photo shrunk to a 6 x 6 RGB
thumbnail (108 numbers), compared by cosine similarity, scored by the same code on the same
pairs and people (``lfw_accuracy`` by the LFW protocol, ``identification_top1`` with the first
photo of each person as the gallery). The targets: LFW accuracy at least 0.10 above the
thumbnails', top-1 at least twice theirs.

Sets: ``second`` (default), the generated set unlike the demo (``datasets.demo.faces_second``:
200 identities x 10 photos, stronger pose, light, colour casts, occluders; 30 test people), or
``demo`` (the built-in demo's identities and LFW). Both are generated once into the demo cache.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.common import Option, Section, fmt, markdown_table, print_heading, register, verdict
from benchmarks.task_runs import ROOT, fit_in_subprocess, run_env
from datasets.demo.cache import build_once
from datasets.demo.faces import ensure_demo_faces
from datasets.demo.faces_second import write_second_face_set
from datasets.face_identities import SOURCE_LFW, FaceDataModule
from tasks.face_embedding.metrics import identification_top1, lfw_metrics

THUMBNAIL = 6  # px: the baseline
LFW_MARGIN, TOP1_FACTOR = 0.10, 2.0  # the targets: LFW >= thumbnails + 0.10, top-1 >= 2x thumbnails'


def face_set(name: str) -> tuple[Path, Path]:
    """(identity folders, LFW root) of a generated set, built once into the demo cache."""
    if name == "demo":
        root = ensure_demo_faces()
    else:
        root = build_once("faces-second-v1", write_second_face_set)
    return root / "identities", root / "lfw"


def thumbnail_embeddings(paths: list[Path], side: int = THUMBNAIL) -> np.ndarray:
    """Each photo shrunk to ``side`` x ``side`` RGB (area average), flattened, unit length."""
    rows = []
    for path in paths:
        with Image.open(path) as image:
            rows.append(np.asarray(image.convert("RGB").resize((side, side), Image.BOX), dtype=np.float32).ravel())
    vectors = np.stack(rows)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def scored(embeddings: np.ndarray, labels: np.ndarray, pairs: Any) -> dict[str, float]:
    """The test figures of one embedding of the LFW images (in the test split's order)."""
    result = lfw_metrics(embeddings, pairs.first, pairs.second, pairs.same, pairs.fold)
    return {
        "lfw_accuracy": float(result.accuracy.mean()),
        "identification_top1": identification_top1(embeddings, labels),
    }


def thumbnail_baseline(identities: Path, lfw: Path) -> dict[str, float]:
    """The thumbnails' figures on the test split the model is tested on (same images, same order)."""
    data = FaceDataModule(str(identities), lfw_root=str(lfw), resolution=32)
    test = data.dataset("test")
    lfw_rows = np.flatnonzero(np.asarray(test.sources) == SOURCE_LFW)
    paths = [test.paths[i] for i in lfw_rows]
    return scored(thumbnail_embeddings(paths), np.asarray(test.labels)[lfw_rows], data.lfw_pairs)


def fit_and_test(identities: Path, lfw: Path, extra: list[str], folder: Path, threads: int | None) -> dict[str, Any]:
    """Fit with ``extra`` options, then test the best checkpoint; both runs' metrics."""
    data = ["--data.root", str(identities), "--data.lfw_root", str(lfw)]
    fitted = fit_in_subprocess("face_embedding", [*data, *extra], folder, threads=threads, quiet=True)
    command = [sys.executable, "-m", "tasks.face_embedding", "test", *data, *extra, "--ckpt_path", "best"]
    command += ["--trainer.default_root_dir", str(folder), "--trainer.enable_progress_bar", "false"]
    subprocess.run(command, check=True, cwd=ROOT, env=run_env(threads), stdout=subprocess.DEVNULL)
    newest = max(folder.glob("lightning_logs/version_*/metrics.json"), key=lambda p: p.stat().st_mtime)
    return {"fit": fitted.as_dict(), "test": json.loads(newest.read_text())["metrics"]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    identities, lfw = face_set(args.face_id_set)
    baseline = thumbnail_baseline(identities, lfw)
    extra = ["--backbone", str(args.face_id_width), "--resolution", str(args.face_id_resolution)]
    extra += ["--trainer.max_time", args.face_id_time, *args.face_id_args.split()]
    with tempfile.TemporaryDirectory() as tmp:
        runs = fit_and_test(identities, lfw, extra, Path(tmp), args.threads)
    model = runs["test"]
    targets = {
        "lfw_accuracy": baseline["lfw_accuracy"] + LFW_MARGIN,
        "identification_top1": TOP1_FACTOR * baseline["identification_top1"],
    }
    print_heading(f"Face identification after {args.face_id_time} of training ({args.face_id_set} set)")
    rows = [
        [
            name,
            fmt(model[name], ".3f"),
            fmt(baseline[name], ".3f"),
            fmt(targets[name], ".3f"),
            verdict(model[name] >= targets[name]),
        ]
        for name in targets
    ]
    print(markdown_table(["test metric", "model", f"{THUMBNAIL}x{THUMBNAIL} thumbnails", "target", "met"], rows))
    print(f"{runs['fit']['global_step']} training steps in {runs['fit']['seconds']:.0f} s; command: "
          f"{' '.join(runs['fit']['command'][1:])}")  # fmt: skip
    return {"set": args.face_id_set, "baseline": baseline, "targets": targets, **runs}


SECTION = register(
    Section(
        "face_id",
        run,
        options=(
            Option("--face-id-set", "second", quick="demo", help="the generated face set: second or demo"),
            Option("--face-id-width", 0.5, quick=0.25, type=float, help="backbone width"),
            Option("--face-id-resolution", 96, quick=32, type=int, help="input resolution"),
            Option("--face-id-time", "00:00:04:00", quick="00:00:00:05", help="training time (DD:HH:MM:SS)"),
            Option("--face-id-args", "", quick="--data.num_workers 0", help="further fit options, space-separated"),
        ),
    )
)
