"""What a simulated Windows lab machine does with the commands it is sent.

The WS-Man double (:mod:`npulab.testing.wsman_server`) carries requests; a :class:`FakeHost` says
what each command prints and returns. It understands npulab's own protocol the way Windows would
run it: the stdin bootstrap and the upload receiver are *run*, through the PowerShell model
(:mod:`npulab.testing.psmodel`), so their own sha256 checks decide (a received file lands in
:attr:`FakeHost.files`); the fetch script, the cmd wrapper,
``reg query ... OEMCP`` and ``shutdown /r``. Scripts are identified by their marker line
(``# npulab-script: probe v1``), never by matching their text.

Tests script the rest: :meth:`FakeHost.on` registers a response for a program (argv[0] base
name) or a script marker; the response may be bytes in any code page, CLIXML stderr, an exit
code, a duration and stdout delivered in timed parts (a command that prints as it runs).
Every started command is recorded in :attr:`FakeHost.started`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from npulab.testing import psmodel

_MARKER = re.compile(r"^# npulab-(script|bootstrap|receiver):? ?(\S+)?(?: v(\d+))?(.*)$", re.M)
_PWSH_LITERAL = r"'((?:[^']|'')*)'"


@dataclass
class Facts:
    """Host facts, as the probe script reports them."""

    cpu: str = "AMD Ryzen 9 7940HS w/ Radeon 780M Graphics"
    computer_name: str = "LAB-PHX-01"
    caption: str = "Microsoft Windows 11 Pro"
    build: str = "22631"
    ubr: int = 3007
    display_version: str = "23H2"
    oem_codepage: int = 437
    free_bytes: int = 180 * 2**30
    size_bytes: int = 475 * 2**30
    pci: list[dict[str, Any]] = field(default_factory=list)
    prereqs: dict[str, str | None] = field(default_factory=dict)
    long_paths: bool = True


NPU_NAME = "NPU Compute Accelerator Device"
AMD = "Advanced Micro Devices, Inc."


def npu_device(dev: str = "1502", driver: str | None = "10.1109.8.100") -> dict[str, Any]:
    return {
        "device_id": f"PCI\\VEN_1022&DEV_{dev}&SUBSYS_15021022&REV_00\\4&2E5B5A4F&0&0141",
        "name": NPU_NAME,
        "driver_version": driver,
        "driver_provider": AMD if driver else None,
    }


def other_amd_devices() -> list[dict[str, Any]]:
    return [
        {
            "device_id": "PCI\\VEN_1022&DEV_14E8&SUBSYS_14E81022&REV_00\\3&11583659&0&00",
            "name": "PCI standard host CPU bridge",
            "driver_version": "10.0.22621.1",
            "driver_provider": "Microsoft",
        }
    ]


ALL_PREREQS: dict[str, str | None] = {
    "conda": "C:\\ProgramData\\miniconda3\\condabin\\conda.bat",
    "git": "git version 2.45.2.windows.1",
    "git_lfs": "git-lfs/3.5.1 (GitHub; windows amd64; go 1.21.7)",
    "vs2019_v142": "C:\\Program Files (x86)\\Microsoft Visual Studio\\2019\\BuildTools",
    "runner_service": "actions.runner.npulab.phx-01 (Running)",
}


def preset(kind: str, **overrides: Any) -> Facts:
    """Facts for ``phx`` (7940HS), ``hpt`` (8845HS), ``strix`` (HX 370) or ``no-npu``."""
    cpus = {
        "phx": "AMD Ryzen 9 7940HS w/ Radeon 780M Graphics",
        "hpt": "AMD Ryzen 7 8845HS w/ Radeon 780M Graphics",
        "strix": "AMD Ryzen AI 9 HX 370 w/ Radeon 890M",
        "no-npu": "AMD Ryzen 7 7840U w/ Radeon  780M Graphics",
    }
    pci = other_amd_devices()
    if kind in ("phx", "hpt"):
        pci.append(npu_device("1502"))
    elif kind == "strix":
        pci.append(npu_device("17F0", "32.0.201.204"))
    facts = Facts(cpu=cpus[kind], pci=pci, prereqs=dict(ALL_PREREQS))
    for key, value in overrides.items():
        setattr(facts, key, value)
    return facts


@dataclass
class Response:
    """What a command prints and returns. ``str`` output is encoded in the shell's code page
    (or the host's OEM code page when the host ignores the shell's); bytes go out as they are.

    ``parts``: stdout printed while the command runs, as ``(seconds after start, chunk)``; a
    Receive returns the parts already due with the command still Running. The command is Done
    after its last part and ``duration``; ``stdout`` and ``stderr`` come with the Done answer."""

    stdout: bytes | str = b""
    stderr: bytes | str = b""
    rc: int = 0
    duration: float = 0.0
    parts: list[tuple[float, bytes | str]] = field(default_factory=list)

    @property
    def ends_after(self) -> float:
        return max([self.duration, *(delay for delay, _ in self.parts)])


Handler = Response | Callable[[list[str], str | None], Response]


def clixml_error(message: str) -> str:
    escaped = message.replace("\r\n", "_x000D__x000A_").replace("\n", "_x000A_")
    return (
        "#< CLIXML\r\n"
        '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        '<Obj S="progress" RefId="0"><TN RefId="0"><T>System.Management.Automation.PSCustomObject'
        '</T></TN><MS><I64 N="SourceId">1</I64></MS></Obj>'
        f'<S S="Error">{escaped}_x000D__x000A_</S></Objs>'
    )


def powershell_error_view(
    command: str,
    message: str,
    *,
    category: str,
    error_id: str,
    line: int = 1,
    char: int = 1,
    source: str = "",
) -> str:
    """A terminating error as ``powershell.exe -EncodedCommand`` writes it to stderr over WinRM:
    the error record in PowerShell's NormalView (``<command> : <message>``, ``At line:N
    char:M``, the source line and its ``~~~`` underline, ``+ CategoryInfo``, ``+
    FullyQualifiedErrorId``), every line one ``<S S="Error">`` record of a CLIXML document."""
    source = source or command
    view = [
        f"{command} : {message}",
        f"At line:{line} char:{char}",
        f"+ {source}",
        f"+ {'~' * len(source)}",
        f"    + CategoryInfo          : {category}",
        f"    + FullyQualifiedErrorId : {error_id}",
        " ",
    ]
    records = "".join(f'<S S="Error">{_xml_text(text)}_x000D__x000A_</S>' for text in view)
    return (
        "#< CLIXML\r\n"
        '<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
        f"{records}</Objs>"
    )


def _xml_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cim_access_denied() -> Response:
    """``Get-CimInstance`` refused by WMI (WBEM_E_ACCESS_DENIED, HRESULT 0x80041003): exit 1
    and the error view, as on a host where the probe's account lacks WMI rights."""
    return Response(
        stderr=powershell_error_view(
            "Get-CimInstance",
            "Access denied ",
            category="PermissionDenied: (root\\cimv2:Win32_Processor:String) [Get-CimInstance], "
            "CimException",
            error_id="HRESULT 0x80041003,Microsoft.Management.Infrastructure.CimCmdlets."
            "GetCimInstanceCommand",
            line=3,
            char=8,
            source="$cpu = Get-CimInstance Win32_Processor",
        ),
        rc=1,
    )


def wmi_never_answers() -> Response:
    """A probe stuck in a hung WMI provider: the command never ends, so WinRM answers every
    Receive with a ``w:TimedOut`` fault (2150858793) once its OperationTimeout has passed,
    for as long as the client keeps asking, until the command is signalled (MS-WSMV 3.1.4.14:
    the client re-issues Receive after an OperationTimeout fault)."""
    return Response(duration=math.inf)


def split_win_argv(line: str) -> list[str]:
    """Split a command line the way the MSVC runtime does (CommandLineToArgvW rules)."""
    args: list[str] = []
    current: list[str] = []
    in_quotes = False
    have_arg = False
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\":
            j = i
            while j < len(line) and line[j] == "\\":
                j += 1
            count = j - i
            if j < len(line) and line[j] == '"':
                current.append("\\" * (count // 2))
                if count % 2:
                    current.append('"')
                    i = j + 1
                else:
                    i = j
            else:
                current.append("\\" * count)
                i = j
            have_arg = True
            continue
        if ch == '"':
            if in_quotes and i + 1 < len(line) and line[i + 1] == '"':
                current.append('"')
                i += 2
                continue
            in_quotes = not in_quotes
            have_arg = True
        elif ch in " \t" and not in_quotes:
            if have_arg:
                args.append("".join(current))
                current, have_arg = [], False
        else:
            current.append(ch)
            have_arg = True
        i += 1
    if have_arg:
        args.append("".join(current))
    return args


def _encoded_index(argv: list[str]) -> int | None:
    """Where ``-EncodedCommand`` (any case, or its ``-enc``/``-e``/``-ec`` forms) is."""
    for i, arg in enumerate(argv[:-1]):
        if arg.lower() in ("-encodedcommand", "-enc", "-e", "-ec"):
            return i
    return None


def _pwsh_value(script: str, name: str) -> str:
    match = re.search(rf"^\${name} = {_PWSH_LITERAL}", script, re.M)
    if not match:
        msg = f"script has no ${name} literal"
        raise ValueError(msg)
    return match.group(1).replace("''", "'")


class FakeHost:
    """One simulated machine: facts, files, scripted responses and a record of what ran."""

    def __init__(
        self,
        name: str,
        facts: Facts | None = None,
        *,
        user: str = "labadmin",
        password: str = "",
        honors_codepage: bool = True,
        latency: float = 0.0,
    ) -> None:
        self.name = name
        self.facts = facts or preset("phx")
        self.user = user
        self.password = password
        #: False: programs write the OEM code page whatever the shell's code page is.
        self.honors_codepage = honors_codepage
        self.latency = latency
        self.files: dict[str, bytes] = {}
        self.started: list[str] = []  # one entry per command that started (program or marker)
        self.handlers: dict[str, Handler] = {}
        self.boot_time = "2026-11-28T06:00:00.0000000Z"
        self.reboot_requests: list[float] = []  # the test double's server acts on these
        self._lock = threading.Lock()
        self.on_reboot: Callable[[float], None] | None = None
        #: What the probe script does instead of answering (cim_access_denied(), ...).
        self.probe_fault: Response | None = None

    def on(self, key: str, handler: Handler) -> None:
        """Respond to a program (``"python.exe"``, matched on argv[0]'s base name, lower case)
        or a script marker name (``"script:build-step"``, ``"script:*"`` for any script)."""
        self.handlers[key.lower()] = handler

    def count(self, key: str) -> int:
        with self._lock:
            return sum(1 for s in self.started if s == key.lower())

    def _record(self, key: str) -> None:
        with self._lock:
            self.started.append(key.lower())

    # -- what needs stdin -----------------------------------------------------------------
    @staticmethod
    def wants_stdin(command_line: str) -> bool:
        """True for npulab's bootstrap and upload receiver: they run once stdin has ended."""
        argv = split_win_argv(command_line)
        index = _encoded_index(argv)
        if index is None:
            return False
        script = base64.b64decode(argv[index + 1]).decode("utf-16-le", errors="replace")
        return script.startswith(("# npulab-bootstrap", "# npulab-receiver"))

    # -- run ------------------------------------------------------------------------------
    def execute(self, command_line: str, stdin: bytes, codepage: int) -> Response:
        argv = split_win_argv(command_line)
        if not argv:
            return Response(stderr="The syntax of the command is incorrect.\r\n", rc=1)
        program = argv[0].replace("/", "\\").rsplit("\\", 1)[-1].lower()
        index = _encoded_index(argv)
        if index is not None and program in ("powershell.exe", "powershell", "pwsh.exe"):
            encoded = argv[index + 1]
            script = base64.b64decode(encoded).decode("utf-16-le")
            return self._powershell(script, stdin, codepage)
        self._record(program)
        if program == "reg.exe" and "OEMCP" in argv:
            key = "HKEY_LOCAL_MACHINE\\SYSTEM\\CurrentControlSet\\Control\\Nls\\CodePage"
            return Response(
                f"\r\n{key}\r\n    OEMCP    REG_SZ    {self.facts.oem_codepage}\r\n\r\n"
            )
        if program == "shutdown.exe" and "/r" in argv:
            delay = float(argv[argv.index("/t") + 1]) if "/t" in argv else 30.0
            if self.reboot_requests:
                return Response(
                    stderr="A system shutdown has already been scheduled.(1190)\r\n", rc=1190
                )
            self.reboot_requests.append(delay)
            if self.on_reboot is not None:
                self.on_reboot(delay)
            return Response()
        handler = self.handlers.get(program)
        if handler is None:
            return Response(
                stderr=f"'{argv[0]}' is not recognized as an internal or external command,\r\n"
                "operable program or batch file.\r\n",
                rc=1,
            )
        return handler(argv, None) if callable(handler) else handler

    def _powershell(self, script: str, stdin: bytes, codepage: int) -> Response:
        head = _MARKER.match(script)
        if head and head.group(1) == "bootstrap":
            return self._bootstrap(script, stdin)
        if head and head.group(1) == "receiver":
            self._record("receiver")
            result = psmodel.run(script, psmodel.WinFS(self.files), stdin=stdin)
            return Response(result.stdout, result.stderr, result.rc)
        return self._script(script)

    def _bootstrap(self, script: str, stdin: bytes) -> Response:
        """Run the bootstrap itself (its own hash check, through the PowerShell model); the
        payload it hands to ``[ScriptBlock]::Create`` is answered like any script."""
        answered: list[Response] = []

        def payload(text: str) -> tuple[str, str, int]:
            answered.append(self._script(text))
            return "", "", answered[-1].rc

        result = psmodel.run(script, psmodel.WinFS(self.files), stdin=stdin, on_scriptblock=payload)
        if answered and result.rc == answered[-1].rc:
            return answered[-1]  # the payload's own answer: its output parts, timing, bytes
        return Response(result.stdout, result.stderr, result.rc)

    def _script(self, script: str) -> Response:
        head = _MARKER.match(script)
        name = head.group(2) if head and head.group(1) == "script" else None
        if name == "cmd-wrapper":
            body = base64.b64decode(_pwsh_value(script, "body")).decode("utf-8")
            body = body.removeprefix("@chcp 65001 >nul\r\n")
            inner = _MARKER.match(body.replace("\r\n", "\n"))
            key = f"cmd:{inner.group(2)}" if inner and inner.group(1) == "script" else "cmd:*"
            return self._dispatch(key, body, "cmd:*")
        if name == "probe":
            self._record("script:probe")
            if self.probe_fault is not None:
                return self.probe_fault
            return Response(json.dumps(self.probe_answer(), ensure_ascii=False) + "\r\n")
        if name == "boot-time":
            self._record("script:boot-time")
            return Response(self.boot_time + "\r\n")
        if name == "fetch":
            self._record("script:fetch")
            path = _pwsh_value(script, "path")
            data = self.files.get(path.lower())
            if data is None:
                return Response(stderr=clixml_error(f"Could not find file '{path}'."), rc=1)
            chunk = 48 * 1024
            lines = [
                base64.b64encode(data[i : i + chunk]).decode() for i in range(0, len(data), chunk)
            ]
            return Response("\r\n".join([*lines, "sha256:" + hashlib.sha256(data).hexdigest()]))
        key = f"script:{name}" if name else "script:*"
        return self._dispatch(key, script, "script:*")

    def _dispatch(self, key: str, text: str, fallback: str) -> Response:
        self._record(key)
        handler = self.handlers.get(key) or self.handlers.get(fallback)
        if handler is None:
            first = text.strip().splitlines()[0] if text.strip() else ""
            return Response(
                stderr=clixml_error(f"fake host {self.name}: no response scripted for {first!r}"),
                rc=1,
            )
        return handler([key], text) if callable(handler) else handler

    def encode(self, text: bytes | str, codepage: int) -> bytes:
        if isinstance(text, bytes):
            return text
        cp = codepage if self.honors_codepage else self.facts.oem_codepage
        return text.encode("utf-8" if cp == 65001 else f"cp{cp}", errors="replace")

    def probe_answer(self) -> dict[str, Any]:
        f = self.facts
        return {
            "schema": 1,
            "computer_name": f.computer_name,
            "cpu": f.cpu,
            "windows": {
                "caption": f.caption,
                "build": f.build,
                "ubr": f.ubr,
                "display_version": f.display_version,
            },
            "last_boot": self.boot_time,
            "oem_codepage": f.oem_codepage,
            "disk": {"drive": "C:", "free_bytes": f.free_bytes, "size_bytes": f.size_bytes},
            "pci": f.pci,
            "prereqs": {k: f.prereqs.get(k) for k in ALL_PREREQS},
            "long_paths": f.long_paths,
        }

    def rebooted(self) -> None:
        self.boot_time = (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**7:07d}Z"
        )
        self.reboot_requests.clear()
