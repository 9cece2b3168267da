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
    timeout: float = probe.DEFAULT_TIMEOUT_S,
) -> int:
    """Probe the selected hosts, printing each host's row (or JSON record, one a line) on
    stdout as it finishes; a host that has not answered in ``timeout`` s is an ``error`` and
    the others are still reported. Returns 0 when every host passed, 1 otherwise."""
    inv = inventory.load(inventory_path)
    selected = inv.select(hosts)
    log.info(
        f"probing {len(selected)} host(s) from {inv.path} (concurrency {concurrency}, "
        f"timeout {timeout:g} s per host)"
    )
    widths = probe.stream_widths([h.name for h in selected])

    def show(result: probe.ProbeResult) -> None:
        if as_json:
            record = probe.to_json([result], hardware_only=hardware_only)["hosts"][0]
            print(json.dumps(record, ensure_ascii=False), flush=True)
        else:
            print(probe.render_row(result, widths), flush=True)

    if not as_json:
        print(probe.render_header(widths), flush=True)
    results = probe.probe_fleet(
        selected,
        lambda h: connect(h.name, inventory=inv),
        concurrency=concurrency,
        timeout=timeout,
        on_result=show,
    )
    failed = [r.host for r in results if not r.passed(hardware_only=hardware_only)]
    if as_json:
        summary = {"passed": not failed, "hosts": [r.host for r in results], "failed": failed}
        print(json.dumps({"summary": summary}), flush=True)
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
