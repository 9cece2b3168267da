"""The patch series engine: load, validate, check, apply, refresh.

Format (HELPERS.md "Patch series format"): ``patches/<component>/<version>/series`` lists the
patch files in order; each ``NNNN-short-name.patch`` has a header (``Subject:``,
``Upstream-Status:``, ``Fixes:``), a free description, a line ``---`` and then exactly the output
of ``git diff --no-color --no-ext-diff --no-renames --full-index -U3 <pinned-commit> -- <paths>``.

Apply is ``git apply --check`` then ``git apply`` per patch, never fuzzy. :func:`apply_series`
works on a scratch tree; callers (``stage_patched``) promote it by rename only when every patch
applied, so a failure leaves the previous result intact.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from npulab import log
from npulab.errors import CommandError, PatchError
from npulab.source.gitutil import git
from npulab.source.sources import Source, checkout, list_tree

NAME_RE = re.compile(r"^\d{4}-[a-z0-9][a-z0-9._-]*\.patch$")
STATUSES = ("Inappropriate", "Pending", "Submitted", "Backport")
REQUIRED_HEADERS = ("Subject", "Upstream-Status", "Fixes")
DIFF_ARGS = ("diff", "--no-color", "--no-ext-diff", "--no-renames", "--full-index", "-U3")
_DIFF_PATH_RE = re.compile(r"^diff --git a/(\S+) b/(\S+)$", re.MULTILINE)


@dataclass(frozen=True, kw_only=True)
class Patch:
    name: str
    path: Path
    subject: str
    upstream_status: str
    fixes: str
    #: Everything up to and including the ``---`` line (kept verbatim by refresh).
    header: str
    #: The ``git diff`` part.
    diff: str
    sha256: str
    #: Upstream paths the diff touches (relative to the upstream root).
    files: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Series:
    directory: Path
    patches: tuple[Patch, ...]

    @property
    def files(self) -> tuple[str, ...]:
        """Every upstream path any patch touches (sorted, unique)."""
        return tuple(sorted({f for p in self.patches for f in p.files}))

    def get(self, name: str) -> Patch:
        for patch in self.patches:
            if name in (patch.name, patch.name.removesuffix(".patch")):
                return patch
        known = ", ".join(p.name for p in self.patches) or "(empty series)"
        msg = f"{self.directory}: no patch named {name!r} in the series (known: {known})"
        raise PatchError(msg)


def parse_patch(path: Path) -> Patch:
    """Parse one patch file; a malformed header or diff is a PatchError naming the file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        msg = f"{path}: cannot read: {exc.strerror}"
        raise PatchError(msg) from None
    text = data.decode("utf-8", errors="surrogateescape")
    sep = text.find("\n---\n")
    if not text.startswith(("Subject:",)) or sep < 0:
        msg = f"{path}: expected a header starting with 'Subject:' and a '---' line before the diff"
        raise PatchError(msg, hint="see 'Patch series format' in patches/README.md")
    header, diff = text[: sep + 5], text[sep + 5 :]
    fields: dict[str, str] = {}
    for line in header.split("\n\n", 1)[0].splitlines():
        key, colon, value = line.partition(":")
        if colon and key in REQUIRED_HEADERS:
            if key in fields:
                msg = f"{path}: header {key!r} appears twice"
                raise PatchError(msg)
            fields[key] = value.strip()
    for key in REQUIRED_HEADERS:
        if not fields.get(key):
            msg = (
                f"{path}: header {key!r} is missing or empty (needs {', '.join(REQUIRED_HEADERS)})"
            )
            raise PatchError(msg)
    status_word = fields["Upstream-Status"].split()[0]
    if status_word not in STATUSES:
        msg = (
            f"{path}: Upstream-Status must start with one of {list(STATUSES)}, got {status_word!r}"
        )
        raise PatchError(msg)
    if not diff.startswith("diff --git "):
        msg = f"{path}: the part after '---' must start with 'diff --git' (git diff output)"
        raise PatchError(msg)
    files = tuple(dict.fromkeys(b for _a, b in _DIFF_PATH_RE.findall(diff)))
    return Patch(
        name=path.name,
        path=path,
        subject=fields["Subject"],
        upstream_status=fields["Upstream-Status"],
        fixes=fields["Fixes"],
        header=header,
        diff=diff,
        sha256=hashlib.sha256(data).hexdigest(),
        files=files,
    )


def load_series(directory: Path) -> Series:
    """Load and validate ``directory/series`` and every patch it lists."""
    series_file = directory / "series"
    if not series_file.is_file():
        msg = f"{series_file}: patch series not found"
        raise PatchError(msg, hint=f"create it (one patch file name per line): touch {series_file}")
    names: list[str] = []
    for lineno, raw in enumerate(series_file.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{series_file}:{lineno}"
        if not NAME_RE.fullmatch(line):
            msg = f"{where}: {line!r} is not a patch name like '0001-short-name.patch'"
            raise PatchError(msg)
        if line in names:
            msg = f"{where}: {line} is listed twice"
            raise PatchError(msg)
        if not (directory / line).is_file():
            msg = f"{where}: {line} is listed but {directory / line} does not exist"
            raise PatchError(msg)
        names.append(line)
    unlisted = sorted(p.name for p in directory.glob("*.patch") if p.name not in names)
    if unlisted:
        msg = f"{series_file}: patch file(s) not listed in the series: {', '.join(unlisted)}"
        raise PatchError(msg, hint="add them to the series file or delete them")
    return Series(directory=directory, patches=tuple(parse_patch(directory / n) for n in names))


def refresh_command(patch: Patch) -> str:
    return (
        "make the edit in a tree at the pinned commit (invoke build --patch-only stages one in "
        f"build/<recipe>/tree), then: invoke patches.refresh --patch {patch.name} "
        "--tree <that tree>"
    )


def apply_series(series: Series, tree: Path, source: Source) -> None:
    """Apply every patch in order into ``tree`` (check first, no fuzz). Raises PatchError."""
    for patch in series.patches:
        apply_patch(patch, tree, source)


#: ``git apply -v`` reports a hunk it had to move: ``Hunk #1 succeeded at 19 (offset 2 lines).``
_OFFSET_RE = re.compile(r"Hunk #(\d+) succeeded at (\d+) \(offset (-?\d+) lines?\)")


def apply_patch(patch: Patch, tree: Path, source: Source) -> None:
    """Apply exactly: every hunk at the line the diff names. git would apply a hunk found a few
    lines away (an "offset") silently; a series is generated from the pinned commit, so an
    offset means the patch no longer matches it and is refused like a failed hunk."""
    for check in (True, False):
        args = ["apply", "-v", "--whitespace=nowarn", *(["--check"] if check else []),
                str(patch.path)]  # fmt: skip
        try:
            done = git(
                *args,
                git_dir=source.cache,
                work_tree=tree,
                index=source.cache / "npulab-unused-index",
            )
        except CommandError as exc:
            where = _failure_location(exc.stderr)
            msg = (
                f"patch {patch.name} does not apply to {source.commit} "
                f"(tag {source.tag}){where}: {exc.stderr.strip().splitlines()[-1:] or ''}"
            )
            raise PatchError(msg, hint=refresh_command(patch)) from None
        moved = _OFFSET_RE.findall(done.stderr + done.stdout)
        if check and moved:
            where = ", ".join(f"hunk {n} at line {at} (offset {off})" for n, at, off in moved)
            msg = (
                f"patch {patch.name} does not apply exactly to {source.commit} (tag "
                f"{source.tag}): {where}; npulab applies hunks only where the diff says"
            )
            raise PatchError(msg, hint=refresh_command(patch))


def _failure_location(stderr: str) -> str:
    match = re.search(r"patch failed: (\S+):(\d+)", stderr)
    if match:
        return f" at {match.group(1)} (hunk at line {match.group(2)})"
    match = re.search(r"error: (\S+): (No such file|does not exist|already exists)", stderr)
    if match:
        return f" at {match.group(1)} ({match.group(2)})"
    return ""


def scratch_dir(near: Path, prefix: str) -> Path:
    near.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=near.parent))


def promote(tmp: Path, dest: Path) -> None:
    """Replace ``dest`` by ``tmp`` with renames (the old result is removed only afterwards)."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        dest.rename(old)
    try:
        tmp.rename(dest)
    except BaseException:
        if old is not None:
            old.rename(dest)  # put the previous result back: never leave no result at all
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def stage_patched(
    series: Series,
    source: Source,
    dest: Path,
    prefixes: tuple[str, ...],
    finish: Callable[[Path], None] | None = None,
) -> None:
    """Check out ``prefixes`` of the pinned commit into a fresh tree, apply the series, run
    ``finish(tree)`` on it, then promote it to ``dest``.

    On any failure the scratch tree is deleted and ``dest`` is left as it was.
    """
    tmp = scratch_dir(dest, f".{dest.name}.new-")
    try:
        # No prefixes (a --patch-only staging of an empty series) means an empty tree, not all.
        entries = list_tree(source, prefixes) if prefixes else []
        checkout(source, entries, tmp)
        apply_series(series, tmp, source)
        if finish is not None:
            finish(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    promote(tmp, dest)


def check_series(series: Series, source: Source) -> None:
    """Apply the series to a scratch sparse tree (only the touched paths) and discard it."""
    with tempfile.TemporaryDirectory(prefix="npulab-check-") as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        if series.files:
            checkout(source, list_tree(source, series.files), tree)
        for patch in series.patches:
            apply_patch(patch, tree, source)
            log.info(f"  ok  {patch.name} ({', '.join(patch.files)})")
    if not series.patches:
        log.warning(f"{series.directory}/series lists no patch: builds stage the upstream as is")
    log.info(
        f"{len(series.patches)} patch(es) apply exactly to {source.commit[:12]} "
        "(every hunk at its own line: no offset, no fuzz)"
    )


def diff_against_pinned(source: Source, tree: Path, files: tuple[str, ...]) -> bytes:
    """``git diff`` of ``files`` in ``tree`` against the pinned commit (new files included).

    Written with ``--output`` and read as bytes: CRLF lines in .bat/.cmd files stay exact.
    """
    with tempfile.TemporaryDirectory(prefix="npulab-refresh-") as tmp:
        index = Path(tmp) / "index"
        out = Path(tmp) / "diff"
        git("read-tree", source.commit, git_dir=source.cache, index=index)
        tracked = set(
            git(
                "ls-tree",
                "-r",
                "--name-only",
                "-z",
                source.commit,
                "--",
                *files,
                git_dir=source.cache,
            ).stdout.split("\0")
        )
        new = [f for f in files if f not in tracked and (tree / f).exists()]
        if new:
            git(
                "add",
                "--intent-to-add",
                "--",
                *new,
                git_dir=source.cache,
                work_tree=tree,
                index=index,
            )
        git(
            *DIFF_ARGS,
            f"--output={out}",
            source.commit,
            "--",
            *files,
            git_dir=source.cache,
            work_tree=tree,
            index=index,
        )
        return out.read_bytes()


def refresh_patch(
    series: Series, name: str, tree: Path, source: Source, extra_files: tuple[str, ...] = ()
) -> bool:
    """Regenerate ``name``'s diff from edited ``tree``, keeping its header. True if it changed."""
    patch = series.get(name)
    files = tuple(dict.fromkeys((*patch.files, *extra_files)))
    if not files:
        msg = f"{patch.path}: the patch touches no file; give the files to diff (--files)"
        raise PatchError(msg)
    others = {f for p in series.patches if p.name != patch.name for f in p.files}
    for f in sorted(others & set(files)):
        log.warning(f"{f} is also touched by another patch; its diff will include those edits too")
    diff = diff_against_pinned(source, tree, files)
    if not diff:
        msg = f"{tree}: no difference from {source.commit[:12]} in {', '.join(files)}"
        raise PatchError(msg, hint="edit the files in that tree first, or remove the patch")
    data = patch.header.encode("utf-8", errors="surrogateescape") + diff
    if data == patch.path.read_bytes():
        return False
    tmp = patch.path.with_name(f".{patch.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(patch.path)
    return True
