"""The hosted Windows end-to-end job (``ci/windows-e2e.yaml``): its data and its workflow.

A GitHub-hosted Windows runner is a lab machine without the NPU. The job provisions it with the
Ansible roles and builds the stack on it over WinRM from a Linux controller on the same machine
(WSL 1), and says for every step what it expected and what happened. The data file lists the
controller steps with their expectations; :func:`render` turns it into
``.github/workflows/windows-e2e.yml`` (committed, checked like the nightly) and
:mod:`npulab.ci.e2e_step` checks each step against the same data on the runner.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from npulab import paths
from npulab.ci.matrix import Chip, check_cron
from npulab.ci.workflow import CHECKOUT, UPLOAD_ARTIFACT, Action, fill, workflows_dir
from npulab.errors import ConfigError
from npulab.schema import check_nonempty, check_positive, check_sha256, load_file

# node24: runs on GitHub's hosted runners (this job never runs on the lab's self-hosted ones).
SETUP_WSL = Action("Vampire/setup-wsl", "d1da7f2c0322a5ee4f24975344f67fc0f5baf364", "v7.0.0")
#: What a controller step's ``run:`` line is: the checker, the step id, then the command.
STEP_RUNNER = "python -m npulab.ci.e2e_step"
#: The job's own inventory (written by ``invoke ci.e2e-pins``), relative to the controller's
#: checkout.
INVENTORY = "e2e/inventory/hosts.yml"
OUT_DIR = "e2e"
_ID = re.compile(r"^[a-z][a-z0-9-]*$")
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
StepStatus = Literal["done", "up-to-date", "failed"]


def _check_id(value: str) -> None:
    if not _ID.fullmatch(value):
        msg = f"a lowercase id of letters, digits and '-', got {value!r}"
        raise ValueError(msg)


def _check_host(value: str) -> None:
    if not _HOST.fullmatch(value):
        msg = f"an inventory host name, got {value!r}"
        raise ValueError(msg)


def _check_run(value: str) -> None:
    try:
        argv = shlex.split(value)
    except ValueError as exc:
        msg = f"a shell command line ({exc})"
        raise ValueError(msg) from None
    if not argv or argv[0] != "invoke":
        msg = f"an invoke task as a lab owner types it, got {value!r}"
        raise ValueError(msg)
    if any(ch in value for ch in "\n;&|`") or "$(" in value:
        msg = f"one command, no shell control characters, got {value!r}"
        raise ValueError(msg)


@dataclass(frozen=True, kw_only=True)
class Wsl:
    distribution: str = field(metadata={"check": check_nonempty})
    #: 1: the Linux side shares Windows' network stack (127.0.0.1 is the WinRM listener).
    version: Literal[1, 2] = 1


@dataclass(frozen=True, kw_only=True)
class Installer:
    """One installer the job downloads and hashes; ``key`` names its lab pin
    (``npulab_installers`` in ``group_vars/all/provisioning.yml``: version, file, url)."""

    key: str = field(metadata={"check": check_nonempty})
    #: The public checksum the download must match.
    sha256: str | None = field(default=None, metadata={"check": check_sha256})
    #: A page listing the public checksum beside the file name (Miniconda's index).
    sha256_index: str | None = None
    #: Where to download it when the lab pin has no https URL (the lab uses a share).
    url: str | None = None

    def __post_init__(self) -> None:
        if self.sha256 and self.sha256_index:
            msg = "give sha256 or sha256_index, not both"
            raise ValueError(msg)
        for value in (self.sha256_index, self.url):
            if value is not None and not value.startswith("https://"):
                msg = f"an https:// URL, got {value!r}"
                raise ValueError(msg)


@dataclass(frozen=True, kw_only=True)
class Expect:
    """What a step must do on the runner; anything else fails the step."""

    exit_code: int = 0
    #: Each text must appear in the step's output (stdout and stderr).
    output: tuple[str, ...] = ()
    #: Counts summed over the host's lines of the last ``PLAY RECAP`` (lab.provision).
    recap_changed: int | None = None
    recap_failures: int | None = None
    #: Build step -> status in the manifest of this run (``invoke build``).
    steps: dict[str, StepStatus] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Step:
    id: str = field(metadata={"check": _check_id})
    title: str = field(metadata={"check": check_nonempty})
    #: The command exactly as a lab owner types it (bash on the controller).
    run: str = field(metadata={"check": _check_run})
    timeout_minutes: int = field(metadata={"check": check_positive})
    expect: Expect = field(default_factory=Expect)
    #: Its outcome depends on the machine having (here: lacking) the NPU.
    npu_bound: bool = False
    #: Also keep the command's stdout as this file in the output directory.
    stdout_file: str | None = None

    @property
    def line(self) -> str:
        """The workflow's line for this step."""
        return f"{STEP_RUNNER} {self.id} -- {self.run}"


@dataclass(frozen=True, kw_only=True)
class E2E:
    recipe: str = field(metadata={"check": check_nonempty})
    cron: str = field(metadata={"check": check_cron})
    runs_on: str = field(metadata={"check": check_nonempty})
    job_timeout_minutes: int = field(metadata={"check": check_positive})
    host: str = field(metadata={"check": _check_host})
    chip: Chip
    wsl: Wsl
    installers: tuple[Installer, ...] = ()
    steps: tuple[Step, ...] = field(metadata={"check": check_nonempty})

    def __post_init__(self) -> None:
        ids = [s.id for s in self.steps]
        if len(set(ids)) != len(ids):
            msg = f"steps: an id is listed twice ({ids})"
            raise ValueError(msg)
        if not self.runs_on.startswith("windows-"):
            msg = f"runs_on: a GitHub-hosted Windows image (windows-...), got {self.runs_on!r}"
            raise ValueError(msg)
        total = sum(s.timeout_minutes for s in self.steps)
        if total >= self.job_timeout_minutes:
            msg = (
                f"job_timeout_minutes ({self.job_timeout_minutes}) must exceed the steps' "
                f"timeouts ({total}) plus the set-up"
            )
            raise ValueError(msg)

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        known = ", ".join(s.id for s in self.steps)
        msg = f"ci/windows-e2e.yaml: no step {step_id!r} (known: {known})"
        raise ConfigError(msg)


def default_path() -> Path:
    return paths.project_root() / "ci" / "windows-e2e.yaml"


def load_e2e(path: Path | None = None) -> E2E:
    return load_file(E2E, path or default_path())


def workflow_path() -> Path:
    return workflows_dir() / "windows-e2e.yml"


def _yaml_str(text: str) -> str:
    """A double-quoted YAML scalar (JSON's escaping is valid YAML)."""
    import json

    return json.dumps(text, ensure_ascii=False)


def _step_yaml(step: Step) -> str:
    return "\n".join(
        [
            f"      - name: {_yaml_str(f'{step.id}: {step.title}')}",
            "        shell: wsl-bash {0}",
            f"        timeout-minutes: {step.timeout_minutes + 5}",
            "        env:",
            f"          NPULAB_INVENTORY: {INVENTORY}",
            "        run: |",
            "          cd ~/npulab && . .venv/bin/activate",
            f"          {step.line}",
        ]
    )


def render(e2e: E2E) -> str:
    """The workflow text for ``e2e`` (deterministic: same data, same bytes)."""
    template = (Path(__file__).parent.parent / "templates" / "windows-e2e.yml").read_text(
        encoding="utf-8"
    )
    values = {
        "CRON": e2e.cron,
        "RUNS_ON": e2e.runs_on,
        "JOB_TIMEOUT": str(e2e.job_timeout_minutes),
        "HOST": e2e.host,
        "RECIPE": e2e.recipe,
        "OUT": OUT_DIR,
        "INVENTORY": INVENTORY,
        "WSL_DISTRIBUTION": e2e.wsl.distribution,
        "WSL_VERSION": str(e2e.wsl.version),
        "STEPS": "\n\n".join(_step_yaml(s) for s in e2e.steps),
        "CHECKOUT": CHECKOUT.uses,
        "SETUP_WSL": SETUP_WSL.uses,
        "UPLOAD_ARTIFACT": UPLOAD_ARTIFACT.uses,
    }
    return fill(template, values, "windows-e2e template")


def controller_lines(workflow_text: str) -> list[str]:
    """The npulab commands the controller runs, in order: every line of a WSL step that starts
    with ``invoke`` or the step checker (what the replay test runs here)."""
    import yaml

    data = yaml.safe_load(workflow_text)
    lines: list[str] = []
    for job in data["jobs"].values():
        for step in job["steps"]:
            if not str(step.get("shell", "")).startswith("wsl-bash"):
                continue
            for line in str(step.get("run", "")).splitlines():
                if line.startswith(("invoke ", STEP_RUNNER + " ")):
                    lines.append(line)
    return lines
