"""The ``paper`` section: the paper's Tables 4-14 beside the project's counts, and Figures 4 and 5.

For every row of Tables 4-14 (``backbone.paper_tables``) it prints the paper's mult-adds and
parameters, the project's count of the same network (``benchmarks.paper_counts``: the task's
own builder and the project's one counter, on the meta device) and the difference, and the
accuracy columns: the paper's figure and, where the user passes a run's ``metrics.json``
(``--paper-metrics KEY=PATH ...``), theirs. Rows whose count is outside the tolerance the
complexity tests use say why (a footnote per row, from the data module).

Figures 4 and 5 (top-1 against mult-adds / parameters, log scale) are drawn for the 16 width x
resolution models from the authors' released checkpoints (``backbone.published``), with the
user's ImageNet accuracies as a second series, as PNGs in ``--paper-out``.

A file passed for a key fills every row of the same network on the same data: 1.0
MobileNet-224 appears in Tables 4, 6, 7 and 8, and ``table6/1.0-224=...`` fills all four.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from backbone.errors import BadInputError
from backbone.paper_tables import ROWS, ROWS_BY_KEY, TABLE_TITLES, Model, PaperRow, matches
from backbone.published import PUBLISHED, SOURCE
from benchmarks.common import Option, Section, fmt, markdown_table, print_heading, register, verdict
from benchmarks.paper_counts import project_complexity
from benchmarks.paper_figures import Point, draw
from datasets.text import read_json
from tasks.outputs import ensure_folder

Run = Model | str  # what a metrics file is of: the row's network, or the row key (Table 11)

# Figure 4-5 models not in any table: imagenet/ALPHA-RES for each of the 16 released ones.
FIGURE_KEYS: dict[str, Model] = {f"imagenet/{m.width}-{m.resolution}": Model("classifier", m.width, m.resolution)
                                 for m in PUBLISHED}  # fmt: skip


def run_of(row: PaperRow) -> Run:
    return row.model if row.model is not None else row.key


def metric_keys() -> list[str]:
    """Every key ``--paper-metrics`` accepts: the project's rows of Tables 4-14, then the 16 figure models."""
    return [row.key for row in ROWS if row.project] + list(FIGURE_KEYS)


def _keys_help() -> str:
    by_table: dict[str, list[str]] = {}
    for key in metric_keys():
        prefix, name = key.split("/")
        by_table.setdefault(prefix, []).append(name)
    return "; ".join(f"{prefix}/{{{','.join(names)}}}" for prefix, names in by_table.items())


def _run_metrics(run: Run) -> list[str]:
    """The metric names a file for ``run`` must hold: every accuracy column of its rows."""
    if isinstance(run, Model) and run.kind == "classifier" and run.num_classes == 1000:
        return ["top1"]
    names = [a.metric for row in ROWS if run_of(row) == run for a in row.accuracy]
    return list(dict.fromkeys(names))


def parse_metrics_args(items: list[str]) -> dict[Run, tuple[str, Path]]:
    """``KEY=PATH`` items -> {the run the key names: (key, path)}; a bad item is one sentence."""
    runs: dict[Run, tuple[str, Path]] = {}
    for item in items:
        key, sep, path = item.partition("=")
        if not sep or not path:
            raise BadInputError(f"--paper-metrics {item!r} is not KEY=PATH; expected e.g. table6/0.75-224=runs/m.json.")
        if key in FIGURE_KEYS:
            run: Run = FIGURE_KEYS[key]
        elif key in ROWS_BY_KEY and ROWS_BY_KEY[key].project:
            run = run_of(ROWS_BY_KEY[key])
        else:
            raise BadInputError(
                f"--paper-metrics names an unknown row {key!r}; expected one of the keys "
                "`python -m benchmarks --help` lists under the paper section, e.g. table6/0.75-224."
            )
        if run in runs:
            raise BadInputError(f"--paper-metrics gives {key!r} after {runs[run][0]!r}, which is the same network.")
        runs[run] = (key, Path(path))
    return runs


def read_metrics(key: str, path: Path, names: list[str]) -> dict[str, float | None]:
    """The metrics ``names`` of a run's ``metrics.json`` as fractions (None: written as null).

    Accepts the file ``MetricsJSON`` writes (the numbers under ``"metrics"``) or a flat object of
    metric name -> number. A missing file, bad JSON, a missing metric or a value outside [0, 1]
    is one sentence naming the file.
    """
    expected = f"a metrics.json of {key} (a JSON object of metric name -> fraction) holding {', '.join(names)}"
    data = read_json(path, "metrics file", expected)
    if isinstance(data, dict) and isinstance(data.get("metrics"), dict):
        data = data["metrics"]
    if not isinstance(data, dict):
        raise BadInputError(f"The metrics file {str(path)!r} holds a JSON {type(data).__name__}; expected {expected}.")
    values: dict[str, float | None] = {}
    for name in names:
        if name not in data:
            raise BadInputError(f"The metrics file {str(path)!r} has no {name!r}; expected {expected}.")
        value = data[name]
        ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1)
        if not ok:
            raise BadInputError(
                f"The metrics file {str(path)!r} gives {name} = {value!r}; expected a fraction in [0, 1]."
            )
        values[name] = None if value is None else float(value)
    return values


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One dict per row: the paper's figures, the project's count, and the user's accuracies."""
    given = parse_metrics_args(args.paper_metrics)
    ensure_folder(args.paper_out, "figure folder")  # before any work: a bad folder is one sentence
    user = {run: read_metrics(key, path, _run_metrics(run)) for run, (key, path) in given.items()}
    rows = []
    for row in ROWS:
        counted = project_complexity(row.model) if row.model is not None else None
        mine = user.get(run_of(row), {}) if row.project else {}
        rows.append({
            "key": row.key, "table": row.table, "label": row.label,
            "paper_mult_adds_m": row.mult_adds_m, "paper_params_m": row.params_m,
            "mult_adds_m": counted.mult_adds_m if counted else None, "params_m": counted.params_m if counted else None,
            "matches": matches(row, counted.mult_adds_m, counted.params_m) if counted else None,
            "deviation": row.deviation,
            "accuracy": [{"column": a.column, "metric": a.metric, "paper": a.paper,
                          "yours": None if mine.get(a.metric) is None else 100 * mine[a.metric]}
                         for a in row.accuracy],
            "metrics_file": str(given[run_of(row)][1]) if row.project and run_of(row) in given else None,
        })  # fmt: skip
    figure_user = {run: values for run, values in user.items() if isinstance(run, Model) and "top1" in values}
    return rows + [_figure_row(m, figure_user) for m in PUBLISHED]


def _figure_row(published: Any, user: dict[Run, dict[str, float | None]]) -> dict[str, Any]:
    model = Model("classifier", published.width, published.resolution)
    counted = project_complexity(model)
    top1 = user.get(model, {}).get("top1")
    return {"key": f"imagenet/{published.width}-{published.resolution}", "table": None, "figure": True,
            "published": vars(published) | {"name": published.name}, "mult_adds_m": counted.mult_adds_m,
            "params_m": counted.params_m, "yours_top1": None if top1 is None else 100 * top1}  # fmt: skip


def _delta(ours: float | None, paper: float | None) -> str:
    return "–" if ours is None or paper is None else f"{ours - paper:+.2f}"


def report(rows: list[dict[str, Any]], figures: list[Path]) -> dict[str, Any]:
    """Print Tables 4-14 side by side and the figure files; return the targets."""
    table_rows = [r for r in rows if r["table"] is not None]
    for table, title in TABLE_TITLES.items():
        print_heading(f"Table {table}: {title}")
        in_table = [r for r in table_rows if r["table"] == table]
        columns = [a["column"] for a in in_table[0]["accuracy"]]
        header = ["key", "model", "paper M mult-adds", "ours", "Δ", "paper M params", "ours", "Δ", "match"]
        header += [f"{c} paper %" if len(columns) == 1 else f"{c} paper" for c in columns] + [
            f"{c} yours %" if len(columns) == 1 else f"{c} yours" for c in columns
        ]
        notes: list[str] = []
        body = []
        for r in in_table:
            match = "–" if r["matches"] is None else "yes" if r["matches"] else "no"
            if r["matches"] is False:
                note = r["deviation"] or "UNEXPLAINED"
                notes += [] if note in notes else [note]
                match += f" [{notes.index(note) + 1}]"
            body.append([
                r["key"], r["label"], fmt(r["paper_mult_adds_m"], "g"), fmt(r["mult_adds_m"], ".1f"),
                _delta(r["mult_adds_m"], r["paper_mult_adds_m"]), fmt(r["paper_params_m"], "g"),
                fmt(r["params_m"], ".2f"), _delta(r["params_m"], r["paper_params_m"]), match,
                *(fmt(a["paper"], ".1f") for a in r["accuracy"]), *(fmt(a["yours"], ".1f") for a in r["accuracy"]),
            ])  # fmt: skip
        print(markdown_table(header, body))
        for number, note in enumerate(notes, 1):
            print(f"\n[{number}] {note}")
    figure_rows = [r for r in rows if r.get("figure")]
    print_heading("Figures 4 and 5: the 16 released models (accuracy vs mult-adds / parameters)")
    header = ["key", "published M MACs", "ours", "published M params", "ours", "published top-1 %", "yours %"]
    print(markdown_table(header, [
        [r["key"], fmt(r["published"]["mult_adds_m"], "g"), fmt(r["mult_adds_m"], ".1f"),
         fmt(r["published"]["params_m"], "g"), fmt(r["params_m"], ".2f"), fmt(r["published"]["top1"], ".1f"),
         fmt(r["yours_top1"], ".1f")] for r in figure_rows
    ]))  # fmt: skip
    print(f"\nPublished: {SOURCE}.")
    for path in figures:
        print(f"wrote {path}")
    counted = [r for r in table_rows if r["matches"] is not None]
    unexplained = [r["key"] for r in counted if not r["matches"] and not r["deviation"]]
    within = sum(bool(r["matches"]) for r in counted)
    print(
        f"\nCounts: {within} of {len(counted)} rows the project builds match the paper within the tests' tolerance, "
        f"the other {len(counted) - within} explained; unexplained: {len(unexplained)} — {verdict(not unexplained)}"
    )
    return {"rows_counted": len(counted), "rows_within_tolerance": within, "unexplained": unexplained}


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = measure(args)
    figure_rows = [r for r in rows if r.get("figure")]
    published = [Point(r["key"].split("/")[1], r["published"]["mult_adds_m"], r["published"]["params_m"],
                       r["published"]["top1"]) for r in figure_rows]  # fmt: skip
    yours = [Point(r["key"].split("/")[1], r["mult_adds_m"], r["params_m"], r["yours_top1"])
             for r in figure_rows if r["yours_top1"] is not None]  # fmt: skip
    series = [("released checkpoints (TF-Slim)", published), ("yours (--paper-metrics)", yours)]
    figures = [draw(axis, series, Path(args.paper_out), SOURCE) for axis in ("mult_adds_m", "params_m")]
    targets = report(rows, figures)
    return {"rows": rows, "figures": [str(p) for p in figures], "targets": targets}


SECTION = register(
    Section(
        "paper",
        run,
        options=(
            Option(
                "--paper-metrics",
                [],
                quick=[],
                nargs="+",
                repeatable=True,
                help="KEY=PATH ... (or the flag repeated): a run's metrics.json, shown in the 'yours' column "
                "of that network's rows "
                f"(any key of the same network fills all its rows). Keys: {_keys_help()}",
            ),
            Option("--paper-out", "runs/paper", quick="runs/paper", help="folder for the Figure 4 and 5 PNGs"),
        ),
    )
)
