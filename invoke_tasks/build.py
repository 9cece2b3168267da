"""`invoke build`: stage (and on Windows, build) the patched RyzenAI-SW 1.1 stack."""

from __future__ import annotations

from invoke import task
from invoke.context import Context

from invoke_tasks._common import config_value, fails_cleanly, is_dry_run


@task(
    help={
        "recipe": "recipe name or path (default: npulab.recipe in invoke.yaml)",
        "source": "local mirror or checkout of the upstream (else NPULAB_UPSTREAM, "
        "npulab.source, the recipe's repo_url)",
        "dry_run": "print the plan and touch nothing",
        "patch_only": "stage only the files the patch series touches (works on partial mirrors)",
        "target": "auto (windows on Windows, else stage), stage, or windows",
        "host": "run the Windows steps on this inventory host over WinRM (implies --target "
        "windows)",
        "remote_root": "build directory on --host (default C:\\npulab\\build\\<recipe>)",
        "wait": "wait for another build holding build/<recipe> or the source cache, saying who "
        "holds it (default); --no-wait fails at once",
        "discard_edits": "restage a hand-edited tree/ anyway; a copy of the edited files goes to "
        "build/<recipe>/edits-<stamp>/",
    }
)
@fails_cleanly
def build(
    c: Context,
    recipe: str = "",
    source: str = "",
    dry_run: bool = False,
    patch_only: bool = False,
    target: str = "auto",
    host: str = "",
    remote_root: str = "",
    wait: bool = True,
    discard_edits: bool = False,
) -> None:
    """Fetch, verify, patch and render the stack into build/<recipe>/ (Windows: build it)."""
    from npulab.build.workflow import run_build
    from npulab.errors import ConfigError

    if target not in ("auto", "stage", "windows"):
        msg = f"--target: expected auto, stage or windows, got {target!r}"
        raise ConfigError(msg)
    if host and target == "auto":
        target = "windows"
    run_build(
        recipe or config_value(c, "recipe"),
        source=source or None,
        config_source=config_value(c, "source"),
        target=target,  # type: ignore[arg-type]
        patch_only=patch_only,
        dry_run=is_dry_run(c, dry_run),
        extra={
            **({"host": host} if host else {}),
            **({"remote_root": remote_root} if remote_root else {}),
        },
        wait=wait,
        discard_edits=discard_edits,
    )


ROOT_TASKS = [build]
