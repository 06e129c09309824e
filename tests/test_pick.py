"""``python -m backbone.pick``: the choice on given latencies, one real run on two tiny models, bad input.

Timings are never asserted: the end-to-end run has a budget every model meets, and what is
checked is which model the picker chooses from the accuracies it was given.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from backbone.pick import MODEL_KEYS, Choice, choose, main, parse_model, read_accuracy
from backbone.published import PUBLISHED


@pytest.fixture(autouse=True)
def keep_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def write_run(folder: Path, width: float, resolution: int, top1: object) -> Path:
    """A run folder as tasks.classification leaves it: config.yaml and metrics.json."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"seed_everything: 0\nbackbone: {width}\nresolution: {resolution}\n")
    metrics = folder / "metrics.json"
    metrics.write_text(json.dumps({"stage": "validate", "metrics": {"top1": top1, "top5": 0.99}}))
    return metrics


def test_the_16_released_models_are_the_candidates() -> None:
    assert len(MODEL_KEYS) == 16 and "1.0-224" in MODEL_KEYS and "0.25-128" in MODEL_KEYS
    assert {parse_model(key) for key in MODEL_KEYS} == {(m.width, m.resolution) for m in PUBLISHED}
    assert parse_model("1-224") == (1.0, 224) and parse_model("0.3-64", released_only=False) == (0.3, 64)


def test_choose_the_most_accurate_within_the_budget() -> None:
    latency = {"a": 1.0, "b": 3.0, "c": 4.9, "d": 8.0}
    top1 = {"a": 40.0, "b": 60.0, "c": 55.0, "d": 70.0}
    assert choose(latency, top1, 5.0) == Choice(best="b", fastest="a")  # d is better but too slow; c slower and worse
    assert choose(latency, top1, 8.0) == Choice(best="d", fastest="a")  # the budget is inclusive
    assert choose(latency, top1, 0.5) == Choice(best=None, fastest="a")  # none fits: the fastest is named
    assert choose({"x": 2.0, "y": 1.0}, {"x": 50.0, "y": 50.0}, 5.0).best == "y"  # equal accuracy: the faster


def test_real_run_on_two_tiny_models_with_a_user_accuracy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Exported and timed for real (a very short budget); the user's top-1 replaces the published one."""
    metrics = write_run(tmp_path / "run", 0.25, 128, 0.9)  # 90%: better than 0.25-160's published 45.5%
    png = tmp_path / "plot.png"
    argv = ["--latency-ms", "1e6", "--models", "0.25-128", "0.25-160", "--threads", "1", "--budget", "0.01"]
    result = main([*argv, "--rounds", "1", "--accuracy", str(metrics), "--png", str(png)])
    printed = capsys.readouterr().out
    by_key = {c["key"]: c for c in result["candidates"]}
    assert set(by_key) == {"0.25-128", "0.25-160"}
    assert by_key["0.25-128"]["top1"] == pytest.approx(90.0) and by_key["0.25-128"]["top1_from"] == "yours"
    assert by_key["0.25-160"]["top1"] == 45.5 and by_key["0.25-160"]["top1_from"] == "published"
    assert all(c["ms_per_image"] > 0 and c["mult_adds"] > 0 for c in result["candidates"])
    assert result["choice"]["best"] == "0.25-128"
    assert "Pick: MobileNetV1 0.25-128" in printed and "TensorFlow-Slim" in printed
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".plot.png.*"))  # written through a temporary file, renamed


def test_read_accuracy_from_a_run_folder(tmp_path: Path) -> None:
    assert read_accuracy(write_run(tmp_path / "r", 0.75, 192, 0.672)) == ("0.75-192", pytest.approx(67.2))


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--latency-ms", "0"], "--latency-ms is 0; expected a number > 0."),
        (["--latency-ms", "5", "--batch", "0"], "--batch is 0; expected an integer >= 1."),
        (["--latency-ms", "5", "--models", "0.3-128"], "not one of the 16 released models"),
        (["--latency-ms", "5", "--models", "big"], "is not ALPHA-RESOLUTION"),
        (["--latency-ms", "5", "--runtime", "tflite"], "--runtime is 'tflite'; expected one of"),
    ],
)
def test_bad_options_are_one_sentence(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and words in err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("no config", "has no config.yaml beside it"),
        ("not released", "is a run of MobileNetV1 0.5-96"),
        ("top1 out of range", "gives top1 = 1.5; expected a fraction in [0, 1]"),
        ("not measured", "which --models leaves out"),
        ("twice", "give one per model"),
        ("png is a folder", "The plot (--png)"),
    ],
)
def test_bad_accuracy_files_are_one_sentence(
    case: str, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_run(tmp_path / "good", 0.25, 128, 0.4)
    files = {
        "no config": [str(tmp_path / "metrics.json")],
        "not released": [str(write_run(tmp_path / "bad0", 0.5, 96, 0.4))],
        "top1 out of range": [str(write_run(tmp_path / "bad1", 0.25, 128, 1.5))],
        "not measured": [str(write_run(tmp_path / "bad2", 1.0, 224, 0.7))],
        "twice": [str(good), str(write_run(tmp_path / "bad3", 0.25, 128, 0.41))],
        "png is a folder": [str(good)],
    }[case]
    (tmp_path / "metrics.json").write_text('{"metrics": {"top1": 0.5}}')
    png = tmp_path if case == "png is a folder" else tmp_path / "plot.png"
    with pytest.raises(SystemExit) as exit_info:
        main(["--latency-ms", "5", "--models", "0.25-128", "--png", str(png), "--accuracy", *files])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and words in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "plot.png").exists()  # refused before any export, nothing written
