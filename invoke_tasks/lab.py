"""`invoke lab.*`: probe the NPU lab, run a command on a lab host, simulate a lab on loopback."""

from __future__ import annotations

from invoke import task
from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit

from invoke_tasks._common import config_value, fails_cleanly, is_dry_run, seconds
from invoke_tasks.lab_provision import LAB_TASKS


def _inventory(c: Context, inventory: str) -> str | None:
    import os

    if inventory:
        return inventory
    if os.environ.get("NPULAB_INVENTORY"):
        return None  # npulab.hosts.inventory reads it
    return config_value(c, "inventory")


@task(
    help={
        "hosts": "comma-separated host or group names (default: every host)",
        "host": "the same as --hosts (as in lab.run, smoke, build)",
        "json": "print one JSON record per host on stdout as it finishes, then a summary line",
        "concurrency": "hosts probed at once (default 32)",
        "timeout": "seconds each host has to answer before it is an error (default 120)",
        "hardware_only": "pass hosts whose hardware matches even if prerequisites are missing",
        "inventory": "inventory file (default: NPULAB_INVENTORY or npulab.hosts.inventory)",
    }
)
@fails_cleanly
def probe(
    c: Context,
    hosts: str = "",
    json: bool = False,
    concurrency: int = 32,
    hardware_only: bool = False,
    inventory: str = "",
    timeout: str = "",
    host: str = "",
) -> None:
    """Probe lab hosts over WinRM: CPU, NPU, driver, Windows build, disk, prerequisites."""
    from npulab.errors import ConfigError
    from npulab.lab.commands import run_probe

    limit = seconds(timeout, "--timeout") if timeout else 120.0
    if limit <= 0:
        msg = f"--timeout: expected seconds > 0, got {timeout!r}"
        raise ConfigError(msg)
    names = ",".join(n for n in (hosts, host) if n)
    code = run_probe(
        names or None,
        inventory_path=_inventory(c, inventory),
        as_json=json,
        concurrency=concurrency,
        hardware_only=hardware_only,
        timeout=limit,
    )
    if code:
        raise Exit(code=code)


@task(
    help={
        "host": "inventory host name (or 'local')",
        "command": "the command line (or give it after --, quoted once for your shell)",
        "powershell": "run it as PowerShell instead of cmd.exe",
        "timeout": "seconds before the command is stopped, e.g. 600 (default: none)",
        "inventory": "inventory file (default: NPULAB_INVENTORY or npulab.hosts.inventory)",
        "dry_run": "print what would run",
    }
)
@fails_cleanly
def run(
    c: Context,
    host: str,
    command: str = "",
    powershell: bool = False,
    timeout: str = "",
    inventory: str = "",
    dry_run: bool = False,
) -> None:
    """Run one command on a lab host: invoke lab.run --host phx-01 -- 'python -V'."""
    from npulab.errors import ConfigError
    from npulab.lab.commands import run_command

    line = command or c.remainder
    if not line.strip():
        msg = "lab.run needs a command: --command '...' or after --"
        raise ConfigError(msg, hint="invoke lab.run --host phx-01 -- 'python -V'")
    code = run_command(
        host,
        line,
        shell="powershell" if powershell else "cmd",
        inventory_path=_inventory(c, inventory),
        timeout=seconds(timeout, "--timeout") or None,
        dry_run=is_dry_run(c, dry_run),
    )
    if code:
        raise Exit(code=code)


@task(
    help={
        "dir": "where to write the simulated inventory (default: a temp dir)",
        "latency": "seconds each WS-Man request takes, e.g. 0.05 (default 0)",
    }
)
@fails_cleanly
def sim(c: Context, dir: str = "", latency: str = "") -> None:
    """Serve a simulated lab (PHX, HPT, no NPU, GBK, Strix, unprovisioned) on loopback."""
    from pathlib import Path

    from npulab.lab.commands import serve_sim

    serve_sim(Path(dir) if dir else None, latency=seconds(latency, "--latency"))


ns = Collection("lab")
for _t in (probe, run, sim, *LAB_TASKS):
    ns.add_task(_t)
