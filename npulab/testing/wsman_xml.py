"""WS-Man envelopes for the test double: parse requests, build responses and faults, and the
MS-WSMV ``multipart/encrypted`` framing of NTLM message encryption."""

from __future__ import annotations

import base64
import struct
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
}
SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
DONE = f"{SHELL_URI}/CommandState/Done"
RUNNING = f"{SHELL_URI}/CommandState/Running"
BOUNDARY = b"--Encrypted Boundary"
PROTOCOL = b"application/HTTP-SPNEGO-session-encrypted"
ENCRYPTED_CONTENT_TYPE = (
    'multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";'
    'boundary="Encrypted Boundary"'
)
OPERATION_TIMEOUT_CODE = 2150858793


@dataclass
class Request:
    action: str  # last segment: Create, Command, Send, Receive, Signal, Delete
    message_id: str
    shell_id: str | None
    options: dict[str, str]
    operation_timeout: float
    body: ET.Element
    command_id: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


def parse(xml: bytes) -> Request:
    root = ET.fromstring(xml)
    header = root.find("s:Header", NS)
    body = root.find("s:Body", NS)
    if header is None or body is None:
        msg = "not a SOAP envelope"
        raise ValueError(msg)
    action = (header.findtext("a:Action", "", NS) or "").rsplit("/", 1)[-1]
    selector = header.find("w:SelectorSet/w:Selector[@Name='ShellId']", NS)
    options = {
        o.get("Name", ""): (o.text or "") for o in header.findall("w:OptionSet/w:Option", NS)
    }
    timeout_text = header.findtext("w:OperationTimeout", "PT20S", NS) or "PT20S"
    timeout = float(timeout_text.removeprefix("PT").removesuffix("S") or 20)
    request = Request(
        action=action,
        message_id=header.findtext("a:MessageID", "", NS) or "",
        shell_id=selector.text if selector is not None else None,
        options=options,
        operation_timeout=timeout,
        body=body,
    )
    for node in body.iter():
        if node.get("CommandId"):
            request.command_id = node.get("CommandId")
    return request


def envelope(request: Request, action: str, body: str) -> bytes:
    return (
        f'<s:Envelope xmlns:s="{NS["s"]}" xmlns:a="{NS["a"]}" xmlns:w="{NS["w"]}" '
        f'xmlns:rsp="{NS["rsp"]}" xmlns:x="{NS["x"]}"><s:Header>'
        f"<a:Action>{escape(action)}</a:Action>"
        f"<a:MessageID>uuid:00000000-0000-0000-0000-000000000000</a:MessageID>"
        f"<a:RelatesTo>{escape(request.message_id)}</a:RelatesTo>"
        f"</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def created(request: Request, shell_id: str) -> bytes:
    return envelope(
        request,
        "http://schemas.xmlsoap.org/ws/2004/09/transfer/CreateResponse",
        f"<x:ResourceCreated><a:Address>http://localhost/wsman</a:Address>"
        f"<a:ReferenceParameters><w:ResourceURI>{SHELL_URI}/cmd</w:ResourceURI>"
        f'<w:SelectorSet><w:Selector Name="ShellId">{shell_id}</w:Selector></w:SelectorSet>'
        f"</a:ReferenceParameters></x:ResourceCreated>"
        f"<rsp:Shell><rsp:ShellId>{shell_id}</rsp:ShellId></rsp:Shell>",
    )


def command_response(request: Request, command_id: str) -> bytes:
    return envelope(
        request,
        f"{SHELL_URI}/CommandResponse",
        f"<rsp:CommandResponse><rsp:CommandId>{command_id}</rsp:CommandId></rsp:CommandResponse>",
    )


def receive_response(
    request: Request, command_id: str, stdout: bytes, stderr: bytes, exit_code: int | None
) -> bytes:
    """A ReceiveResponse: the streams' new bytes and the command's state, Running (``exit_code``
    None) or Done; like Windows, Done also closes both streams (``End="true"``)."""
    streams = ""
    for name, data in (("stdout", stdout), ("stderr", stderr)):
        if data:
            b64 = base64.b64encode(data).decode()
            streams += f'<rsp:Stream Name="{name}" CommandId="{command_id}">{b64}</rsp:Stream>'
        if exit_code is not None:
            streams += f'<rsp:Stream Name="{name}" CommandId="{command_id}" End="true"/>'
    if exit_code is None:
        state = f'<rsp:CommandState CommandId="{command_id}" State="{RUNNING}"/>'
    else:
        state = (
            f'<rsp:CommandState CommandId="{command_id}" State="{DONE}">'
            f"<rsp:ExitCode>{exit_code}</rsp:ExitCode></rsp:CommandState>"
        )
    return envelope(
        request,
        f"{SHELL_URI}/ReceiveResponse",
        f"<rsp:ReceiveResponse>{streams}{state}</rsp:ReceiveResponse>",
    )


def simple(request: Request, name: str) -> bytes:
    return envelope(request, f"{SHELL_URI}/{name}Response", f"<rsp:{name}Response/>")


def fault(request: Request, code: int, reason: str, subcode: str = "w:InternalError") -> bytes:
    return envelope(
        request,
        "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault",
        f"<s:Fault><s:Code><s:Value>s:Receiver</s:Value><s:Subcode><s:Value>{subcode}"
        f'</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en-US">{escape(reason)}'
        f"</s:Text></s:Reason><s:Detail>"
        f'<f:WSManFault xmlns:f="http://schemas.microsoft.com/wbem/wsman/1/wsmanfault" '
        f'Code="{code}" Machine="localhost"><f:Message>{escape(reason)}</f:Message>'
        f"</f:WSManFault></s:Detail></s:Fault>",
    )


def unwrap(body: bytes, unwrap_winrm: Callable[[bytes, bytes], bytes]) -> bytes:
    """Decrypt a ``multipart/encrypted`` request body (one SPNEGO-session-encrypted part)."""
    parts = [p for p in body.split(BOUNDARY + b"\r\n") if p]
    header, payload = parts[0], parts[1]
    length = int(header.split(b"Length=")[1].strip())
    if payload.endswith(BOUNDARY + b"--\r\n"):
        payload = payload[: -len(BOUNDARY + b"--\r\n")]
    payload = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
    sig_len = struct.unpack("<i", payload[:4])[0]
    message = unwrap_winrm(payload[4 : 4 + sig_len], payload[4 + sig_len :])
    if len(message) != length:
        msg = "encrypted length does not match"
        raise ValueError(msg)
    return message


def wrap(message: bytes, wrap_winrm: Callable[[bytes], tuple[bytes, bytes]]) -> bytes:
    header, data = wrap_winrm(message)
    return (
        BOUNDARY + b"\r\n\tContent-Type: " + PROTOCOL + b"\r\n"
        b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length="
        + str(len(message)).encode()
        + b"\r\n"
        + BOUNDARY
        + b"\r\n\tContent-Type: application/octet-stream\r\n"
        + struct.pack("<i", len(header))
        + header
        + data
        + BOUNDARY
        + b"--\r\n"
    )
