"""An exclusive lock on a directory that several machines may write (a lab share).

``O_CREAT | O_EXCL`` on ``<dir>/.npulab/<name>.lock``, holding host, pid and start time. A lock
left by a dead process on this same host is taken over; one from another host is reported with
what to do, never broken silently.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from npulab import log
from npulab.errors import SourceError


def _holder(path: Path) -> tuple[str, int]:
    try:
        host, _, rest = path.read_text(encoding="utf-8").partition(" pid ")
        return host, int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return "", -1


def _stale(path: Path) -> bool:
    import psutil

    host, pid = _holder(path)
    return host == socket.gethostname() and pid > 0 and not psutil.pid_exists(pid)


@contextmanager
def locked(directory: Path, name: str) -> Iterator[Path]:
    """Hold ``<directory>/.npulab/<name>.lock`` for the duration of the block."""
    path = directory / ".npulab" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            if not _stale(path):
                holder = path.read_text(encoding="utf-8", errors="replace").strip()
                msg = f"{directory} is in use by another {name} ({holder or 'unknown holder'})"
                raise SourceError(
                    msg, hint=f"wait for it to finish; if it died, delete {path} and re-run"
                ) from None
            log.warning(f"taking over the stale lock {path} ({_holder(path)[1]} is gone)")
            path.unlink(missing_ok=True)
    else:  # pragma: no cover - lost a race twice
        msg = f"could not take {path}"
        raise SourceError(msg, hint="re-run")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"{socket.gethostname()} pid {os.getpid()} since {stamp}\n")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
