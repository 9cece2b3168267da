"""``win-upload``: put the staged ``tree\\`` and ``scripts\\`` on a remote build host.

The two directories travel as one deterministic zip, cut into parts of :data:`PART_SIZE`; each
part is sent with :meth:`Transport.put_file` (sha256 checked on arrival) and parts the host
already holds with the right hash are not sent again, so an interrupted upload resumes. On the
host, :func:`expand_ps1` joins the parts, checks the archive's sha256, extracts it beside the
live directories and swaps them in (the old ones are restored if the swap fails); only then does
it write ``.npulab-win\\upload.sha256``. A host whose stamp already names the archive gets
nothing.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from npulab import log
from npulab.errors import BuildStepError
from npulab.hashing import sha256_file
from npulab.quoting import quote_pwsh
from npulab.windows.script import CRLF

PART_SIZE = 8 * 2**20
#: The zip's fixed timestamp: the archive depends on content only.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
DIRS = ("tree", "scripts")
STAMP = ".npulab-win\\upload.sha256"
EXIT_DAMAGED = 5


@dataclass(frozen=True, kw_only=True)
class Archive:
    path: Path
    sha256: str
    size: int
    #: (part file name, sha256) in order.
    parts: tuple[tuple[str, str], ...]


def build_archive(out: Path, dest: Path) -> Archive:
    """Zip ``out/tree`` and ``out/scripts`` into ``dest`` (temp then rename) and cut the parts."""
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / ".archive.zip.part"
    files: list[Path] = []
    for top in DIRS:
        root = out / top
        if not root.is_dir():
            msg = f"{root} is missing: nothing to upload"
            raise BuildStepError(msg, hint="invoke build (stages tree\\ and renders scripts\\)")
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            links = [Path(folder) / n for n in dirs + names if (Path(folder) / n).is_symlink()]
            if links:
                msg = f"{links[0]} is a symbolic link: the Windows upload carries regular files"
                raise BuildStepError(msg, hint="remove the link from the staged tree")
            files.extend(Path(folder) / name for name in sorted(names))
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            for path in files:
                info = zipfile.ZipInfo(path.relative_to(out).as_posix(), ZIP_TIME)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with path.open("rb") as src, zf.open(info, "w") as dst:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        dst.write(block)
        sha = sha256_file(tmp)
        final = dest / f"{sha[:16]}.zip"
        tmp.replace(final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    parts = []
    with final.open("rb") as fh:
        for i, block in enumerate(iter(lambda: fh.read(PART_SIZE), b"")):
            name = f"{sha[:16]}.{i:03d}"
            part = dest / name
            # Content, not size: a part damaged since the last run would be sent as it is,
            # fail the host's archive check every time, and never be cut again.
            if not part.is_file() or part.read_bytes() != block:
                tmp_part = dest / f".{name}.part"
                tmp_part.write_bytes(block)
                tmp_part.replace(part)
            parts.append((name, hashlib.sha256(block).hexdigest()))
    return Archive(path=final, sha256=sha, size=final.stat().st_size, parts=tuple(parts))


def state_ps1(root: str) -> str:
    """Prints ``stamp <sha>`` (when the host has an upload) and ``part <name> <sha>`` lines."""
    lines = [
        "# npulab-script: upload-state v1",
        "$ErrorActionPreference = 'Stop'",
        f"$root = {quote_pwsh(root)}",
        f"$stamp = Join-Path $root {quote_pwsh(STAMP)}",
        "if (Test-Path -LiteralPath $stamp) {",
        "  Write-Output ('stamp ' + (Get-Content -LiteralPath $stamp -Raw).Trim())",
        "}",
        "$up = Join-Path $root 'upload'",
        "if (Test-Path -LiteralPath $up) {",
        "  Get-ChildItem -LiteralPath $up -File | ForEach-Object {",
        "    $h = (Get-FileHash -LiteralPath $_.FullName -Algorithm SHA256).Hash",
        "    Write-Output ('part ' + $_.Name + ' ' + $h.ToLowerInvariant())",
        "  }",
        "}",
        "exit 0",
    ]
    return CRLF.join(lines) + CRLF


def parse_state(text: str) -> tuple[str | None, dict[str, str]]:
    stamp = None
    parts: dict[str, str] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "stamp":
            stamp = words[1].lower()
        elif len(words) == 3 and words[0] == "part":
            parts[words[1]] = words[2].lower()
    return stamp, parts


def expand_ps1(root: str, archive: Archive) -> str:
    """Join the parts, check the archive, extract it and swap ``tree\\``/``scripts\\`` in."""
    names = ", ".join(quote_pwsh(name) for name, _ in archive.parts)
    lines = [
        "# npulab-script: upload-expand v1",
        "$ErrorActionPreference = 'Stop'",
        f"$root = {quote_pwsh(root)}",
        f"$sha = '{archive.sha256}'",
        f"$parts = @({names})",
        "$up = Join-Path $root 'upload'",
        '$zip = Join-Path $up "$sha.zip"',
        '$tmp = "$zip.part"',
        "$out = [IO.File]::Create($tmp)",
        "try {",
        "  foreach ($p in $parts) {",
        "    $in = [IO.File]::OpenRead((Join-Path $up $p))",
        "    try { $in.CopyTo($out) } finally { $in.Dispose() }",
        "  }",
        "} finally { $out.Dispose() }",
        "$got = (Get-FileHash -LiteralPath $tmp -Algorithm SHA256).Hash.ToLowerInvariant()",
        "if ($got -ne $sha) {",
        "  Remove-Item -LiteralPath $tmp -Force",
        "  Get-ChildItem -LiteralPath $up -File | Remove-Item -Force",
        '  Write-Output "upload: the joined archive has sha256 $got, expected $sha; parts '
        'removed, run invoke build again"',
        f"  exit {EXIT_DAMAGED}",
        "}",
        "Move-Item -LiteralPath $tmp -Destination $zip -Force",
        "$new = Join-Path $root '.npulab-new'",
        "if (Test-Path -LiteralPath $new) { Remove-Item -LiteralPath $new -Recurse -Force }",
        "Add-Type -AssemblyName System.IO.Compression.FileSystem",
        "[IO.Compression.ZipFile]::ExtractToDirectory($zip, $new)",
        "foreach ($d in @('tree', 'scripts')) {",
        "  $live = Join-Path $root $d",
        '  $old = Join-Path $root ".npulab-old-$d"',
        "  if (Test-Path -LiteralPath $old) { Remove-Item -LiteralPath $old -Recurse -Force }",
        "  if (Test-Path -LiteralPath $live) { Move-Item -LiteralPath $live -Destination $old }",
        "  try { Move-Item -LiteralPath (Join-Path $new $d) -Destination $live }",
        "  catch {",
        "    if (Test-Path -LiteralPath $old) { Move-Item -LiteralPath $old -Destination $live }",
        "    throw",
        "  }",
        "  if (Test-Path -LiteralPath $old) { Remove-Item -LiteralPath $old -Recurse -Force }",
        "}",
        "Remove-Item -LiteralPath $new -Recurse -Force",
        "New-Item -ItemType Directory -Force -Path (Join-Path $root '.npulab-win') | Out-Null",
        f"Set-Content -LiteralPath (Join-Path $root {quote_pwsh(STAMP)}) -Value $sha "
        "-Encoding ascii",
        "Get-ChildItem -LiteralPath $up -File | Remove-Item -Force",
        'Write-Output "upload: tree and scripts in place (archive $sha)"',
        "exit 0",
    ]
    return CRLF.join(lines) + CRLF


def describe(archive: Archive) -> str:
    return (
        f"{archive.size / 2**20:.1f} MiB in {len(archive.parts)} part(s), "
        f"sha256 {archive.sha256[:12]}"
    )


def progress(i: int, total: int, name: str, size: int) -> None:
    log.info(f"    upload: part {i}/{total} {name} ({size / 2**20:.1f} MiB)")
