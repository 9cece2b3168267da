"""Guards for the whole suite.

* No test reaches the network beyond this machine: connecting a socket to anything but loopback
  raises (servers under test listen on 127.0.0.1).
* Unit tests run no processes: ``subprocess.Popen`` raises unless the test is marked
  ``integration`` or ``upstream`` (those run real git, ansible, etc. on purpose).
* ``HF_HUB_OFFLINE``/``HF_HOME`` point at a temp dir so nothing touches a real hub cache.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.upstream_tree import upstream_trees  # noqa: F401 - session fixture for upstream tests

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address: Any) -> bool:
    if isinstance(address, str):  # AF_UNIX path
        return True
    host = address[0] if isinstance(address, tuple) else address
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if not _is_local(address):
        msg = f"test tried to reach {address!r}: tests only talk to servers on loopback"
        raise RuntimeError(msg)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> Any:
    if not _is_local(address):
        msg = f"test tried to reach {address!r}: tests only talk to servers on loopback"
        raise RuntimeError(msg)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)


@pytest.fixture(autouse=True)
def _no_subprocess_in_unit_tests(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if request.node.get_closest_marker("integration") or request.node.get_closest_marker(
        "upstream"
    ):
        return

    class _Refused(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, args: Any, *a: Any, **kw: Any) -> None:
            msg = (
                f"unit test tried to run {args!r}: mark the test "
                "@pytest.mark.integration if it runs real tools on purpose"
            )
            raise RuntimeError(msg)

    monkeypatch.setattr(subprocess, "Popen", _Refused)


@pytest.fixture(autouse=True)
def _isolated_hub(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh npulab cache and build dir for one test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("NPULAB_CACHE", str(cache))
    monkeypatch.setenv("NPULAB_BUILD_DIR", str(tmp_path / "build"))
    return cache


os.environ.setdefault("GIT_TERMINAL_PROMPT", "0")
