"""What export and int8 cost each task, on its demo and on a second generated set unlike it (issue 17).

    python scripts/deploy_parity.py --task classification --set demo
    python scripts/deploy_parity.py --task detection --set second --activation relu

One run: ``fit`` at the task's documented demo settings (its default run length), ``test
--ckpt_path``, then ``export`` fp32 and int8 with both runtimes and ``test --deployed`` on each,
every step a ``python -m tasks.<task>`` subprocess as a user runs it. Prints one markdown row of the
task's headline metric (the issue's: top-1, mAP@0.5, mean AP, acc@750 km, LFW accuracy) and
appends the full metrics to ``<out>/results.jsonl``. ``--activation relu`` trains the same model
with ReLU in place of ReLU6: whether the paper's ReLU6 holds up better in int8.

The second sets are generated here with the demo writers and other settings (other class counts,
image sizes, places, identities, seeds); detection's is ``datasets/demo/coco_shapes.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HEADLINE = {
    "classification": "top1",
    "fine_grained": "top1",
    "detection": "mAP50",
    "face_attributes": "mean_ap",
    "geolocation": "acc_750km",
    "face_embedding": "lfw_accuracy",
}
# The documented demo settings of each task (docs/<task>.md); run length = the task's default.
SIZES = {
    "classification": ["--backbone", "0.5", "--resolution", "128"],
    "fine_grained": ["--backbone", "0.5", "--resolution", "128"],
    "detection": ["--backbone", "0.75"],
    "face_attributes": ["--backbone", "0.5", "--resolution", "96"],
    "geolocation": ["--backbone", "0.5", "--resolution", "64"],
    "face_embedding": ["--backbone", "0.5", "--resolution", "64"],
}
EXPORTS = (("openvino", False), ("openvino", True), ("onnxruntime", False), ("onnxruntime", True))


def second_set(task: str, folder: Path) -> list[str]:
    """Write (once) the task's second set under ``folder``; return its ``--data.*`` arguments."""
    root = folder / task
    done = root / ".done"
    if task == "detection":
        from datasets.demo.coco_shapes import ensure_shapes_set

        return ["--data.root", str(ensure_shapes_set())]
    if not done.exists():
        if task == "classification":
            from datasets.demo.textures import write_imagenet_demo

            write_imagenet_demo(root, per_class_train=60, per_class_val=25, size=96, num_classes=5)
        elif task == "fine_grained":
            from datasets.demo.textures import write_dogs_demo

            write_dogs_demo(root, per_class_train=30, per_class_test=12, num_classes=5)
        elif task == "face_attributes":
            from datasets.demo.celeba import write_celeba_demo

            write_celeba_demo(root, sizes={"train": 900, "val": 250, "test": 250}, unlabelled=0, seed=77)
        elif task == "geolocation":
            from datasets.demo.geo import write_geo_demo

            rng = np.random.default_rng(60)
            places = [
                (float(np.degrees(np.arcsin(rng.uniform(-0.9, 0.9)))), float(rng.uniform(-180, 180)), float(w))
                for w in rng.lognormal(0.0, 1.0, 60)
            ]
            write_geo_demo(root, train=2600, test=400, size=80, places=places, spread_km=60.0, look="bands", seed=61)
        elif task == "face_embedding":
            from datasets.demo.faces import write_identities, write_lfw

            write_identities(root / "identities", identities=150, photos=8, seed=91)
            write_lfw(root / "lfw", seed=92)
        done.touch()
    if task == "face_embedding":
        return ["--data.root", str(root / "identities"), "--data.lfw_root", str(root / "lfw")]
    return ["--data.root", str(root)]


def newest_metrics(runs: Path) -> dict:
    path = max(runs.glob("lightning_logs/*/metrics.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(path.read_text())["metrics"]


def task_run(task: str, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", f"tasks.{task}", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(HEADLINE), required=True)
    parser.add_argument("--set", choices=("demo", "second"), default="demo")
    parser.add_argument("--activation", choices=("relu6", "relu"), default="relu6")
    parser.add_argument("--out", type=Path, default=Path("runs/deploy_parity"))
    parser.add_argument("--calibration", type=int, default=300)
    parser.add_argument("--reuse", action="store_true", help="keep the run folder's last.ckpt: export and test only")
    args = parser.parse_args()
    name = f"{args.task}-{args.set}-{args.activation}"
    runs = args.out / name
    data = second_set(args.task, args.out / "sets") if args.set == "second" else []
    common = [*data, *SIZES[args.task], "--trainer.default_root_dir", str(runs)]
    if args.activation == "relu":
        common += ["--model.activation", "relu"]
    reuse = args.reuse and (runs / "checkpoints" / "last.ckpt").is_file()
    fit_s = 0.0 if reuse else task_run(args.task, "fit", *common)
    task_run(args.task, "test", *common, "--ckpt_path", "last")
    results = {"checkpoint": newest_metrics(runs)}
    for runtime, int8 in EXPORTS:
        label = f"{runtime} {'int8' if int8 else 'fp32'}"
        folder = runs / "deployed" / label.replace(" ", "-")
        extra = ["--runtime", runtime, *(["--int8", "--calibration", str(args.calibration)] if int8 else [])]
        try:
            task_run(args.task, "export", *common, "--ckpt_path", "last", "--out", str(folder), "--overwrite", *extra)
        except subprocess.CalledProcessError:  # refused (detection's OpenVINO int8): no figure
            results[label] = {}
            continue
        task_run(args.task, "test", *common, "--deployed", str(folder))
        results[label] = newest_metrics(runs)
    metric = HEADLINE[args.task]
    row = " | ".join(f"{results[k].get(metric, float('nan')):.3f}" for k in results)
    print(f"| {args.task} | {args.set} | {args.activation} | {metric} | {row} | {fit_s / 60:.1f} min |")
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"task": args.task, "set": args.set, "activation": args.activation, "fit_s": fit_s, "results": results}
    record["threads"] = os.environ.get("OMP_NUM_THREADS")
    with (args.out / "results.jsonl").open("a") as handle:
        handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
