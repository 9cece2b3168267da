"""`invoke lab.provision`: the ansible-playbook plan, credentials via env, the per-host summary,
and real ansible-playbook runs (pins refused before any host is touched; unreachable hosts)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from npulab.errors import CommandError, ConfigError
from npulab.hosts import inventory
from npulab.lab import provision

ROOT = Path(__file__).resolve().parent.parent
LAB = ROOT / "ansible" / "inventories" / "lab" / "hosts.yml"
PASSWORD = "Prov-Secret-9931"


def _fleet(tmp_path: Path, n: int, *, password_for: dict[str, str] | None = None) -> Path:
    hosts = {f"phx-{i:02d}": {"ansible_host": f"192.0.2.{i}", "npulab_chip": "7940HS"}
             for i in range(1, n + 1)}  # fmt: skip
    data = {"all": {"children": {"npu_lab": {"children": {"phx": {"hosts": hosts}}}}}}
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def creds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NPULAB_SECRETS_FILE", str(tmp_path / "no-secrets.yaml"))
    monkeypatch.setenv("NPULAB_WINRM_USER", "labadmin")
    monkeypatch.setenv("NPULAB_WINRM_PASSWORD", PASSWORD)


def test_plan_whole_lab() -> None:
    p = provision.plan(inventory.load(LAB), provision.Options())
    assert p.argv[1:] == ("-i", str(LAB), str(ROOT / "ansible" / "site.yml"), "--forks", "4")
    assert p.argv[0].endswith("ansible-playbook")
    assert p.hosts == ("phx-01", "phx-02", "hpt-01", "hpt-02")
    assert p.env["ANSIBLE_CONFIG"] == str(ROOT / "ansible" / "ansible.cfg")
    assert p.cwd == ROOT / "ansible"


def test_plan_limit_check_tags_and_extra_vars() -> None:
    options = provision.Options(
        hosts=("hpt", "phx-01"), check=True, tags=("miniconda", "git_lfs"),
        extra_vars={"gha_runner_url": "https://github.com/o/r"}, verbose=2,
    )  # fmt: skip
    argv = provision.plan(inventory.load(LAB), options).argv
    tail = list(argv[argv.index("--forks") :])
    assert tail == [
        "--forks", "3", "--limit", "hpt-01,hpt-02,phx-01", "--check",
        "--tags", "miniconda,git_lfs", "-e", '{"gha_runner_url": "https://github.com/o/r"}', "-vv",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("n", "cap", "forks"), [(1, 16, 1), (7, 16, 7), (50, 16, 16), (50, 64, 50)]
)
def test_forks_sized_to_the_fleet(tmp_path: Path, n: int, cap: int, forks: int) -> None:
    inv = inventory.load(_fleet(tmp_path, n))
    p = provision.plan(inv, provision.Options(forks_cap=cap))
    assert p.forks == forks
    assert len(p.hosts) == n


def test_plan_refuses_bad_input(tmp_path: Path) -> None:
    inv = inventory.load(LAB)
    with pytest.raises(ConfigError, match="did you mean 'phx-01'"):
        provision.plan(inv, provision.Options(hosts=("phx-1",)))
    with pytest.raises(ConfigError, match="unknown role tag 'minicoda'"):
        provision.plan(inv, provision.Options(tags=("minicoda",)))
    with pytest.raises(ConfigError, match="forks cap must be at least 1"):
        provision.plan(inv, provision.Options(forks_cap=0))


def test_credentials_go_to_the_environment_only(creds: None) -> None:
    inv = inventory.load(LAB)
    env = provision.credential_env(inv, ("phx-01", "hpt-02"))
    assert env == {"NPULAB_WINRM_USER": "labadmin", "NPULAB_WINRM_PASSWORD": PASSWORD}
    p = provision.plan(inv, provision.Options())
    assert not any(PASSWORD in a for a in p.argv)
    assert PASSWORD not in json.dumps(dict(p.env))


def test_mixed_credentials_are_refused(creds: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NPULAB_WINRM_PASSWORD_HPT_01", "other")
    with pytest.raises(ConfigError, match="different WinRM credentials"):
        provision.credential_env(inventory.load(LAB), ("phx-01", "hpt-01"))


def test_missing_credentials_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NPULAB_SECRETS_FILE", str(tmp_path / "none.yaml"))
    for name in ("NPULAB_WINRM_USER", "NPULAB_WINRM_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="no WinRM user for host 'phx-01'"):
        provision.run(provision.Options(hosts=("phx-01",)), inventory_path=LAB)


def test_dry_run_prints_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    code = provision.run(provision.Options(hosts=("phx",), check=True), inventory_path=LAB,
                         dry_run=True)  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0
    assert "(dry run)" in err
    assert "--limit phx-01,phx-02 --check" in err


def test_summary_table() -> None:
    recap = {
        "a": {"ok": 9, "changed": 3, "unreachable": 0, "failures": 0, "skipped": 2},
        "b": {"ok": 12, "changed": 0},
        "c": {"ok": 1, "failures": 1},
        "d": {"unreachable": 1},
    }
    lines = provision.format_summary(recap, ["a", "b", "c", "d", "e"]).splitlines()
    assert lines[0].split()[:4] == ["host", "result", "ok", "changed"]
    assert lines[1].split() == ["a", "changed", "9", "3", "0", "0", "2", "0", "0"]
    assert lines[2].split()[:2] == ["b", "unchanged"]
    assert lines[3].split()[:2] == ["c", "FAILED"]
    assert lines[4].split()[:2] == ["d", "UNREACHABLE"]
    assert lines[5].split() == ["e", "not", "run"]


def test_recap_reader_tolerates_a_missing_or_torn_file(tmp_path: Path) -> None:
    assert provision.read_recap(tmp_path / "none.json") == {}
    (tmp_path / "torn.json").write_text('{"hosts": {"a"')
    assert provision.read_recap(tmp_path / "torn.json") == {}


RECAP_OUTPUT = """\
TASK [npu_driver : Probe the NPU] *****
ok: [phx-01]

PLAY RECAP *********************************************************************
phx-01                     : ok=3    changed=1    unreachable=0    failed=0    skipped=2    rescued=0    ignored=0
hpt-02                     : ok=0    changed=0    unreachable=1    failed=0    skipped=0    rescued=0    ignored=0
"""  # noqa: E501


def test_recap_text_is_parsed_per_host() -> None:
    recap = provision.parse_recap_text(RECAP_OUTPUT)
    assert recap == {
        "phx-01": dict(ok=3, changed=1, unreachable=0, failures=0, skipped=2, rescued=0, ignored=0),
        "hpt-02": dict(ok=0, changed=0, unreachable=1, failures=0, skipped=0, rescued=0, ignored=0),
    }
    table = provision.format_summary(recap, ["phx-01", "hpt-02"]).splitlines()
    assert table[1].split()[:2] == ["phx-01", "changed"]
    assert table[2].split()[:2] == ["hpt-02", "UNREACHABLE"]


def test_recap_text_from_a_log_file_and_only_the_last_recap() -> None:
    prefix = "2026-11-28 23:40:01,123 p=4242 u=lab n=ansible INFO| "
    first = "PLAY RECAP ***\nphx-01 : ok=1 changed=1 unreachable=0 failed=1 skipped=0\n"
    last = "".join(prefix + line + "\n" for line in RECAP_OUTPUT.splitlines())
    recap = provision.parse_recap_text(first + last)
    assert recap["phx-01"]["failures"] == 0
    assert recap["phx-01"]["ok"] == 3
    assert set(recap) == {"phx-01", "hpt-02"}
    assert provision.parse_recap_text("no recap here\nok=1") == {}


# -- real ansible-playbook -----------------------------------------------------------------------
def _invoke(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "invoke"
    return subprocess.run(
        [str(exe), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NPULAB_INVENTORY"}
    secrets = str(tmp_path / "none.yaml")
    env.update(NPULAB_WINRM_USER="labadmin", NPULAB_WINRM_PASSWORD=PASSWORD, NO_COLOR="1")
    env.update(NPULAB_SECRETS_FILE=secrets, **extra)
    return env


@pytest.mark.integration
def test_dry_run_task(tmp_path: Path) -> None:
    done = _invoke(_env(tmp_path), "lab.provision", "--hosts", "hpt", "--check", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "ansible-playbook -i" in done.stderr
    assert "--forks 2 --limit hpt-01,hpt-02 --check" in done.stderr


@pytest.mark.integration
def test_unpinned_installers_stop_the_run_before_any_host(tmp_path: Path) -> None:
    done = _invoke(_env(tmp_path), "lab.provision", "--hosts", "phx-01,hpt-01")
    out = done.stdout + done.stderr
    assert done.returncode == 5, out
    assert "npulab_installers.npu_driver is not pinned" in out
    assert "phx-01  FAILED" in done.stdout
    assert "hpt-01  not run" in done.stdout
    assert "hosts not done: phx-01, hpt-01" in done.stderr
    assert PASSWORD not in out


@pytest.mark.integration
@pytest.mark.parametrize("callback", [True, False], ids=["callback", "log-recap"])
def test_unreachable_hosts_are_reported_per_host(tmp_path: Path, callback: bool) -> None:
    """Pins filled in a copy of the tree; hosts on a closed loopback port: UNREACHABLE each.

    Without the summary callback the per-host table comes from the PLAY RECAP in the log."""
    root = tmp_path / "project"
    shutil.copytree(ROOT / "ansible", root / "ansible",
                    ignore=shutil.ignore_patterns("__pycache__", ".ansible"))  # fmt: skip
    shutil.copytree(ROOT / "npulab" / "data", root / "npulab" / "data")  # site.yml's vars_files
    gv = root / "ansible" / "inventories" / "lab" / "group_vars" / "all" / "provisioning.yml"
    data = yaml.safe_load(gv.read_text())
    for pin in data["npulab_installers"].values():
        pin["url"] = pin["url"] or "\\\\labfs\\npulab\\" + pin["file"]
        pin["sha256"] = "0" * 64  # any 64-hex value passes the pre-check; hosts are never reached
    gv.write_text(yaml.safe_dump(data))
    hosts = {"all": {"children": {"npu_lab": {"children": {
        "phx": {"hosts": {"phx-01": {"ansible_host": "127.0.0.1", "npulab_chip": "7940HS"}}},
        "hpt": {"hosts": {"hpt-01": {"ansible_host": "127.0.0.1", "npulab_chip": "8845HS"}}},
    }}}}}  # fmt: skip
    inv = root / "ansible" / "inventories" / "lab" / "hosts.yml"
    inv.write_text(yaml.safe_dump(hosts))
    hv = inv.parent / "host_vars"
    hv.mkdir()
    for name in ("phx-01", "hpt-01"):
        (hv / f"{name}.yml").write_text("ansible_port: 9\nansible_winrm_operation_timeout_sec: 2\n"
                                        "ansible_winrm_read_timeout_sec: 3\n")  # fmt: skip
    env = _env(tmp_path, NPULAB_ROOT=str(root), NPULAB_INVENTORY=str(inv))
    if not callback:  # the npulab_summary plugin is not found: Ansible warns and runs on
        (tmp_path / "no-plugins").mkdir()
        env["ANSIBLE_CALLBACK_PLUGINS"] = str(tmp_path / "no-plugins")
    done = _invoke(env, "lab.provision")
    out = done.stdout + done.stderr
    assert done.returncode == 5, out
    assert "phx-01  UNREACHABLE" in done.stdout, out
    assert "hpt-01  UNREACHABLE" in done.stdout, out
    assert PASSWORD not in out


def test_provision_errors_carry_the_retry_command() -> None:
    err = CommandError("x", command=("a",), returncode=2, hint="invoke lab.provision --hosts a")
    assert "invoke lab.provision --hosts a" in (err.hint or "")
