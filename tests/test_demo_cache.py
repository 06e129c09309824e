"""The demo cache is keyed by what generated it: a set written by another generator is never reused."""

from __future__ import annotations

from pathlib import Path

import pytest

from datasets.demo import cache
from datasets.demo.cache import build_once, generator_digest


def _write(folder: Path) -> None:
    (folder / "data.txt").write_text("new generator")


def test_a_set_from_an_older_generator_is_not_reused(tmp_path: Path) -> None:
    stale = tmp_path / "toy-v1"  # how sets were named before the key: no digest
    stale.mkdir()
    (stale / "data.txt").write_text("old generator")
    folder = build_once("toy-v1", _write, tmp_path)
    assert folder == tmp_path / f"toy-v1-{generator_digest()}"
    assert (folder / "data.txt").read_text() == "new generator"
    assert build_once("toy-v1", lambda _: pytest.fail("regenerated a cached set"), tmp_path) == folder


def test_the_key_follows_the_generator_source_and_library_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    before = generator_digest()
    generator_digest.cache_clear()
    monkeypatch.setattr(cache, "_GENERATING_PACKAGES", (*cache._GENERATING_PACKAGES, "pytest"))
    try:
        assert generator_digest() != before  # another library version in the key: another folder
    finally:
        generator_digest.cache_clear()
