"""ci/windows/: the scripts the hosted Windows job (and the windows-e2e workflow) run."""

from __future__ import annotations

from pathlib import Path

from npulab.hosts import inventory
from tests.pwsh import bad_nodes, string_values

ROOT = Path(__file__).resolve().parent.parent
ENABLE_WINRM = ROOT / "ci" / "windows" / "enable-winrm-localhost.ps1"


def test_enable_winrm_parses_cleanly_with_crlf_free_ascii() -> None:
    text = ENABLE_WINRM.read_text(encoding="utf-8")
    assert bad_nodes(text) == []
    assert text.isascii()  # Windows PowerShell 5.1 reads a BOM-less script as ANSI
    assert "$ErrorActionPreference = 'Stop'" in text


def test_enable_winrm_inventory_is_one_npulab_host_on_loopback(tmp_path: Path) -> None:
    """The inventory lines the script writes load through npulab's own inventory reader."""
    literals = string_values(ENABLE_WINRM.read_text(encoding="utf-8"))
    start = next(i for i, s in enumerate(literals) if s.startswith("# Written by"))
    end = next(i for i, s in enumerate(literals) if s.strip().startswith("npulab_chip"))
    lines = literals[start : end + 1]
    # The host line is the one double-quoted string ("${HostName}:") between them.
    at = lines.index("      hosts:") + 1
    lines.insert(at, "        winrm-local:")
    path = tmp_path / "winrm-local.yml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    inv = inventory.load(path)
    host = inv.get("winrm-local")
    assert host.vars.ansible_host == "127.0.0.1"
    assert host.vars.endpoint == "http://127.0.0.1:5985/wsman"
    assert host.vars.ansible_winrm_transport == "ntlm"
    assert host.vars.ansible_winrm_message_encryption == "always"
