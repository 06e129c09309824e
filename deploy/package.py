"""A deploy folder: the inference model's files and ``deploy.json``, written as one unit.

``deploy.json`` says everything a runner needs besides the model file: the task, width and
resolution, how images are preprocessed, what each output is and what its units mean (class,
attribute, COCO category or S2 cell names), the precision and runtime, and the SHA-256 of the
checkpoint it came from. It also holds the task module's hyper-parameters and its state outside
the network (e.g. geolocation's cell centroids), so ``test --deployed DIR`` rebuilds the same
task around the exported network.

The folder is built under a temporary sibling and renamed into place at the end: a killed export
leaves either the old folder or the new one. An existing folder is replaced only with
``--overwrite`` (the old one is renamed aside first and removed once the new one is in place).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from backbone.errors import BadInputError
from datasets.text import read_text
from deploy.runtime import MODEL_FILES, RUNTIMES

DEPLOY_FILE = "deploy.json"
FORMAT_VERSION = 1
REQUIRED = ("format_version", "task", "runtime", "precision", "width", "resolution", "input", "outputs", "hparams")


@contextmanager
def deploy_folder(out: str | os.PathLike[str], overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside ``out`` to write into; renamed to ``out`` when the block ends cleanly."""
    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise BadInputError(f"The export folder {str(out)!r} already exists; pass --overwrite to replace it.")
    if out.exists() and not out.is_dir():
        raise BadInputError(f"The export folder {str(out)!r} is a file; expected a folder path.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as error:
        raise BadInputError(f"The export folder {str(out)!r} cannot be written: {error.strerror}.") from None
    try:
        yield scratch
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "previous")
        os.replace(scratch, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)


def encode_state(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """Tensors as JSON: dtype, shape and the values in order (int64 S2 ids stay exact as JSON integers)."""
    return {
        name: {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "values": t.flatten().tolist()}
        for name, t in state.items()
    }


def decode_state(encoded: Mapping[str, Any], path: Path) -> dict[str, Tensor]:
    """The tensors ``encode_state`` wrote, or one sentence naming the file."""
    state = {}
    for name, entry in encoded.items():
        try:
            dtype = getattr(torch, entry["dtype"])
            state[name] = torch.tensor(entry["values"], dtype=dtype).reshape(entry["shape"])
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError):
            raise BadInputError(f"{str(path)!r}: state entry {name!r} is not a tensor written by export.") from None
    return state


def write_deploy_json(folder: Path, record: Mapping[str, Any]) -> None:
    """``deploy.json`` in ``folder`` (strict JSON: no NaN)."""
    text = json.dumps({"format_version": FORMAT_VERSION, **record}, indent=1, allow_nan=False)
    (folder / DEPLOY_FILE).write_text(text + "\n", encoding="utf-8")


def read_deploy(folder: str | os.PathLike[str], task: str | None = None) -> dict[str, Any]:
    """The ``deploy.json`` of a deploy folder, checked: every field present, this project's format
    version, the task ``task`` (when given), the runtime's model files beside it."""
    folder = Path(folder).expanduser()
    path = folder / DEPLOY_FILE
    if not path.is_file():
        raise BadInputError(
            f"{str(folder)!r} is not a deploy folder: it has no {DEPLOY_FILE} (write one with 'export --out')."
        )
    try:
        record = json.loads(read_text(path, "deploy file", "the deploy.json written by export"))
    except json.JSONDecodeError as error:
        raise BadInputError(f"{str(path)!r} is not valid JSON (line {error.lineno}); re-run export.") from None
    if not isinstance(record, dict) or any(key not in record for key in REQUIRED):
        missing = [key for key in REQUIRED if not isinstance(record, dict) or key not in record]
        raise BadInputError(f"{str(path)!r} lacks {', '.join(missing)}; it was not written by this project's export.")
    if record["format_version"] != FORMAT_VERSION:
        raise BadInputError(
            f"{str(path)!r} has format version {record['format_version']!r}; this project reads version "
            f"{FORMAT_VERSION}: export the checkpoint again."
        )
    if task is not None and record["task"] != task:
        raise BadInputError(
            f"{str(folder)!r} holds a {record['task']} model; use it with 'python -m tasks.{record['task']}'."
        )
    if record["runtime"] not in RUNTIMES:
        raise BadInputError(
            f"{str(path)!r} names runtime {record['runtime']!r}; expected one of {', '.join(RUNTIMES)}."
        )
    missing_files = [name for name in MODEL_FILES[record["runtime"]] if not (folder / name).is_file()]
    if missing_files:
        raise BadInputError(f"The deploy folder {str(folder)!r} lacks {', '.join(missing_files)}; re-run export.")
    return record


def max_difference(a: list[np.ndarray], b: list[np.ndarray]) -> tuple[float, float]:
    """The largest absolute difference between two lists of outputs, and the largest relative to its
    output's scale (its largest magnitude, at least 1): the export's parity check."""
    absolute, relative = 0.0, 0.0
    for x, y in zip(a, b, strict=True):
        if not x.size:
            continue
        gap = float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))))
        absolute = max(absolute, gap)
        relative = max(relative, gap / max(1.0, float(np.max(np.abs(x)))))
    return absolute, relative
