"""``python -m benchmarks [--section NAME] [--threads N] [--json PATH] [--quick]``: run sections, print, save."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import benchmarks  # noqa: F401  (importing the package registers every section)
from backbone.errors import BadInputError
from benchmarks.common import SECTIONS, Option, flush_denormals, write_json

# Options every section uses; a section's own come with its registration.
COMMON_OPTIONS = (
    Option("--budget", 1.5, quick=0.02, type=float, help="seconds of timed repeats per measurement (3..25 repeats)"),
    # Tiny layers on a busy machine: two OpenMP threads mostly wait for each other.
    Option("--threads", None, quick=1, type=int, help="torch.set_num_threads; unset = torch's default"),
)


def build_parser() -> argparse.ArgumentParser:
    """The common options, then one group per registered section."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="CPU benchmarks of the project's models by section, as ratios to anchors measured in the same run.",
    )
    parser.add_argument("--section", choices=[*SECTIONS, "all"], default="all", help="which section to run")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run in seconds: tiny grids (α 0.25, 32-64 px, batch 1 and 2), small mm, no compile, 1 thread",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    for option in COMMON_OPTIONS:
        option.add_to(parser)
    for section in SECTIONS.values():
        group = parser.add_argument_group(f"{section.name} section")
        for option in section.options:
            option.add_to(group)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``, then fill every option left unset from its full or quick preset."""
    args = build_parser().parse_args(argv)
    for option in [*COMMON_OPTIONS, *(o for section in SECTIONS.values() for o in section.options)]:
        option.fill(args)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the chosen sections, print their tables, optionally write JSON; return the results by section."""
    args = parse_args(argv)
    flush_denormals()
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list(SECTIONS) if args.section == "all" else [args.section]
    results = {name: SECTIONS[name].run(args) for name in names}
    if args.json is not None:
        write_json(args.json, results)
    return results


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except BadInputError as error:  # a file or value the user gave (--paper-metrics): one sentence
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
