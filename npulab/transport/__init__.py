"""Transports: one interface to run commands on the machine that builds, here or over WinRM.

Every remote command goes through a :class:`Transport`; the local one goes through
:func:`npulab.cmd.run`. Both log the command, honour dry run and raise a typed error
(:class:`~npulab.errors.CommandError` for a failing command, :class:`~npulab.errors.TransportError`
when the host cannot be reached).

``run`` and ``run_script`` take ``on_output(stream, text)`` (:data:`npulab.cmd.OutputSink`) to
see the output while the command runs, e.g. to grow a step's log during a 20-minute build; the
returned :class:`~npulab.cmd.Completed` still holds all of it. It is never called on dry run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from npulab.cmd import Completed, OutputSink

if TYPE_CHECKING:
    from npulab.hosts.credentials import Credentials
    from npulab.hosts.inventory import Inventory

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


def connect(
    host_name: str,
    *,
    inventory: Inventory | Path | str | None = None,
    credentials: Credentials | None = None,
) -> Transport:
    """The transport for ``host_name``: ``local``/``localhost`` is this machine, any other name
    is looked up in the lab inventory (``inventory`` object or path; default
    ``ansible/inventories/lab/hosts.yml`` or ``NPULAB_INVENTORY``). Credentials come from the
    environment or the secrets file (:mod:`npulab.hosts.credentials`) unless given.

    Raises ConfigError for an unknown host or missing credentials, TransportError when the
    inventory's settings are unsafe (Basic over plain HTTP). Nothing is contacted yet.
    """
    from npulab.hosts import credentials as creds_mod
    from npulab.hosts import inventory as inv_mod
    from npulab.paths import project_root
    from npulab.transport.local import LocalTransport
    from npulab.transport.settings import settings_from
    from npulab.transport.winrm import WinRMTransport

    if host_name in ("local", "localhost"):
        return LocalTransport()
    inv = inventory if isinstance(inventory, inv_mod.Inventory) else inv_mod.load(inventory)
    host = inv.get(host_name)
    if host.vars.ansible_connection == "local":
        return LocalTransport(host.name)
    if credentials is None:
        credentials = creds_mod.resolve(
            host.name, inventory_user=host.vars.ansible_user, project=project_root()
        )
    return WinRMTransport(host.name, settings_from(host.vars), credentials)


__all__ = ["Completed", "OutputSink", "Shell", "Transport", "connect"]
