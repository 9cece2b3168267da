"""The PowerShell that carries scripts and files over WinRM without command-line limits.

cmd.exe lines stop at 8191 characters and ``-EncodedCommand`` triples a script's size, so only a
small, fixed *bootstrap* travels on the command line; the payload follows over stdin (WS-Man
``Send``), base64 in lines, and is checked against its sha256 before anything runs:

* :func:`script_bootstrap`: reads a base64 script from stdin, verifies the hash, runs it
  (exit 97 on a hash mismatch).
* :func:`upload_receiver`: streams base64 chunks from stdin into ``<dest>.npulab-part``, hashes
  while writing, renames onto ``dest`` only when the hash matches (exit 98 otherwise).
* :func:`fetch_script`: writes a file as base64 lines followed by ``sha256:<hex>``.

Every script npulab sends starts with a marker line ``# npulab-script: <name> v<N>`` (bootstrap
and receiver: ``# npulab-bootstrap``/``# npulab-receiver``) so logs, and the WS-Man test double,
identify scripts without matching their text.
"""

from __future__ import annotations

import base64
import hashlib

from npulab.quoting import quote_argv, quote_pwsh

POWERSHELL = ("powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass")
#: Raw bytes per stdin line: base64 (x4/3) inside a base64 SOAP body (x4/3) stays well below
#: WinRM's 150 KiB MaxEnvelopeSize.
CHUNK = 48 * 1024
EXIT_SCRIPT_HASH = 97
EXIT_UPLOAD_HASH = 98


def marker(name: str, version: int = 1) -> str:
    return f"# npulab-script: {name} v{version}"


def encoded_command(script: str) -> list[str]:
    """argv for ``powershell.exe -EncodedCommand`` (base64 of UTF-16LE)."""
    encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    return [*POWERSHELL, "-EncodedCommand", encoded]


def b64_lines(data: bytes) -> list[bytes]:
    """``data`` as CRLF-terminated base64 lines of :data:`CHUNK` raw bytes each."""
    return [
        base64.b64encode(data[i : i + CHUNK]) + b"\r\n" for i in range(0, len(data), CHUNK)
    ] or [b"\r\n"]


_UTF8_OUT = "[Console]::OutputEncoding = New-Object System.Text.UTF8Encoding $false"
_HEX = "([BitConverter]::ToString({0}) -replace '-', '').ToLowerInvariant()"


def script_bootstrap(script: str) -> str:
    sha = hashlib.sha256(script.encode("utf-8")).hexdigest()
    return "\n".join(
        [
            f"# npulab-bootstrap v1 sha256={sha}",
            "$ErrorActionPreference = 'Stop'",
            _UTF8_OUT,
            "$payload = ($input | Out-String) -replace '\\s', ''",
            "$bytes = [Convert]::FromBase64String($payload)",
            "$sha = [Security.Cryptography.SHA256]::Create()",
            "$hash = " + _HEX.format("$sha.ComputeHash($bytes)"),
            f"if ($hash -ne '{sha}') {{",
            '    [Console]::Error.WriteLine("npulab: script hash mismatch (got $hash)")',
            f"    exit {EXIT_SCRIPT_HASH}",
            "}",
            "$ErrorActionPreference = 'Continue'",
            "$global:LASTEXITCODE = 0",
            "& ([ScriptBlock]::Create([Text.Encoding]::UTF8.GetString($bytes)))",
            "exit $global:LASTEXITCODE",
        ]
    )


def upload_receiver(dest: str, sha256: str) -> str:
    return "\n".join(
        [
            f"# npulab-receiver v1 sha256={sha256}",
            "$ErrorActionPreference = 'Stop'",
            f"$dest = {quote_pwsh(dest)}",
            "$part = $dest + '.npulab-part'",
            "$dir = Split-Path -Parent $dest",
            "if ($dir) { New-Item -ItemType Directory -Force -Path $dir | Out-Null }",
            "$sha = [Security.Cryptography.SHA256]::Create()",
            "$fs = [IO.File]::Create($part)",
            "try {",
            "    foreach ($line in $input) {",
            "        if (-not $line) { continue }",
            "        $b = [Convert]::FromBase64String($line)",
            "        $fs.Write($b, 0, $b.Length)",
            "        [void]$sha.TransformBlock($b, 0, $b.Length, $null, 0)",
            "    }",
            "    [void]$sha.TransformFinalBlock([byte[]]@(), 0, 0)",
            "} finally { $fs.Close() }",
            "$hash = " + _HEX.format("$sha.Hash"),
            f"if ($hash -ne '{sha256}') {{",
            "    Remove-Item -LiteralPath $part -Force",
            "    [Console]::Error.WriteLine("
            '"npulab: upload hash mismatch for ${dest} (got $hash)")',
            f"    exit {EXIT_UPLOAD_HASH}",
            "}",
            "Move-Item -LiteralPath $part -Destination $dest -Force",
            "Write-Output $hash",
        ]
    )


def fetch_script(path: str) -> str:
    return "\n".join(
        [
            marker("fetch"),
            "$ErrorActionPreference = 'Stop'",
            f"$path = {quote_pwsh(path)}",
            "$sha = [Security.Cryptography.SHA256]::Create()",
            "$fs = [IO.File]::OpenRead($path)",
            f"$buf = New-Object byte[] {CHUNK}",
            "try {",
            "    while (($n = $fs.Read($buf, 0, $buf.Length)) -gt 0) {",
            "        [void]$sha.TransformBlock($buf, 0, $n, $null, 0)",
            "        [Console]::Out.WriteLine([Convert]::ToBase64String($buf, 0, $n))",
            "    }",
            "    [void]$sha.TransformFinalBlock([byte[]]@(), 0, 0)",
            "} finally { $fs.Close() }",
            "[Console]::Out.WriteLine('sha256:' + " + _HEX.format("$sha.Hash") + ")",
        ]
    )


def cmd_wrapper(cmd_script: str) -> str:
    """A PowerShell script that writes ``cmd_script`` (UTF-8, ``chcp 65001`` first) to a temp
    ``.cmd`` file, runs it with ``cmd /d /c call`` and passes its exit code on."""
    body = "@chcp 65001 >nul\r\n" + cmd_script.replace("\r\n", "\n").replace("\n", "\r\n")
    encoded = base64.b64encode(body.encode("utf-8")).decode("ascii")
    return "\n".join(
        [
            marker("cmd-wrapper"),
            "$ErrorActionPreference = 'Stop'",
            f"$body = '{encoded}'",
            "$path = Join-Path $env:TEMP ('npulab-' + [guid]::NewGuid().ToString('N') + '.cmd')",
            "[IO.File]::WriteAllBytes($path, [Convert]::FromBase64String($body))",
            "try { & $env:ComSpec /d /c call $path; $rc = $LASTEXITCODE }",
            "finally { Remove-Item -LiteralPath $path -Force -ErrorAction SilentlyContinue }",
            "exit $rc",
        ]
    )


BOOT_TIME_SCRIPT = "\n".join(
    [
        marker("boot-time"),
        "$os = Get-CimInstance -ClassName Win32_OperatingSystem",
        "$os.LastBootUpTime.ToUniversalTime().ToString('o')",
    ]
)

OEM_CODEPAGE_ARGV = (
    "reg.exe",
    "query",
    "HKLM\\SYSTEM\\CurrentControlSet\\Control\\Nls\\CodePage",
    "/v",
    "OEMCP",
)


def argv_script(
    argv: list[str] | tuple[str, ...], env: dict[str, str] | None = None, cwd: str | None = None
) -> str:
    """PowerShell that starts ``argv`` exactly (for a command line too long for cmd.exe).

    Not ``& 'prog' 'arg'``: Windows PowerShell 5.1 passes native arguments the legacy way (it
    wraps one holding a space in quotes without escaping the quotes inside, and drops an empty
    one), so ``say "hi"`` or ``""`` would not arrive. ProcessStartInfo.Arguments takes the
    Win32 command line :func:`npulab.quoting.quote_argv` builds, verbatim; the child inherits
    this shell's output handles, so its output streams as a plain command's would."""
    lines = [
        f"[Environment]::SetEnvironmentVariable({quote_pwsh(k)}, {quote_pwsh(v)})"
        for k, v in (env or {}).items()
    ]
    lines += [
        "$psi = New-Object System.Diagnostics.ProcessStartInfo",
        f"$psi.FileName = {quote_pwsh(argv[0])}",
        f"$psi.Arguments = {quote_pwsh(quote_argv(argv[1:]))}",
        "$psi.UseShellExecute = $false",
    ]
    if cwd:
        lines.append(f"$psi.WorkingDirectory = {quote_pwsh(cwd)}")
    lines += [
        "$p = [System.Diagnostics.Process]::Start($psi)",
        "$p.WaitForExit()",
        "exit $p.ExitCode",
    ]
    return "\n".join(lines)
