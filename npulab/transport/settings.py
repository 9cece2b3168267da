"""Connection settings of one WinRM host, and the safety checks made before any request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from npulab.errors import TransportError

if TYPE_CHECKING:
    from npulab.hosts.inventory import HostVars


@dataclass(frozen=True)
class WinRMSettings:
    endpoint: str
    auth: str = "ntlm"
    message_encryption: str = "auto"
    server_cert_validation: str = "validate"
    ca_trust_path: str | None = None
    operation_timeout_sec: int = 20
    read_timeout_sec: int = 30
    connect_timeout_sec: float = 10.0
    retries: int = 4
    backoff_sec: float = 0.5
    max_backoff_sec: float = 8.0
    oem_codepage: int | None = None
    allow_basic_over_http: bool = False

    def check(self, host: str) -> None:
        plain_http = self.endpoint.lower().startswith("http://")
        if self.auth in ("basic", "plaintext") and plain_http and not self.allow_basic_over_http:
            msg = (
                f"host {host!r}: Basic authentication over plain HTTP would send the password "
                f"in clear text ({self.endpoint})"
            )
            raise TransportError(
                msg,
                hint="use ansible_winrm_transport: ntlm (message encryption) or an HTTPS "
                "listener; set npulab_allow_basic_over_http: true only for a throwaway lab",
            )
        if self.read_timeout_sec <= self.operation_timeout_sec:
            msg = f"host {host!r}: read timeout must exceed the operation timeout"
            raise TransportError(msg, hint="raise ansible_winrm_read_timeout_sec")


def settings_from(vars_: HostVars) -> WinRMSettings:
    """WinRMSettings from an inventory :class:`~npulab.hosts.inventory.HostVars`."""
    return WinRMSettings(
        endpoint=vars_.endpoint,
        auth=vars_.ansible_winrm_transport,
        message_encryption=vars_.ansible_winrm_message_encryption,
        server_cert_validation=vars_.ansible_winrm_server_cert_validation,
        ca_trust_path=vars_.ansible_winrm_ca_trust_path,
        operation_timeout_sec=vars_.ansible_winrm_operation_timeout_sec,
        read_timeout_sec=vars_.ansible_winrm_read_timeout_sec,
        connect_timeout_sec=vars_.npulab_winrm_connect_timeout_sec,
        retries=vars_.npulab_winrm_retries,
        backoff_sec=vars_.npulab_winrm_backoff_sec,
        oem_codepage=vars_.npulab_oem_codepage,
        allow_basic_over_http=vars_.npulab_allow_basic_over_http,
    )
