"""`invoke lab.provision`: prepare lab machines with the Ansible roles (docs/provisioning.md).

Exports ``LAB_TASKS``; invoke_tasks/lab.py adds them to the ``lab`` collection.
"""

from __future__ import annotations

from invoke import task
from invoke.context import Context

from invoke_tasks._common import config_value, fails_cleanly, is_dry_run


@task(
    help={
        "hosts": "comma-separated host or group names (default: every host)",
        "check": "Ansible check mode: report what would change, change nothing",
        "tags": "comma-separated roles to run (npu_driver,git_lfs,miniconda,vs2019_buildtools,...)",
        "forks": "hosts provisioned at once at most (default 16; never more than the hosts)",
        "runner_url": "register GitHub runners for this repo/org URL (token: NPULAB_RUNNER_TOKEN)",
        "stack_repo": "clone URL of npulab to check out and build on each host",
        "inventory": "inventory file (default: NPULAB_INVENTORY or npulab.hosts.inventory)",
        "verbose": "Ansible verbosity (-v per count)",
        "dry_run": "print the ansible-playbook command instead of running it",
    },
    incrementable=["verbose"],
)
@fails_cleanly
def provision(
    c: Context,
    hosts: str = "",
    check: bool = False,
    tags: str = "",
    forks: int = 0,
    runner_url: str = "",
    stack_repo: str = "",
    inventory: str = "",
    verbose: int = 0,
    dry_run: bool = False,
) -> None:
    """Provision lab machines over WinRM (Ansible): driver, Git+LFS, Miniconda, VS 2019, runner."""
    import os

    from npulab.lab import provision as prov

    extra = {}
    if runner_url:
        extra["gha_runner_url"] = runner_url
    if stack_repo:
        extra["npulab_stack_repo"] = stack_repo
    options = prov.Options(
        hosts=tuple(h.strip() for h in hosts.split(",") if h.strip()),
        check=check,
        tags=tuple(t.strip() for t in tags.split(",") if t.strip()),
        forks_cap=forks or prov.DEFAULT_FORKS_CAP,
        extra_vars=extra,
        verbose=verbose,
    )
    path = inventory or (
        None if os.environ.get("NPULAB_INVENTORY") else config_value(c, "inventory")
    )
    prov.run(options, inventory_path=path, dry_run=is_dry_run(c, dry_run))


LAB_TASKS = [provision]
