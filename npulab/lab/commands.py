"""The lab tasks' logic: probe the fleet, run one command on a host, serve a simulated lab."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from npulab import log
from npulab.hosts import inventory
from npulab.lab import probe
from npulab.transport import Shell, connect


def run_probe(
    hosts: str | None = None,
    *,
    inventory_path: str | Path | None = None,
    as_json: bool = False,
    concurrency: int = 32,
    hardware_only: bool = False,
) -> int:
    """Probe the selected hosts; prints a table (stderr) or JSON (stdout). Returns the exit code:
    0 when every host passed, 1 otherwise."""
    inv = inventory.load(inventory_path)
    selected = inv.select(hosts)
    log.info(f"probing {len(selected)} host(s) from {inv.path} (concurrency {concurrency})")
    results = probe.probe_fleet(
        selected, lambda h: connect(h.name, inventory=inv), concurrency=concurrency
    )
    report = probe.to_json(results, hardware_only=hardware_only)
    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(probe.render_table(results))
    failed = [r.host for r in results if not r.passed(hardware_only=hardware_only)]
    if failed:
        log.error(f"{len(failed)} of {len(results)} host(s) did not pass: {', '.join(failed)}")
        return 1
    log.info(f"all {len(results)} host(s) passed")
    return 0


def run_command(
    host: str,
    command_line: str,
    *,
    shell: Shell = "cmd",
    inventory_path: str | Path | None = None,
    timeout: float | None = None,
    dry_run: bool = False,
) -> int:
    """Run one command line (cmd.exe syntax, or PowerShell) on ``host``; streams nothing, prints
    the output when done, returns the remote exit code."""
    transport = connect(
        host,
        inventory=inventory.load(inventory_path) if host not in ("local", "localhost") else None,
    )
    try:
        result = transport.run_script(
            command_line, shell=shell, timeout=timeout, check=False, dry_run=dry_run
        )
    finally:
        close = getattr(transport, "close", None)
        if close is not None:
            close()
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        log.error(f"[{host}] exit code {result.returncode}")
    return result.returncode


def serve_sim(directory: Path | None = None, *, latency: float = 0.0) -> None:
    """Serve the demo fleet on loopback until interrupted; print how to point npulab at it."""
    import secrets
    import threading

    from npulab.testing.fleet import FakeFleet, demo_members

    directory = directory or Path(tempfile.mkdtemp(prefix="npulab-sim-"))
    secrets_dir = Path(tempfile.mkdtemp(prefix="npulab-sim-secrets-"))
    with FakeFleet(demo_members(secrets.token_urlsafe(16), latency=latency)) as fleet:
        inv = fleet.write_inventory(directory)
        secret_file = fleet.write_secrets(secrets_dir / "secrets.yaml")
        print(f"export NPULAB_INVENTORY={inv}")
        print(f"export NPULAB_SECRETS_FILE={secret_file}")
        log.info(
            "simulated lab on 127.0.0.1 ("
            + ", ".join(f"{m.host.name}:{m.server.port}" for m in fleet.members if m.server)
            + "); in another shell, run the two export lines, then:\n"
            "  invoke lab.probe\n  invoke lab.run --host phx-01 -- 'python -V'\n"
            "Ctrl-C stops the simulation."
        )
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            log.info("simulation stopped")
        finally:
            os.environ.pop("NPULAB_INVENTORY", None)
