"""An exclusive lock on a directory: a build directory, a source cache, a model directory (which
several machines may write on a lab share).

``O_CREAT | O_EXCL`` on ``<dir>/.npulab/<name>.lock``, holding host, pid and start time. A lock
left by a dead process on this same host (a kill -9, the OOM killer) is taken over; one from
another host is reported with what to do, never broken silently. Taking over happens under a
short OS lock (``flock``/``msvcrt.locking`` on ``<name>.lock.guard``, released by the kernel if
its holder dies), so two processes that both find a stale lock never both take it.

With ``wait`` a busy lock is waited for, saying once who holds it (like cargo's "Blocking waiting
for file lock"); without it the call fails at once naming the holder (``--no-wait``).
"""

from __future__ import annotations

import calendar
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from npulab import log
from npulab.errors import SourceError

POLL_S = 0.1
#: A lock file still empty after this long was left by a process killed while writing it.
EMPTY_GRACE_S = 5.0
_STAMP = "%Y-%m-%dT%H:%M:%SZ"


def _holder(path: Path) -> tuple[str, int, float | None]:
    """``(host, pid, since)`` of a lock file; pid -1 when unreadable, since None if unknown."""
    try:
        host, _, rest = path.read_text(encoding="utf-8").partition(" pid ")
        words = rest.split()
        pid = int(words[0])
    except (OSError, ValueError, IndexError):
        return "", -1, None
    since = None
    if len(words) >= 3 and words[1] == "since":
        try:
            since = float(calendar.timegm(time.strptime(words[2], _STAMP)))
        except ValueError:
            since = None
    return host, pid, since


def _stale(path: Path) -> bool:
    """Held by a process of this host that is gone (or whose pid now names a younger process)."""
    import psutil

    host, pid, since = _holder(path)
    if pid == -1:
        # Created but never written: its maker died between open and write (a kill -9).
        try:
            return time.time() - path.stat().st_mtime > EMPTY_GRACE_S
        except OSError:
            return False
    if host != socket.gethostname() or pid <= 0:
        return False
    try:
        started = psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False
    # A pid reused by a process started after the lock was written is not the holder.
    return since is not None and started > since + 1


@contextmanager
def _guard(path: Path) -> Iterator[None]:
    """A short OS-level lock around inspecting and taking over ``path``."""
    with open(path.with_name(path.name + ".guard"), "a+b") as fh:
        _os_lock(fh)
        try:
            yield
        finally:
            _os_unlock(fh)


def _os_lock(fh: IO[bytes]) -> None:
    if sys.platform == "win32":  # pragma: no cover - Windows
        import msvcrt

        while True:
            try:
                msvcrt.locking(fh.fileno(), msvcrt.LK_LOCK, 1)
                return
            except OSError:
                continue
    import fcntl

    fcntl.flock(fh.fileno(), fcntl.LOCK_EX)


def _os_unlock(fh: IO[bytes]) -> None:
    if sys.platform == "win32":  # pragma: no cover - Windows
        import msvcrt

        fh.seek(0)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _try_take(path: Path) -> int | None:
    """The lock's file descriptor, or None while another live process holds it."""
    with _guard(path):
        try:
            return os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if not _stale(path):
                return None
            log.warning(f"taking over the stale lock {path} ({_holder(path)[1]} is gone)")
            path.unlink(missing_ok=True)
            return os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)


def describe_holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip() or "unknown holder"
    except OSError:
        return "unknown holder"


@contextmanager
def locked(
    directory: Path, name: str, *, wait: bool = False, what: str | None = None
) -> Iterator[Path]:
    """Hold ``<directory>/.npulab/<name>.lock`` for the duration of the block.

    ``wait``: wait for a live holder (saying so once) instead of failing at once. ``what``
    names the locked thing in messages (default: the directory)."""
    path = directory / ".npulab" / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    label = what or str(directory)
    announced = False
    while (fd := _try_take(path)) is None:
        holder = describe_holder(path)
        if not wait:
            msg = f"{label} is in use by another {name} ({holder})"
            raise SourceError(
                msg,
                hint=f"wait for it to finish (drop --no-wait to wait); if it died, delete {path} "
                "and re-run",
            )
        if not announced:
            log.info(f"Blocking waiting for file lock on {label} (held by {name}: {holder})")
            announced = True
        time.sleep(POLL_S)
    stamp = time.strftime(_STAMP, time.gmtime())
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"{socket.gethostname()} pid {os.getpid()} since {stamp}\n")
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def is_held(directory: Path, name: str) -> bool:
    """True while a live process holds ``name`` on ``directory`` (scratch sweeps skip it)."""
    path = directory / ".npulab" / f"{name}.lock"
    return path.exists() and not _stale(path)
