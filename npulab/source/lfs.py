"""Git LFS content in staged trees: find pointer files, fill them from local LFS stores.

LFS files are ~130-byte pointer blobs in git (``version https://git-lfs.github.com/spec/v1``,
``oid sha256:...``, ``size N``). A staged tree gets real content only from this machine: the
source checkout's own LFS store (after ``git lfs pull`` there), the checkout's file itself, or the
npulab cache, and only when the sha256 and size match the pointer. What stays a pointer is named
with the ``git lfs pull --include ...`` command that fixes it.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from npulab import paths
from npulab.errors import SourceError
from npulab.source.gitutil import git
from npulab.source.sources import LFS_POINTER_MAX, LFS_POINTER_PREFIX, Entry, Origin, Source


def is_lfs_pointer(path: Path) -> bool:
    try:
        if path.stat().st_size > LFS_POINTER_MAX:
            return False
        with path.open("rb") as fh:
            return fh.read(len(LFS_POINTER_PREFIX)) == LFS_POINTER_PREFIX
    except OSError:
        return False


def pointers_in_tree(tree: Path, required: Iterable[str]) -> list[str]:
    """The ``required`` paths that are LFS pointer files (or absent) in ``tree``."""
    return sorted(p for p in required if not (tree / p).exists() or is_lfs_pointer(tree / p))


def pointer_blobs(source: Source, entries: Sequence[Entry]) -> list[str]:
    """The ``entries`` whose blob at the pinned commit is an LFS pointer (one ``git grep``)."""
    sizes = {e.path: e.size for e in entries if not e.missing}
    files = sorted(sizes)
    if not files:
        return []
    result = git(
        "grep",
        "-l",
        "-I",
        "-e",
        r"^version https://git-lfs\.github\.com/spec/v1$",
        source.commit,
        "--",
        *files,
        git_dir=source.cache,
        check=False,
    )
    if result.returncode not in (0, 1):
        msg = f"cannot read {files} at {source.commit}: {result.stderr.strip()}"
        raise SourceError(msg, hint=f"rm -rf {source.cache} and run the build again")
    found = [line.split(":", 1)[1] for line in result.stdout.splitlines() if ":" in line]
    return sorted(f for f in found if (sizes.get(f) or LFS_POINTER_MAX + 1) <= LFS_POINTER_MAX)


def parse_pointer(text: str) -> tuple[str, int] | None:
    """``(oid, size)`` of an LFS pointer text, or None when it is not one."""
    if not text.startswith(LFS_POINTER_PREFIX.decode()):
        return None
    fields = dict(line.split(" ", 1) for line in text.splitlines() if " " in line)
    oid = fields.get("oid", "").removeprefix("sha256:")
    try:
        return oid, int(fields.get("size", ""))
    except ValueError:
        return None


def lfs_candidates(origin: Origin, path: str, oid: str) -> list[Path]:
    """Where real LFS content may already be on this machine: the origin's LFS store, the
    origin checkout's own file, and the npulab cache's LFS store."""
    found = [paths.cache_root() / "lfs" / oid[:2] / oid[2:4] / oid]
    if origin.is_local:
        root = Path(origin.location)
        for gitdir in (root / ".git", root):
            found.append(gitdir / "lfs" / "objects" / oid[:2] / oid[2:4] / oid)
        found.append(root / path)
    return found


def materialize_lfs(origin: Origin, tree: Path, required: Iterable[str]) -> list[str]:
    """Replace pointer files among ``required`` with verified content found locally.

    Returns the paths that were filled. Content is accepted only when its sha256 and size match
    the pointer.
    """
    filled = []
    for rel in required:
        target = tree / rel
        if not is_lfs_pointer(target):
            continue
        pointer = parse_pointer(target.read_text(encoding="utf-8", errors="replace"))
        if pointer is None:
            continue
        oid, size = pointer
        for candidate in lfs_candidates(origin, rel, oid):
            if not candidate.is_file() or candidate.stat().st_size != size:
                continue
            digest = hashlib.sha256()
            with candidate.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            if digest.hexdigest() != oid:
                continue
            tmp = target.with_name(f".{target.name}.lfs-tmp")
            shutil.copyfile(candidate, tmp)
            tmp.replace(target)
            filled.append(rel)
            break
    return filled
