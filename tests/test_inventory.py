"""The lab inventory (Ansible YAML, read with pyyaml) and credentials from env/secrets file."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path

import pytest

from npulab.errors import ConfigError, TransportError
from npulab.hosts import credentials, inventory
from npulab.transport import connect
from npulab.transport.local import LocalTransport
from npulab.transport.winrm import WinRMTransport

LAB = Path(__file__).resolve().parent.parent / "ansible" / "inventories" / "lab"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def layered(tmp_path: Path) -> Path:
    """An inventory where every precedence level sets ``npulab_winrm_retries``."""
    hosts = _write(
        tmp_path / "inv" / "hosts.yml",
        """
all:
  vars: {npulab_winrm_retries: 1, npulab_winrm_backoff_sec: 0.1}
  children:
    npu_lab:
      vars: {npulab_winrm_retries: 2, ansible_winrm_operation_timeout_sec: 5}
      children:
        phx:
          vars: {npulab_winrm_retries: 3}
          hosts:
            a: {ansible_host: 192.0.2.1, npulab_chip: 7940HS, npulab_winrm_retries: 7}
            b: {ansible_host: 192.0.2.2, npulab_chip: 7940HS}
            c: {npulab_chip: 7940HS}
""",
    )
    gv = tmp_path / "inv" / "group_vars"
    _write(
        gv / "all" / "winrm.yml", "npulab_winrm_retries: 10\nansible_winrm_read_timeout_sec: 9\n"
    )
    _write(gv / "all" / "other.yml", "some_role_var: [1, 2]\n")
    _write(gv / "npu_lab.yml", "npulab_winrm_backoff_sec: 0.2\n")
    _write(gv / "phx.yml", "npulab_winrm_retries: 4\n")
    _write(tmp_path / "inv" / "host_vars" / "a.yml", "npulab_winrm_retries: 8\n")
    return hosts


def test_precedence_follows_ansible(layered: Path) -> None:
    inv = inventory.load(layered)
    a, b, c = (inv.get(n) for n in "abc")
    assert a.vars.npulab_winrm_retries == 8  # host_vars/ beats the inventory's host vars
    assert b.vars.npulab_winrm_retries == 4  # group_vars/phx beats group_vars/all and inline
    assert b.vars.npulab_winrm_backoff_sec == 0.2
    assert b.vars.ansible_winrm_operation_timeout_sec == 5
    assert b.vars.ansible_winrm_read_timeout_sec == 9
    assert c.vars.ansible_host == "c"  # Ansible's default: the inventory name
    assert b.extra["some_role_var"] == [1, 2]
    assert inv.groups["phx"] == ("a", "b", "c")
    assert [h.name for h in inv.select("phx")] == ["a", "b", "c"]


@pytest.mark.integration
def test_precedence_matches_ansible_inventory(layered: Path) -> None:
    exe = shutil.which("ansible-inventory") or str(
        Path(os.sys.executable).parent / "ansible-inventory"
    )
    if not Path(exe).exists():
        pytest.skip("ansible-inventory not installed (pip install '.[ansible]')")
    out = subprocess.run(
        [exe, "-i", str(layered), "--list"], capture_output=True, text=True, check=True
    ).stdout
    hostvars = json.loads(out)["_meta"]["hostvars"]
    inv = inventory.load(layered)
    for name, host in inv.hosts.items():
        for key in (
            "npulab_winrm_retries",
            "npulab_winrm_backoff_sec",
            "ansible_winrm_operation_timeout_sec",
            "ansible_winrm_read_timeout_sec",
        ):
            assert getattr(host.vars, key) == hostvars[name][key], (name, key)


@pytest.mark.integration
def test_lab_inventory_is_valid_for_ansible() -> None:
    exe = Path(os.sys.executable).parent / "ansible-inventory"
    if not exe.exists():
        pytest.skip("ansible-inventory not installed (pip install '.[ansible]')")
    out = subprocess.run(
        [str(exe), "-i", str(LAB / "hosts.yml"), "--list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data = json.loads(out)
    hostvars = data["_meta"]["hostvars"]
    inv = inventory.load(LAB / "hosts.yml")
    assert set(hostvars) == set(inv.hosts)
    assert sorted(data["npu_lab"]["children"]) == ["hpt", "phx"]
    for name, host in inv.hosts.items():
        assert hostvars[name]["npulab_chip"] == host.vars.npulab_chip
        assert hostvars[name]["ansible_port"] == host.vars.port
        assert hostvars[name]["ansible_winrm_scheme"] == host.vars.scheme


def test_lab_inventory_loads() -> None:
    inv = inventory.load(LAB / "hosts.yml")
    assert {h.vars.npulab_chip for h in inv.select("phx")} == {"7940HS"}
    assert {h.vars.npulab_chip for h in inv.select("hpt")} == {"8845HS"}
    for host in inv.hosts.values():
        assert host.vars.ansible_connection == "winrm"
        assert host.vars.ansible_winrm_transport == "ntlm"
        assert host.vars.ansible_host.startswith("192.0.2.")
        assert "ansible_password" not in host.extra
    assert inv.get("hpt-02").vars.endpoint == "https://192.0.2.22:5986/wsman"
    assert inv.get("phx-01").vars.endpoint == "http://192.0.2.11:5985/wsman"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ansible_password: hunter2\n", "literal password in the inventory is refused"),
        ("ansible_winrm_tranport: ntlm\n", "did you mean 'ansible_winrm_transport'"),
        ("npulab_chipp: 7940HS\n", "did you mean 'npulab_chip'"),
        ("npulab_chip: 7945HS\n", "expected one of ['7940HS', '8845HS']"),
        ("ansible_winrm_read_timeout_sec: 5\n", "must exceed ansible_winrm_operation_timeout_sec"),
    ],
)
def test_bad_host_vars_are_config_errors(tmp_path: Path, text: str, expected: str) -> None:
    hosts = _write(
        tmp_path / "hosts.yml",
        "all:\n  hosts:\n    h1: {ansible_host: 192.0.2.1, npulab_chip: 7940HS}\n",
    )
    _write(tmp_path / "host_vars" / "h1.yml", text)
    with pytest.raises(ConfigError) as info:
        inventory.load(hosts)
    assert expected in str(info.value)
    assert "hunter2" not in str(info.value)


def test_unknown_host_says_did_you_mean() -> None:
    inv = inventory.load(LAB / "hosts.yml")
    with pytest.raises(ConfigError, match="did you mean 'phx-01'"):
        inv.get("phx-1")


def test_secret_never_shows() -> None:
    secret = credentials.Secret("hunter2")
    assert "hunter2" not in repr(secret) + str(secret) + f"{secret}" + f"{[secret]}"
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    assert credentials.redact("pw=hunter2;", [secret]) == "pw=********;"


def test_credentials_lookup_order(tmp_path: Path) -> None:
    secrets = _write(
        tmp_path / "home" / "secrets.yaml",
        "default: {user: fileuser, password: filepw}\nhosts:\n  phx-01: {password: hostpw}\n",
    )
    secrets.chmod(0o600)
    env = {"NPULAB_SECRETS_FILE": str(secrets)}
    assert credentials.resolve("phx-01", env=env).password.reveal() == "hostpw"
    assert credentials.resolve("hpt-01", env=env).password.reveal() == "filepw"
    env |= {"NPULAB_WINRM_USER": "envuser", "NPULAB_WINRM_PASSWORD": "envpw"}
    creds = credentials.resolve("hpt-01", env=env)
    assert (creds.user, creds.password.reveal()) == ("envuser", "envpw")
    env["NPULAB_WINRM_PASSWORD_PHX_01"] = "override"
    creds = credentials.resolve("phx-01", env=env)
    assert creds.password.reveal() == "override"
    assert creds.source == "env NPULAB_WINRM_PASSWORD_PHX_01"


def test_secrets_file_must_be_private_and_outside_project(tmp_path: Path) -> None:
    secrets = _write(tmp_path / "secrets.yaml", "default: {user: u, password: p}\n")
    secrets.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        credentials.resolve("h", env={"NPULAB_SECRETS_FILE": str(secrets)})
    secrets.chmod(0o600)
    with pytest.raises(ConfigError, match="inside the project"):
        credentials.resolve("h", env={"NPULAB_SECRETS_FILE": str(secrets)}, project=tmp_path)


def test_missing_credentials_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        credentials.resolve("phx-01", env={"NPULAB_SECRETS_FILE": str(tmp_path / "none.yaml")})
    assert "NPULAB_WINRM_PASSWORD" in str(info.value)


def test_connect_builds_transports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NPULAB_SECRETS_FILE", str(tmp_path / "none.yaml"))
    monkeypatch.setenv("NPULAB_WINRM_USER", "labadmin")
    monkeypatch.setenv("NPULAB_WINRM_PASSWORD", "pw")
    assert isinstance(connect("local"), LocalTransport)
    t = connect("phx-01", inventory=LAB / "hosts.yml")
    assert isinstance(t, WinRMTransport)
    assert t.host == "phx-01"
    assert "pw" not in repr(t)
    hosts = _write(
        tmp_path / "hosts.yml",
        "all:\n  hosts:\n    h1: {ansible_host: 192.0.2.1, npulab_chip: 7940HS, "
        "ansible_winrm_transport: basic}\n",
    )
    with pytest.raises(TransportError, match="Basic authentication over plain HTTP"):
        connect("h1", inventory=hosts)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620])
def test_secrets_file_readable_or_writable_by_group_or_others_is_refused(
    tmp_path: Path, mode: int
) -> None:
    secrets = _write(tmp_path / "secrets.yaml", "default: {user: u, password: p}\n")
    secrets.chmod(mode)
    with pytest.raises(ConfigError, match="chmod 600"):
        credentials.resolve("h", env={"NPULAB_SECRETS_FILE": str(secrets)})


ENTRY = "expected a mapping with string 'user' and/or 'password'"


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("default: {user: u, password: hunter2-Zq, port: 5985}", ENTRY),
        ("default: {user: u, password: [hunter2-Zq]}", ENTRY),
        ("hosts:\n  h: {user: u, password: hunter2-Zq, pasword: x}", ENTRY),
        ('default: {user: u, password: "hunter2-Zq}', "invalid YAML"),
    ],
)
def test_malformed_secrets_entry_is_named_without_its_password(
    tmp_path: Path, entry: str, says: str
) -> None:
    secrets = _write(tmp_path / "secrets.yaml", entry + "\n")
    secrets.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        credentials.resolve("h", env={"NPULAB_SECRETS_FILE": str(secrets)})
    text = f"{info.value} {info.value.hint or ''} {info.value!r}"
    assert says in text
    assert str(secrets) in text
    assert "hunter2-Zq" not in text


def test_missing_credentials_say_which_one_and_a_named_file_that_is_not_there(
    tmp_path: Path,
) -> None:
    absent = str(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError) as info:
        credentials.resolve("h", env={"NPULAB_WINRM_PASSWORD": "p", "NPULAB_SECRETS_FILE": absent})
    assert info.value.message == (
        f"no WinRM user for host 'h' (NPULAB_SECRETS_FILE={absent}: no such file)"
    )
    present = _write(tmp_path / "s.yaml", "default: {user: fileuser}\n")
    present.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        credentials.resolve("h", env={"NPULAB_SECRETS_FILE": str(present)})
    assert info.value.message == "no WinRM password for host 'h'"


def test_redact_leaves_text_alone_for_no_secret_or_an_empty_one() -> None:
    assert credentials.redact("pw=;", [None, credentials.Secret("")]) == "pw=;"
    creds = credentials.Credentials("u", credentials.Secret("s3"), "test")
    with pytest.raises(AttributeError):
        creds.password = credentials.Secret("other")  # type: ignore[misc]
