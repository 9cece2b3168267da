"""The :class:`Transport` protocol and the shell names (the modules implementing it import this,
not the package, so the package can import them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from npulab.cmd import Completed, OutputSink

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
        idempotent: bool = False,
        on_output: OutputSink | None = None,
    ) -> Completed:
        """Run a program with arguments (quoted per the Win32 argv convention on Windows).

        ``idempotent``: running it twice does no harm, so a remote transport may re-send it
        after a connection fault that left its fate unknown (never otherwise).
        ``on_output("stdout"|"stderr", text)``: called as output arrives (live view: UTF-8,
        stderr possibly raw CLIXML over WinRM); if it raises, the command is stopped."""
        ...

    def run_script(
        self,
        script: str,
        *,
        shell: Shell,
        timeout: float | None = None,
        check: bool = True,
        dry_run: bool = False,
        idempotent: bool = False,
        on_output: OutputSink | None = None,
    ) -> Completed:
        """Run a whole cmd or PowerShell script (sent over stdin with a hash check, no length
        limit). ``idempotent`` and ``on_output`` as for :meth:`run`."""
        ...

    def put_file(self, local: Path, remote: str, *, dry_run: bool = False) -> None:
        """Copy a local file to the host, verifying its sha256 on arrival."""
        ...

    def get_file(self, remote: str, local: Path) -> None:
        """Copy a file from the host (written to a temporary name, then renamed)."""
        ...
