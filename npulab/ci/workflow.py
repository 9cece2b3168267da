"""Render ``.github/workflows/nightly-npu.yml`` from the hardware matrix, and read pinned actions.

The workflow is rendered once and committed (``invoke ci.render``), so linters and reviewers see
the real file; ``invoke ci.render --check`` and a test fail when the committed file and
``ci/matrix.yaml`` disagree. Actions are pinned by full commit sha with the tag in a comment;
:func:`pinned_actions` reads them back for the drift check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from npulab import paths
from npulab.ci.matrix import Matrix
from npulab.hosts import layout

#: Every PowerShell step of the rendered workflows: no profile, and the execution policy bypassed
#: for this process only (a Windows 11 client's default policy, Restricted, refuses scripts).
PWSH_SHELL = "powershell -NoProfile -ExecutionPolicy Bypass -Command \". '{0}'\""


@dataclass(frozen=True)
class Action:
    """An action pinned by commit: ``uses: owner/repo@<sha> # <tag>``."""

    repo: str
    sha: str
    tag: str

    @property
    def uses(self) -> str:
        return f"{self.repo}@{self.sha} # {self.tag}"


# Node 20 releases: they run on self-hosted runners older than 2.327 (node24 actions do not).
CHECKOUT = Action("actions/checkout", "11bd71901bbe5b1630ceea73d27597364c9af683", "v4.2.2")
SETUP_PYTHON = Action("actions/setup-python", "a26af69be951a213d495a4c3e4e4022e16d87065", "v5.6.0")
UPLOAD_ARTIFACT = Action(
    "actions/upload-artifact", "ea165f8d65b6e75b540449e92b4886f43607fa02", "v4.6.2"
)
DOWNLOAD_ARTIFACT = Action(
    "actions/download-artifact", "d3f86a106a0bac45b974a628896c90dbdf5c8093", "v4.3.0"
)

_USES = re.compile(
    r"^\s*(?:-\s+)?uses:\s*(?P<repo>[\w.-]+/[\w./-]+)@(?P<ref>[^\s#]+)\s*(?:#\s*(?P<tag>\S+))?"
)


def workflows_dir() -> Path:
    return paths.project_root() / ".github" / "workflows"


def nightly_path() -> Path:
    return workflows_dir() / "nightly-npu.yml"


def pinned_actions(workflow_text: str) -> list[Action]:
    """Every ``uses:`` line of a workflow as (repo, ref, tag comment); local actions skipped."""
    found: list[Action] = []
    for line in workflow_text.splitlines():
        match = _USES.match(line)
        if match:
            found.append(Action(match["repo"], match["ref"], match["tag"] or ""))
    return found


def _include_yaml(matrix: Matrix) -> str:
    lines: list[str] = []
    for row in matrix.include():
        labels = ", ".join(row["labels"])
        lines += [
            f"          - machine: {row['machine']}",
            f"            chip: {row['chip']}",
            f"            device: {row['device']}",
            f"            labels: [{labels}]",
        ]
    return "\n".join(lines)


def render_nightly(matrix: Matrix) -> str:
    """The nightly workflow text for ``matrix`` (deterministic: same matrix, same bytes)."""
    template = (Path(__file__).parent.parent / "templates" / "nightly-npu.yml").read_text(
        encoding="utf-8"
    )
    env = layout.load().machine_env()
    env.pop("NPULAB_BUILD_DIR")  # the nightly builds in its workspace (checkout's clean wipes it)
    values = {
        "PWSH_SHELL": yaml.safe_dump(PWSH_SHELL, default_style="'").strip(),
        "LAYOUT_ENV": "\n".join(f"      {k}: {v}" for k, v in env.items()),
        "CRON": matrix.cron,
        "RECIPE": matrix.recipe,
        "JOB_TIMEOUT": str(matrix.job_timeout_minutes),
        "INCLUDE": _include_yaml(matrix),
        "CHECKOUT": CHECKOUT.uses,
        "SETUP_PYTHON": SETUP_PYTHON.uses,
        "UPLOAD_ARTIFACT": UPLOAD_ARTIFACT.uses,
        "DOWNLOAD_ARTIFACT": DOWNLOAD_ARTIFACT.uses,
    }
    return fill(template, values, "nightly template")


def fill(template: str, values: dict[str, str], what: str) -> str:
    """``template`` with each ``@@KEY@@`` replaced; a placeholder left over is an error."""
    text = template
    for key, value in values.items():
        text = text.replace(f"@@{key}@@", value)
    leftover = re.search(r"@@\w+@@", text)
    if leftover:
        msg = f"{what}: unknown placeholder {leftover.group(0)}"
        raise ValueError(msg)
    return text


def matrix_in_workflow(workflow_text: str) -> list[dict[str, object]]:
    """The ``include`` rows of the nightly ``smoke`` job as parsed from the workflow."""
    data = yaml.safe_load(workflow_text)
    rows = data["jobs"]["smoke"]["strategy"]["matrix"]["include"]
    return [dict(row) for row in rows]
