"""What Table 12 is about, on the data you have: students distilled from a teacher, their mean AP and
mult-adds next to the teacher's.

    python scripts/face_attributes_compression.py                      # the built-in demo, small settings
    python scripts/face_attributes_compression.py --student-steps 1110  # the students' epochs = the teacher's
    python scripts/face_attributes_compression.py --root /data/celeba --unlabelled /data/web_faces \\
        --teacher 1.0-224 --students 1.0-224 0.5-224 0.25-224 1.0-128 0.5-128 0.25-128 -- --trainer.max_epochs 30
    python scripts/face_attributes_compression.py --table runs/fa-compression/runs.json

The paper's Table 12 was measured on an in-house web-scale attribute set with an in-house 1600M
mult-add teacher, not on CelebA, so its mean AP is no target for a CelebA run. What it shows is
compression: students of 1/3 to 1/100 of the teacher's mult-adds keep most of its mean AP. This
script measures that claim on a data root (default: the demo, with its unlabelled faces):

1. the teacher: ``fit --backbone A --resolution R`` on the labels (``--teacher A-R``);
2. its ``predict`` over every image of the three partitions and ``--unlabelled``: ``attributes.npy``;
3. each student (``--students A-R ...``): ``fit --data.teacher_outputs attributes.npy`` on the
   training images and the unlabelled ones (the teacher's probabilities alone: ``hard_label_weight``
   0, the default);
4. every network: ``test --ckpt_path <run>/checkpoints/last.ckpt --data.teacher_outputs ...``, so
   the table's mean AP is on the test split and ``emulation_ce`` is the student's distance to the
   teacher there (Table 12's footnote).

Arguments after ``--`` go to every fit (run length, optimizer ...); ``--student-steps N`` sets the
students' run length alone (they train on the unlabelled images too, so the task's default step
count gives them fewer epochs than the teacher: 1110 steps on the demo's 2400 images match the
teacher's 555 on its 1200); ``--threads N`` sets
``OMP_NUM_THREADS`` for every run. Mult-adds and parameters come from ``backbone.count_complexity``
with the data's number of attributes. Each run lands in ``--runs/<name>``; ``--json`` keeps every
record and ``--table`` prints the table of such a file again.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.task_runs import ROOT, run_env, run_in_subprocess, run_threads, split_passthrough

TASK = "face_attributes"


def network(text: str) -> tuple[float, int]:
    """``0.5-96``: a width and a resolution."""
    try:
        width, resolution = text.split("-")
        return float(width), int(resolution)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTH-RESOLUTION, e.g. 0.5-96") from None


def complexity(width: float, resolution: int, attributes: int) -> tuple[float, float]:
    """(M mult-adds, M parameters) of the attribute network, by the project's one counter."""
    from backbone import count_complexity
    from tasks.face_attributes.model import build_attribute_net

    counted = count_complexity(build_attribute_net(width, attributes), resolution)
    return counted.mult_adds_m, counted.params_m


def run(command: str, name: str, args: list[str], runs: Path, threads: int | None) -> tuple[Path, float]:
    """One run of the task in its own process: its log folder and wall seconds."""
    print(f"\n== {name}: {command} {' '.join(args)}", flush=True)
    log_dir, seconds, _ = run_in_subprocess(TASK, command, args, runs / name, threads)
    return log_dir, seconds


def one_network(
    role: str,
    size: tuple[float, int],
    data: list[str],
    train: list[str],
    scored: list[str],
    runs: Path,
    threads: int | None,
) -> dict[str, Any]:
    """Fit then test one network: ``train`` goes to the fit only (unlabelled images, run length),
    ``scored`` to both (a student's teacher outputs, for ``emulation_ce``)."""
    width, resolution = size
    name = f"{role}-{width:g}-{resolution}"
    network_args = ["--backbone", str(width), "--resolution", str(resolution), *data]
    _, fit_seconds = run("fit", name, [*network_args, *train, *scored], runs, threads)
    ckpt = str(runs / name / "checkpoints" / "last.ckpt")
    log_dir, _ = run("test", name, [*network_args, *scored, "--ckpt_path", ckpt], runs, threads)
    metrics = json.loads((log_dir / "metrics.json").read_text())["metrics"]
    return {"role": role, "width": width, "resolution": resolution, "fit_seconds": fit_seconds, "test": metrics}


def compress(args: argparse.Namespace, extra: list[str]) -> list[dict[str, Any]]:
    """Teacher, its outputs, the students, each tested; the records of ``table``."""
    from datasets.celeba import CelebADataModule

    unlabelled = args.unlabelled
    if args.root is None and unlabelled is None:
        from datasets.demo.celeba import UNLABELLED_FOLDER, ensure_celeba_demo

        unlabelled = str(ensure_celeba_demo() / UNLABELLED_FOLDER)
    data = ["--data.root", args.root] if args.root else []
    attributes = len(CelebADataModule(args.root).attribute_names)
    width, resolution = args.teacher
    teacher = one_network("teacher", args.teacher, data, extra, [], args.runs, args.threads)
    name = f"teacher-{width:g}-{resolution}"
    predict = ["--backbone", str(width), "--resolution", str(resolution), *data]
    predict += ["--ckpt_path", str(args.runs / name / "checkpoints" / "last.ckpt")]
    unlabelled_args = ["--data.unlabelled_root", unlabelled] if unlabelled else []
    log_dir, teacher["predict_seconds"] = run("predict", name, [*predict, *unlabelled_args], args.runs, args.threads)
    outputs = ["--data.teacher_outputs", str(log_dir / "attributes.npy")]
    records = [teacher]
    steps = ["--trainer.max_steps", str(args.student_steps)] if args.student_steps else []
    for student in args.students:
        train = [*unlabelled_args, *extra, *steps]
        records.append(one_network("student", student, data, train, outputs, args.runs, args.threads))
    for record in records:
        record["mult_adds_m"], record["params_m"] = complexity(record["width"], record["resolution"], attributes)
        record["threads"] = run_threads(run_env(args.threads))
    return records


def table(records: list[dict[str, Any]]) -> str:
    """Table 12's comparison: each network's test mean AP and mult-adds, and both against the teacher's."""
    teacher = next(r for r in records if r["role"] == "teacher")
    lines = [
        "| network | M mult-adds | × teacher's | M params | test mean AP | − teacher's | `emulation_ce` "
        "| mean accuracy (tuned) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        test = r["test"]
        emulation = f"{test['emulation_ce']:.3f}" if "emulation_ce" in test else "–"
        tuned = f"{test['mean_accuracy']:.3f} ({test['mean_accuracy_tuned']:.3f})" if "mean_accuracy" in test else "–"
        lines.append(
            f"| {r['role']} {r['width']:g} MobileNet-{r['resolution']} | {r['mult_adds_m']:.1f} "
            f"| {r['mult_adds_m'] / teacher['mult_adds_m']:.3f} | {r['params_m']:.2f} | {test['mean_ap']:.3f} "
            f"| {test['mean_ap'] - teacher['test']['mean_ap']:+.3f} | {emulation} | {tuned} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    own, extra = split_passthrough(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=None, help="a CelebA root (default: the built-in demo)")
    parser.add_argument("--unlabelled", default=None, help="unlabelled images (default on the demo: its own)")
    parser.add_argument("--teacher", type=network, default=network("0.5-96"))
    parser.add_argument("--students", type=network, nargs="+", default=[network("0.25-64"), network("0.5-64")])
    parser.add_argument("--student-steps", type=int, default=None, help="the students' --trainer.max_steps")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "fa-compression")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every run (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write every record here")
    parser.add_argument("--table", type=Path, default=None, help="only print the table of this --json file")
    args = parser.parse_args(own)
    if args.table is not None:
        records = json.loads(args.table.read_text())
    else:
        records = compress(args, extra)
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(records, indent=1))
    print(table(records))
    return records


if __name__ == "__main__":
    main()
