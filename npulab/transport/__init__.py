"""Transports: one interface to run commands on the machine that builds, here or over WinRM.

Every remote command goes through a :class:`Transport`; the local one goes through
:func:`npulab.cmd.run`. Both log the command, honour dry run and raise a typed error
(:class:`~npulab.errors.CommandError` for a failing command, :class:`~npulab.errors.TransportError`
when the host cannot be reached).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from npulab.cmd import Completed

Shell = Literal["cmd", "powershell"]


@runtime_checkable
class Transport(Protocol):
    """What the build executor, smoke and probe need from a host."""

    @property
    def host(self) -> str:
        """A name for logs and reports ("local" or the inventory host name)."""
        ...

    @property
    def is_windows(self) -> bool: ...

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        check: bool = True,
        dry_run: bool = False,
    ) -> Completed:
        """Run a program with arguments (quoted per the Win32 argv convention on Windows)."""
        ...

    def run_script(
        self,
        script: str,
        *,
        shell: Shell,
        timeout: float | None = None,
        check: bool = True,
        dry_run: bool = False,
    ) -> Completed:
        """Run a whole cmd or PowerShell script (uploaded as a file when long)."""
        ...

    def put_file(self, local: Path, remote: str, *, dry_run: bool = False) -> None:
        """Copy a local file to the host, verifying its sha256 on arrival."""
        ...

    def get_file(self, remote: str, local: Path) -> None:
        """Copy a file from the host (written to a temporary name, then renamed)."""
        ...


__all__ = ["Completed", "Shell", "Transport"]
