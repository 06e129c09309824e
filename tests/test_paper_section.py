"""``python -m benchmarks --section paper``: Tables 4-14 beside the project's counts, Figures 4 and 5."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backbone.errors import BadInputError
from backbone.paper_tables import ROWS, matches
from backbone.published import PUBLISHED, SOURCE
from benchmarks.__main__ import main
from benchmarks.paper import metric_keys
from benchmarks.paper_counts import project_complexity

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COUNTED = [row for row in ROWS if row.model is not None]


def run_section(tmp_path: Path, *metrics: str) -> dict:
    args = ["--section", "paper", "--paper-out", str(tmp_path / "figures")]
    return main(args + (["--paper-metrics", *metrics] if metrics else []))["paper"]


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    import contextlib
    import io

    folder = tmp_path_factory.mktemp("paper")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = run_section(folder)
    return result, buffer.getvalue(), folder


def test_every_row_of_tables_4_to_14_is_printed(plain_run: tuple[dict, str, Path]) -> None:
    result, out, _ = plain_run
    for table in range(4, 15):
        assert f"### Table {table}:" in out
    for row in ROWS:
        assert f"| {row.key} | {row.label} |" in out, row.key
    assert len([r for r in result["rows"] if r["table"] is not None]) == len(ROWS)
    assert "unexplained: 0 — MET" in out


@pytest.mark.parametrize("row", COUNTED, ids=[row.key for row in COUNTED])
def test_count_within_the_tests_tolerance_or_explained(row) -> None:  # noqa: ANN001
    complexity = project_complexity(row.model)
    assert matches(row, complexity.mult_adds_m, complexity.params_m) != bool(row.deviation), (row.key, complexity)


def test_the_rows_outside_tolerance_are_exactly_the_known_ones() -> None:
    outside = {row.key for row in COUNTED if row.deviation}
    assert outside == {"table12/0.25-224", "table12/0.25-128"} | {r.key for r in ROWS if r.table == 14 and r.model}


def test_a_metrics_file_is_shown_in_every_row_of_its_network(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.json"  # as tasks.callbacks.MetricsJSON writes it
    metrics.write_text(json.dumps({"stage": "test", "metrics": {"top1": 0.6234, "top5": 0.85}}))
    geo = tmp_path / "geo.json"  # a flat object works too
    geo.write_text(json.dumps({f"acc_{d}km": d / 10000 for d in (1, 25, 200, 750, 2500)}))
    result = run_section(tmp_path, f"table7/1.0-224={metrics}", f"table11/planet-mobilenet={geo}")
    rows = {r["key"]: r for r in result["rows"]}
    for key in ("table4/1.0-224", "table6/1.0-224", "table7/1.0-224", "table8/1.0-224"):
        assert rows[key]["accuracy"][0]["yours"] == pytest.approx(62.34)
    assert rows["table6/0.75-224"]["accuracy"][0]["yours"] is None
    assert rows["table10/1.0-224"]["accuracy"][0]["yours"] is None  # same trunk, other data: not filled
    assert [a["yours"] for a in rows["table11/planet-mobilenet"]["accuracy"]] == pytest.approx([25, 7.5, 2, 0.25, 0.01])
    assert rows["imagenet/1.0-224"]["yours_top1"] == pytest.approx(62.34)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "does not exist"),
        ("{not json", "is not valid JSON"),
        ('{"metrics": {"top5": 0.8}}', "has no 'top1'"),
        ('{"top1": 62.3}', r"expected a fraction in \[0, 1\]"),
        ("[0.5]", "holds a JSON list"),
    ],
)
def test_a_bad_metrics_file_is_one_sentence(tmp_path: Path, content: str | None, match: str) -> None:
    path = tmp_path / "metrics.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BadInputError, match=match) as error:
        run_section(tmp_path, f"table6/0.5-224={path}")
    message = str(error.value)
    assert str(path) in message and message.count(". ") == 0 and "\n" not in message


@pytest.mark.parametrize(("item", "match"), [("table8/vgg16=x.json", "unknown row"), ("table6/0.5-224", "KEY=PATH")])
def test_a_bad_key_is_one_sentence(tmp_path: Path, item: str, match: str) -> None:
    with pytest.raises(BadInputError, match=match):
        run_section(tmp_path, item)


def test_figures_are_valid_pngs(plain_run: tuple[dict, str, Path]) -> None:
    result, out, folder = plain_run
    assert len(result["figures"]) == 2
    for name in ("figure4_accuracy_vs_mult_adds.png", "figure5_accuracy_vs_params.png"):
        data = (folder / "figures" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
        assert f"wrote {folder / 'figures' / name}" in out
    assert not list((folder / "figures").glob(".*.tmp"))  # written through a temporary file


def test_published_rows_are_the_16_models() -> None:
    assert {(m.width, m.resolution) for m in PUBLISHED} == {
        (w, r) for w in (1.0, 0.75, 0.5, 0.25) for r in (224, 192, 160, 128)
    }
    assert "tensorflow/models" in SOURCE and "mobilenet_v1.md" in SOURCE
    assert len(metric_keys()) == len(set(metric_keys()))


def test_the_flag_can_be_repeated(tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    first.write_text('{"top1": 0.5}')
    second.write_text('{"top1": 0.25}')
    result = run_section(tmp_path, f"table6/0.5-224={first}", "--paper-metrics", f"imagenet/0.25-128={second}")
    rows = {r["key"]: r for r in result["rows"]}
    assert rows["imagenet/0.5-224"]["yours_top1"] == pytest.approx(50)
    assert rows["imagenet/0.25-128"]["yours_top1"] == pytest.approx(25)
