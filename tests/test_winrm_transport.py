"""The WinRM transport against the WS-Man double: real pywinrm, real NTLM + encryption, faults."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from npulab.errors import CommandError, TransportError, VerificationError
from npulab.hosts.credentials import Credentials, Secret
from npulab.testing.fakehost import FakeHost, Response, clixml_error, preset
from npulab.testing.wsman_server import Fault, WSManServer
from npulab.transport import reboot
from npulab.transport.settings import WinRMSettings
from npulab.transport.winrm import WinRMTransport

pytestmark = pytest.mark.integration
PASSWORD = "Tr4nsport-Secret-77"


def _transport(server: WSManServer, **overrides: object) -> WinRMTransport:
    options: dict[str, object] = {
        "endpoint": server.endpoint,
        "operation_timeout_sec": 1,
        "read_timeout_sec": 3,
        "retries": 2,
        "backoff_sec": 0.01,
    }
    options.update(overrides)
    creds = Credentials("labadmin", Secret(PASSWORD), "test")
    return WinRMTransport("phx-01", WinRMSettings(**options), creds)  # type: ignore[arg-type]


@pytest.fixture
def host() -> FakeHost:
    return FakeHost("phx-01", preset("phx"), password=PASSWORD)


@pytest.fixture
def server(host: FakeHost) -> Iterator[WSManServer]:
    with WSManServer(host, operation_timeout=0.5, reboot_downtime=0.6) as srv:
        yield srv


def test_run_decodes_utf8_gbk_and_clixml(host: FakeHost, server: WSManServer) -> None:
    host.on("python.exe", Response("héllo 你好\r\n", rc=0))
    host.on("pnputil.exe", Response("驱动程序包已添加\r\n".encode("gbk"), rc=0))  # OEM output
    host.on("script:*", Response(stderr=clixml_error("Get-Thing : boom\nline 2"), rc=1))
    t = _transport(server)
    assert t.run(["python.exe", "-c", "print('x')"]).stdout == "héllo 你好\r\n"
    host.facts.oem_codepage = 936
    assert t.run(["pnputil.exe", "/enum-drivers"]).stdout == "驱动程序包已添加\r\n"
    result = t.run_script("Get-Thing", shell="powershell", check=False)
    assert result.returncode == 1
    assert result.stderr == "Get-Thing : boom\nline 2\n"
    with pytest.raises(CommandError) as info:
        t.run_script("Get-Thing", shell="powershell")
    assert "boom" in str(info.value)
    assert "Create" in server.requests


def test_argv_reaches_program_exactly(host: FakeHost, server: WSManServer) -> None:
    seen: list[list[str]] = []
    host.on("tool.exe", lambda argv, _text: seen.append(argv) or Response())  # type: ignore[func-returns-value]
    args = ["C:\\Program Files\\t\\tool.exe", 'a "quoted" arg', "VEN_1022&DEV_1502", "tail\\"]
    _transport(server).run(args)
    assert seen == [args]


def test_long_script_and_file_upload(host: FakeHost, server: WSManServer, tmp_path: Path) -> None:
    script = "# npulab-script: build-step v1\n" + "Write-Output 'x'\n" * 4000  # 64 KB
    got: list[str] = []
    host.on("script:build-step", lambda _a, text: got.append(text or "") or Response("done"))  # type: ignore[func-returns-value]
    result = _transport(server).run_script(script, shell="powershell")
    assert result.stdout == "done"
    assert got == [script]
    # the command line carried only the fixed-size bootstrap; the script went over stdin,
    # read as a pipe (console mode off), by powershell itself (no cmd.exe in between)
    assert server.requests.count("Send") > 1
    line, options = server.commands[-1]
    assert len(line) < 4000
    assert options["WINRS_CONSOLEMODE_STDIN"] == "FALSE"
    assert options["WINRS_SKIP_CMD_SHELL"] == "TRUE"
    payload = bytes(range(256)) * 2000  # 512 KB, binary
    local = tmp_path / "payload.bin"
    local.write_bytes(payload)
    t = _transport(server)
    t.put_file(local, "C:\\npulab\\payload.bin")
    assert host.files["c:\\npulab\\payload.bin"] == payload
    back = tmp_path / "back" / "payload.bin"
    t.get_file("C:\\npulab\\payload.bin", back)
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(payload).digest()


def test_cmd_script_goes_through_wrapper(host: FakeHost, server: WSManServer) -> None:
    got: list[str] = []
    host.on("cmd:*", lambda _a, text: got.append(text or "") or Response("ok", rc=3))  # type: ignore[func-returns-value]
    result = _transport(server).run_script("echo a & echo b\nexit /b 3", shell="cmd", check=False)
    assert (result.returncode, result.stdout) == (3, "ok")
    assert got == ["echo a & echo b\r\nexit /b 3"]


def test_long_command_line_is_not_sent_through_cmd(host: FakeHost, server: WSManServer) -> None:
    host.on("tool.exe", Response("ok"))
    scripts: list[str] = []
    host.on("script:*", lambda _a, text: scripts.append(text or "") or Response("via script"))  # type: ignore[func-returns-value]
    result = _transport(server).run(["tool.exe", "x" * 9000], cwd="C:\\w", env={"A": "1"})
    assert result.stdout == "via script"  # routed over stdin, not a 9 KB command line
    lines = scripts[0].splitlines()
    assert lines[0] == "[Environment]::SetEnvironmentVariable('A', '1')"
    assert "$psi.WorkingDirectory = 'C:\\w'" in lines
    assert "$psi.FileName = 'tool.exe'" in lines


def test_dropped_receive_is_retried_without_rerunning(host: FakeHost, server: WSManServer) -> None:
    host.on("install.exe", Response("installed", duration=0.1))
    server.faults.append(Fault("Receive", "drop"))
    t = _transport(server)
    assert t.run(["install.exe", "/quiet"]).stdout == "installed"
    assert host.count("install.exe") == 1
    assert t.attempts == 1


def test_lost_command_answer_is_not_resent(host: FakeHost, server: WSManServer) -> None:
    host.on("install.exe", Response("installed"))
    server.faults.append(Fault("Command", "drop_after"))  # it ran; the answer was lost
    with pytest.raises(TransportError) as info:
        _transport(server).run(["install.exe", "/quiet"])
    assert "may or may not have run" in str(info.value)
    assert "not idempotent" in str(info.value)
    assert host.count("install.exe") == 1
    # a lost answer to the last stdin chunk of a script: same rule
    host.on("script:*", Response("ran"))
    server.faults.append(Fault("Send", "drop_after"))
    with pytest.raises(TransportError):
        _transport(server).run_script("Remove-Item C:\\x", shell="powershell")
    assert host.count("script:*") == 1


def test_idempotent_command_is_rerun_after_a_lost_answer(
    host: FakeHost, server: WSManServer
) -> None:
    host.on("query.exe", Response("state"))
    server.faults.append(Fault("Command", "drop_after"))
    t = _transport(server)
    assert t.run(["query.exe"], idempotent=True).stdout == "state"
    assert host.count("query.exe") == 2


def test_connection_refused_and_busy_are_retried(host: FakeHost, server: WSManServer) -> None:
    host.on("tool.exe", Response("ok"))
    server.faults.extend([Fault("Create", "http503"), Fault("Create", "drop")])
    t = _transport(server)
    assert t.run(["tool.exe"]).stdout == "ok"
    assert t.attempts == 2
    server.faults.append(Fault("Create", "http503", times=10))
    with pytest.raises(TransportError, match="after 3 attempts"):
        t.run(["tool.exe"])


def test_server_error_on_command_is_not_retried(host: FakeHost, server: WSManServer) -> None:
    host.on("tool.exe", Response("ok"))
    server.faults.append(Fault("Command", "http500"))
    with pytest.raises(TransportError, match="HTTP 500"):
        _transport(server).run(["tool.exe"])
    assert host.count("tool.exe") == 0


def test_operation_timeouts_are_polled_and_timeout_stops(
    host: FakeHost, server: WSManServer
) -> None:
    host.on("slow.exe", Response("finally", duration=1.2))  # > 2 operation timeouts of 0.5 s
    t = _transport(server)
    assert t.run(["slow.exe"]).stdout == "finally"
    assert server.requests.count("Receive") >= 3
    host.on("hang.exe", Response("never", duration=30))
    start = time.monotonic()
    with pytest.raises(CommandError, match=r"timed out after 1\.0s"):
        t.run(["hang.exe"], timeout=1.0)
    assert time.monotonic() - start < 5
    assert "Signal" in server.requests


def test_wrong_password_is_not_retried(host: FakeHost, server: WSManServer) -> None:
    host.password = "something-else"
    server.user_file.write_text(f":{host.user}:something-else\n")
    with pytest.raises(TransportError) as info:
        _transport(server).run(["tool.exe"])
    assert "credentials were rejected" in str(info.value)
    assert PASSWORD not in str(info.value)
    assert server.auth_failures == 1


def test_reboot_waits_for_a_new_boot_time(host: FakeHost, server: WSManServer) -> None:
    t = _transport(server)
    before = reboot.last_boot_time(t)
    after = reboot.reboot(t, timeout=15, poll=0.2, delay=0)
    assert after != before
    assert host.count("shutdown.exe") == 1
    assert t.run_script("# npulab-script: boot-time v1", shell="powershell").stdout.strip() == after


def test_reboot_wait_times_out(host: FakeHost) -> None:
    with WSManServer(host, operation_timeout=0.5, reboot_downtime=30) as srv:
        t = _transport(srv)
        start = time.monotonic()
        with pytest.raises(TransportError, match="did not come back from the reboot within 1s"):
            reboot.reboot(t, timeout=1.0, poll=0.2, delay=0)
        assert time.monotonic() - start < 6


def test_basic_over_http_is_refused_before_any_request(server: WSManServer) -> None:
    with pytest.raises(TransportError, match="clear text"):
        _transport(server, auth="basic")
    assert server.requests == []
    t = _transport(server, auth="basic", allow_basic_over_http=True, message_encryption="never")
    assert t.settings.allow_basic_over_http


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "npulab-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = tmp_path / "cert.pem"
    key_path = tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_basic_validates_the_certificate(
    host: FakeHost, tls_files: tuple[Path, Path]
) -> None:
    cert, key = tls_files
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    host.on("tool.exe", Response("over tls"))
    with WSManServer(host, auth="basic", tls=ctx) as srv:
        assert srv.endpoint.startswith("https://")
        good = _transport(srv, auth="ssl", ca_trust_path=str(cert))
        assert good.run(["tool.exe"]).stdout == "over tls"
        untrusted = _transport(srv, auth="ssl", ca_trust_path=None)
        with pytest.raises(TransportError) as info:
            untrusted.run(["tool.exe"])
        assert "TLS" in str(info.value)
        assert "ca_trust_path" in str(info.value)
        assert host.count("tool.exe") == 1


def test_scripted_401_is_an_auth_failure_not_retried(host: FakeHost, server: WSManServer) -> None:
    server.faults.append(Fault("Create", "http401"))
    t = _transport(server)
    with pytest.raises(TransportError, match="credentials were rejected") as info:
        t.run(["tool.exe"])
    assert "NPULAB_WINRM_PASSWORD" in str(info.value)  # the hint names where credentials live
    assert server.requests.count("Create") == 1
    assert t._proto().transport.read_timeout_sec == (3, 3)  # (connect, read) for requests


def test_double_serves_pywinrm_session_api(host: FakeHost, server: WSManServer) -> None:
    """pywinrm's own high-level Session (run_cmd through cmd.exe, run_ps) works too."""
    import winrm

    host.on("ipconfig", Response("Windows IP Configuration\r\n"))
    host.on("script:*", Response(stderr=clixml_error("boom"), rc=1))
    session = winrm.Session(
        server.endpoint,
        auth=("labadmin", PASSWORD),
        transport="ntlm",
        operation_timeout_sec=1,
        read_timeout_sec=3,
    )
    result = session.run_cmd("ipconfig", ["/all"])
    assert (result.status_code, result.std_out) == (0, b"Windows IP Configuration\r\n")
    failed = session.run_ps("Get-Thing")
    assert failed.status_code == 1
    assert b"boom" in failed.std_err
    _, options = server.commands[0]
    assert options["WINRS_SKIP_CMD_SHELL"] == "FALSE"


def test_run_streams_parts_while_the_command_runs(host: FakeHost, server: WSManServer) -> None:
    # "é" split across two Receives: the live view must not show a replacement character
    parts: list[tuple[float, bytes | str]] = [
        (0, "step 1\r\n"),
        (0.3, b"caf\xc3"),
        (0.6, b"\xa9\r\n"),
    ]
    host.on("build.exe", Response(parts=parts, stderr="warn\r\n", rc=0))
    events: list[tuple[str, str, float]] = []

    def sink(stream: str, text: str) -> None:
        events.append((stream, text, time.monotonic()))

    result = _transport(server).run(["build.exe"], on_output=sink)
    returned = time.monotonic()
    assert result.stdout == "step 1\r\ncafé\r\n"
    assert events[0][:2] == ("stdout", "step 1\r\n")
    assert returned - events[0][2] > 0.3  # the first part came while the command still ran
    assert [text for stream, text, _ in events if stream == "stdout"] == [
        "step 1\r\n",
        "caf",
        "é\r\n",
    ]
    assert [text for stream, text, _ in events if stream == "stderr"] == ["warn\r\n"]
    assert server.requests.count("Receive") >= 3


def test_run_script_streams_and_dry_run_does_not(host: FakeHost, server: WSManServer) -> None:
    parts: list[tuple[float, bytes | str]] = [(0.0, b"first\r\n"), (0.3, b"second\r\n")]
    host.on("script:*", Response(parts=parts, stdout="last\r\n"))
    events: list[tuple[str, float]] = []
    t = _transport(server)
    result = t.run_script(
        "Write-Output hi",
        shell="powershell",
        on_output=lambda _s, text: events.append((text, time.monotonic())),
    )
    returned = time.monotonic()
    assert result.stdout == "first\r\nsecond\r\nlast\r\n"
    assert events[0][0] == "first\r\n"
    assert returned - events[0][1] > 0.2
    assert "".join(text for text, _ in events) == result.stdout
    # argv too long for a command line goes through run_script, and streams as well
    seen: list[str] = []
    assert t.run(["tool.exe", "x" * 9000], on_output=lambda _s, text: seen.append(text)).ok
    assert "".join(seen) == result.stdout
    before, dry_calls = list(server.requests), len(seen)
    dry = t.run_script(
        "Write-Output hi", shell="powershell", dry_run=True, on_output=lambda _s, x: seen.append(x)
    )
    assert dry.dry_run
    assert t.run(["build.exe"], dry_run=True, on_output=lambda _s, x: seen.append(x)).dry_run
    assert (server.requests, len(seen)) == (before, dry_calls)  # nothing sent, sink not called


def test_password_in_a_command_line_is_masked_in_the_log_and_the_error(
    host: FakeHost, server: WSManServer, capfd: pytest.CaptureFixture[str]
) -> None:
    host.on("net.exe", Response(stderr="System error 86 has occurred.\r\n", rc=2))
    argv = ["net.exe", "use", "\\\\nas\\models", PASSWORD, "/user:labadmin"]
    with pytest.raises(CommandError) as info:
        _transport(server).run(argv)
    shown = f"{info.value} {info.value!r} " + "".join(capfd.readouterr())
    assert "net.exe use \\\\nas\\models ******** /user:labadmin" in shown
    assert "System error 86" in shown
    assert PASSWORD not in shown
    _transport(server).run(argv, dry_run=True)
    assert PASSWORD not in "".join(capfd.readouterr())


def _in_transit(host: FakeHost, damage: Callable[[str, bytes, Response], tuple[bytes, Response]]):  # type: ignore[no-untyped-def]
    """Let the network between us and ``host`` change what it carries (both directions)."""
    real = host.execute

    def execute(line: str, stdin: bytes, codepage: int) -> Response:
        stdin, _ = damage(line, stdin, Response())
        response = real(line, stdin, codepage)
        _, response = damage(line, b"", response)
        return response

    host.execute = execute  # type: ignore[method-assign]


def _flip_one_byte(b64_line: str) -> str:
    raw = bytearray(base64.b64decode(b64_line))
    raw[len(raw) // 2] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_a_download_damaged_in_transit_is_refused_and_nothing_is_written(
    host: FakeHost, server: WSManServer, tmp_path: Path
) -> None:
    content = b"step 03: conda env created\r\n" * 4000
    host.files["c:\\npulab\\logs\\03.log"] = content

    def damage(_line: str, stdin: bytes, response: Response) -> tuple[bytes, Response]:
        out = response.stdout
        if isinstance(out, str) and "\r\nsha256:" in out:
            first, rest = out.split("\r\n", 1)
            response = Response(_flip_one_byte(first) + "\r\n" + rest, rc=response.rc)
        return stdin, response

    _in_transit(host, damage)
    local = tmp_path / "logs" / "03.log"
    with pytest.raises(VerificationError) as info:
        _transport(server).get_file("C:\\npulab\\logs\\03.log", local)
    assert "does not match the host's " + hashlib.sha256(content).hexdigest() in str(info.value)
    assert not local.exists()
    assert not list(tmp_path.rglob("*.part"))


def test_a_script_damaged_in_transit_is_not_run_and_says_so(
    host: FakeHost, server: WSManServer
) -> None:
    ran: list[str] = []
    host.on("script:build-step", lambda _a, text: ran.append(text or "") or Response("ran"))  # type: ignore[func-returns-value]
    script = "# npulab-script: build-step v1\nWrite-Output 'x'\n"

    def damage(line: str, stdin: bytes, response: Response) -> tuple[bytes, Response]:
        if stdin:  # the script travels over stdin as base64 lines
            lines = stdin.split(b"\r\n")
            lines[0] = _flip_one_byte(lines[0].decode()).encode()
            stdin = b"\r\n".join(lines)
        return stdin, response

    _in_transit(host, damage)
    for check in (True, False):
        with pytest.raises(TransportError, match=r"arrived damaged \(sha256 mismatch\)"):
            _transport(server).run_script(script, shell="powershell", check=check)
    assert ran == []


def test_local_powershell_scripts_are_written_with_a_bom(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows PowerShell 5.1 reads a BOM-less .ps1 as ANSI: a non-ASCII path in a stamp read
    or upload script would arrive garbled. The local transport writes UTF-8 with a BOM."""
    from npulab.transport import local

    seen: dict[str, bytes] = {}

    def fake_run(*argv: str, **_kw: object) -> local.cmd.Completed:
        seen["script"] = Path(argv[-1]).read_bytes()
        return local.cmd.Completed(argv=argv, returncode=0, stdout="", stderr="")

    monkeypatch.setattr(local.cmd, "run", fake_run)
    local.LocalTransport().run_script("Write-Output 'D:\\构建'", shell="powershell")
    assert seen["script"].startswith(b"\xef\xbb\xbf")
    assert seen["script"][3:].decode("utf-8") == "Write-Output 'D:\\构建'"


def test_an_upload_damaged_in_transit_is_not_kept_and_the_old_file_stays(
    host: FakeHost, server: WSManServer, tmp_path: Path
) -> None:
    host.files["c:\\npulab\\recipe.yaml"] = b"old: 1\r\n"
    local = tmp_path / "recipe.yaml"
    local.write_bytes(b"new: 2\r\n" * 5000)

    def damage(_line: str, stdin: bytes, response: Response) -> tuple[bytes, Response]:
        if stdin:  # the file travels over stdin as base64 lines
            lines = stdin.split(b"\r\n")
            lines[0] = _flip_one_byte(lines[0].decode()).encode()
            stdin = b"\r\n".join(lines)
        return stdin, response

    real = host.execute
    _in_transit(host, damage)
    with pytest.raises(VerificationError, match=r"arrived damaged \(sha256 mismatch\); not kept"):
        _transport(server).put_file(local, "C:\\npulab\\recipe.yaml")
    assert host.files == {"c:\\npulab\\recipe.yaml": b"old: 1\r\n"}
    host.execute = real  # type: ignore[method-assign]
    _transport(server).put_file(local, "C:\\npulab\\recipe.yaml")
    assert host.files == {"c:\\npulab\\recipe.yaml": local.read_bytes()}


def _fetch_reply(host: FakeHost, rewrite: Callable[[str], str]) -> None:
    def damage(_line: str, stdin: bytes, response: Response) -> tuple[bytes, Response]:
        out = response.stdout
        if isinstance(out, str) and "\r\nsha256:" in out:
            response = Response(rewrite(out), rc=response.rc)
        return stdin, response

    _in_transit(host, damage)


@pytest.mark.parametrize(
    ("rewrite", "error", "says"),
    [
        (lambda out: out.replace("A", "!", 1), VerificationError, "returned damaged base64"),
        (lambda out: out.rsplit("\r\n", 1)[0], TransportError, "returned no checksum line"),
        (lambda out: "", TransportError, "returned no checksum line"),
    ],
)
def test_a_fetch_reply_that_is_not_whole_is_refused(
    host: FakeHost,
    server: WSManServer,
    tmp_path: Path,
    rewrite: Callable[[str], str],
    error: type[Exception],
    says: str,
) -> None:
    host.files["c:\\npulab\\logs\\03.log"] = b"step 03\r\n" * 3000
    _fetch_reply(host, rewrite)
    local = tmp_path / "logs" / "03.log"
    with pytest.raises(error, match=says):
        _transport(server).get_file("C:\\npulab\\logs\\03.log", local)
    assert not list(tmp_path.rglob("*"))


def test_get_file_creates_missing_folders_and_overwrites(
    host: FakeHost, server: WSManServer, tmp_path: Path
) -> None:
    host.files["c:\\x.log"] = b"one"
    deep = tmp_path / "a" / "b" / "x.log"
    t = _transport(server)
    t.get_file("C:\\x.log", deep)
    host.files["c:\\x.log"] = b"two"
    t.get_file("C:\\x.log", deep)
    t.get_file("C:\\x.log", deep.with_name("y.log"))
    assert (deep.read_bytes(), deep.with_name("y.log").read_bytes()) == (b"two", b"two")
    assert sorted(p.name for p in deep.parent.iterdir()) == ["x.log", "y.log"]


def test_an_upload_the_host_echoes_with_another_hash_fails(
    host: FakeHost, server: WSManServer, tmp_path: Path
) -> None:
    def damage(_line: str, stdin: bytes, response: Response) -> tuple[bytes, Response]:
        if response.rc == 0 and isinstance(response.stdout, str) and len(response.stdout) == 66:
            response = Response("0" * 64 + "\r\n")  # a receiver that kept something else
        return stdin, response

    local = tmp_path / "f.bin"
    local.write_bytes(b"payload")
    _in_transit(host, damage)
    with pytest.raises(TransportError, match=r"upload to C:\\f\.bin failed \(exit 0\)"):
        _transport(server).put_file(local, "C:\\f.bin")


def test_session_builds_are_serialised_across_threads(
    server: WSManServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """requests edits os.environ["no_proxy"] while pywinrm builds a session: never two at once."""
    import threading

    import requests

    active = 0
    most = 0
    guard = threading.Lock()
    real = requests.Session.merge_environment_settings

    def counting(self: requests.Session, *args: object, **kwargs: object) -> object:
        nonlocal active, most
        with guard:
            active += 1
            most = max(most, active)
        time.sleep(0.05)
        try:
            return real(self, *args, **kwargs)  # type: ignore[arg-type]
        finally:
            with guard:
                active -= 1

    monkeypatch.setattr(requests.Session, "merge_environment_settings", counting)
    transports = [_transport(server) for _ in range(6)]
    threads = [
        threading.Thread(target=lambda t=t: t._proto().transport.build_session())
        for t in transports
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(t._proto().transport.session is not None for t in transports)
    assert most == 1
