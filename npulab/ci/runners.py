"""``invoke ci.runner-status``: the registered self-hosted runners against the matrix and the lab.

Reads ``GET /repos/{owner}/{repo}/actions/runners`` (needs a token with *Administration: read*
on the repository, from ``GITHUB_TOKEN``; never printed), matches each runner's labels against
the machine kinds of ``ci/matrix.yaml`` and each inventory host against a runner of the same
name, and fails naming every machine kind without an online runner: its nightly job would wait
24 h in the queue and be cancelled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from npulab import log, paths
from npulab.ci.matrix import Matrix, load_matrix
from npulab.errors import ConfigError, TransportError, VerificationError
from npulab.schema import load_yaml

DEFAULT_API = "https://api.github.com"


@dataclass(frozen=True)
class Runner:
    name: str
    status: str
    busy: bool
    labels: frozenset[str]

    @property
    def online(self) -> bool:
        return self.status == "online"


@dataclass(frozen=True)
class Status:
    #: machine id -> runners serving it
    serving: dict[str, list[Runner]]
    #: machine ids without an online runner
    uncovered: list[str]
    #: inventory hosts with no runner registered under their name
    hosts_without_runner: list[str]
    #: runners that serve no machine kind of the matrix
    strays: list[Runner]


def list_runners(repo: str, api: str, token: str, *, timeout: float = 30.0) -> list[Runner]:
    """Every self-hosted runner of ``repo`` (follows pages of 100)."""
    import requests

    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    url = f"{api.rstrip('/')}/repos/{repo}/actions/runners"
    runners: list[Runner] = []
    page = 1
    while True:
        try:
            response = requests.get(
                url, headers=headers, params={"per_page": 100, "page": page}, timeout=timeout
            )
        except requests.RequestException as exc:
            msg = f"cannot reach {url}: {type(exc).__name__}"
            raise TransportError(msg, hint="check --api / GITHUB_API_URL and the network") from None
        if response.status_code in (401, 403, 404):
            msg = f"{url}: HTTP {response.status_code} (token lacks access to the runners?)"
            raise TransportError(
                msg, hint="use a token with 'Administration: read' on the repository"
            )
        if response.status_code != 200:
            msg = f"{url}: HTTP {response.status_code}"
            raise TransportError(msg)
        data: dict[str, Any] = response.json()
        batch = data.get("runners") or []
        for item in batch:
            labels = frozenset(str(lab.get("name")) for lab in item.get("labels") or [])
            runners.append(
                Runner(
                    str(item.get("name")), str(item.get("status")), bool(item.get("busy")), labels
                )
            )
        if not batch or len(runners) >= int(data.get("total_count") or 0):
            return runners
        page += 1


def inventory_hosts(path: Path) -> dict[str, dict[str, Any]]:
    """host name -> host vars from an Ansible YAML inventory (groups nested under children)."""
    if not path.exists():
        return {}
    hosts: dict[str, dict[str, Any]] = {}

    def walk(group: Any) -> None:
        if not isinstance(group, dict):
            return
        for name, host_vars in (group.get("hosts") or {}).items():
            hosts.setdefault(str(name), dict(host_vars or {}))
        for child in (group.get("children") or {}).values():
            walk(child)

    data = load_yaml(path) or {}
    for group in data.values() if isinstance(data, dict) else []:
        walk(group)
    return hosts


def status(matrix: Matrix, runners: list[Runner], hosts: dict[str, dict[str, Any]]) -> Status:
    serving = {m.id: [r for r in runners if m.served_by(set(r.labels))] for m in matrix.machines}
    uncovered = [mid for mid, rs in serving.items() if not any(r.online for r in rs)]
    names = {r.name.lower() for r in runners}
    without = sorted(h for h in hosts if h.lower() not in names)
    strays = [r for r in runners if not any(r in rs for rs in serving.values())]
    return Status(serving, uncovered, without, strays)


def format_status(result: Status) -> str:
    lines = ["machine kind      online/registered  runners"]
    for machine, runners in result.serving.items():
        online = sum(r.online for r in runners)
        names = (
            ", ".join(f"{r.name} ({r.status}{', busy' if r.busy else ''})" for r in runners) or "-"
        )
        lines.append(f"{machine:<17} {online}/{len(runners):<17} {names}")
    for runner in result.strays:
        lines.append(f"runner {runner.name} serves no machine kind: labels {sorted(runner.labels)}")
    for host in result.hosts_without_runner:
        lines.append(f"inventory host {host} has no runner registered under its name")
    return "\n".join(lines)


def run_status(
    repo: str | None, api: str | None, *, inventory: str | None = None,
    matrix: Matrix | None = None,
) -> Status:  # fmt: skip
    repo = repo or os.environ.get("GITHUB_REPOSITORY")
    if not repo:
        msg = "no repository: pass --repo owner/name or set GITHUB_REPOSITORY"
        raise ConfigError(msg)
    token = os.environ.get("GITHUB_TOKEN") or os.environ.get("GH_TOKEN")
    if not token:
        msg = "no token: GITHUB_TOKEN is not set"
        raise ConfigError(msg, hint="export GITHUB_TOKEN=<token with Administration: read>")
    api = api or os.environ.get("GITHUB_API_URL") or DEFAULT_API
    matrix = matrix or load_matrix()
    inventory_path = paths.project_root() / (inventory or "ansible/inventories/lab/hosts.yml")
    hosts = inventory_hosts(inventory_path)
    result = status(matrix, list_runners(repo, api, token), hosts)
    print(format_status(result))
    if result.uncovered:
        msg = f"no online runner for machine kind(s): {', '.join(result.uncovered)}"
        wanted = "; ".join(
            f"{m}: labels {','.join(matrix.machine(m).custom_labels)}" for m in result.uncovered
        )
        raise VerificationError(
            msg, hint=f"start or register a runner ({wanted}); see docs/nightly.md"
        )
    log.info("every machine kind has an online runner")
    return result
