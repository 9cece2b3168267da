"""The WinRM transport: pywinrm's WS-Man Protocol, used the careful way.

* Shells open with code page 65001; output is read as bytes and decoded on purpose (UTF-8, else
  the host's OEM code page, asked once with ``reg query ... OEMCP``); CLIXML stderr is decoded.
* Programs run without cmd.exe (``WINRS_SKIP_CMD_SHELL``): the argv is quoted once, Win32 style.
  Scripts and files travel over stdin with a sha256 check (:mod:`npulab.transport.psscripts`),
  so no 8 KB command-line limit applies.
* Faults are retried with backoff only where that cannot run anything twice (docs/lab.md#retry-
  policy): a command whose request may have reached the host is never re-sent unless the caller
  says it is idempotent.
* NTLM with message encryption by default; HTTPS validates certificates; Basic over plain HTTP is
  refused unless the inventory allows it. The password is never logged or put in an error.
* ``on_output`` sees each Receive's bytes as they come (incremental UTF-8, for a live view);
  the returned Completed is decoded from the whole output as above.
"""

from __future__ import annotations

import codecs
import math
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

import requests
from winrm.exceptions import WinRMOperationTimeoutError
from winrm.protocol import Protocol

from npulab import log
from npulab.cmd import Completed, OutputSink
from npulab.errors import CommandError, TransportError
from npulab.hosts.credentials import Credentials, redact
from npulab.quoting import quote_argv
from npulab.transport import psscripts
from npulab.transport.base import Shell
from npulab.transport.decode import clixml_to_text, decode_output, is_utf8
from npulab.transport.faults import Fault, MaybeStarted, classify
from npulab.transport.files import RemoteFiles
from npulab.transport.settings import WinRMSettings

#: pywinrm builds its requests session with ``proxies={"no_proxy": "*"}``; requests then sets and
#: deletes ``os.environ["no_proxy"]`` around its proxy look-up (``requests.utils.set_environ``),
#: which is not thread-safe: two hosts probed at once can raise ``KeyError: 'no_proxy'``. Session
#: builds are serialised here (they do no I/O, so the lock costs nothing).
_SESSION_BUILD_LOCK = threading.Lock()

T = TypeVar("T")


class WinRMTransport(RemoteFiles):
    """A :class:`~npulab.transport.Transport` to one Windows host."""

    def __init__(
        self,
        name: str,
        settings: WinRMSettings,
        credentials: Credentials,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        settings.check(name)
        self._name = name
        self.settings = settings
        self._creds = credentials
        self._sleep = sleep
        self._protocol: Protocol | None = None
        self._oem = settings.oem_codepage
        self.attempts = 0  # WS-Man requests that failed and were retried (for tests and reports)

    @property
    def host(self) -> str:
        return self._name

    @property
    def is_windows(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"WinRMTransport({self._name!r}, {self.settings.endpoint!r})"

    # -- connection -----------------------------------------------------------------------
    def _proto(self) -> Protocol:
        if self._protocol is None:
            s = self.settings
            self._protocol = Protocol(
                s.endpoint,
                transport=s.auth,  # type: ignore[arg-type]
                username=self._creds.user,
                password=self._creds.password.reveal(),
                server_cert_validation=s.server_cert_validation,  # type: ignore[arg-type]
                ca_trust_path=s.ca_trust_path or "legacy_requests",
                message_encryption=s.message_encryption,  # type: ignore[arg-type]
                operation_timeout_sec=s.operation_timeout_sec,
                read_timeout_sec=s.read_timeout_sec,
                proxy=None,
            )
            # pywinrm hands one number to requests, which then waits as long to *connect* as
            # to read; a (connect, read) pair lets a dead host fail in seconds.
            timeouts = (min(s.connect_timeout_sec, s.read_timeout_sec), s.read_timeout_sec)
            self._protocol.transport.read_timeout_sec = timeouts  # type: ignore[assignment]
            transport = self._protocol.transport
            build = transport.build_session

            def build_session_locked() -> requests.Session:
                with _SESSION_BUILD_LOCK:
                    return build()

            transport.build_session = build_session_locked  # type: ignore[method-assign]
        return self._protocol

    def close(self) -> None:
        if self._protocol is not None:
            self._protocol.transport.close_session()
            self._protocol = None

    def _error(self, reason: str, fault: Fault, op: str) -> TransportError:
        where = f"{self._name} ({self.settings.endpoint})"
        hints = {
            Fault.AUTH: "check NPULAB_WINRM_USER/NPULAB_WINRM_PASSWORD (or the per-host "
            "variables, docs/lab.md#credentials)",
            Fault.TLS: "install the lab CA and set ansible_winrm_ca_trust_path",
        }
        hint = hints.get(fault, f"check that WinRM answers: invoke lab.probe --hosts {self._name}")
        msg = redact(f"{where}: WS-Man {op} failed: {reason}", [self._creds.password])
        return TransportError(msg, hint=hint)

    def _op(
        self, op: str, call: Callable[[Protocol], T], *, safe: bool, retries: int | None = None
    ) -> T:
        """One WS-Man request with the retry policy. ``safe``: repeating it cannot start anything
        a second time (Create, Receive, Signal, Delete); Command and Send are not safe."""
        retries = self.settings.retries if retries is None else retries
        for attempt in range(retries + 1):
            try:
                return call(self._proto())
            except WinRMOperationTimeoutError:
                raise
            except Exception as exc:
                kind = classify(exc)
                if kind is None:
                    raise
                fault, reason = kind
                self.close()  # a fresh session: NTLM contexts belong to one TCP connection
                if fault is Fault.MAYBE_SENT and not safe:
                    raise MaybeStarted(reason) from exc
                retryable = fault in (Fault.NOT_SENT, Fault.BUSY, Fault.MAYBE_SENT)
                if not retryable or attempt == retries:
                    err = self._error(reason, fault, op)
                    if retryable and retries:
                        err.message += f" (after {attempt + 1} attempts)"
                    raise err from None
                self.attempts += 1
                delay = min(self.settings.max_backoff_sec, self.settings.backoff_sec * 2**attempt)
                delay *= random.uniform(0.8, 1.2)
                log.warning(f"[{self._name}] {op}: {reason}; retrying in {delay:.1f}s")
                self._sleep(delay)
        msg = "unreachable"
        raise AssertionError(msg)  # pragma: no cover

    # -- one command ----------------------------------------------------------------------
    def _execute(
        self,
        command_line: str,
        *,
        stdin: Sequence[bytes] = (),
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        on_output: OutputSink | None = None,
    ) -> tuple[int, bytes, bytes]:
        shell_id = self._op(
            "Create",
            lambda p: p.open_shell(
                codepage=65001, working_directory=cwd, env_vars=dict(env or {}), noprofile=True
            ),
            safe=True,
            retries=retries,
        )
        try:
            command_id = self._op(
                "Command",
                # stdin as a pipe, not a console, when we feed it (as Ansible does)
                lambda p: p.run_command(
                    shell_id, command_line, console_mode_stdin=not stdin, skip_cmd_shell=True
                ),
                safe=False,
                retries=retries,
            )
            for i, chunk in enumerate(stdin):
                self._send(shell_id, command_id, chunk, i == len(stdin) - 1, retries)
            return self._receive(shell_id, command_id, command_line, timeout, retries, on_output)
        finally:
            self._delete_shell(shell_id)

    def _send(
        self, shell_id: str, command_id: str, chunk: bytes, end: bool, retries: int | None
    ) -> None:
        def call(p: Protocol) -> None:
            p.send_command_input(shell_id, command_id, chunk, end)

        self._op("Send", call, safe=False, retries=retries)

    def _receive(
        self,
        shell_id: str,
        command_id: str,
        line: str,
        timeout: float | None,
        retries: int | None,
        on_output: OutputSink | None = None,
    ) -> tuple[int, bytes, bytes]:
        deadline = None if timeout is None else time.monotonic() + timeout
        out: list[bytes] = []
        err: list[bytes] = []
        live = {
            name: codecs.getincrementaldecoder("utf-8")(errors="replace")
            for name in ("stdout", "stderr")
        }
        while True:
            try:
                o, e, rc, done = self._op(
                    "Receive",
                    lambda p: self._receive_once(p, shell_id, command_id, deadline),
                    safe=True,
                    retries=retries,
                )
            except WinRMOperationTimeoutError:
                o, e, rc, done = b"", b"", -1, False
            out.append(o)
            err.append(e)
            if on_output is not None:
                for name, data in (("stdout", o), ("stderr", e)):
                    if text := live[name].decode(data, final=done):
                        on_output(name, text)
            if done:
                return rc, b"".join(out), b"".join(err)
            if deadline is not None and time.monotonic() > deadline:
                self._signal_terminate(shell_id, command_id)
                msg = f"[{self._name}] command timed out after {timeout}s: {line[:200]}"
                raise CommandError(
                    msg,
                    command=line,
                    returncode=None,
                    stdout=self._decode(b"".join(out)),
                    stderr=self._decode(b"".join(err)),
                )

    def _receive_once(
        self, p: Protocol, shell_id: str, command_id: str, deadline: float | None
    ) -> tuple[bytes, bytes, int, bool]:
        """One Receive, asking the host to answer by ``deadline`` at the latest: a command
        that never answers (a hung WMI: WinRM replies w:TimedOut each OperationTimeout) is then
        stopped within a second of its time limit, not up to an operation timeout later."""
        configured = self.settings.operation_timeout_sec
        if deadline is not None:
            p.operation_timeout_sec = max(
                1, min(configured, math.ceil(deadline - time.monotonic()))
            )
        try:
            return p.get_command_output_raw(shell_id, command_id)
        finally:
            p.operation_timeout_sec = configured

    def _signal_terminate(self, shell_id: str, command_id: str) -> None:
        try:
            self._op("Signal", lambda p: p.cleanup_command(shell_id, command_id), safe=True)
        except TransportError as exc:
            log.warning(f"[{self._name}] could not stop the command: {exc.message}")

    def _delete_shell(self, shell_id: str) -> None:
        try:
            self._op(
                "Delete",
                lambda p: p.close_shell(shell_id, close_session=False),
                safe=True,
                retries=1,
            )
        except (TransportError, MaybeStarted) as exc:
            log.warning(f"[{self._name}] could not delete shell {shell_id}: {exc}")

    # -- decoding -------------------------------------------------------------------------
    def oem_codepage(self) -> int | None:
        """The host's OEM code page (from the inventory, else asked once; ASCII output)."""
        if self._oem is None:
            rc, out, _ = self._execute(quote_argv(psscripts.OEM_CODEPAGE_ARGV), retries=1)
            words = out.decode("ascii", errors="replace").split()
            if rc == 0 and "OEMCP" in words and words[-1].isdigit():
                self._oem = int(words[-1])
            else:
                self._oem = 437
                log.warning(f"[{self._name}] could not read the OEM code page; assuming 437")
        return self._oem

    def _decode(self, data: bytes) -> str:
        if is_utf8(data):
            return decode_output(data, None)
        return decode_output(data, self.oem_codepage())

    def _finish(
        self, argv: tuple[str, ...], display: str, result: tuple[int, bytes, bytes], check: bool
    ) -> Completed:
        rc, out, err = result
        stdout = self._decode(out)
        stderr = clixml_to_text(self._decode(err))
        completed = Completed(argv=argv, returncode=rc, stdout=stdout, stderr=stderr)
        if check and rc != 0:
            msg = f"[{self._name}] command failed with exit code {rc}: {display}"
            raise CommandError(msg, command=argv, returncode=rc, stdout=stdout, stderr=stderr)
        return completed

    def _with_rerun(self, display: str, idempotent: bool, attempt: Callable[[], T]) -> T:
        for tries in range(self.settings.retries + 1):
            try:
                return attempt()
            except MaybeStarted as exc:
                if not idempotent or tries == self.settings.retries:
                    what = "not re-sent: it is not idempotent" if not idempotent else "gave up"
                    msg = (
                        f"{self._name}: connection lost after the command was sent "
                        f"({exc.reason}); it may or may not have run ({what}): {display}"
                    )
                    raise TransportError(
                        msg, hint=f"check the host's state, then re-run: {display}"
                    ) from None
                self.attempts += 1
                log.warning(f"[{self._name}] {exc.reason}; re-running idempotent command")
                self._sleep(self.settings.backoff_sec)
        msg = "unreachable"
        raise AssertionError(msg)  # pragma: no cover

    # -- Transport ------------------------------------------------------------------------
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
        args = tuple(argv)
        line = quote_argv(args)
        display = redact(line, [self._creds.password])
        log.command(display, where=self._name, dry_run=dry_run)
        if dry_run:
            return Completed(argv=args, returncode=0, stdout="", stderr="", dry_run=True)
        if len(line) > 8000:
            # too long for one command line: the same call from a script sent over stdin
            script = psscripts.argv_script(args, dict(env or {}), cwd)
            return self.run_script(
                script,
                shell="powershell",
                timeout=timeout,
                check=check,
                idempotent=idempotent,
                on_output=on_output,
            )
        result = self._with_rerun(
            display,
            idempotent,
            lambda: self._execute(line, cwd=cwd, env=env, timeout=timeout, on_output=on_output),
        )
        return self._finish(args, display, result, check)

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
        payload = script if shell == "powershell" else psscripts.cmd_wrapper(script)
        first = script.strip().splitlines()[0] if script.strip() else "(empty)"
        display = f"{shell} script ({len(script.encode())} bytes): {first[:120]}"
        display = redact(display, [self._creds.password])
        log.command(display, where=self._name, dry_run=dry_run)
        argv = tuple(psscripts.encoded_command(psscripts.script_bootstrap(payload)))
        if dry_run:
            return Completed(argv=argv, returncode=0, stdout="", stderr="", dry_run=True)
        lines = psscripts.b64_lines(payload.encode("utf-8"))
        result = self._with_rerun(
            display,
            idempotent,
            lambda: self._execute(
                quote_argv(argv), stdin=lines, timeout=timeout, on_output=on_output
            ),
        )
        if result[0] == psscripts.EXIT_SCRIPT_HASH:
            msg = f"{self._name}: the script arrived damaged (sha256 mismatch): {display}"
            raise TransportError(msg, hint="re-run; if it persists, check the network path")
        return self._finish(argv, display, result, check)

    def _execute_upload(self, argv: Sequence[str], lines: Sequence[bytes]) -> tuple[int, str, str]:
        rc, out, err = self._with_rerun(
            "upload", True, lambda: self._execute(quote_argv(argv), stdin=lines)
        )
        return rc, self._decode(out), clixml_to_text(self._decode(err))

    def _fetch_text(self, script: str) -> str:
        return self.run_script(script, shell="powershell", idempotent=True).stdout
