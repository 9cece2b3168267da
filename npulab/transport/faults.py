"""What a failed WS-Man request means for a retry.

The retry policy (docs/lab.md#retry-policy) needs one question answered for every failure: could
the server have acted on the request?

* ``NOT_SENT``: the connection was never made (refused, connect timeout, name resolution). Safe
  to retry any request.
* ``MAYBE_SENT``: the request went out and the answer was lost (reset, aborted, read timeout,
  a 5xx without a WS-Man fault). Retried only for requests that cannot start anything twice.
* ``BUSY``: the server said it did not take the request (HTTP 503). Safe to retry.
* ``AUTH``, ``TLS``, ``FAULT``: never retried: a wrong password, an untrusted certificate or a
  WS-Man fault will not mend itself.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

import requests
import urllib3.exceptions
from winrm.exceptions import (
    InvalidCredentialsError,
    WinRMError,
    WinRMTransportError,
    WSManFaultError,
)


class Fault(enum.Enum):
    NOT_SENT = "not sent"
    MAYBE_SENT = "maybe sent"
    BUSY = "busy"
    AUTH = "auth"
    TLS = "tls"
    FAULT = "fault"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo.extend(e for e in (item.__cause__, item.__context__) if e is not None)
        todo.extend(a for a in item.args if isinstance(a, BaseException))
        reason = getattr(item, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)


def classify(exc: BaseException) -> tuple[Fault, str] | None:
    """The kind of failure and a short reason (no secrets), or None if it is not a WinRM fault."""
    if isinstance(exc, InvalidCredentialsError):
        return Fault.AUTH, "the credentials were rejected (HTTP 401)"
    if isinstance(exc, WSManFaultError):
        return Fault.FAULT, f"WS-Man fault: {exc.reason}"
    if isinstance(exc, WinRMTransportError):
        if exc.code in (502, 503, 504):
            return Fault.BUSY, f"HTTP {exc.code} from the server"
        return Fault.MAYBE_SENT, f"HTTP {exc.code} from the server"
    if isinstance(exc, requests.exceptions.SSLError):
        return Fault.TLS, f"TLS: {_short(exc)}"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return Fault.NOT_SENT, "connect timed out"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return Fault.MAYBE_SENT, "no answer within the read timeout"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return Fault.MAYBE_SENT, "connection dropped while reading the answer"
    if isinstance(exc, requests.exceptions.ConnectionError):
        for item in _chain(exc):
            if isinstance(item, urllib3.exceptions.NewConnectionError | ConnectionRefusedError):
                return Fault.NOT_SENT, f"cannot connect: {_short(item)}"
            if isinstance(item, urllib3.exceptions.NameResolutionError):
                return Fault.NOT_SENT, "host name does not resolve"
        return Fault.MAYBE_SENT, f"connection lost: {_short(exc)}"
    if isinstance(exc, ConnectionError):
        return Fault.MAYBE_SENT, f"connection lost: {_short(exc)}"
    if isinstance(exc, WinRMError):
        return Fault.FAULT, _short(exc)
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    if "Errno 111" in text or "Connection refused" in text:
        return "connection refused"
    return text if len(text) < 200 else text[:197] + "..."


class MaybeStarted(Exception):
    """A request that may have started a command got no answer (see the retry policy)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
