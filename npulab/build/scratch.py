"""Leftovers of interrupted builds in ``build/<recipe>/``, swept at the next build's start.

A build writes every result beside its final place and renames it in (``.tree.new-*``,
``.scripts.new-*``, ``.manifest.json.*``, ``.npulab/tree.index.new``), and moves the previous
result aside while swapping (``.tree.old-*``, ``.scripts.old-*``). A kill -9 or a failure can
leave any of them behind; only the next build of the same directory, holding its lock, knows
that none of them is still being written and removes them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from npulab import log

PATTERNS = (
    ".tree.new-*",
    ".tree.old-*",
    ".scripts.new-*",
    ".scripts.old-*",
    ".manifest.json.*",
    ".npulab/tree.index.new",
    ".npulab/.tree.index.*",
    ".edits.new-*",
)


def leftovers(out: Path) -> list[Path]:
    return sorted(p for pattern in PATTERNS for p in out.glob(pattern))


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_dir())


def sweep_build(out: Path) -> list[Path]:
    """Remove the leftovers in ``out`` (call with its build lock held); returns what went."""
    found = leftovers(out)
    if not found:
        return []
    total = sum(_size(p) for p in found)
    for path in found:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    names = ", ".join(p.name for p in found[:5]) + (" ..." if len(found) > 5 else "")
    log.info(
        f"swept {len(found)} leftover(s) of an interrupted build in {out} "
        f"({total / 1e6:.1f} MB: {names})"
    )
    return found
