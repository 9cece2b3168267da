"""File hashing at disk speed, and the cheap re-verify record (size + mtime_ns + sha256).

A full sha256 of a 5 GB checkpoint takes seconds; the record lets a second ``model.fetch`` trust a
file whose size and modification time are unchanged since it was hashed (``--verify`` forces a
full hash). The record is a sidecar JSON written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

#: 4 MiB reads into one reused buffer: no per-chunk allocation, few syscalls.
BUFFER_SIZE = 4 * 1024 * 1024


def sha256_file(path: Path, *, buffer_size: int = BUFFER_SIZE) -> str:
    """The hex sha256 of a file, reading with ``readinto`` into one preallocated buffer."""
    digest = hashlib.sha256()
    buf = bytearray(buffer_size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(view)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest()


@dataclass(frozen=True)
class FileRecord:
    size: int
    mtime_ns: int
    sha256: str

    def matches(self, path: Path, sha256: str) -> bool:
        """True when ``path`` still has the recorded size and mtime and the record's hash is
        the expected one (one ``stat``, no read)."""
        try:
            st = path.stat()
        except OSError:
            return False
        return st.st_size == self.size and st.st_mtime_ns == self.mtime_ns and self.sha256 == sha256


def record_for(path: Path, sha256: str) -> FileRecord:
    st = path.stat()
    return FileRecord(size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha256)


def load_records(path: Path) -> dict[str, FileRecord]:
    """The sidecar's records; a missing or unreadable sidecar means 'hash everything'."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {name: FileRecord(**fields) for name, fields in raw.get("files", {}).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def save_records(path: Path, records: dict[str, FileRecord]) -> None:
    """Write the sidecar to a temporary name, then rename it over the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"version": 1, "files": {k: asdict(v) for k, v in sorted(records.items())}}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def git_blob_id(path: Path, *, buffer_size: int = BUFFER_SIZE) -> str:
    """The git object id of a file's content: sha1 of ``"blob <size>\\0"`` + content (what
    ``git hash-object`` prints and the hub lists for files not stored in LFS)."""
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)  # git's id, not a security hash
    buf = bytearray(buffer_size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(view)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest()
