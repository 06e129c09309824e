"""The one reader of PyTorch files: a task's checkpoint, a teacher, backbone weights (timm's too).

``--ckpt_path``, ``--model.teacher``, ``--model.backbone_weights`` and ``--model.init_from`` all
open their file here, so a damaged file gets the same sentence whichever option named it:

* it does not exist, or is a folder;
* it is empty;
* it is not a file ``torch.save`` (or safetensors) wrote, or an archive cut short;
* it holds Python objects besides tensors (a weights-only load refuses them: opening a file must
  not run code);
* it holds no state dict (parameter names -> tensors);
* it is a bare state dict where a checkpoint of this project is needed (``read_checkpoint``).

What the file must then hold (a task, a width, MobileNetV1 keys) is the caller's check. Loads are
weights-only, on the CPU, and memory-mapped when the file is a zip archive (a large checkpoint
is not copied into memory to read its hyper-parameters). This module lives in ``backbone/``
because that is the one package every layer may import.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from backbone.errors import BadInputError

EXPECTED = "expected a .ckpt written by this project or a PyTorch state dict (.pt, .pth, .safetensors)"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6 is a zip archive


def _named(path: str | os.PathLike[str]) -> str:
    return repr(str(path))


def read_torch_file(path: str | os.PathLike[str]) -> Any:
    """What ``path`` holds (weights only, on the CPU), or one sentence saying why it cannot be read."""
    file = Path(path).expanduser()
    if not file.exists():
        raise BadInputError(f"The checkpoint {_named(path)} does not exist.")
    if not file.is_file():
        raise BadInputError(f"The checkpoint {_named(path)} is a folder, not a file; {EXPECTED}.")
    if file.stat().st_size == 0:
        raise BadInputError(f"The checkpoint {_named(path)} is an empty file; {EXPECTED}.")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(file))
        except Exception:  # noqa: BLE001 - safetensors raises its own error type for any damage
            raise BadInputError(
                f"The checkpoint {_named(path)} could not be read as a safetensors file; {EXPECTED}."
            ) from None
    with file.open("rb") as handle:
        archive = handle.read(4) == _ZIP_MAGIC
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=archive and zipfile.is_zipfile(file))
    except Exception as error:  # torch raises many types for foreign files: all mean "not readable"
        text = str(error)
        if "Unsupported global" in text:
            found = text.split("Unsupported global:", 1)[1].split()[1] if "GLOBAL" in text else "an object"
            raise BadInputError(
                f"The checkpoint {_named(path)} holds Python objects ({found}) besides tensors, which are not "
                f"loaded because opening a file must not run code; {EXPECTED}."
            ) from None
        why = "a torch.save archive cut short or damaged" if archive else "not a file written by torch.save"
        raise BadInputError(
            f"The checkpoint {_named(path)} could not be read as a PyTorch checkpoint ({why}); {EXPECTED}."
        ) from None


def _is_state_dict(obj: Any) -> bool:
    """Parameter names -> tensors (a module may add non-tensor ``_extra_state`` entries)."""
    return (
        isinstance(obj, Mapping)
        and all(isinstance(k, str) for k in obj)
        and any(isinstance(v, Tensor) for v in obj.values())
    )


def _no_state_dict(path: str | os.PathLike[str], obj: Any) -> BadInputError:
    held = "a dict without tensors" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
    return BadInputError(f"The checkpoint {_named(path)} holds {held}, not a state dict; {EXPECTED}.")


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The state dict in ``path``: a Lightning checkpoint's ``state_dict``, or a plain (timm) one."""
    obj = read_torch_file(path)
    if isinstance(obj, Mapping) and _is_state_dict(obj.get("state_dict")):
        obj = obj["state_dict"]
    if not _is_state_dict(obj):
        raise _no_state_dict(path, obj)
    return dict(obj)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint written by this project (Lightning's ``state_dict``, ``hyper_parameters`` ...)."""
    obj = read_torch_file(path)
    if isinstance(obj, Mapping) and _is_state_dict(obj.get("state_dict")):
        return dict(obj)
    if _is_state_dict(obj):
        raise BadInputError(
            f"The checkpoint {_named(path)} is a bare state dict, not a checkpoint written by this project's fit; "
            "to start a backbone from it, use --model.backbone_weights."
        )
    raise _no_state_dict(path, obj)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, read in 1 MiB blocks: a checkpoint's identity, recorded beside what it made
    (a face index's vectors, a deploy folder's model)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
