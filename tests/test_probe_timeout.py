"""Issue 15 finding 10: lab.probe against hosts that answer as real Windows does when WMI is
broken: a hung WMI (WinRM answers w:TimedOut each operation timeout, for ever) and a refused
Get-CimInstance (exit 1 and PowerShell's error view). Real pywinrm, NTLM, the WS-Man double."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from npulab.hosts import inventory
from npulab.lab import commands, probe
from npulab.testing.fakehost import FakeHost, cim_access_denied, preset, wmi_never_answers
from npulab.testing.fleet import FakeFleet, SimHost
from npulab.transport import connect

PASSWORD = "Pr0be-Timeout-5c1e"

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    hung = FakeHost("hung-01", preset("phx"), password=PASSWORD)
    hung.probe_fault = wmi_never_answers()
    denied = FakeHost("denied-01", preset("phx"), password=PASSWORD)
    denied.probe_fault = cim_access_denied()
    members = [
        SimHost(FakeHost("phx-01", preset("phx"), password=PASSWORD), "7940HS"),
        SimHost(hung, "7940HS"),
        SimHost(denied, "7940HS"),
    ]
    # Every Receive of an unfinished command is answered w:TimedOut after 1 s (the host's
    # MaxTimeout), so the hung host's client sees that answer several times.
    with FakeFleet(members, operation_timeout=1.0) as sim:
        path = sim.write_inventory(tmp_path / "inv")
        monkeypatch.setenv("NPULAB_SECRETS_FILE", str(tmp_path / "absent.yaml"))
        monkeypatch.setenv("NPULAB_WINRM_USER", "labadmin")
        monkeypatch.setenv("NPULAB_WINRM_PASSWORD", PASSWORD)
        yield sim, path


def test_a_hung_host_times_out_and_the_others_are_reported_as_they_finish(
    fleet: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    sim, path = fleet
    inv = inventory.load(path)
    seen: list[tuple[str, float]] = []
    start = time.monotonic()
    results = probe.probe_fleet(
        inv.select(None),
        lambda h: connect(h.name, inventory=inv),
        timeout=3.0,
        on_result=lambda r: seen.append((r.host, time.monotonic() - start)),
    )
    by_host = {r.host: r for r in results}
    assert by_host["phx-01"].verdict == "ok"
    assert by_host["hung-01"].verdict == "error"
    assert by_host["hung-01"].reason == "no answer in 3 s (probe stopped)"
    # Rows come as hosts finish: the healthy host long before the hung one.
    order = [name for name, _ in seen]
    assert order[-1] == "hung-01"
    assert dict(seen)["phx-01"] < dict(seen)["hung-01"]
    # Stopped at its time limit (within the last Receive's second and a loaded machine's slack),
    # not after an operation timeout more, and not never.
    assert 3.0 <= dict(seen)["hung-01"] < 15.0
    # The hung command was signalled and its shell deleted (no shell is left on the host).
    server = sim.server("hung-01")
    assert "Signal" in server.requests
    assert "Delete" in server.requests
    assert server.shells == {}
    assert server.requests.count("Receive") >= 2  # w:TimedOut answers, Receive again


def test_a_refused_probe_carries_powershells_message_not_its_trailer(fleet: Any) -> None:
    _sim, path = fleet
    inv = inventory.load(path)
    (result,) = probe.probe_fleet(inv.select("denied-01"), lambda h: connect(h.name, inventory=inv))
    assert result.verdict == "error"
    assert result.reason == "probe script failed (exit 1): Get-CimInstance : Access denied"
    assert "FullyQualifiedErrorId" not in result.reason


def test_the_message_of_a_wrapped_error_view() -> None:
    view = (
        "Get-CimInstance : The WS-Management service cannot process the request. The WMI\n"
        "service or the WMI provider returned an unknown error: HRESULT 0x80041001\n"
        "At line:3 char:8\n"
        "+ $cpu = Get-CimInstance Win32_Processor\n"
        "+        ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~\n"
        "    + CategoryInfo          : NotSpecified: (root\\cimv2:Win32_Processor:String) [], "
        "CimException\n"
        "    + FullyQualifiedErrorId : HRESULT 0x80041001,Microsoft.Management.Infrastructure."
        "CimCmdlets.GetCimInstanceCommand\n"
    )
    assert probe.powershell_message(view) == (
        "Get-CimInstance : The WS-Management service cannot process the request. The WMI "
        "service or the WMI provider returned an unknown error: HRESULT 0x80041001"
    )


def test_invoke_probe_prints_json_records_as_hosts_finish(
    fleet: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    _sim, path = fleet
    code = commands.run_probe(None, inventory_path=path, as_json=True, timeout=2.0)
    assert code == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1]["summary"] == {
        "passed": False,
        "hosts": ["denied-01", "hung-01", "phx-01"],
        "failed": ["denied-01", "hung-01"],
    }
    assert lines[-2]["host"] == "hung-01"
    assert lines[-2]["reason"] == "no answer in 2 s (probe stopped)"
