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

from pathlib import Path

from npulab.cmd import Completed, OutputSink
from npulab.hosts import credentials as creds_mod
from npulab.hosts import inventory as inv_mod
from npulab.hosts.credentials import Credentials
from npulab.hosts.inventory import Inventory
from npulab.paths import project_root
from npulab.transport.base import Shell, Transport
from npulab.transport.local import LocalTransport
from npulab.transport.settings import settings_from
from npulab.transport.winrm import WinRMTransport


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
