"""Executors of the staging steps: fetch, verify, patch, render, manifest."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from npulab import log
from npulab.source import lfs
from npulab.build import edits, manifest
from npulab.source import patches
from npulab.build import plan
from npulab.source import sources
from npulab.windows import wrappers
from npulab.windows.steps import render_windows
from npulab.build.context import Context, Outcome
from npulab.source.gitutil import git
from npulab.hashing import sha256_file
from npulab.build.plan import Step
from npulab.recipe import Recipe

NOT_STAGED_REASON = "not staged: needs a Windows host with the full source"


def fetch(ctx: Context, step: Step) -> Outcome:
    up = ctx.recipe.upstream
    src = sources.ensure_source(
        repo_url=up.repo_url,
        commit=up.commit,
        tag=up.tag,
        origin=ctx.origin,
        expected_tree=up.tree,
        wait=bool(ctx.shared.get("wait", True)),
    )
    ctx.source = src
    for text in src.warnings:
        ctx.warn(step.name, text)
    ctx.data["upstream"] = {
        "repo_url": up.repo_url,
        "tag": up.tag,
        "commit": src.commit,
        "tree": src.tree,
        "origin": ctx.origin.location,
        "chosen_by": ctx.origin.chosen_by,
        "cache": str(src.cache),
    }
    log.info(f"    {up.tag} = {src.commit} (tree {src.tree}){' fetched' if src.fetched else ''}")
    return Outcome(detail={"fetched": src.fetched})


def verify(ctx: Context, step: Step) -> Outcome:
    src = ctx.need_source()
    spec = ctx.recipe.upstream.lfs
    ctx.entries = sources.list_tree(src, ctx.prefixes) if ctx.prefixes else []
    missing = sources.missing_files(ctx.entries)
    by_path = {e.path: e for e in sources.list_tree(src, spec.required)} if spec.required else {}
    pointers = lfs.pointer_blobs(src, list(by_path.values()))
    absent = [r for r in spec.required if r not in by_path]
    if absent:
        ctx.warn(step.name, f"recipe upstream.lfs.required lists paths not in the tree: {absent}")
    ctx.data["patches"] = [
        {
            "name": p.name,
            "sha256": p.sha256,
            "subject": p.subject,
            "upstream_status": p.upstream_status,
            "fixes": p.fixes,
            "files": list(p.files),
        }
        for p in ctx.series.patches
    ]
    if not ctx.series.patches:
        ctx.warn(
            step.name,
            f"{ctx.series.directory}/series lists no patch: tree/ is the upstream as is",
        )
    not_staged = [{"path": m, "reason": f"missing from {ctx.origin.location}"} for m in missing]
    if ctx.options.target == "windows" and missing:
        raise sources.incomplete_source_error(missing, [], src)
    if missing:
        ctx.warn(
            step.name,
            f"{len(missing)} file(s) missing from the source, {NOT_STAGED_REASON}: "
            + ", ".join(missing),
        )
    ctx.data["not_staged"] = not_staged
    # LFS pointers are resolved after checkout (patch step) from local LFS stores if possible.
    ctx.data["lfs_pointers"] = pointers
    return Outcome(detail={"files": len(ctx.entries), "missing": missing, "lfs_pointers": pointers})


def _index(ctx: Context) -> Path:
    return ctx.state / "tree.index"


def _pending_index(ctx: Context) -> Path:
    """The index of a tree about to be promoted (renamed to tree.index right after)."""
    return ctx.state / "tree.index.pending"


def patch(ctx: Context, step: Step) -> Outcome:
    src = ctx.need_source()
    ctx.state.mkdir(parents=True, exist_ok=True)
    hand_edits = edits.edited(ctx)
    log.info(
        f"    checking out {len(ctx.entries)} file(s), applying {len(ctx.series.patches)} patch(es)"
    )
    spec = ctx.recipe.upstream.lfs
    filled: list[str] = []
    still: list[str] = []
    tree_hash = ""

    def finish(tree: Path) -> None:
        nonlocal tree_hash
        # Runs on the scratch tree: nothing is promoted unless this passes too.
        in_scope = [p for p in spec.required if (tree / p).exists()]
        filled.extend(lfs.materialize_lfs(ctx.origin, tree, in_scope))
        pointers = ctx.data.get("lfs_pointers", [])
        # What stays a pointer is fetched by oid on the Windows host (step win-lfs).
        still.extend(p for p in pointers if p in in_scope and p not in filled)
        _stamp(tree, sources.commit_time(src))
        edits.guard(ctx, hand_edits, tree)
        # The stat cache of the result, made before the tree is promoted (a rename keeps the
        # files' stat data): tree/ and its index change places together, so a crash between
        # them never makes a clean tree look hand-edited.
        tmp_index = ctx.state / f".tree.index.{os.getpid()}"
        tmp_index.unlink(missing_ok=True)
        git("add", "-A", "-f", ".", git_dir=src.cache, work_tree=tree, index=tmp_index)
        tree_hash = git("write-tree", git_dir=src.cache, work_tree=tree, index=tmp_index).stdout
        tmp_index.replace(_pending_index(ctx))

    patches.stage_patched(ctx.series, src, ctx.tree, ctx.prefixes, finish)
    _pending_index(ctx).replace(_index(ctx))
    return Outcome(
        detail={
            "mode": "patch-only" if ctx.options.patch_only else "full",
            "prefixes": list(ctx.prefixes),
            "tree": tree_hash.strip(),
            "files": len(ctx.entries),
            "lfs_filled": filled,
            "lfs_pointers": still,
        }
    )


def _recorded_tree(ctx: Context) -> str | None:
    """The tree hash the last good manifest records for tree/ (None: no record)."""
    detail = ctx.previous.get("steps", {}).get("patch", {}).get("detail", {})
    value = detail.get("tree")
    return value if isinstance(value, str) and value else None


def _stamp(tree: Path, stamp: int) -> None:
    """Give staged files the commit's time (like SOURCE_DATE_EPOCH): reproducible, and older than
    the index written after staging, so git never re-hashes "racily clean" files."""
    nofollow = os.utime in os.supports_follow_symlinks
    for path in tree.rglob("*"):
        if path.is_symlink():
            if nofollow:
                os.utime(path, (stamp, stamp), follow_symlinks=False)
        elif path.is_file():
            os.utime(path, (stamp, stamp))


def patch_intact(ctx: Context, step: Step) -> bool:
    """tree/ holds exactly the tree the manifest records (by tree hash; the index only saves
    re-hashing files whose stat data did not change) and nothing else."""
    ctx.need_source()
    recorded = _recorded_tree(ctx)
    if not ctx.tree.is_dir() or recorded is None:
        return False
    changed = edits.changes(ctx, recorded)
    if changed is None:
        log.info("    tree/ does not match the tree the manifest records: staging it again")
        return False
    if changed:
        log.info(f"    tree/ was modified since the last build ({len(changed)} file(s))")
        return False
    return True


def render(ctx: Context, step: Step) -> Outcome:
    tmp = patches.scratch_dir(ctx.scripts, f".{ctx.scripts.name}.new-")
    try:
        # The wrappers (python.cmd, pip.cmd, smoke.cmd), then the Windows step scripts.
        wrappers.render_staged(ctx.recipe, ctx.tree, tmp)
        render_windows(ctx.recipe, ctx.tree, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    patches.promote(tmp, ctx.scripts)
    return Outcome(detail={"files": _digests(ctx.scripts)})


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def render_intact(ctx: Context, step: Step) -> bool:
    before = ctx.previous.get("steps", {}).get(step.name, {}).get("detail", {})
    return ctx.scripts.is_dir() and _digests(ctx.scripts) == before.get("files")


def write_manifest(ctx: Context, step: Step) -> Outcome:
    steps = ctx.data["steps"]
    staged = steps.get("patch", {}).get("detail", {})
    ctx.data["staged"] = staged
    pointers = staged.get("lfs_pointers", [])
    if pointers:
        ctx.warn(
            "patch",
            f"{len(pointers)} Git LFS pointer file(s) staged without content (the Windows "
            "build fetches them by oid in step win-lfs; or give a source with LFS content: "
            f"{sources.lfs_fix_command(pointers)})",
        )
    for p in pointers:
        ctx.data.setdefault("not_staged", []).append({"path": p, "reason": "Git LFS pointer"})
    remaining = []
    if ctx.options.target == "stage":
        remaining.append(
            "the Windows build (conda env, setup.bat, pip install ops\\cpp, LFS content, smoke) "
            "needs a Windows host: run `invoke build` there, or `--target windows` with a host"
        )
    ctx.data["remaining"] = remaining
    ctx.data["finished_at"] = manifest.now()
    ctx.data["steps"][step.name] = {"status": "done", "finished_at": ctx.data["finished_at"]}
    manifest.save(ctx.out, ctx.data)
    return Outcome()
