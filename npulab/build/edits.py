"""Hand edits in ``build/<recipe>/tree``: found, never silently thrown away.

docs/build.md tells people to edit ``tree/`` and then run ``invoke patches.refresh``. A build in
between would restage ``tree/`` and lose the edit, so the patch step first lists what differs
from the staged tree (the index of the last staging, ``.npulab/tree.index``, is its stat cache;
a win-lfs fill of a pointer is not an edit), then compares each edited file with the freshly
staged scratch tree: an edit the new staging reproduces (the series now carries it, after
``patches.refresh``) is not lost. Anything else stops the build before ``tree/`` is replaced,
naming the files and the two ways on; ``--discard-edits`` keeps a copy under
``build/<recipe>/edits-<stamp>/`` and goes on.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from npulab import log
from npulab.errors import BuildStepError
from npulab.hashing import sha256_file
from npulab.source import lfs
from npulab.source.gitutil import git

if TYPE_CHECKING:
    from npulab.build.context import Context

SHOWN = 10


def _indexes(ctx: Context) -> list[Path]:
    state = ctx.state
    return [p for p in (state / "tree.index", state / "tree.index.pending") if p.is_file()]


def _compare(ctx: Context, index: Path) -> tuple[str, list[str]]:
    """``(tree hash of the index, files of tree/ that differ from it)``."""
    src = ctx.need_source()
    env = {"git_dir": src.cache, "work_tree": ctx.tree, "index": index}
    git("update-index", "-q", "--refresh", check=False, **env)  # type: ignore[arg-type]
    written = git("write-tree", "--missing-ok", check=False, **env)  # type: ignore[arg-type]
    changed = git("diff-files", "--name-only", "-z", **env).stdout  # type: ignore[arg-type]
    others = git("ls-files", "--others", "-z", **env).stdout  # type: ignore[arg-type]
    modified = [p for p in changed.split("\0") if p and not _lfs_filled(ctx, index, p)]
    found = sorted({*modified, *(p for p in others.split("\0") if p)})
    return (written.stdout.strip() if written.ok else ""), found


def _lfs_filled(ctx: Context, index: Path, rel: str) -> bool:
    """A staged LFS pointer now holding exactly its object (win-lfs on this machine filled it)
    is the same tree, not a modification."""
    src = ctx.need_source()
    staged = git("cat-file", "blob", f":{rel}", git_dir=src.cache, index=index, check=False)
    pointer = lfs.parse_pointer(staged.stdout) if staged.returncode == 0 else None
    if pointer is None:
        return False
    oid, size = pointer
    path = ctx.tree / rel
    if not path.is_file() or path.stat().st_size != size:
        return False
    return sha256_file(path) == oid


def changes(ctx: Context, recorded: str) -> list[str] | None:
    """Files of tree/ that differ from the staged tree whose hash the manifest records; None
    when no index of tree/ holds that tree (tree/ is not what the manifest says)."""
    for index in _indexes(ctx):
        written, found = _compare(ctx, index)
        if written == recorded:
            if index.name.endswith(".pending"):
                # A build died between promoting tree/ and renaming its index: finish that.
                index.replace(ctx.state / "tree.index")
            return found
    return None


def edited(ctx: Context) -> list[str] | None:
    """Files hand-edited in tree/ since it was staged ([] none; None: tree/ has no index, so
    nothing tells what was staged)."""
    if not ctx.tree.is_dir():
        return []
    best: list[str] | None = None
    for index in _indexes(ctx):
        _written, found = _compare(ctx, index)
        if not found:
            return []
        if best is None or len(found) < len(best):
            best = found
    return best


def _all_files(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()
    )


def _same(a: Path, b: Path) -> bool:
    if a.is_symlink() or b.is_symlink():
        return a.is_symlink() and b.is_symlink() and os.readlink(a) == os.readlink(b)
    if not a.exists() or not b.exists():
        return a.exists() == b.exists()
    return filecmp.cmp(a, b, shallow=False)


def guard(ctx: Context, found: list[str] | None, staged: Path) -> None:
    """Refuse to replace tree/ by ``staged`` if that loses an edit (``found``: from
    :func:`edited`, taken before staging); with ``--discard-edits`` keep a copy and go on."""
    if found == [] or not ctx.tree.is_dir():
        return
    candidates = _all_files(ctx.tree) if found is None else found
    lost = [rel for rel in candidates if not _same(ctx.tree / rel, staged / rel)]
    if not lost:
        return
    if ctx.shared.get("discard_edits"):
        kept = keep_copy(ctx, lost)
        log.warning(f"--discard-edits: {len(lost)} edited file(s) of tree/ kept in {kept}")
        return
    shown = ", ".join(lost[:SHOWN]) + (f" (and {len(lost) - SHOWN} more)" if len(lost) > SHOWN else "")
    msg = (
        f"{ctx.tree} has {len(lost)} hand-edited file(s) that staging again would throw away: "
        f"{shown}"
    )
    raise BuildStepError(
        msg,
        hint=(
            "keep them: invoke patches.refresh --patch NAME (the patch that should carry the "
            "edit; --files for a new file), then build again; or throw them away: invoke build "
            f"--discard-edits (keeps a copy under {ctx.out}/edits-<stamp>/)"
        ),
    )


def keep_copy(ctx: Context, files: list[str]) -> Path:
    """Copy ``files`` of tree/ to ``edits-<stamp>/`` (whole, or not at all: staged aside and
    renamed in); a deleted file is listed in ``DELETED``."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{os.getpid()}"
    dest = ctx.out / f"edits-{stamp}"
    tmp = Path(tempfile.mkdtemp(prefix=".edits.new-", dir=ctx.out))
    gone = []
    for rel in files:
        source = ctx.tree / rel
        if not (source.exists() or source.is_symlink()):
            gone.append(rel)
            continue
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, tmp / rel, follow_symlinks=False)
    if gone:
        (tmp / "DELETED").write_text("".join(f"{g}\n" for g in gone), encoding="utf-8")
    tmp.rename(dest)
    return dest
