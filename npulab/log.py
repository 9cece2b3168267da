"""Console output in one place: progress lines, command echo, GitHub Actions annotations.

Messages go to stderr so that JSON written to stdout (``--json``) stays machine-readable.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

_IN_ACTIONS = os.environ.get("GITHUB_ACTIONS") == "true"
#: Titles of the :func:`step` blocks being run (innermost last): error messages name the step.
_STEPS: list[str] = []


def current_step() -> str | None:
    """The name of the innermost running step (its title up to the first ':')."""
    return _STEPS[-1].split(":", 1)[0] if _STEPS else None


def info(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def warning(message: str) -> None:
    prefix = "::warning::" if _IN_ACTIONS else "warning: "
    print(f"{prefix}{message}", file=sys.stderr, flush=True)


def error(message: str) -> None:
    if _IN_ACTIONS:
        # Annotations take one line; keep the full text below it.
        first, _, _rest = message.partition("\n")
        print(f"::error::{first}", file=sys.stderr, flush=True)
    print(f"error: {message}", file=sys.stderr, flush=True)


def command(argv_text: str, *, where: str | None = None, dry_run: bool = False) -> None:
    """Echo a command before it runs, like ``set -x``: ``+ [host] cmd`` / ``(dry run) + cmd``."""
    host = f"[{where}] " if where else ""
    dry = "(dry run) " if dry_run else ""
    print(f"{dry}+ {host}{argv_text}", file=sys.stderr, flush=True)


@contextmanager
def step(title: str) -> Iterator[None]:
    """A named, timed block (a folded group on GitHub Actions)."""
    start = time.perf_counter()
    if _IN_ACTIONS:
        print(f"::group::{title}", file=sys.stderr, flush=True)
    else:
        print(f"==> {title}", file=sys.stderr, flush=True)
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
            print("::endgroup::", file=sys.stderr, flush=True)
        print(f"    ({title}: {elapsed:.2f}s)", file=sys.stderr, flush=True)
