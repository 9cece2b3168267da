"""One line for an ``OSError``: the path, the system's words, the step, the fixing command.

``invoke`` tasks route every ``OSError`` that escapes npulab through :func:`as_npulab_error`
(``invoke_tasks._common.fails_cleanly``), so a read-only ``build/``, a full disk or a cache path
that is a file reads ``error: patch: cannot write /x/build/r/tree: No space left on device`` with
``fix: free space on /x (df -h /x), then re-run``, never a traceback. Git reports a full disk as
a dozen "unable to write" lines without the reason: :func:`disk_full_in` finds it by asking the
file system itself.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from npulab import log
from npulab.errors import CommandError, NpulabError, SystemFailure

#: Free bytes below which a write failure is taken to be the disk filling up.
FULL_BELOW = 1 << 20


def _existing_parent(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _fix(code: int | None, path: Path | None) -> str:
    where = str(path) if path is not None else "the path above"
    parent = _existing_parent(path) if path is not None else Path()
    if code == errno.ENOSPC:
        return f"free space on the disk holding {parent} (df -h {parent}), then re-run"
    if code in (errno.EACCES, errno.EPERM):
        return (
            f"make it writable for this user (ls -ld {parent}; chown or chmod it), or point "
            "NPULAB_BUILD_DIR / NPULAB_CACHE at a directory you own"
        )
    if code == errno.EROFS:
        return (
            f"{parent} is on a read-only file system: set NPULAB_BUILD_DIR / NPULAB_CACHE elsewhere"
        )
    if code == errno.ENOENT:
        return f"create {where} or correct the path"
    if code in (errno.ENOTDIR, errno.EEXIST):
        return f"a file stands where a directory is needed: move it away (ls -l {where})"
    if code == errno.EISDIR:
        return f"{where} is a directory: give a file"
    return "correct the path or its permissions, then re-run"


def as_npulab_error(exc: OSError) -> NpulabError:
    """``exc`` as one line naming the path, the system's words and the running step."""
    path = Path(exc.filename) if exc.filename else None
    words = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
    step = getattr(exc, "npulab_step", None) or log.current_step()
    where = f"{step}: " if step else ""
    target = f" {path}" if path is not None else ""
    if exc.filename2:
        target += f" -> {exc.filename2}"
    msg = f"{where}cannot use{target}: {words}"
    return SystemFailure(msg, hint=_fix(exc.errno, path))


def disk_full_in(paths: Iterable[Path]) -> Path | None:
    """The first of ``paths`` whose file system has (almost) no space left."""
    for path in paths:
        try:
            if shutil.disk_usage(_existing_parent(path)).free < FULL_BELOW:
                return path
        except OSError:
            continue
    return None


def explain_command_error(exc: CommandError, paths: Iterable[Path]) -> NpulabError:
    """A command that could not write because the disk is full says so (git does not)."""
    text = f"{exc.stderr}\n{exc.stdout}"
    if "No space left on device" in text or ("unable to write" not in text.lower()):
        return exc
    full = disk_full_in(paths)
    if full is None:
        return exc
    step = getattr(exc, "npulab_step", None) or log.current_step()
    where = f"{step}: " if step else ""
    msg = f"{where}cannot write under {full}: No space left on device ({exc.message})"
    return SystemFailure(msg, hint=_fix(errno.ENOSPC, full))
