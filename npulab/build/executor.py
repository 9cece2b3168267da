"""The one executor of build plans (:mod:`npulab.build.plan`).

Output: ``build/<recipe>/`` with ``tree/`` (patched upstream), ``scripts/`` (rendered scripts) and
``manifest.json``. Each step's inputs are digested; a step whose digest matches the last good
run and whose output still verifies is reported "up to date" and not redone. ``fetch`` and
``verify`` always run: they are the verification.

Step executors come from :data:`npulab.build.runners.RUNNERS`, keyed by ``Step.kind`` (built
once there from :mod:`npulab.build.stage` and :mod:`npulab.windows.run`; nothing registers at
import or run time).
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from npulab import __version__, log, paths
from npulab.build import scratch
from npulab.source import dirlock, gitutil
from npulab.build import manifest
from npulab.errors import BuildStepError, NpulabError
from npulab.source.patches import Series, load_series
from npulab.build.plan import ALWAYS_RUN_KINDS, Options, Step, format_plan, plan, staged_prefixes
from npulab.build.context import Context, Outcome, Runner
from npulab.build.runners import INPUTS, RUNNERS
from npulab.recipe import Recipe
from npulab.source.sources import Origin
from npulab.transport.base import Transport

__all__ = ["RUNNERS", "Context", "Outcome", "Result", "Runner", "dry_run", "output_dir", "run"]


#: Steps that run every time (verification and the manifest): not "work" in the summary.
VERIFY_ONLY = frozenset({"fetch", "verify", "manifest"})


@dataclass(frozen=True, kw_only=True)
class Result:
    out: Path
    steps: dict[str, str]
    manifest: dict[str, Any]

    @property
    def did_work(self) -> bool:
        return any(s == "done" for n, s in self.steps.items() if n not in VERIFY_ONLY)


def series_digest(series: Series) -> str:
    return _sha([[p.name, p.sha256] for p in series.patches])  # order matters


def _sha(value: Any) -> str:
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def input_value(ctx: Context, key: str) -> Any:
    up = ctx.recipe.upstream
    values: dict[str, Callable[[], Any]] = {
        "recipe": lambda: ctx.recipe.digest,
        "upstream.repo_url": lambda: up.repo_url,
        "upstream.commit": lambda: up.commit,
        "upstream.tree": lambda: up.tree,
        "upstream.tag": lambda: up.tag,
        "upstream.lfs": lambda: [list(up.lfs.required), list(up.lfs.include)],
        "series": lambda: series_digest(ctx.series),
        "scope": lambda: [ctx.options.target, list(ctx.prefixes)],
        "tool.git": gitutil.version,
        "env.name": lambda: ctx.recipe.env.name,
        "env.env_file": lambda: ctx.recipe.env.env_file,
        "env.lock": lambda: _file_sha(paths.project_root() / ctx.recipe.env.lock),
    }
    if key.startswith("step:"):
        return ctx.digests.get(key[5:])
    for prefix, provider in INPUTS.items():
        if key.startswith(prefix):
            return provider(ctx, key)
    if key in values:
        return values[key]()
    if key in ctx.options.extra:
        return ctx.options.extra[key]
    msg = f"internal: step input {key!r} is unknown (known: {sorted(values)})"
    raise BuildStepError(msg)


def _file_sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def step_digest(ctx: Context, step: Step) -> str:
    inputs = {k: input_value(ctx, k) for k in step.inputs}
    return _sha({"name": step.name, "kind": step.kind, "inputs": inputs})


def output_dir(recipe: Recipe) -> Path:
    return paths.build_root() / recipe.name


def dry_run(recipe: Recipe, options: Options, origin: Origin) -> str:
    """The plan as text; touches nothing."""
    steps = plan(recipe, options)
    head = (
        f"plan for {recipe.name} (target {options.target}"
        f"{', patch-only' if options.patch_only else ''}), source {origin.location} "
        f"(from {origin.chosen_by}), output {output_dir(recipe)}"
    )
    return head + "\n" + format_plan(steps)


def run(
    recipe: Recipe,
    options: Options,
    origin: Origin,
    *,
    wait: bool = True,
    discard_edits: bool = False,
    transport: Transport | None = None,
) -> Result:
    """Execute the plan for ``recipe``; returns per-step statuses (done / up to date).

    ``transport``: the Windows build host (its steps run through it). The whole run holds ``build/<recipe>``'s lock (``wait``: wait for another build of it, else
    fail at once); leftovers of killed builds are swept first."""
    out = output_dir(recipe)
    out.mkdir(parents=True, exist_ok=True)
    with dirlock.locked(out, "build", wait=wait, what=f"build directory {out}"):
        scratch.sweep_build(out)
        return _run_locked(
            recipe,
            options,
            origin,
            out,
            wait=wait,
            discard_edits=discard_edits,
            transport=transport,
        )


def _run_locked(
    recipe: Recipe,
    options: Options,
    origin: Origin,
    out: Path,
    *,
    wait: bool,
    discard_edits: bool,
    transport: Transport | None,
) -> Result:
    steps = plan(recipe, options)
    series = load_series(recipe.patches.directory)
    previous = manifest.load(out)
    data: dict[str, Any] = {
        "recipe": {"name": recipe.name, "path": recipe.source, "digest": recipe.digest},
        "target": options.target,
        "tools": {
            "git": gitutil.version(),
            "python": platform.python_version(),
            "npulab": __version__,
        },
        "host": {"platform": sys.platform, "machine": platform.machine()},
        "started_at": manifest.now(),
        "warnings": [],
        "steps": {},
    }
    ctx = Context(
        recipe=recipe,
        options=options,
        origin=origin,
        out=out,
        series=series,
        previous=previous,
        data=data,
        plan=steps,
        transport=transport,
    )
    ctx.shared["wait"] = wait
    ctx.shared["discard_edits"] = discard_edits
    statuses: dict[str, str] = {}
    for step in steps:
        runner = RUNNERS.get(step.kind)
        if runner is None:
            msg = f"step {step.name}: no executor for kind {step.kind!r} on this machine"
            raise BuildStepError(msg, hint="run with --target stage, or on the Windows host")
        statuses[step.name] = _run_step(ctx, step, runner)
    return Result(out=out, steps=statuses, manifest=ctx.data)


def _run_step(ctx: Context, step: Step, runner: Runner) -> str:
    digest = step_digest(ctx, step)
    ctx.digests[step.name] = digest
    before = ctx.previous.get("steps", {}).get(step.name, {})
    started = manifest.now()
    t0 = time.perf_counter()
    if (
        step.kind not in ALWAYS_RUN_KINDS
        and before.get("status") in ("done", "up-to-date")
        and before.get("digest") == digest
        and (runner.intact is None or runner.intact(ctx, step))
    ):
        log.info(f"==> {step.name}: up to date")
        ctx.data["steps"][step.name] = {**before, "status": "up-to-date", "checked_at": started}
        return "up-to-date"
    try:
        with log.step(f"{step.name}: {step.description}"):
            outcome = runner.run(ctx, step)
    except NpulabError:
        ctx.data["steps"][step.name] = {
            "status": "failed",
            "digest": digest,
            "started_at": started,
            "finished_at": manifest.now(),
        }
        if ctx.out.exists():
            # Keep every step that succeeded so far so the next run resumes after them; the
            # failed step keeps its last good record unless that had the same inputs (then it
            # would wrongly count as up to date).
            steps = {**ctx.previous.get("steps", {}), **ctx.data["steps"]}
            if before and before.get("digest") != digest:
                steps[step.name] = before
            manifest.save(ctx.out, {**ctx.previous, "steps": steps, "last_failure": ctx.data})
        raise
    ctx.data["steps"][step.name] = {
        "status": "done",
        "digest": digest,
        "started_at": started,
        "finished_at": manifest.now(),
        "seconds": round(time.perf_counter() - t0, 3),
        "detail": outcome.detail,
    }
    return "done"
