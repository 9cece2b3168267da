"""Pinned upstream sources: fetch into a content-addressed cache, verify, check out.

The cache is one bare repository per upstream URL, ``cache_root()/sources/<url-hash>/``. It is
filled from the recipe's ``upstream.repo_url`` or from a local mirror/checkout (``--source``,
``NPULAB_UPSTREAM``, invoke.yaml ``npulab.source``). From a local path only the pinned commit's
own objects are copied (``git pack-objects``), which also works on *partial* mirrors that lack
some blobs: the missing blobs are recorded, not fatal, and staging names them.

Verification before use: the commit exists and is a commit, its tree is the pinned tree, the tag
still resolves to the pinned commit at the origin (a moved tag is refused with both shas), and
for a full build no blob is missing and no required LFS file is a pointer.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from npulab import log, paths
from npulab.errors import CommandError, SourceError
from npulab.source import dirlock
from npulab.source.gitutil import git

LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1\n"
#: Pointer files are ~130 bytes; anything far larger is real content.
LFS_POINTER_MAX = 1024
ENV_VAR = "NPULAB_UPSTREAM"
FETCH_TIMEOUT_S = 1800.0


def mirror_hint(repo_url: str = "<repo_url>") -> str:
    return (
        "give a local mirror or checkout of the upstream: `invoke build --source PATH`, "
        f"or `export {ENV_VAR}=PATH`, or set `npulab.source: PATH` in invoke.yaml "
        f"(make one on a machine with network: `git clone --mirror {repo_url} PATH`)"
    )


@dataclass(frozen=True, kw_only=True)
class Origin:
    """Where upstream objects come from, and which setting chose it."""

    location: str
    chosen_by: str

    @property
    def is_local(self) -> bool:
        return "://" not in self.location and not self.location.startswith("git@")


def resolve_origin(
    repo_url: str,
    *,
    source: str | os.PathLike[str] | None = None,
    config_source: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Origin:
    """``--source`` > ``NPULAB_UPSTREAM`` > invoke.yaml ``npulab.source`` > recipe repo_url."""
    env = os.environ if environ is None else environ
    if source:
        return Origin(location=_local(source, "--source"), chosen_by="--source")
    if env.get(ENV_VAR):
        return Origin(location=_local(env[ENV_VAR], ENV_VAR), chosen_by=ENV_VAR)
    if config_source:
        return Origin(location=_local(config_source, "npulab.source"), chosen_by="npulab.source")
    return Origin(location=repo_url, chosen_by="recipe upstream.repo_url")


def _local(value: str | os.PathLike[str], setting: str) -> str:
    text = os.fspath(value)
    if "://" in text or text.startswith("git@"):
        return text
    path = Path(text).expanduser()
    if not path.is_dir():
        msg = f"{setting}: upstream mirror {path} does not exist or is not a directory"
        raise SourceError(msg, hint=mirror_hint())
    return str(path.resolve())


def cache_dir_for(repo_url: str) -> Path:
    """The bare cache repository of one upstream URL (normalised: no trailing ``.git`` or /)."""
    key = repo_url.strip().rstrip("/").removesuffix(".git").lower()
    return paths.cache_root() / "sources" / hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One file of the pinned tree. ``size`` is None when the blob is missing from the cache."""

    mode: str
    sha: str
    path: str
    size: int | None

    @property
    def missing(self) -> bool:
        return self.size is None


@dataclass(frozen=True, kw_only=True)
class Source:
    """A verified pinned commit in the cache."""

    repo_url: str
    cache: Path
    commit: str
    tree: str
    tag: str
    origin: Origin
    #: True when this call copied objects into the cache (a cold fetch).
    fetched: bool
    warnings: tuple[str, ...] = field(default=())


def ensure_source(
    *,
    repo_url: str,
    commit: str,
    tag: str,
    origin: Origin,
    expected_tree: str | None = None,
    wait: bool = True,
) -> Source:
    """Make ``commit`` available in the cache and verify commit, tree and tag.

    Under the cache's lock (``wait``: wait for another build using it, else fail at once). A
    commit counts as present only with its completion marker, written last, after its objects
    and the ``shallow`` entry: an entry a killed fetch left half done is fetched again."""
    cache = cache_dir_for(repo_url)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with dirlock.locked(
        cache.parent, f"source-{cache.name}", wait=wait, what=f"source cache {cache}"
    ):
        _sweep_cache(cache)
        fetched = _ensure_commit(cache, origin, commit)
    tree = git("rev-parse", f"{commit}^{{tree}}", git_dir=cache).stdout.strip()
    if expected_tree is not None and tree != expected_tree:
        msg = (
            f"commit {commit} has tree {tree}, but the recipe pins tree {expected_tree}: the "
            "recipe's upstream.tree does not belong to its upstream.commit"
        )
        raise SourceError(
            msg,
            hint=f"if the commit is the intended one, set upstream.tree: {tree} in the recipe "
            f"(git rev-parse {commit}^{{tree}}); else restore the pinned commit",
        )
    warnings = verify_tag(origin, tag, commit)
    return Source(
        repo_url=repo_url,
        cache=cache,
        commit=commit,
        tree=tree,
        tag=tag,
        origin=origin,
        fetched=fetched,
        warnings=tuple(warnings),
    )


def _marker(cache: Path, commit: str) -> Path:
    return cache / "npulab-complete" / commit


def _ensure_commit(cache: Path, origin: Origin, commit: str) -> bool:
    """True when objects were copied. Called under the cache lock."""
    if not (cache / "HEAD").exists():
        tmp = Path(tempfile.mkdtemp(prefix=f".init-{cache.name}-", dir=cache.parent))
        git("init", "--quiet", "--bare", str(tmp))
        tmp.rename(cache)
    if _marker(cache, commit).is_file():
        return False
    if has_commit(cache, commit):
        log.info(
            f"source cache {cache}: {commit[:12]} has no completion marker (an earlier fetch "
            "was interrupted): fetching it again"
        )
    for attempt in (1, 2):
        _fetch(cache, origin, commit)
        if not has_commit(cache, commit):
            msg = f"{origin.location} does not have the pinned commit {commit}"
            raise SourceError(msg, hint=_missing_commit_hint(origin))
        if _trees_readable(cache, commit):
            break
        if attempt == 2:
            msg = f"source cache {cache}: the trees of {commit} are unreadable after a fresh fetch"
            raise SourceError(msg, hint=f"check the mirror: git -C {origin.location} fsck")
        log.info(f"source cache {cache}: unreadable objects for {commit[:12]}; rebuilding it")
        _discard(cache)
        tmp = Path(tempfile.mkdtemp(prefix=f".init-{cache.name}-", dir=cache.parent))
        git("init", "--quiet", "--bare", str(tmp))
        tmp.rename(cache)
    _record_shallow(cache, commit)
    atomic_write(
        _marker(cache, commit), git("rev-parse", f"{commit}^{{tree}}", git_dir=cache).stdout
    )
    return True


def _trees_readable(cache: Path, commit: str) -> bool:
    """Every tree of ``commit`` can be read (blobs may be missing from a partial mirror)."""
    return git("ls-tree", "-r", "-t", "-z", commit, git_dir=cache, check=False).ok


def _discard(path: Path) -> None:
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
    path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def _sweep_cache(cache: Path) -> None:
    """Remove what killed fetches left: partial packs, temp objects and files, init dirs.
    Called under the cache lock, so nothing swept is still being written."""
    parent = cache.parent
    leftovers = [*parent.glob(f".init-{cache.name}-*"), *parent.glob(f".trash-{cache.name}-*")]
    if cache.is_dir():
        leftovers += [
            *(cache / "objects" / "pack").glob("tmp_*"),
            *(cache / "objects").glob("*/tmp_obj_*"),
            *cache.glob("shallow.npulab-*"),
            *(cache / "npulab-complete").glob(".*.tmp"),
        ]
        leftovers += _packs_without_index(cache)
    for path in leftovers:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if leftovers:
        log.info(f"source cache {cache}: swept {len(leftovers)} leftover(s) of interrupted fetches")


def _packs_without_index(cache: Path) -> list[Path]:
    pack_dir = cache / "objects" / "pack"
    return [p for p in pack_dir.glob("*.pack") if not p.with_suffix(".idx").is_file()]


def _missing_commit_hint(origin: Origin) -> str:
    if origin.is_local and not _is_git_repo(Path(origin.location)):
        return (
            f"{origin.location} is not a git repository: give a mirror or checkout "
            f"(git clone --mirror <repo_url> {origin.location})"
        )
    return f"update the mirror: git -C {origin.location} fetch --tags"


def _is_git_repo(path: Path) -> bool:
    return git("rev-parse", "--git-dir", cwd=path, check=False).ok


def atomic_write(path: Path, text: str) -> None:
    """``path`` appears whole or not at all (temp file in the same directory, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def has_commit(cache: Path, commit: str) -> bool:
    result = git("cat-file", "-t", commit, git_dir=cache, check=False)
    return result.ok and result.stdout.strip() == "commit"


def _fetch(cache: Path, origin: Origin, commit: str) -> None:
    if origin.is_local:
        _copy_commit_objects(cache, Path(origin.location), commit)
        return
    log.info(f"fetching {commit} from {origin.location} (chosen by {origin.chosen_by})")
    try:
        # Not captured: git's own progress meter shows on the terminal for this long step.
        git(
            "fetch",
            "--progress",
            "--no-tags",
            "--depth=1",
            origin.location,
            commit,
            git_dir=cache,
            timeout=FETCH_TIMEOUT_S,
            quiet=False,
            capture=False,
        )
    except CommandError as exc:
        msg = (
            f"cannot fetch pinned commit {commit} from {origin.location} (offline? git exited "
            f"with {exc.returncode}; its message is above)"
        )
        raise SourceError(msg, hint=mirror_hint(origin.location)) from None


def _copy_commit_objects(cache: Path, mirror: Path, commit: str) -> None:
    """Copy the commit and its tree's objects from a local (possibly partial) repository."""
    found = git("cat-file", "-t", commit, cwd=mirror, check=False)
    if not found.ok or found.stdout.strip() != "commit":
        msg = f"mirror {mirror} does not have the pinned commit {commit}"
        raise SourceError(
            msg, hint=_missing_commit_hint(Origin(location=str(mirror), chosen_by=""))
        )
    log.info(f"copying {commit[:12]} from {mirror} into the source cache")
    listing = git(
        "rev-list", "--objects", "--missing=print", "--no-walk", commit, cwd=mirror
    ).stdout
    present = [line.split()[0] for line in listing.splitlines() if line and line[0] != "?"]
    pack_dir = cache / "objects" / "pack"
    pack_dir.mkdir(parents=True, exist_ok=True)
    git(
        "pack-objects",
        "--quiet",
        str(pack_dir / "npulab"),
        cwd=mirror,
        input_text="\n".join(present) + "\n",
        timeout=FETCH_TIMEOUT_S,
    )


def _record_shallow(cache: Path, commit: str) -> None:
    """Only this commit's objects were copied: record it as shallow so git does not look for
    its parents. (A ``git fetch --depth=1`` has written it already.)"""
    shallow = cache / "shallow"
    existing = shallow.read_text().split() if shallow.exists() else []
    if commit not in existing:
        tmp = shallow.with_name(f"shallow.npulab-{os.getpid()}")
        tmp.write_text("".join(f"{c}\n" for c in [*existing, commit]))
        tmp.replace(shallow)


def verify_tag(origin: Origin, tag: str, commit: str) -> list[str]:
    """Refuse a tag that no longer points at ``commit``; return warnings (unverifiable tag)."""
    ref = f"refs/tags/{tag}"
    if origin.is_local:
        result = git(
            "rev-parse",
            "--verify",
            "--quiet",
            f"{ref}^{{commit}}",
            cwd=Path(origin.location),
            check=False,
        )
        resolved = result.stdout.strip() if result.ok else None
    else:
        result = git("ls-remote", origin.location, ref, f"{ref}^{{}}", check=False, timeout=15)
        if not result.ok:
            return [f"could not check tag {tag} at {origin.location} (offline?); commit is pinned"]
        lines: dict[str, str] = {}
        for line in result.stdout.splitlines():
            sha, _, name = line.partition("\t")
            lines[name] = sha
        resolved = lines.get(f"{ref}^{{}}") or lines.get(ref)
    if resolved is None:
        msg = f"tag {tag} does not exist at {origin.location} (pinned commit {commit})"
        raise SourceError(
            msg, hint=f"check the recipe's upstream.tag, or git -C {origin.location} fetch --tags"
        )
    if resolved != commit:
        msg = (
            f"tag {tag} moved: {origin.location} resolves it to {resolved}, "
            f"but the recipe pins {commit}"
        )
        raise SourceError(
            msg,
            hint="review the upstream change; if intended, update upstream.commit in the recipe "
            "and refresh the patches (invoke patches.check)",
        )
    return []


def list_tree(source: Source, prefixes: Sequence[str] = ()) -> list[Entry]:
    """Files of the pinned tree under ``prefixes`` (all when empty), with sizes or missing."""
    out = git("ls-tree", "-r", "-z", source.commit, "--", *prefixes, git_dir=source.cache).stdout
    raw = []
    for record in out.split("\0"):
        if not record:
            continue
        meta, path = record.split("\t", 1)
        mode, kind, sha = meta.split()
        if kind == "blob":
            raw.append((mode, sha, path))
    if not raw:
        return []
    check = git(
        "cat-file",
        "--batch-check=%(objectname) %(objecttype) %(objectsize)",
        git_dir=source.cache,
        input_text="".join(f"{sha}\n" for _, sha, _ in raw),
    ).stdout.splitlines()
    entries = []
    for (mode, sha, path), line in zip(raw, check, strict=True):
        parts = line.split()
        size = int(parts[2]) if len(parts) == 3 and parts[1] == "blob" else None
        entries.append(Entry(mode=mode, sha=sha, path=path, size=size))
    return entries


def missing_files(entries: Iterable[Entry]) -> list[str]:
    return sorted(e.path for e in entries if e.missing)


def checkout(source: Source, entries: Sequence[Entry], dest: Path) -> None:
    """Write ``entries`` (present blobs only) of the pinned commit into empty dir ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    present = [e for e in entries if not e.missing]
    if not present:
        return
    with tempfile.TemporaryDirectory(prefix="npulab-index-") as tmp:
        index = Path(tmp) / "index"
        info = "".join(f"{e.mode} {e.sha}\t{e.path}\n" for e in present)
        git(
            "update-index",
            "--add",
            "--index-info",
            git_dir=source.cache,
            index=index,
            input_text=info,
        )
        git(
            "checkout-index",
            "--all",
            "--force",
            git_dir=source.cache,
            work_tree=dest,
            index=index,
            timeout=FETCH_TIMEOUT_S,
        )


def lfs_fix_command(files: Sequence[str]) -> str:
    return f'git lfs pull --include "{",".join(files)}"'


def incomplete_source_error(
    missing: Sequence[str], pointers: Sequence[str], source: Source
) -> SourceError:
    """One error naming every missing blob and LFS pointer, with the commands that fix them."""
    parts = []
    fixes = []
    if missing:
        parts.append(
            f"{len(missing)} file(s) missing from the source {source.origin.location}: "
            + ", ".join(missing)
        )
        fixes.append(
            f"use a complete clone: git clone --mirror {source.repo_url} PATH, then --source PATH"
        )
    if pointers:
        parts.append(
            f"{len(pointers)} LFS pointer file(s) where content is required: " + ", ".join(pointers)
        )
        fixes.append(f"in a checkout with git-lfs: {lfs_fix_command(pointers)}")
    return SourceError("incomplete source: " + "; ".join(parts), hint="; ".join(fixes))


def commit_time(source: Source) -> int:
    """The pinned commit's committer time (seconds since the epoch)."""
    out = git("show", "-s", "--format=%ct", source.commit, git_dir=source.cache).stdout
    return int(out.strip())
