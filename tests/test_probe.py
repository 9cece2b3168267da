"""lab.probe against a simulated fleet: real pywinrm, NTLM + encryption, the WS-Man double."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from npulab.errors import TransportError
from npulab.hosts import inventory
from npulab.hosts.credentials import Credentials, Secret
from npulab.hosts.inventory import Host, HostVars
from npulab.lab import probe
from npulab.lab.probe_script import PROBE_SCRIPT
from npulab.testing.fakehost import FakeHost, npu_device, preset
from npulab.testing.fleet import FakeFleet, SimHost, demo_members
from npulab.transport import Transport, connect
from npulab.transport.settings import WinRMSettings
from npulab.transport.winrm import WinRMTransport

PASSWORD = "Pr0be-Secret-9f3a"

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    members = demo_members(PASSWORD)
    members.append(SimHost(FakeHost("badpw-01", preset("phx"), password="other-pw"), "7940HS"))
    with FakeFleet(members) as fleet:
        # down-01: an unreachable host (a loopback port nothing listens on)
        down = {"ansible_host": "127.0.0.1", "ansible_port": 9, "npulab_chip": "7940HS"}
        inv_path = fleet.write_inventory(tmp_path / "inv", extra_hosts={"down-01": down})
        monkeypatch.setenv("NPULAB_SECRETS_FILE", str(tmp_path / "absent.yaml"))
        monkeypatch.setenv("NPULAB_WINRM_USER", "labadmin")
        monkeypatch.setenv("NPULAB_WINRM_PASSWORD", PASSWORD)
        yield fleet, inventory.load(inv_path)


def _connect(inv: inventory.Inventory):  # type: ignore[no-untyped-def]
    def make(host: Host) -> Transport:
        return connect(host.name, inventory=inv)

    return make


def test_probe_fleet_verdicts(fleet_env, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    fleet, inv = fleet_env
    results = {r.host: r for r in probe.probe_fleet(inv.select(None), _connect(inv), concurrency=8)}
    assert results["phx-01"].verdict == "ok", results["phx-01"]
    assert results["phx-01"].npu == "XDNA1 (PHX/HPT)"
    assert results["phx-01"].npu_driver == "10.1109.8.100"
    assert results["phx-01"].windows_build == "22631.3007"
    assert results["hpt-01"].verdict == "ok"
    assert results["nonpu-01"].verdict == "mismatch"
    assert "no NPU" in results["nonpu-01"].reason
    assert "expected a Ryzen 7940HS" in results["nonpu-01"].reason
    assert results["strix-01"].verdict == "mismatch"
    assert "XDNA2 (Strix)" in results["strix-01"].reason
    assert results["fresh-01"].verdict == "unprovisioned"
    # the runner is reported beside the verdict, never as a missing build prerequisite
    assert results["fresh-01"].reason == "missing: vs2019_v142"
    assert results["fresh-01"].runner is None
    assert results["phx-01"].runner == "actions.runner.npulab.phx-01 (Running)"
    # GBK console: the host writes cp936 whatever the shell code page; decoded on purpose
    assert results["gbk-01"].verdict == "ok"
    assert fleet.server("gbk-01").host.count("reg.exe") == 1  # OEM code page asked once
    assert results["badpw-01"].verdict == "auth-failed"
    assert results["down-01"].verdict == "unreachable"
    assert "connection refused" in results["down-01"].reason
    # every host was probed with ONE script, and the passing hosts answered over encryption
    assert fleet.server("phx-01").requests.count("Command") == 1

    report = probe.to_json(list(results.values()))
    assert report["passed"] is False
    table = probe.render_table(list(results.values()))
    print(table)
    print(json.dumps(report))
    (tmp_path / "report.json").write_text(json.dumps(report))
    out, err = capfd.readouterr()
    assert "gbk-01" in out
    for text in (
        out,
        err,
        *(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()),
    ):
        assert PASSWORD not in text


def test_probe_gbk_host_keeps_chinese_text(fleet_env) -> None:  # type: ignore[no-untyped-def]
    _, inv = fleet_env
    transport = connect("gbk-01", inventory=inv)
    result = transport.run_script(PROBE_SCRIPT, shell="powershell", idempotent=True)
    facts = probe.parse_facts(result.stdout, "gbk-01")
    assert facts.computer_name == "实验室-HPT"
    npu = probe.find_npu(facts.pci)
    assert npu is not None
    assert npu[0].driver_provider == "超威半导体公司"


def test_npu_id_matching_is_exact() -> None:
    dev = probe.PciDevice
    assert probe.find_npu([dev("PCI\\VEN_1022&DEV_1502&SUBSYS_0")])[1].startswith("XDNA1")  # type: ignore[index]
    assert probe.find_npu([dev("pci\\ven_1022&dev_17f0")])[1].startswith("XDNA2")  # type: ignore[index]
    assert probe.find_npu([dev("PCI\\VEN_1022&DEV_15020")]) is None
    assert probe.find_npu([dev("PCI\\VEN_1002&DEV_1502")]) is None  # ATI vendor, not AMD NPU


def test_probe_script_parses_as_powershell() -> None:
    ts = pytest.importorskip("tree_sitter")
    tsp = pytest.importorskip("tree_sitter_powershell")
    from npulab.transport import psscripts

    parser = ts.Parser(ts.Language(tsp.language()))
    scripts = {
        "probe": PROBE_SCRIPT,
        "bootstrap": psscripts.script_bootstrap("Write-Output 1"),
        "receiver": psscripts.upload_receiver("C:\\npulab\\it's here.txt", "0" * 64),
        "fetch": psscripts.fetch_script("C:\\x.log"),
        "cmd-wrapper": psscripts.cmd_wrapper("echo hi"),
        "boot-time": psscripts.BOOT_TIME_SCRIPT,
    }
    for name, script in scripts.items():
        tree = parser.parse(script.encode("utf-8"))
        assert not tree.root_node.has_error, name


def test_transport_never_shows_password(capfd: pytest.CaptureFixture[str]) -> None:
    creds = Credentials("u", Secret(PASSWORD), "test")
    # 127.0.0.1:9: nothing listens there, so the command fails to connect.
    settings = WinRMSettings(endpoint="http://127.0.0.1:9/wsman", retries=0, connect_timeout_sec=2)
    t = WinRMTransport("down-01", settings, creds)
    with pytest.raises(TransportError) as info:
        t.run(["cmdkey.exe", "/add:nas", "/user:u", f"/pass:{PASSWORD}"])
    assert "connection refused" in str(info.value)
    shown = [repr(creds), repr(t), str(t), str(info.value), repr(info.value), *capfd.readouterr()]
    assert "/pass:********" in shown[-1]  # the command was logged, masked
    assert not [text for text in shown if PASSWORD in text]
    with pytest.raises(TypeError):
        pickle.dumps(t)


def _judged(**prereqs: str | None) -> probe.ProbeResult:
    facts = preset("phx")
    facts.prereqs.update(prereqs)
    long_paths = prereqs.pop("long_paths", "1") == "1"
    data = {
        "schema": 1, "computer_name": "PHX", "cpu": facts.cpu,
        "windows": {"caption": "w", "build": "22631"}, "last_boot": "", "oem_codepage": 437,
        "disk": {"drive": "C:", "free_bytes": 1, "size_bytes": 2}, "pci": facts.pci,
        "prereqs": {k: v for k, v in facts.prereqs.items() if k != "long_paths"},
        "long_paths": long_paths,
    }  # fmt: skip
    from npulab.schema import build

    hv = build(inventory.HostVars, {"ansible_host": "h", "npulab_chip": "7940HS"}, source="t")
    host = Host(name="phx-01", groups=("phx",), vars=hv)
    return probe.judge(host, probe.parse_facts(json.dumps(data), "phx-01"), 0.1)


def test_ok_means_the_builds_prerequisite_check_passes() -> None:
    """win-prereqs refuses a machine without LongPathsEnabled=1: so does the verdict."""
    assert _judged().verdict == "ok"
    result = _judged(long_paths="0")
    assert result.verdict == "unprovisioned"
    assert result.reason == "missing: LongPathsEnabled=1"


def test_a_host_without_a_runner_can_build() -> None:
    result = _judged(runner_service=None)
    assert result.verdict == "ok"
    assert result.passed()
    assert result.label == "ok, no runner"
    assert "ok, no runner" in probe.render_table([result])
    assert _judged().label == "ok"


def test_probe_looks_for_conda_where_the_build_does() -> None:
    """NPULAB_CONDA_ROOT first, else the host layout's conda root, holding condabin\\conda.bat
    (the file the build scripts call): the same rule as win-prereqs."""
    from npulab.hosts import layout
    from npulab.quoting import quote_pwsh

    root = layout.load().conda_root
    assert f"else {{ {quote_pwsh(root)} }}" in PROBE_SCRIPT
    assert "$env:NPULAB_CONDA_ROOT" in PROBE_SCRIPT
    assert "'condabin\\conda.bat'" in PROBE_SCRIPT
    assert "USERPROFILE" not in PROBE_SCRIPT


@pytest.mark.parametrize("driver", [None, ""])
def test_an_npu_without_a_driver_is_unprovisioned_and_names_the_driver(driver: str | None) -> None:
    facts = preset("hpt")
    facts.pci[-1] = npu_device("1502", driver)
    host = Host("hpt-02", ("lab",), HostVars(ansible_host="127.0.0.1", npulab_chip="8845HS"))
    answer = json.dumps(FakeHost("hpt-02", facts).probe_answer())
    result = probe.judge(host, probe.parse_facts(answer, "hpt-02"), 0.1)
    assert (result.verdict, result.reason) == ("unprovisioned", "missing: npu_driver")
    assert result.npu == "XDNA1 (PHX/HPT)"
    assert not result.passed(hardware_only=False)
    assert result.passed(hardware_only=True)
