"""Git LFS content on the Windows host: which objects the staged tree lacks, and the step that
fetches them.

The staged ``tree\\`` is written by ``git checkout-index`` and has no ``.git``, so ``git lfs pull``
cannot run in it. Instead the render step lists every LFS pointer file the build needs (under
``upstream.lfs.include``, plus every ``upstream.lfs.required`` path) with its oid and size, and
``lfs.ps1`` fetches each object by oid: ``git lfs smudge`` in a scratch repository whose
``origin`` is the recipe's ``repo_url`` (LFS needs no commit for that, only the endpoint). The
scratch repository's ``.git\\lfs\\objects`` is the host's cache, so a re-uploaded tree costs no
download. Each object is written to a ``.npulab-part`` file, checked against its sha256 and size,
and only then renamed over the pointer; a file already holding the right content is left alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from npulab.quoting import quote_pwsh
from npulab.recipe import Recipe
from npulab.source.lfs import is_lfs_pointer, parse_pointer

#: The git arguments that fetch one object (pointer on stdin, content on stdout), run in the
#: scratch repository. Integration tests run exactly these against a local LFS server.
SMUDGE_ARGS = ("lfs", "smudge")
POINTER_VERSION = "version https://git-lfs.github.com/spec/v1"
#: Exit codes of lfs.ps1 (docs/windows-build.md#exit-codes).
EXIT_NO_GIT = 3
EXIT_NOT_FETCHED = 4


@dataclass(frozen=True, kw_only=True)
class LfsObject:
    """One pointer file in the staged tree: where it is and what must replace it."""

    path: str
    oid: str
    size: int
    required: bool

    def pointer_text(self) -> str:
        """The canonical pointer ``git lfs smudge`` reads."""
        return f"{POINTER_VERSION}\noid sha256:{self.oid}\nsize {self.size}\n"


def include_regex(pattern: str) -> re.Pattern[str]:
    """A git-lfs ``--include`` glob as a regex: ``**`` crosses directories, ``*`` and ``?`` do
    not; a pattern naming a directory also matches everything under it."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out).rstrip("/") + "(/.*)?")


def matches(path: str, patterns: Iterable[str]) -> bool:
    return any(include_regex(p).fullmatch(path) for p in patterns)


def _roots(patterns: Sequence[str]) -> list[str]:
    """The fixed directory part of each pattern: only these are walked."""
    roots = set()
    for pattern in patterns:
        fixed = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
        roots.add(fixed.rsplit("/", 1)[0] if "/" in fixed else "")
    return sorted(roots)


def pointer_objects(tree: Path, recipe: Recipe) -> list[LfsObject]:
    """Every LFS pointer file in ``tree`` the Windows build fetches, sorted by path."""
    spec = recipe.upstream.lfs
    required = set(spec.required)
    candidates = set(required)
    for root in _roots(spec.include):
        base = tree / root if root else tree
        if not base.is_dir():
            continue
        for folder, _dirs, files in os.walk(base):
            for name in files:
                rel = (Path(folder) / name).relative_to(tree).as_posix()
                if matches(rel, spec.include):
                    candidates.add(rel)
    found = []
    for rel in sorted(candidates):
        path = tree / rel
        if not is_lfs_pointer(path):
            continue
        pointer = parse_pointer(path.read_text(encoding="utf-8", errors="replace"))
        if pointer is not None:
            oid, size = pointer
            found.append(LfsObject(path=rel, oid=oid, size=size, required=rel in required))
    return found


def _row(obj: LfsObject) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", obj.oid):
        msg = f"{obj.path}: LFS pointer oid {obj.oid!r} is not a sha256"
        raise ValueError(msg)
    required = "$true" if obj.required else "$false"
    return (
        f"  @{{ Path = {quote_pwsh(obj.path.replace('/', chr(92)))}; Oid = '{obj.oid}'; "
        f"Size = [long]{int(obj.size)}; Required = {required} }}"
    )


def objects_table(objects: Sequence[LfsObject]) -> str:
    """The inside of ``lfs.ps1``'s ``$objects = @(...)``: one hashtable line per object, each
    value a PowerShell literal (empty for no objects)."""
    rows = [_row(o) for o in objects]
    return "".join("\n" + row for row in rows) + ("\n" if rows else "")
