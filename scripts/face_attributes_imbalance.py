"""Does ``--model.pos_weight auto`` help? The same fit with ``none`` and ``auto``, on a second set
unlike the demo, scored by mean AP and by mean accuracy at 0.5 and at thresholds tuned on val.

    python scripts/face_attributes_imbalance.py                 # writes the set once, 2 seeds x none/auto
    python scripts/face_attributes_imbalance.py --seeds 0 --backbone 0.5 --resolution 96 -- --trainer.max_steps 300
    python scripts/face_attributes_imbalance.py --table runs/fa-imbalance/runs.json

The set (``write_second_set``) differs from the demo on purpose: Kaggle's layout (CSV lists, the
images in ``img_align_celeba/img_align_celeba/``), images of mixed sizes (120-220 px a side, not
178 x 218), shapes and patterns on noise instead of faces, interleaved partitions, and strongly
imbalanced attributes (prevalence 50% down to 3%, where CelebA's range from 2% to 80%). Each run is
``python -m tasks.face_attributes fit --data.root SET --backbone A --resolution R --seed_everything S
--model.pos_weight none|auto`` then ``test --ckpt_path <run>/checkpoints/last.ckpt`` in its own
process (``benchmarks.task_runs``); the table gives each setting's test metrics per seed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.task_runs import ROOT, run_in_subprocess, split_passthrough

# (name, prevalence): a balanced attribute down to rare ones.
ATTRIBUTES = (
    ("Red_Square", 0.5),
    ("Blue_Circle", 0.3),
    ("Stripes", 0.15),
    ("Dark_Frame", 0.1),
    ("Green_Triangle", 0.08),
    ("Star", 0.06),
    ("Small_Dot", 0.04),
    ("Yellow_Ring", 0.03),
)
SIZES = {"train": 1200, "val": 300, "test": 300}


def _shape(draw: ImageDraw.ImageDraw, name: str, w: int, h: int, rng: np.random.Generator) -> None:
    s = int(min(w, h) * rng.uniform(0.12, 0.22))
    x, y = int(rng.uniform(0, w - s)), int(rng.uniform(0, h - s))
    if name == "Red_Square":
        draw.rectangle([x, y, x + s, y + s], fill=(200 + int(rng.integers(0, 55)), 30, 30))
    elif name == "Blue_Circle":
        draw.ellipse([x, y, x + s, y + s], fill=(30, 40, 210))
    elif name == "Stripes":
        for k in range(0, w, 12):
            draw.line([k, 0, k - h // 2, h], fill=(230, 230, 230), width=2)
    elif name == "Dark_Frame":
        draw.rectangle([0, 0, w - 1, h - 1], outline=(10, 10, 10), width=max(3, min(w, h) // 25))
    elif name == "Green_Triangle":
        draw.polygon([(x, y + s), (x + s, y + s), (x + s // 2, y)], fill=(30, 190, 40))
    elif name == "Star":
        c, r = (x + s / 2, y + s / 2), s / 2
        angles = np.linspace(0, 2 * np.pi, 11)[:-1] - np.pi / 2
        points = [(c[0] + (r if i % 2 == 0 else r / 2.5) * np.cos(a), c[1] + (r if i % 2 == 0 else r / 2.5) * np.sin(a))
                  for i, a in enumerate(angles)]  # fmt: skip
        draw.polygon(points, fill=(240, 200, 20))
    elif name == "Small_Dot":
        d = max(4, min(w, h) // 30)
        draw.ellipse([x, y, x + d, y + d], fill=(255, 0, 255))
    elif name == "Yellow_Ring":
        draw.ellipse([x, y, x + s, y + s], outline=(240, 230, 40), width=max(2, s // 8))


def draw_image(labels: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Noise of a random size with the shapes of ``labels`` and a few grey distractors."""
    w, h = (int(v) for v in rng.integers(120, 221, size=2))
    base = rng.integers(60, 190, size=(h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
    noise = np.kron(base, np.ones((8, 8, 1), np.uint8))[:h, :w] + rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
    image = Image.fromarray(noise)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 4))):  # distractors: grey shapes of every kind's size
        s = int(min(w, h) * rng.uniform(0.1, 0.25))
        x, y = int(rng.uniform(0, w - s)), int(rng.uniform(0, h - s))
        grey = int(rng.integers(90, 170))
        draw.rectangle([x, y, x + s, y + s], fill=(grey, grey, grey))
    for (name, _), on in zip(ATTRIBUTES, labels, strict=True):
        if on:
            _shape(draw, name, w, h, rng)
    return image


def write_second_set(folder: Path, seed: int = 19) -> Path:
    """The set in Kaggle's layout under ``folder`` (written once; an existing one is kept)."""
    if (folder / "list_eval_partition.csv").is_file():
        return folder
    rng = np.random.default_rng(seed)
    total = sum(SIZES.values())
    labels = (rng.random((total, len(ATTRIBUTES))) < np.array([p for _, p in ATTRIBUTES])).astype(np.uint8)
    partition = rng.permutation(np.repeat([0, 1, 2], list(SIZES.values())))  # interleaved, as CelebA's are not
    images = folder / "img_align_celeba" / "img_align_celeba"
    images.mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, total + 1)]
    for name, row in zip(names, labels, strict=True):
        draw_image(row, rng).save(images / name, quality=92)
    with (folder / "list_attr_celeba.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", *(name for name, _ in ATTRIBUTES)])
        writer.writerows([name, *(1 if v else -1 for v in row)] for name, row in zip(names, labels, strict=True))
    with (folder / "list_eval_partition.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("image_id", "partition"), *zip(names, partition.tolist(), strict=True)])
    return folder


def fit_and_test(root: Path, pos_weight: str, seed: int, args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    name = f"{pos_weight}-{args.backbone:g}-{args.resolution}-{seed}"
    common = ["--data.root", str(root), "--backbone", str(args.backbone), "--resolution", str(args.resolution)]
    fit = [*common, "--seed_everything", str(seed), "--model.pos_weight", pos_weight, *extra]
    _, seconds, _ = run_in_subprocess("face_attributes", "fit", fit, args.runs / name, args.threads)
    ckpt = str(args.runs / name / "checkpoints" / "last.ckpt")
    log_dir, _, _ = run_in_subprocess("face_attributes", "test", [*common, "--ckpt_path", ckpt], args.runs / name)
    metrics = json.loads((log_dir / "metrics.json").read_text())["metrics"]
    return {"pos_weight": pos_weight, "seed": seed, "seconds": seconds, "test": metrics}


def table(records: list[dict[str, Any]]) -> str:
    rare = [name for name, p in ATTRIBUTES if p <= 0.06]
    lines = [
        f"| pos_weight | seed | mean AP | mean AP of the {len(rare)} rarest | mean accuracy at 0.5 | tuned on val |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        t = r["test"]
        rare_ap = np.mean([t[f"ap/{n}"] for n in rare if f"ap/{n}" in t])
        lines.append(
            f"| {r['pos_weight']} | {r['seed']} | {t['mean_ap']:.3f} | {rare_ap:.3f} | {t['mean_accuracy']:.3f} "
            f"| {t.get('mean_accuracy_tuned', float('nan')):.3f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    own, extra = split_passthrough(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", type=Path, default=ROOT / "runs" / "fa-imbalance" / "set")
    parser.add_argument("--backbone", type=float, default=0.25)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "fa-imbalance")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every fit (default: torch's)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--table", type=Path, default=None, help="only print the table of this --json file")
    args = parser.parse_args(own)
    if args.table is not None:
        records = json.loads(args.table.read_text())
    else:
        root = write_second_set(args.set)
        records = [fit_and_test(root, w, s, args, extra) for s in args.seeds for w in ("none", "auto")]
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(records, indent=1))
    print(table(records))
    return records


if __name__ == "__main__":
    main()
