"""manifest.json: atomic writes, loading, and other steps adding their results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from npulab.build import manifest
from npulab.errors import ConfigError


def test_save_load_and_record_step(tmp_path: Path) -> None:
    assert manifest.load(tmp_path) == {}
    manifest.save(tmp_path, {"recipe": {"name": "r"}, "steps": {"fetch": {"status": "done"}}})
    data = manifest.record_step(tmp_path, "smoke", {"status": "done", "verdict": "PASS"})
    assert data["steps"] == {
        "fetch": {"status": "done"},
        "smoke": {"status": "done", "verdict": "PASS"},
    }
    on_disk = json.loads((tmp_path / "manifest.json").read_text())
    assert on_disk == manifest.load(tmp_path / "manifest.json")
    assert on_disk["schema"] == manifest.SCHEMA
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    manifest.save(tmp_path, {"recipe": {"name": "r"}})
    before = (tmp_path / "manifest.json").read_text()
    with pytest.raises(TypeError):
        manifest.save(tmp_path, {"bad": object()})
    assert (tmp_path / "manifest.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_unreadable_or_foreign_manifest(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable manifest"):
        manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text('{"schema": 99}')
    assert manifest.load(tmp_path) == {}
