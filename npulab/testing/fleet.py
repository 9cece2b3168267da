"""A simulated lab: several :class:`~npulab.testing.wsman_server.WSManServer` hosts on loopback,
with an inventory and a secrets file to point npulab at them.

Used by the tests, ``invoke lab.sim`` and ``bench/fleet_probe.py``. As a program it serves a
fleet until stdin closes (or Ctrl-C) after printing one JSON line with the inventory and secrets
file paths::

    python -m npulab.testing.fleet --dir /tmp/sim [--hosts 10 --latency 0.1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from npulab.testing.fakehost import FakeHost, Response, preset
from npulab.testing.wsman_server import WSManServer


@dataclass
class SimHost:
    host: FakeHost
    chip: str  # what the inventory expects
    server: WSManServer | None = None
    host_vars: dict[str, Any] | None = None


class FakeFleet:
    def __init__(self, members: list[SimHost], **server_options: Any) -> None:
        self.members = members
        self.server_options = server_options

    def __enter__(self) -> FakeFleet:
        for member in self.members:
            member.server = WSManServer(member.host, **self.server_options).start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        # stop in parallel: each server's serve loop takes up to its poll interval to notice
        servers = [m.server for m in self.members if m.server is not None]
        threads = [threading.Thread(target=s.stop) for s in servers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def server(self, name: str) -> WSManServer:
        for member in self.members:
            if member.host.name == name and member.server is not None:
                return member.server
        raise KeyError(name)

    def write_inventory(
        self, directory: Path, *, extra_hosts: dict[str, Any] | None = None, **group_vars: Any
    ) -> Path:
        """``hosts.yml`` + ``group_vars/all/winrm.yml`` for the running fleet (plus
        ``extra_hosts``, e.g. one that nothing answers for)."""
        hosts: dict[str, Any] = dict(extra_hosts or {})
        for m in self.members:
            assert m.server is not None
            hosts[m.host.name] = {
                "ansible_host": "127.0.0.1",
                "ansible_port": m.server.port,
                "npulab_chip": m.chip,
                **(m.host_vars or {}),
            }
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "hosts.yml"
        path.write_text(yaml.safe_dump({"all": {"children": {"sim": {"hosts": hosts}}}}))
        gv = directory / "group_vars" / "all"
        gv.mkdir(parents=True, exist_ok=True)
        defaults = {
            "ansible_connection": "winrm",
            "ansible_winrm_scheme": "https" if self.server_options.get("tls") else "http",
            "ansible_winrm_transport": self.server_options.get("auth", "ntlm"),
            "ansible_winrm_operation_timeout_sec": 5,
            "ansible_winrm_read_timeout_sec": 10,
            "npulab_winrm_retries": 2,
            "npulab_winrm_backoff_sec": 0.05,
        }
        (gv / "winrm.yml").write_text(yaml.safe_dump(defaults | group_vars))
        return path

    def write_secrets(self, path: Path) -> Path:
        """A secrets file (mode 600) with every host's user and password."""
        data = {
            "hosts": {
                m.host.name: {"user": m.host.user, "password": m.host.password}
                for m in self.members
            }
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(yaml.safe_dump(data))
        return path


def demo_members(password: str, *, latency: float = 0.0) -> list[SimHost]:
    """PHX, HPT, a machine without an NPU, a Chinese-Windows HPT (GBK output), a Strix."""
    gbk = preset("hpt", computer_name="实验室-HPT", oem_codepage=936)
    gbk.pci[-1]["driver_provider"] = "超威半导体公司"
    unprovisioned = preset("phx")
    unprovisioned.prereqs["vs2019_v142"] = None
    unprovisioned.prereqs["runner_service"] = None
    specs = [
        ("phx-01", preset("phx"), "7940HS", True),
        ("hpt-01", preset("hpt"), "8845HS", True),
        ("nonpu-01", preset("no-npu"), "7940HS", True),
        ("gbk-01", gbk, "8845HS", False),
        ("strix-01", preset("strix"), "8845HS", True),
        ("fresh-01", unprovisioned, "7940HS", True),
    ]
    members = [
        SimHost(FakeHost(n, f, password=password, honors_codepage=h, latency=latency), chip)
        for n, f, chip, h in specs
    ]
    for member in members:  # so `invoke lab.run` has something to say
        echo = _Echo(member.host.name)
        member.host.on("cmd:*", echo)
        member.host.on("script:*", echo)
    return members


@dataclass(frozen=True)
class _Echo:
    host: str

    def __call__(self, argv: list[str], text: str | None) -> Response:
        return Response(f"[simulated {self.host}] would run:\r\n{text or ''}\r\n")


def uniform_members(count: int, password: str, *, latency: float) -> list[SimHost]:
    return [
        SimHost(
            FakeHost(f"sim-{i:03d}", preset("phx"), password=password, latency=latency), "7940HS"
        )
        for i in range(count)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=None, help="where to write hosts.yml")
    parser.add_argument("--hosts", type=int, default=0, help="N identical PHX hosts (0: demo)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    args = parser.parse_args(argv)
    password = secrets.token_urlsafe(16)
    members = (
        uniform_members(args.hosts, password, latency=args.latency)
        if args.hosts
        else demo_members(password, latency=args.latency)
    )
    directory = args.dir or Path(tempfile.mkdtemp(prefix="npulab-sim-"))
    secrets_dir = Path(tempfile.mkdtemp(prefix="npulab-sim-secrets-"))
    with FakeFleet(members) as fleet:
        inventory = fleet.write_inventory(directory)
        secrets_file = fleet.write_secrets(secrets_dir / "secrets.yaml")
        print(
            json.dumps({"inventory": str(inventory), "secrets_file": str(secrets_file)}), flush=True
        )
        with contextlib.suppress(KeyboardInterrupt):
            sys.stdin.read()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
