"""The second detection set (unlike the demo) and the minimal training loop the ablation runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backbone.errors import BadInputError
from benchmarks.detection_minimal_loop import main as minimal_loop
from datasets.coco import CocoDataModule
from datasets.demo.coco import CATEGORIES as DEMO_CATEGORIES
from tasks.detection.evaluation import STAT_NAMES

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datasets.demo.coco_shapes import write_shapes_set

    return write_shapes_set(tmp_path_factory.mktemp("shapes"), train=20, val=6)


def test_the_second_set_differs_from_the_demo_and_loads(shapes: Path) -> None:
    data = json.loads((shapes / "annotations" / "instances_train2017.json").read_text())
    ids = sorted(c["id"] for c in data["categories"])
    assert ids == [4, 9, 17] and not set(ids) & {c[0] for c in DEMO_CATEGORIES}  # non-contiguous, not the demo's
    sizes = {(im["width"], im["height"]) for im in data["images"]}
    assert len(sizes) > 10 and all(w != h for w, h in sizes)  # varied, never the demo's 320x320 square
    with_objects = {a["image_id"] for a in data["annotations"]}
    assert 0 < len(data["images"]) - len(with_objects) < 5  # some images hold no object
    counts = [sum(a["image_id"] == im["id"] for a in data["annotations"]) for im in data["images"]]
    assert max(counts) >= 5  # more objects per image than the demo's 1..4
    module = CocoDataModule(str(shapes), resolution=64, batch_size=4, num_workers=0)
    assert module.num_classes == 4 and module.label_to_category_id == {1: 4, 2: 9, 3: 17}
    images, targets = next(iter(module.train_dataloader()))
    assert images.shape == (4, 3, 64, 64) and len(targets) == 4


@pytest.mark.parametrize("pipeline", ["torchvision", "project"])
def test_minimal_loop_trains_and_scores(shapes: Path, tmp_path: Path, pipeline: str) -> None:
    out = tmp_path / "ablation.json"
    args = ["--root", str(shapes), "--steps", "2", "--width", "0.25", "--resolution", "64", "--batch", "4"]
    args += ["--workers", "0", "--pipeline", pipeline, "--schedule", "warmup_cosine", "--json", str(out)]
    record = minimal_loop(args)
    assert record["steps"] == 2 and record["steps_per_s"] > 0
    for stats in record["eval"].values():
        assert set(STAT_NAMES) | {"AP/star", "AP/ring", "AP/bar"} <= set(stats)
    if pipeline == "torchvision":
        minimal_loop(args)  # a second run appends its record
        assert [r["config"]["pipeline"] for r in json.loads(out.read_text())] == [pipeline, pipeline]


def test_seed_table_gives_median_and_spread() -> None:
    from scripts.detection_seeds import summary

    runs = [
        {
            "set": "demo",
            "backbone": 0.75,
            "seed": s,
            "seconds": 60.0 * (s + 1),
            "global_step": 300,
            "threads": 1,
            "metrics": {"mAP": m, "mAP50": m + 0.3},
        }
        for s, m in enumerate((0.40, 0.50, 0.45))
    ]
    table = summary(runs)
    assert "| demo | 0.75 | 3 | 0.450 (0.400-0.500) | 0.750 (0.700-0.800) | 300 | 1 | 2.0 min |" in table.splitlines()


def test_both_scripts_launch_a_fit_through_one_helper(shapes: Path, tmp_path: Path) -> None:
    """``fit_in_subprocess`` (what detection_seeds.py and detection_ablation.py run): the final
    metrics of the run it launched, not of an older run in the same folder, and its thread count."""
    from benchmarks.task_runs import fit_in_subprocess

    older = tmp_path / "runs" / "lightning_logs" / "version_7"
    older.mkdir(parents=True)
    (older / "metrics.json").write_text(json.dumps({"global_step": 999, "metrics": {"mAP": 1.0}}))
    args = ["--data.root", str(shapes), "--backbone", "0.25", "--resolution", "64", "--data.batch_size", "4"]
    args += ["--data.num_workers", "0", "--trainer.max_steps", "2", "--trainer.enable_model_summary", "false"]
    run = fit_in_subprocess("detection", args, tmp_path / "runs", threads=1, quiet=True)
    assert run.global_step == 2 and set(STAT_NAMES) <= set(run.metrics) and run.threads == 1
    assert Path(run.log_dir).name == "version_8" and run.command[1:4] == ["-m", "tasks.detection", "fit"]


def test_the_scripts_use_the_one_helper() -> None:
    import scripts.detection_ablation as ablation
    import scripts.detection_seeds as seeds
    from benchmarks.task_runs import fit_in_subprocess

    assert seeds.fit_in_subprocess is fit_in_subprocess and ablation.fit_in_subprocess is fit_in_subprocess


def test_ablation_table_lists_every_variant_and_the_loop_under_each_evaluation() -> None:
    from scripts.detection_ablation import table

    def stats(m: float) -> dict[str, float]:
        return {"mAP": m, "mAP50": 2 * m}

    records = [
        {"variant": "loop", "steps": 400, "eval": {"project": stats(0.2), "torchvision SSD": stats(0.21)}},
        {"variant": "task", "steps": 400, "eval": {"project": stats(0.25)}},
    ]
    lines = table(records).splitlines()
    assert lines[2].startswith("| loop | the minimal loop") and lines[2].endswith("| 400 | 0.200 | 0.400 |")
    assert lines[3].startswith("| task | python -m tasks.detection fit") and lines[3].endswith("| 0.250 | 0.500 |")
    assert "| torchvision SSD | 0.210 | 0.420 |" in lines


def test_detection_default_holds_the_peak_lr_for_half_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default schedule the ablation chose reaches configure_optimization (README: ablation)."""
    from tasks.detection import module as detection

    captured: dict[str, tuple] = {}
    monkeypatch.setattr(detection, "configure_optimization", lambda *args: captured.setdefault("args", args))
    detection.DetectionModule(num_classes=3, width=0.25, resolution=64, lr_base_batch=None).configure_optimizers()
    assert captured["args"][-1] == 0.5
    detection.DetectionModule(num_classes=3, width=0.25, resolution=64, lr_base_batch=None, lr_decay_start=0.0)
    with pytest.raises(BadInputError, match="lr_decay_start"):
        detection.DetectionModule(num_classes=3, width=0.25, resolution=64, lr_decay_start=1.0)
