"""Entry points behind ``invoke build`` and ``invoke patches.*`` (the tasks stay a few lines)."""

from __future__ import annotations

import sys
from pathlib import Path

from npulab import log
from npulab.build import executor as build
from npulab.source import patches
from npulab.source import sources
from npulab.errors import ConfigError
from npulab.build.plan import Options, TargetChoice, resolve_target
from npulab.recipe import Recipe, find_recipe, load_recipe


def load(recipe: str) -> Recipe:
    return load_recipe(find_recipe(recipe))


def origin_for(recipe: Recipe, source: str | None, config_source: str | None) -> sources.Origin:
    return sources.resolve_origin(
        recipe.upstream.repo_url, source=source, config_source=config_source
    )


def run_build(
    recipe_name: str,
    *,
    source: str | None = None,
    config_source: str | None = None,
    target: TargetChoice = "auto",
    patch_only: bool = False,
    dry_run: bool = False,
    extra: dict[str, str] | None = None,
    wait: bool = True,
    discard_edits: bool = False,
) -> build.Result | None:
    """``invoke build``: print the plan (dry run) or execute it and print a summary.

    ``wait``: wait for another build of the same directory (else fail at once); ``discard_edits``:
    restage a hand-edited tree/, keeping a copy of the edits."""
    options = Options(target=resolve_target(target), patch_only=patch_only, extra=dict(extra or {}))
    refuse_conflicting(target, options)
    recipe = load(recipe_name)
    origin = origin_for(recipe, source, config_source)
    _check_host(options.extra.get("host"), dry_run=dry_run)
    _refuse_windows_here(options, dry_run=dry_run)
    if dry_run:
        print(build.dry_run(recipe, options, origin))
        print("(dry run: nothing was fetched, checked out or written)")
        return None
    result = build.run(recipe, options, origin, wait=wait, discard_edits=discard_edits)
    print(summary(result))
    return result


def refuse_conflicting(choice: TargetChoice, options: Options) -> None:
    """Options that cannot mean what they say are refused before anything is staged.

    ``--patch-only`` stages only the files the patches touch: a Windows build of that tree
    cannot work, and an upload of it would replace the host's whole ``tree\\``. ``--host`` with
    ``--target stage`` would stage here and silently never reach the host."""
    host = options.extra.get("host", "")
    remote = bool(host) and host not in ("local", "localhost")
    if options.patch_only and (options.target == "windows" or remote):
        what = f"--host {host}" if remote else "the windows target"
        msg = f"--patch-only stages only the patched files; {what} needs the whole tree"
        raise ConfigError(msg, hint="drop --patch-only (or build with --target stage)")
    if remote and choice == "stage":
        msg = f"--host {host} runs the Windows steps there; --target stage never reaches it"
        raise ConfigError(msg, hint=f"invoke build --host {host} (or drop --host to only stage)")


def _refuse_windows_here(options: Options, *, dry_run: bool) -> None:
    """``--target windows`` without a remote host runs the steps on this machine: off Windows
    that cannot work, so say so before staging."""
    remote = options.extra.get("host", "local") not in ("local", "localhost")
    if options.target != "windows" or remote or dry_run or sys.platform == "win32":
        return
    msg = f"--target windows runs the Windows steps on this machine, which is {sys.platform}"
    raise ConfigError(msg, hint="invoke build --host NAME (a lab host over WinRM), or --dry-run")


def _check_host(host: str | None, *, dry_run: bool) -> None:
    """An unknown ``--host`` (or, for a real run, missing credentials) fails before any staging:
    nothing is contacted, only the inventory and the credential sources are read."""
    if not host or host in ("local", "localhost"):
        return
    if dry_run:
        from npulab.hosts import inventory

        inventory.load().get(host)
        return
    from npulab.transport import connect

    connect(host)


def summary(result: build.Result) -> str:
    data = result.manifest
    staged = data.get("staged", {})
    lines = [f"build/{data['recipe']['name']}: {result.out}"]
    if not result.did_work:
        lines.append("nothing changed: verified the source, tree/ and scripts/ (no work redone)")
    for name, status in result.steps.items():
        lines.append(f"  {name:<10} {status}")
    up = data.get("upstream", {})
    lines.append(f"  upstream   {up.get('tag')} = {up.get('commit')} from {up.get('origin')}")
    lines.append(
        f"  tree/      {staged.get('mode')} staging, {staged.get('files')} file(s), "
        f"patched tree {staged.get('tree')}, {len(data.get('patches', []))} patch(es)"
    )
    not_staged = data.get("not_staged", [])
    if not_staged:
        lines.append(f"  not staged {len(not_staged)} file(s) (see manifest.json not_staged)")
    for item in data.get("remaining", []):
        lines.append(f"  remaining: {item}")
    return "\n".join(lines)


def _source(recipe: Recipe, source: str | None, config_source: str | None) -> sources.Source:
    up = recipe.upstream
    return sources.ensure_source(
        repo_url=up.repo_url,
        commit=up.commit,
        tag=up.tag,
        origin=origin_for(recipe, source, config_source),
        expected_tree=up.tree,
    )


def patches_list(recipe_name: str) -> str:
    recipe = load(recipe_name)
    series = patches.load_series(recipe.patches.directory)
    lines = [f"{series.directory}/series: {len(series.patches)} patch(es)"]
    for p in series.patches:
        lines.append(f"  {p.name}  [{p.upstream_status}]  {p.subject}")
        lines.append(f"      fixes: {p.fixes}")
        lines.append(f"      files: {', '.join(p.files)}")
    return "\n".join(lines)


def patches_check(recipe_name: str, source: str | None, config_source: str | None) -> None:
    recipe = load(recipe_name)
    series = patches.load_series(recipe.patches.directory)
    patches.check_series(series, _source(recipe, source, config_source))


def patches_refresh(
    recipe_name: str,
    patch: str,
    tree: str | None,
    files: tuple[str, ...],
    source: str | None,
    config_source: str | None,
) -> bool:
    recipe = load(recipe_name)
    series = patches.load_series(recipe.patches.directory)
    origin_for(recipe, source, config_source)  # a bad --source is named before the tree
    edited = Path(tree) if tree else build.output_dir(recipe) / "tree"
    if not edited.is_dir():
        given = f"--tree {tree}" if tree else f"the staged tree {edited}"
        msg = f"{given}: no such directory, so there is no edit to turn into a patch"
        raise ConfigError(
            msg,
            hint="stage a tree first (invoke build --patch-only), edit its files, then run "
            f"invoke patches.refresh --patch {patch}",
        )
    changed = patches.refresh_patch(
        series, patch, edited, _source(recipe, source, config_source), files
    )
    log.info(f"{series.get(patch).path}: {'refreshed' if changed else 'unchanged'}")
    return changed
