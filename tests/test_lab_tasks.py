"""`invoke lab.probe` / `lab.run` end to end: the real CLI against a simulated fleet on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from npulab.testing.fakehost import Response
from npulab.testing.fleet import FakeFleet, demo_members

pytestmark = pytest.mark.integration
PASSWORD = "Cli-Secret-4242"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[tuple[FakeFleet, dict[str, str]]]:
    with FakeFleet(demo_members(PASSWORD)) as fleet:
        inv = fleet.write_inventory(tmp_path / "inv")
        secrets = fleet.write_secrets(tmp_path / "home" / "secrets.yaml")
        env = {
            **os.environ,
            "NPULAB_INVENTORY": str(inv),
            "NPULAB_SECRETS_FILE": str(secrets),
            "NO_PROXY": "*",
        }
        env.pop("NPULAB_WINRM_PASSWORD", None)
        yield fleet, env


def _invoke(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "invoke"
    return subprocess.run(
        [str(exe), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_probe_task_json_and_exit_code(sim: tuple[FakeFleet, dict[str, str]]) -> None:
    _, env = sim
    ok = _invoke(env, "lab.probe", "--hosts", "phx-01,hpt-01,gbk-01", "--json")
    assert ok.returncode == 0, ok.stderr
    records = [json.loads(line) for line in ok.stdout.splitlines()]  # one per host, as it ends
    assert records[-1]["summary"]["passed"] is True
    assert sorted(h["verdict"] for h in records[:-1]) == ["ok", "ok", "ok"]
    assert sorted(h["host"] for h in records[:-1]) == ["gbk-01", "hpt-01", "phx-01"]

    every = _invoke(env, "lab.probe")
    assert every.returncode == 1
    for name, verdict in [("nonpu-01", "mismatch"), ("fresh-01", "unprovisioned")]:
        line = next(ln for ln in every.stdout.splitlines() if ln.startswith(name))
        assert verdict in line
    assert "did not pass: fresh-01, nonpu-01, strix-01" in every.stderr

    hw = _invoke(env, "lab.probe", "--hosts", "fresh-01", "--hardware-only")
    assert hw.returncode == 0
    bad = _invoke(env, "lab.probe", "--hosts", "phx-1")
    assert bad.returncode == 2
    assert "did you mean 'phx-01'" in bad.stderr
    for proc in (ok, every, hw, bad):
        assert PASSWORD not in proc.stdout + proc.stderr


def test_run_task_returns_remote_output_and_code(sim: tuple[FakeFleet, dict[str, str]]) -> None:
    fleet, env = sim
    host = fleet.server("phx-01").host
    host.on(
        "cmd:*", lambda _a, text: Response(f"ran: {text}\r\n", rc=0 if "ok" in (text or "") else 4)
    )
    done = _invoke(env, "lab.run", "--host", "phx-01", "--", 'python -c "print(1)" ok')
    assert done.returncode == 0, done.stderr
    assert 'ran: python -c "print(1)" ok' in done.stdout
    assert "+ [phx-01] cmd script" in done.stderr
    failed = _invoke(env, "lab.run", "--host", "phx-01", "--command", "exit /b 4")
    assert failed.returncode == 4
    missing = _invoke(env, "lab.run", "--host", "phx-01")
    assert missing.returncode == 2
    assert PASSWORD not in done.stdout + done.stderr + failed.stderr
