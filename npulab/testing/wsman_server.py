"""A WS-Man (WinRM) server double on loopback, driven by the real pywinrm client.

Implements the shell resource (Create, Command, Send, Receive, Signal, Delete) over
``http.server``: NTLM with MS-WSMV message encryption through pyspnego's acceptor (one security
context per TCP connection, like Windows), or Basic (for HTTPS tests: pass an ``ssl`` context).
What commands do is a :class:`~npulab.testing.fakehost.FakeHost`'s business.

Scriptable per test: ``latency`` per request; :class:`Fault` injections per action (drop the
connection before or after acting, HTTP 401/500/503); operation timeouts (WS-Man fault
2150858793 when a command outlives the request's OperationTimeout, or ``operation_timeout``);
cmd.exe's 8191-character line limit; and reboots (``shutdown /r``: the listener closes, so
connections are refused, for ``reboot_downtime`` seconds, then the host answers with a new boot
time); output in timed parts (:attr:`Response.parts`: Receive answers Running with what is due).
``requests`` records every WS-Man action received.

    host = FakeHost("phx-01", preset("phx"), password="pw")
    with WSManServer(host) as server:
        ...  # point pywinrm at server.endpoint, transport="ntlm"
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import ssl
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from npulab.testing import wsman_xml as wx
from npulab.testing.fakehost import FakeHost, Response

_NTLM_ENV_LOCK = threading.Lock()  # pyspnego's acceptor reads NTLM_USER_FILE from os.environ
CMD_LINE_LIMIT = 8191
CREATEPROCESS_LIMIT = 32767


@dataclass
class Fault:
    """Break the next ``times`` requests of ``action`` (``"*"``: any action).

    ``drop``: close the connection before acting; ``drop_after``: act, then close without an
    answer; ``http401``/``http500``/``http503``: answer with that status before acting."""

    action: str
    kind: Literal["drop", "drop_after", "http401", "http500", "http503"]
    times: int = 1


@dataclass
class _Proc:
    line: str
    codepage: int
    wants_stdin: bool
    stdin: bytearray = field(default_factory=bytearray)
    response: Response | None = None
    started_at: float = 0.0
    finish_at: float = 0.0
    parts_sent: int = 0
    delivered: bool = False
    terminated: bool = False


@dataclass
class _Shell:
    codepage: int
    procs: dict[str, _Proc] = field(default_factory=dict)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    wsman: WSManServer

    def process_request(self, request: Any, client_address: Any) -> None:
        self.wsman._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        self.wsman._connections.discard(request)
        super().shutdown_request(request)


class WSManServer:
    def __init__(
        self,
        host: FakeHost,
        *,
        auth: Literal["ntlm", "basic"] = "ntlm",
        tls: ssl.SSLContext | None = None,
        operation_timeout: float | None = None,
        reboot_downtime: float = 1.0,
        port: int = 0,
    ) -> None:
        self.host = host
        self.auth = auth
        self.tls = tls
        self.operation_timeout = operation_timeout
        self.reboot_downtime = reboot_downtime
        self.faults: list[Fault] = []
        self.requests: list[str] = []
        #: every command line received, with its WINRS_* options
        self.commands: list[tuple[str, dict[str, str]]] = []
        self.auth_failures = 0
        self.shells: dict[str, _Shell] = {}
        self._connections: set[Any] = set()
        self._lock = threading.Lock()
        self._port = port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="npulab-wsman-")
        self.user_file = Path(self._tmp.name) / "ntlm_users"
        self.user_file.write_text(f":{host.user}:{host.password}\n", encoding="utf-8")
        self.user_file.chmod(0o600)
        host.on_reboot = self._schedule_reboot
        self.up = False

    # -- lifecycle ------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._port}/wsman"

    def start(self) -> WSManServer:
        httpd = _HTTPServer(("127.0.0.1", self._port), _Handler)
        httpd.wsman = self
        if self.tls is not None:
            httpd.socket = self.tls.wrap_socket(httpd.socket, server_side=True)
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        self._thread.start()
        self.up = True
        return self

    def _listen_stop(self) -> None:
        self.up = False
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        for conn in list(self._connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
        self._connections.clear()

    def stop(self) -> None:
        self._listen_stop()
        self._tmp.cleanup()

    def __enter__(self) -> WSManServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- reboot ---------------------------------------------------------------------------
    def _schedule_reboot(self, delay: float) -> None:
        threading.Timer(min(delay, 2.0) + 0.3, self.go_down, args=(self.reboot_downtime,)).start()

    def go_down(self, seconds: float) -> None:
        """Stop listening (connections are refused) for ``seconds``, then come back rebooted."""
        self._listen_stop()
        self.shells.clear()

        def come_back() -> None:
            self.host.rebooted()
            self.start()

        threading.Timer(seconds, come_back).start()

    # -- NTLM -----------------------------------------------------------------------------
    def ntlm_step(self, ctx: Any, token: bytes) -> tuple[Any, bytes | None]:
        import spnego

        with _NTLM_ENV_LOCK:
            old = os.environ.get("NTLM_USER_FILE")
            os.environ["NTLM_USER_FILE"] = str(self.user_file)
            try:
                if ctx is None or (len(token) > 12 and token[8] == 1):
                    ctx = spnego.server(protocol="ntlm")
                return ctx, ctx.step(token)
            finally:
                if old is None:
                    os.environ.pop("NTLM_USER_FILE", None)
                else:
                    os.environ["NTLM_USER_FILE"] = old

    def check_basic(self, header: str) -> bool:
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except ValueError:
            return False
        return user.lower() == self.host.user.lower() and password == self.host.password

    # -- faults ---------------------------------------------------------------------------
    def take_fault(self, action: str) -> Fault | None:
        with self._lock:
            for item in self.faults:
                if item.action in (action, "*") and item.times > 0:
                    item.times -= 1
                    return item
        return None

    # -- WS-Man ---------------------------------------------------------------------------
    def handle(self, req: wx.Request) -> tuple[int, bytes]:
        action = req.action
        if action == "Create":
            shell_id = str(uuid.uuid4()).upper()
            codepage = int(req.options.get("WINRS_CODEPAGE", "437"))
            self.shells[shell_id] = _Shell(codepage=codepage)
            return 200, wx.created(req, shell_id)
        shell = self.shells.get(req.shell_id or "")
        if shell is None:
            return 500, wx.fault(
                req,
                2150858843,
                "The request for the Windows Remote Shell "
                "with ShellId failed because the shell was not found on the "
                "server.",
                "w:InvalidSelectors",
            )
        if action == "Delete":
            del self.shells[req.shell_id or ""]
            return 200, wx.envelope(
                req, "http://schemas.xmlsoap.org/ws/2004/09/transfer/DeleteResponse", ""
            )
        if action == "Command":
            return self._command(req, shell)
        proc = shell.procs.get(req.command_id or "")
        if proc is None:
            return 500, wx.fault(req, 2150858752, "unknown CommandId", "w:InvalidParameter")
        if action == "Send":
            stream = req.body.find("rsp:Send/rsp:Stream", wx.NS)
            if stream is not None and stream.text:
                proc.stdin += base64.b64decode(stream.text)
            if stream is not None and stream.get("End", "false").lower() == "true":
                self._start(proc)
            return 200, wx.simple(req, "Send")
        if action == "Signal":
            proc.terminated = True
            return 200, wx.simple(req, "Signal")
        if action == "Receive":
            return self._receive(req, proc)
        return 500, wx.fault(req, 2150858817, f"unsupported action {action}")

    def _command(self, req: wx.Request, shell: _Shell) -> tuple[int, bytes]:
        node = req.body.find("rsp:CommandLine", wx.NS)
        command = node.findtext("rsp:Command", "", wx.NS) if node is not None else ""
        args = node.findtext("rsp:Arguments", "", wx.NS) if node is not None else ""
        line = f"{command} {args}".strip() if args else command or ""
        skip_cmd = req.options.get("WINRS_SKIP_CMD_SHELL", "FALSE").upper() == "TRUE"
        if len(line) > (CREATEPROCESS_LIMIT if skip_cmd else CMD_LINE_LIMIT):
            if not skip_cmd:
                proc = _Proc(line=line, codepage=shell.codepage, wants_stdin=False)
                proc.response = Response(stderr="The command line is too long.\r\n", rc=1)
                proc.finish_at = time.monotonic()
                command_id = str(uuid.uuid4()).upper()
                shell.procs[command_id] = proc
                return 200, wx.command_response(req, command_id)
            return 500, wx.fault(req, 206, "The filename or extension is too long.")
        proc = _Proc(line=line, codepage=shell.codepage, wants_stdin=FakeHost.wants_stdin(line))
        self.commands.append((line, dict(req.options)))
        command_id = str(uuid.uuid4()).upper()
        shell.procs[command_id] = proc
        if not proc.wants_stdin:
            self._start(proc)
        return 200, wx.command_response(req, command_id)

    def _start(self, proc: _Proc) -> None:
        proc.response = self.host.execute(proc.line, bytes(proc.stdin), proc.codepage)
        proc.started_at = time.monotonic()
        proc.finish_at = proc.started_at + proc.response.ends_after

    @staticmethod
    def _due(proc: _Proc, now: float) -> int:
        """How many of the response's parts are due by ``now``."""
        if proc.response is None:
            return 0
        elapsed = now - proc.started_at
        return sum(1 for delay, _ in proc.response.parts if delay <= elapsed)

    def _receive(self, req: wx.Request, proc: _Proc) -> tuple[int, bytes]:
        limit = req.operation_timeout
        if self.operation_timeout is not None:
            limit = min(limit, self.operation_timeout)
        deadline = time.monotonic() + limit
        while True:
            now = time.monotonic()
            done = proc.terminated or (proc.response is not None and now >= proc.finish_at)
            due = self._due(proc, now)
            if done or due > proc.parts_sent or now >= deadline:
                break
            target = proc.finish_at if proc.response is not None else deadline
            time.sleep(max(0.001, min(0.05, target - now, deadline - now)))
        if not done and due > proc.parts_sent:
            assert proc.response is not None
            chunks = proc.response.parts[proc.parts_sent : due]
            proc.parts_sent = due
            out = b"".join(self.host.encode(chunk, proc.codepage) for _, chunk in chunks)
            return 200, wx.receive_response(req, req.command_id or "", out, b"", None)
        if not done:
            return 500, wx.fault(
                req,
                wx.OPERATION_TIMEOUT_CODE,
                "The WS-Management service cannot complete the operation within the time "
                "specified in OperationTimeout.",
                "w:TimedOut",
            )
        if proc.terminated and proc.response is None:
            return 200, wx.receive_response(req, req.command_id or "", b"", b"", -1)
        assert proc.response is not None
        out = err = b""
        if not proc.delivered:
            rest = [chunk for _, chunk in proc.response.parts[proc.parts_sent :]]
            proc.parts_sent = len(proc.response.parts)
            out = b"".join(
                self.host.encode(c, proc.codepage) for c in [*rest, proc.response.stdout]
            )
            err = self.host.encode(proc.response.stderr, proc.codepage)
            proc.delivered = True
        return 200, wx.receive_response(req, req.command_id or "", out, err, proc.response.rc)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.ntlm: Any = None
        self.authed = False

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def do_POST(self) -> None:
        ws = self.server.wsman
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if ws.host.latency:
            time.sleep(ws.host.latency)
        header = self.headers.get("Authorization", "")
        if ws.auth == "basic":
            if not ws.check_basic(header):
                ws.auth_failures += 1
                self._reply(401, headers={"WWW-Authenticate": 'Basic realm="WSMAN"'})
                return
        else:
            scheme, _, token = header.partition(" ")
            if scheme in ("NTLM", "Negotiate") and token:
                try:
                    self.ntlm, out = ws.ntlm_step(self.ntlm, base64.b64decode(token))
                except Exception:
                    ws.auth_failures += 1
                    self.ntlm, self.authed = None, False
                    self._reply(401)
                    return
                if not self.ntlm.complete:
                    challenge = f"{scheme} {base64.b64encode(out or b'').decode()}"
                    self._reply(401, headers={"WWW-Authenticate": challenge})
                    return
                self.authed = True
            if not self.authed:
                self._reply(401, headers={"WWW-Authenticate": "Negotiate"})
                return
        if not body:
            self._reply(200)
            return
        encrypted = "multipart/encrypted" in self.headers.get("Content-Type", "")
        if ws.auth == "ntlm" and not encrypted:
            self._reply(400)  # AllowUnencrypted=false: Windows refuses clear-text messages
            return
        xml = wx.unwrap(body, self.ntlm.unwrap_winrm) if encrypted else body
        req = wx.parse(xml)
        ws.requests.append(req.action)
        item = ws.take_fault(req.action)
        if item is not None and item.kind == "drop":
            self._drop()
            return
        if item is not None and item.kind.startswith("http"):
            self._reply(int(item.kind[4:]))
            return
        status, answer = ws.handle(req)
        if item is not None and item.kind == "drop_after":
            self._drop()
            return
        if encrypted:
            wrapped = wx.wrap(answer, lambda m: _wrap(self.ntlm, m))
            self._reply(status, wrapped, {"Content-Type": wx.ENCRYPTED_CONTENT_TYPE})
        else:
            self._reply(status, answer, {"Content-Type": "application/soap+xml;charset=UTF-8"})


def _wrap(ctx: Any, message: bytes) -> tuple[bytes, bytes]:
    result = ctx.wrap_winrm(message)
    return result.header, result.data
