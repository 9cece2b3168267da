"""npulab.hashing: file hashes at any size (across read buffers), git blob ids as git computes
them, and the re-verify record."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from npulab import hashing


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 23])
def test_hashes_match_hashlib_and_git_across_buffer_boundaries(tmp_path: Path, size: int) -> None:
    path = tmp_path / "f.bin"
    data = bytes((i * 37) % 256 for i in range(size))
    path.write_bytes(data)
    # A buffer of 8 bytes: most sizes here take several reads, one ends exactly on the buffer.
    assert hashing.sha256_file(path, buffer_size=8) == hashlib.sha256(data).hexdigest()
    blob = hashlib.sha1(b"blob %d\0" % size + data).hexdigest()
    assert hashing.git_blob_id(path, buffer_size=8) == blob


@pytest.mark.integration
def test_git_blob_id_is_what_git_hash_object_prints(tmp_path: Path) -> None:
    if not shutil.which("git"):
        pytest.skip("git not on PATH")
    path = tmp_path / "tokenizer.json"
    path.write_bytes(b'{"model": "bpe"}\n' * 1000)
    out = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True)
    assert hashing.git_blob_id(path, buffer_size=4096) == out.stdout.strip()


def test_a_record_matches_only_the_unchanged_file_and_the_expected_hash(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"weights")
    sha = hashlib.sha256(b"weights").hexdigest()
    record = hashing.record_for(path, sha)
    assert record.matches(path, sha)
    assert not record.matches(path, "0" * 64)
    path.unlink()
    assert not record.matches(path, sha)  # a missing file is never trusted
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.sha256 = "0" * 64  # type: ignore[misc]


def test_records_round_trip_and_a_broken_sidecar_means_hash_everything(tmp_path: Path) -> None:
    sidecar = tmp_path / "model" / ".npulab" / "verified.json"
    records = {
        "b.bin": hashing.FileRecord(size=2, mtime_ns=5, sha256="b" * 64),
        "a.bin": hashing.FileRecord(size=1, mtime_ns=4, sha256="a" * 64),
    }
    hashing.save_records(sidecar, records)
    assert hashing.load_records(sidecar) == records
    assert [p.name for p in sidecar.parent.iterdir()] == ["verified.json"]  # no temp file left
    for broken in ("{", "[]", '{"files": {"a": {"size": 1}}}', '{"files": 3}'):
        sidecar.write_text(broken)
        assert hashing.load_records(sidecar) == {}
    assert hashing.load_records(tmp_path / "absent.json") == {}
