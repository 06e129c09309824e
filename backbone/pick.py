"""``python -m backbone.pick --latency-ms 5``: the most accurate MobileNetV1 that meets a latency budget here.

    python -m backbone.pick --latency-ms 5 [--batch 1] [--runtime openvino|onnxruntime] [--int8]
        [--threads N] [--models 1.0-224 0.5-160 ...] [--accuracy RUN/metrics.json ...] [--png PATH]

The paper's Figure 4 plots ImageNet accuracy against mult-adds; what a user deploying on a CPU
needs is accuracy against *this device's* milliseconds. Each of the 16 width x resolution models
(alpha 1, 0.75, 0.5, 0.25 x 224, 192, 160, 128 px) is built with random weights and BatchNorm
statistics calibrated on random images (an untrained network's vanishing activations would time a
denormal path no trained model takes), exported through the deployed runtime
(``deploy.runtime.export_network``; int8: post-training quantisation calibrated on
``--calibration-images`` random images) into a temporary folder, loaded in a ``Runner`` and timed:
medians after warm-up, with the models interleaved over ``--rounds`` rounds so that a burst of
load from another process on a shared machine hits every model alike. Latency does not depend on
the weights' values, so the random-weight timing stands for the trained model's.

Each model's ms/image is printed beside its ImageNet top-1 (the authors' released checkpoints,
``backbone.published.SOURCE``) and its mult-adds (the project's count), the most accurate model
within the budget is marked (or the fastest is named when none fits), and accuracy against
measured latency is drawn into ``--png``.

``--accuracy`` replaces the published top-1 by the user's own runs: each file is the
``metrics.json`` a ``validate``/``test`` run of ``tasks.classification`` writes into its run
folder; the run's ``config.yaml`` beside it (saved by the CLI in every run) says which model it is
(``backbone`` and ``resolution``), so a file cannot be attached to the wrong model by a typo.
Bad input (an option out of its range, an unknown model, a file that is not such a run's
metrics) ends in one sentence and exit status 2 before any model is exported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from backbone.errors import BadInputError
from backbone.published import PUBLISHED, SOURCE, published
from backbone.ranges import OptionParser, PositiveFloat, PositiveInt, refuse

DEFAULT_PNG = Path("mobilenet_pick.png")
MODEL_KEYS: tuple[str, ...] = tuple(f"{m.width}-{m.resolution}" for m in PUBLISHED)  # "1.0-224", "0.75-192", ...
OUTPUT_NAMES = ("logits",)


# --- models -------------------------------------------------------------------------------------
def parse_model(text: str, released_only: bool = True) -> tuple[float, int]:
    """``"0.75-192"`` -> (0.75, 192); one sentence for anything else.

    ``released_only``: one of the 16 released models (the picker needs their accuracy); otherwise
    any width and resolution the backbone accepts (the benchmark's quick run times tiny ones).
    """
    from backbone.mobilenet import check_resolution, check_width

    width_text, sep, resolution_text = text.partition("-")
    try:
        width, resolution = float(width_text), int(resolution_text)
        check_width(width)
        check_resolution(resolution)
    except ValueError:
        sep = ""
    if not sep:
        raise BadInputError(f"The model {text!r} is not ALPHA-RESOLUTION; expected e.g. 0.75-192.")
    if released_only and f"{width}-{resolution}" not in MODEL_KEYS:
        raise BadInputError(
            f"The model {text!r} is not one of the 16 released models; expected one of {', '.join(MODEL_KEYS)}."
        )
    return width, resolution


def model_key(width: float, resolution: int) -> str:
    return f"{float(width)}-{int(resolution)}"


def build_classifier(width: float, resolution: int, seed: int = 0) -> nn.Module:
    """A 1000-class MobileNetV1 with random weights and BatchNorm statistics of random images."""
    from backbone.mobilenet import MobileNetV1
    from benchmarks.common import calibrate_batchnorm

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images = [torch.randn(4, 3, resolution, resolution, generator=generator) for _ in range(2)]
    return calibrate_batchnorm(MobileNetV1(width, num_classes=1000), images)


def export_classifier(
    model: nn.Module, resolution: int, folder: Path, runtime: str, int8: bool, calibration_images: int = 32
) -> Path:
    """Export ``model`` into ``folder`` through the deployed runtime (int8: calibrated on random images)."""
    from deploy.runtime import export_network

    generator = torch.Generator().manual_seed(1)
    calibration = None
    if int8:
        sizes = [8] * (calibration_images // 8) + ([calibration_images % 8] if calibration_images % 8 else [])
        calibration = [torch.randn(n, 3, resolution, resolution, generator=generator) for n in sizes]
    example = torch.randn(1, 3, resolution, resolution, generator=generator)
    folder.mkdir(parents=True, exist_ok=True)
    export_network(model, example, folder, runtime, OUTPUT_NAMES, calibration)  # type: ignore[arg-type]
    return folder


def interleaved_seconds(calls: Mapping[str, Callable[[], object]], rounds: int, budget_s: float) -> dict[str, float]:
    """Median seconds per call of each of ``calls``, timed in turn over ``rounds`` rounds.

    Each round times every call (``time_call``: warm-up, then a median over repeats filling
    ``budget_s / rounds``); the result is the median of the rounds' medians. Interleaving spreads
    another process's burst of load over all the calls instead of one.
    """
    from benchmarks.common import time_call

    samples: dict[str, list[float]] = {name: [] for name in calls}
    for index in range(rounds):
        for name, call in calls.items():
            timing = time_call(call, warmup=2 if index == 0 else 1, budget_s=budget_s / rounds)
            samples[name].append(timing.median)
    return {name: statistics.median(values) for name, values in samples.items()}


# --- choosing -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Choice:
    """The most accurate model within the budget (None: none fits) and the fastest model."""

    best: str | None
    fastest: str


def choose(latency_ms: Mapping[str, float], top1: Mapping[str, float], budget_ms: float) -> Choice:
    """The most accurate model whose latency is within ``budget_ms`` (ties: the faster), and the fastest."""
    if not latency_ms:
        raise ValueError("choose() needs at least one model")
    fastest = min(latency_ms, key=lambda key: (latency_ms[key], -top1[key]))
    fits = [key for key, ms in latency_ms.items() if ms <= budget_ms]
    best = max(fits, key=lambda key: (top1[key], -latency_ms[key])) if fits else None
    return Choice(best, fastest)


# --- the user's accuracies ----------------------------------------------------------------------
def read_accuracy(path: str | Path) -> tuple[str, float]:
    """(model key, top-1 %) of a run's ``metrics.json``; the run's ``config.yaml`` beside it names the model."""
    import yaml

    from benchmarks.paper import read_metrics
    from datasets.text import read_text

    path = Path(path).expanduser()
    config_path = path.parent / "config.yaml"
    expected = "the config.yaml a tasks.classification run saves beside its metrics.json, with backbone and resolution"
    if not config_path.is_file():
        raise BadInputError(f"{str(path)!r} has no config.yaml beside it; expected the metrics.json of a run folder.")
    try:
        config = yaml.safe_load(read_text(config_path, "run config", expected))
    except yaml.YAMLError:
        raise BadInputError(f"The run config {str(config_path)!r} is not valid YAML; expected {expected}.") from None
    if not isinstance(config, dict) or "backbone" not in config or "resolution" not in config:
        raise BadInputError(f"The run config {str(config_path)!r} has no backbone and resolution; expected {expected}.")
    key = f"{config['backbone']}-{config['resolution']}"
    try:
        key = model_key(*parse_model(key))
    except BadInputError:
        raise BadInputError(
            f"{str(path)!r} is a run of MobileNetV1 {key} ({str(config_path)!r}); expected one of the 16 released "
            "models (alpha 1.0/0.75/0.5/0.25 x 224/192/160/128 px)."
        ) from None
    value = read_metrics(key, path, ["top1"])["top1"]
    if value is None:
        raise BadInputError(f"The metrics file {str(path)!r} gives top1 = null; expected a fraction in [0, 1].")
    return key, 100.0 * value


def user_accuracies(paths: Sequence[str], models: Sequence[str]) -> dict[str, tuple[float, str]]:
    """{model key: (top-1 %, file)} from ``--accuracy`` files; each must be of a measured model, once."""
    found: dict[str, tuple[float, str]] = {}
    for path in paths:
        key, top1 = read_accuracy(path)
        if key not in models:
            raise BadInputError(f"--accuracy {path!r} is a run of {key}, which --models leaves out.")
        if key in found:
            raise BadInputError(f"--accuracy {path!r} is a run of {key}, as is {found[key][1]!r}; give one per model.")
        found[key] = (top1, str(path))
    return found


# --- the command --------------------------------------------------------------------------------
@dataclass
class Candidate:
    """One model: its measured latency, its accuracy (and where it comes from), its mult-adds."""

    key: str
    width: float
    resolution: int
    mult_adds: int
    top1: float
    top1_from: str
    ms_per_image: float = float("nan")


def measure(args: argparse.Namespace, keys: Sequence[str]) -> dict[str, float]:
    """Export every model, then time them interleaved: {key: ms per image}."""
    from deploy.runtime import Runner

    torch.set_flush_denormal(True)
    calls: dict[str, Callable[[], object]] = {}
    with tempfile.TemporaryDirectory(prefix="mobilenet-pick-") as scratch:
        for key in keys:
            width, resolution = parse_model(key)
            print(f"exporting {key} ({args.runtime}, {'int8' if args.int8 else 'fp32'})", flush=True)
            model = build_classifier(width, resolution)
            folder = export_classifier(
                model, resolution, Path(scratch) / key, args.runtime, args.int8, args.calibration_images
            )
            runner = Runner(folder, args.runtime, args.threads)
            images = torch.randn(args.batch, 3, resolution, resolution).numpy()
            calls[key] = lambda runner=runner, images=images: runner(images)
        print(f"timing {len(calls)} models, batch {args.batch}, {args.threads} threads, {args.rounds} rounds")
        seconds = interleaved_seconds(calls, args.rounds, args.budget * args.rounds)  # --budget: per round
    return {key: 1e3 * value / args.batch for key, value in seconds.items()}


def report(candidates: list[Candidate], choice: Choice, args: argparse.Namespace) -> None:
    """The table (fastest first) and the choice in one sentence."""
    from benchmarks.common import markdown_table

    precision = "int8" if args.int8 else "fp32"
    print()
    print(
        f"### MobileNetV1 on this machine: {args.runtime} {precision}, batch {args.batch}, {args.threads} threads, "
        f"budget {args.latency_ms:g} ms/image"
    )
    print()
    rows = []
    for c in sorted(candidates, key=lambda c: c.ms_per_image):
        mark = "◀ pick" if c.key == choice.best else ("fits" if c.ms_per_image <= args.latency_ms else "")
        rows.append([c.key, f"{c.ms_per_image:.2f}", f"{c.top1:.1f}", c.top1_from, f"{c.mult_adds / 1e6:.0f}", mark])
    print(markdown_table(["model", "ms/image", "top-1 %", "top-1 from", "M mult-adds", "within budget"], rows))
    print()
    print(f"published top-1: {SOURCE}; mult-adds: the project's count (backbone.complexity, the paper's convention).")
    if args.int8 and any(c.top1_from == "published" for c in candidates):
        print(
            "int8: the published top-1 is the float models'; post-training int8 usually costs some of it. Score "
            "yours with `python -m tasks.classification test --deployed DIR` and pass its metrics.json to --accuracy."
        )
    by_key = {c.key: c for c in candidates}
    if choice.best is not None:
        best = by_key[choice.best]
        print(
            f"Pick: MobileNetV1 {best.key} — {best.top1:.1f}% top-1 ({best.top1_from}) at {best.ms_per_image:.2f} "
            f"ms/image, the most accurate of the models within {args.latency_ms:g} ms."
        )
    else:
        fastest = by_key[choice.fastest]
        print(
            f"None of the {len(candidates)} models fits {args.latency_ms:g} ms/image; the fastest is MobileNetV1 "
            f"{fastest.key} at {fastest.ms_per_image:.2f} ms/image ({fastest.top1:.1f}% top-1)."
        )


def draw(candidates: list[Candidate], choice: Choice, args: argparse.Namespace, path: Path) -> Path:
    """Figure 4 with this device's milliseconds in place of mult-adds (log x), written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from tasks.outputs import atomic_path

    figure = Figure(figsize=(7, 5), dpi=120)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for source, marker in (("published", "o"), ("yours", "s")):
        points = [c for c in candidates if c.top1_from.startswith(source)]
        if points:
            ax.scatter([c.ms_per_image for c in points], [c.top1 for c in points], marker=marker, label=source)
    for c in candidates:
        ax.annotate(c.key, (c.ms_per_image, c.top1), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if choice.best is not None:
        best = next(c for c in candidates if c.key == choice.best)
        ax.scatter([best.ms_per_image], [best.top1], s=250, facecolors="none", edgecolors="red", label="pick")
    ax.axvline(args.latency_ms, color="gray", linestyle="--", label=f"budget {args.latency_ms:g} ms")
    ax.set_xscale("log")
    precision = "int8" if args.int8 else "fp32"
    ax.set_xlabel(f"ms per image on this machine ({args.runtime} {precision}, batch {args.batch}, log scale)")
    ax.set_ylabel("ImageNet top-1 accuracy (%)")
    ax.set_title("MobileNetV1 accuracy vs latency here (Figure 4, ms for mult-adds)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    figure.text(0.01, 0.01, f"Published accuracy: {SOURCE}", fontsize=5, wrap=True)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def build_parser() -> argparse.ArgumentParser:
    from deploy.runtime import DEFAULT_RUNTIME, RUNTIMES

    parser = OptionParser(
        prog="python -m backbone.pick",
        description="The most accurate MobileNetV1 (width x resolution) within a latency budget on this machine.",
    )
    parser.add_argument("--latency-ms", type=PositiveFloat, required=True, help="budget: milliseconds per image")
    parser.add_argument("--batch", type=PositiveInt, default=1, help="images per call (default: 1)")
    parser.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME, help="default: %(default)s")
    parser.add_argument("--int8", action="store_true", help="int8 post-training quantisation (default: fp32)")
    parser.add_argument("--threads", type=PositiveInt, default=None, help="runtime threads (default: torch's)")
    parser.add_argument(
        "--models", nargs="+", default=list(MODEL_KEYS), help="ALPHA-RES models to measure (default: all 16)"
    )
    parser.add_argument(
        "--accuracy",
        nargs="+",
        action="extend",
        default=[],
        metavar="METRICS_JSON",
        help="your runs' metrics.json (config.yaml beside it names the model): replaces the published top-1",
    )
    parser.add_argument("--png", type=Path, default=DEFAULT_PNG, help="accuracy vs latency plot (default: %(default)s)")
    parser.add_argument(
        "--calibration-images", type=PositiveInt, default=32, help="random images of int8 calibration (default: 32)"
    )
    parser.add_argument("--budget", type=PositiveFloat, default=0.5, help="seconds of timed calls per model and round")
    parser.add_argument("--rounds", type=PositiveInt, default=3, help="interleaved timing rounds (default: 3)")
    return parser


def prepare(args: argparse.Namespace) -> tuple[list[Candidate], dict[str, tuple[float, str]]]:
    """Everything checkable before the first export: models, accuracy files, the PNG path."""
    from backbone.complexity import count_complexity
    from backbone.mobilenet import MobileNetV1
    from tasks.outputs import check_output_file

    keys = list(dict.fromkeys(model_key(*parse_model(text)) for text in args.models))
    yours = user_accuracies(args.accuracy, keys)
    check_output_file(args.png, "plot (--png)")
    candidates = []
    for key in keys:
        width, resolution = parse_model(key)
        mult_adds = count_complexity(MobileNetV1(width, num_classes=1000), resolution).mult_adds
        top1, source = yours.get(key, (published(width, resolution).top1, "published"))
        candidates.append(Candidate(key, width, resolution, mult_adds, top1, "yours" if key in yours else source))
    return candidates, yours


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Measure, choose, print and draw; return what was measured and chosen (for tests and scripts)."""
    args = build_parser().parse_args(argv)
    args.threads = args.threads or torch.get_num_threads()
    try:
        candidates, yours = prepare(args)
        latency = measure(args, [c.key for c in candidates])
        for c in candidates:
            c.ms_per_image = latency[c.key]
        choice = choose(latency, {c.key: c.top1 for c in candidates}, args.latency_ms)
        report(candidates, choice, args)
        png = draw(candidates, choice, args, args.png)
    except BadInputError as error:
        refuse(str(error))
    print(f"wrote {png}")
    for key, (_, path) in yours.items():
        print(f"top-1 of {key} from {path}")
    return {"candidates": [asdict(c) for c in candidates], "choice": asdict(choice), "png": str(png)}


if __name__ == "__main__":
    main(sys.argv[1:])
