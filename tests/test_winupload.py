"""win-upload's archive: deterministic, complete, cut into parts; symlinks refused."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

import pytest

from npulab.errors import BuildStepError
from npulab.windows import upload as winupload


def _out(tmp_path: Path) -> Path:
    out = tmp_path / "b"
    for rel, data in {
        "tree/example/transformers/setup.bat": b"@echo off\r\n",
        "tree/example/transformers/ops/cpp/x.cpp": os.urandom(3000),
        "scripts/prereqs.ps1": b"exit 0\r\n",
    }.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
    return out


def test_archive_is_deterministic_and_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(winupload, "PART_SIZE", 1000)
    out = _out(tmp_path)
    first = winupload.build_archive(out, tmp_path / "u1")
    os.utime(out / "scripts" / "prereqs.ps1", (1, 1))  # times do not matter
    second = winupload.build_archive(out, tmp_path / "u2")
    assert first.sha256 == second.sha256
    assert first.parts == second.parts
    joined = b"".join((tmp_path / "u1" / name).read_bytes() for name, _ in first.parts)
    assert hashlib.sha256(joined).hexdigest() == first.sha256
    assert len(first.parts) == -(-first.size // 1000)
    for name, sha in first.parts:
        assert hashlib.sha256((tmp_path / "u1" / name).read_bytes()).hexdigest() == sha
    with zipfile.ZipFile(io.BytesIO(joined)) as zf:
        assert sorted(zf.namelist()) == [
            "scripts/prereqs.ps1",
            "tree/example/transformers/ops/cpp/x.cpp",
            "tree/example/transformers/setup.bat",
        ]
        assert zf.read("tree/example/transformers/setup.bat") == b"@echo off\r\n"
    (out / "tree" / "example" / "transformers" / "setup.bat").write_bytes(b"changed")
    assert winupload.build_archive(out, tmp_path / "u3").sha256 != first.sha256


def test_archive_refuses_symlinks_and_missing_dirs(tmp_path: Path) -> None:
    out = _out(tmp_path)
    (out / "tree" / "link").symlink_to(out / "scripts")
    with pytest.raises(BuildStepError, match="symbolic link"):
        winupload.build_archive(out, tmp_path / "u")
    assert not list((tmp_path / "u").glob("*.zip")), "nothing half-written is kept"
    with pytest.raises(BuildStepError, match="nothing to upload"):
        winupload.build_archive(tmp_path / "empty", tmp_path / "u")


def test_state_lines_parse() -> None:
    stamp, parts = winupload.parse_state(
        "stamp ABCDEF\r\npart a.000 00ff\r\npart a.001 11ee\r\nnoise\r\n"
    )
    assert stamp == "abcdef"
    assert parts == {"a.000": "00ff", "a.001": "11ee"}
    assert winupload.parse_state("") == (None, {})
