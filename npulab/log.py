"""Console output in one place: progress lines, command echo, GitHub Actions annotations.

Messages go to stderr so that JSON written to stdout (``--json``) stays machine-readable.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_IN_ACTIONS = os.environ.get("GITHUB_ACTIONS") == "true"
#: Titles of the :func:`step` blocks being run (innermost last): error messages name the step.
_STEPS: list[str] = []


def current_step() -> str | None:
    """The name of the innermost running step (its title up to the first ':')."""
    return _STEPS[-1].split(":", 1)[0] if _STEPS else None


_WRITE = threading.Lock()


def _emit(text: str) -> None:
    """One whole line per write, under a lock: lines of parallel hosts never interleave."""
    with _WRITE:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def info(message: str) -> None:
    _emit(message)


def warning(message: str) -> None:
    prefix = "::warning::" if _IN_ACTIONS else "warning: "
    _emit(f"{prefix}{message}")


def error(message: str) -> None:
    if _IN_ACTIONS:
        # Annotations take one line; keep the full text below it.
        first, _, _rest = message.partition("\n")
        _emit(f"::error::{first}")
    _emit(f"error: {message}")


def command(argv_text: str, *, where: str | None = None, dry_run: bool = False) -> None:
    """Echo a command before it runs, like ``set -x``: ``+ [host] cmd`` / ``(dry run) + cmd``."""
    host = f"[{where}] " if where else ""
    dry = "(dry run) " if dry_run else ""
    _emit(f"{dry}+ {host}{argv_text}")


@contextmanager
def step(title: str) -> Iterator[None]:
    """A named, timed block (a folded group on GitHub Actions)."""
    start = time.perf_counter()
    if _IN_ACTIONS:
        _emit(f"::group::{title}")
    else:
        _emit(f"==> {title}")
    _STEPS.append(title)
    try:
        yield
    except BaseException as exc:
        # The handler at the task boundary runs after this block has closed: tell it the step.
        if getattr(exc, "npulab_step", None) is None and hasattr(exc, "__dict__"):
            exc.npulab_step = current_step()  # type: ignore[attr-defined]
        raise
    finally:
        _STEPS.pop()
        elapsed = time.perf_counter() - start
        if _IN_ACTIONS:
            _emit("::endgroup::")
        _emit(f"    ({title}: {elapsed:.2f}s)")
