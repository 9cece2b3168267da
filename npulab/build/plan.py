"""Pure planning: a recipe and options become an ordered tuple of :class:`Step`.

Nothing here touches the disk or runs a process; :mod:`npulab.build.executor` executes a plan. A step
names the inputs it depends on (``recipe``, ``series``, ``upstream.commit``, ``step:patch``, ...):
the executor digests them, and a step whose input digest matches the last successful run (and
whose output still verifies) is reported up to date instead of redone.

The order is fixed here: the staging steps, then (target ``windows``) ``win-upload`` for a remote
host and one step per record of :data:`npulab.windows.steps.WIN_STEPS`, then ``manifest``. Each
``kind`` names its runner in :data:`npulab.build.runners.RUNNERS`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from npulab.recipe import Recipe
from npulab.windows.steps import WIN_STEPS, remote_root

Target = Literal["stage", "windows"]
TargetChoice = Literal["auto", "stage", "windows"]
#: fetch/verify always run (they *are* the verification), and so do the Windows checks
#: (prerequisites, LFS objects, the import check): they read the host as it is now.
#: The rest are skipped when up to date.
ALWAYS_RUN_KINDS = frozenset({"fetch", "verify", "manifest", "wincheck"})


@dataclass(frozen=True, kw_only=True)
class Step:
    """One unit of work in a build plan."""

    name: str
    #: What executes it: a key of ``npulab.build.runners.RUNNERS`` (fetch, verify, patch, render, ...).
    kind: str
    description: str
    #: Input keys whose digests decide whether the step must run again.
    inputs: tuple[str, ...] = ()
    #: Where it runs: ``local`` (this machine) or ``windows`` (the Windows build host).
    where: Literal["local", "windows"] = "local"


@dataclass(frozen=True, kw_only=True)
class Options:
    target: Target = "stage"
    patch_only: bool = False
    #: Free-form settings later planners read (e.g. ``host`` for a remote Windows build).
    extra: dict[str, str] = field(default_factory=dict)


def resolve_target(choice: TargetChoice, *, os_name: str | None = None) -> Target:
    """``auto`` is ``windows`` on a Windows machine and ``stage`` elsewhere."""
    if choice != "auto":
        return choice
    return "windows" if (os_name or os.name) == "nt" else "stage"


def staged_prefixes(
    recipe: Recipe, options: Options, series_files: Sequence[str]
) -> tuple[str, ...]:
    """The upstream paths that go into ``tree/``: the stack's subdir, or only what patches touch."""
    if options.patch_only:
        return tuple(series_files)
    return (recipe.upstream.subdir,)


def plan(recipe: Recipe, options: Options) -> tuple[Step, ...]:
    """The ordered steps of ``invoke build`` for ``recipe``."""
    up = recipe.upstream
    scope = "the files the patch series touches" if options.patch_only else up.subdir
    steps = [
        Step(
            name="fetch",
            kind="fetch",
            description=f"make {up.repo_url} @ {up.commit[:12]} ({up.tag}) available in the "
            "source cache",
            inputs=("upstream.repo_url", "upstream.commit"),
        ),
        Step(
            name="verify",
            kind="verify",
            description=f"verify commit, tree and tag {up.tag}; check {scope} for missing blobs "
            "and LFS pointers",
            inputs=("upstream.commit", "upstream.tree", "upstream.tag", "upstream.lfs", "scope"),
        ),
        Step(
            name="patch",
            kind="patch",
            description=f"check out {scope} and apply patches/{recipe.patches.component}/"
            f"{recipe.patches.version}/series into tree/ (promoted only if every patch applies)",
            inputs=("upstream.commit", "series", "scope"),
        ),
        Step(
            name="render",
            kind="render",
            description="render the Windows scripts into scripts/",
            # The lock is copied into scripts/ and its digest rendered into pip-lock.cmd.
            inputs=("recipe", "step:patch", "env.lock"),
        ),
    ]
    if options.target == "windows":
        steps.extend(windows_steps(recipe, options))
    steps.append(
        Step(
            name="manifest",
            kind="manifest",
            description="write manifest.json (recipe digest, commit, tree hash, patch sha256s, "
            "tool versions, step results)",
        )
    )
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        msg = f"plan has duplicate step names: {names}"
        raise ValueError(msg)
    return tuple(steps)


def windows_steps(recipe: Recipe, options: Options) -> list[Step]:
    """The Windows steps, each depending on its own rendered script (``winscript:<file>``); for
    a remote host, ``win-upload`` first puts ``tree\\`` and ``scripts\\`` there."""
    steps = []
    root = remote_root(recipe, options.extra)
    if root is not None:
        host = options.extra.get("host", "local")
        steps.append(
            Step(
                name="win-upload",
                kind="winupload",
                description=f"upload tree\\ and scripts\\ to {host}:{root} (zip in 8 MiB "
                "parts, sha256-checked, resumable; swapped in whole)",
                inputs=("winupload:content",),
                where="windows",
            )
        )
    for win in WIN_STEPS:
        steps.append(
            Step(
                name=win.name,
                kind=win.kind,
                description=f"scripts\\{win.script}: {win.does}",
                inputs=(f"winscript:{win.script}",),
                where="windows",
            )
        )
    return steps


def format_plan(steps: Sequence[Step]) -> str:
    lines = []
    for i, step in enumerate(steps, 1):
        where = "" if step.where == "local" else f" [{step.where}]"
        lines.append(f"{i:2}. {step.name}{where}: {step.description}")
    return "\n".join(lines)
