"""Git LFS content on the Windows host: which objects the staged tree lacks, and the step that
fetches them.

The staged ``tree\\`` is written by ``git checkout-index`` and has no ``.git``, so ``git lfs pull``
cannot run in it. Instead the render step lists every LFS pointer file the build needs (under
``upstream.lfs.include``, plus every ``upstream.lfs.required`` path) with its oid and size, and
``02-lfs.ps1`` fetches each object by oid: ``git lfs smudge`` in a scratch repository whose
``origin`` is the recipe's ``repo_url`` (LFS needs no commit for that, only the endpoint). The
scratch repository's ``.git\\lfs\\objects`` is the host's cache, so a re-uploaded tree costs no
download. Each object is written to a ``.npulab-part`` file, checked against its sha256 and size,
and only then renamed over the pointer; a file already holding the right content is left alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from npulab.quoting import quote_pwsh
from npulab.recipe import Recipe
from npulab.source.lfs import is_lfs_pointer, parse_pointer
from npulab.windows.script import CRLF

#: The git arguments that fetch one object (pointer on stdin, content on stdout), run in the
#: scratch repository. Integration tests run exactly these against a local LFS server.
SMUDGE_ARGS = ("lfs", "smudge")
POINTER_VERSION = "version https://git-lfs.github.com/spec/v1"
#: Exit codes of 02-lfs.ps1 (docs/windows-build.md#exit-codes).
EXIT_NO_GIT = 3
EXIT_NOT_FETCHED = 4


@dataclass(frozen=True, kw_only=True)
class LfsObject:
    """One pointer file in the staged tree: where it is and what must replace it."""

    path: str
    oid: str
    size: int
    required: bool

    def pointer_text(self) -> str:
        """The canonical pointer ``git lfs smudge`` reads."""
        return f"{POINTER_VERSION}\noid sha256:{self.oid}\nsize {self.size}\n"


def include_regex(pattern: str) -> re.Pattern[str]:
    """A git-lfs ``--include`` glob as a regex: ``**`` crosses directories, ``*`` and ``?`` do
    not; a pattern naming a directory also matches everything under it."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out).rstrip("/") + "(/.*)?")


def matches(path: str, patterns: Iterable[str]) -> bool:
    return any(include_regex(p).fullmatch(path) for p in patterns)


def _roots(patterns: Sequence[str]) -> list[str]:
    """The fixed directory part of each pattern: only these are walked."""
    roots = set()
    for pattern in patterns:
        fixed = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
        roots.add(fixed.rsplit("/", 1)[0] if "/" in fixed else "")
    return sorted(roots)


def pointer_objects(tree: Path, recipe: Recipe) -> list[LfsObject]:
    """Every LFS pointer file in ``tree`` the Windows build fetches, sorted by path."""
    spec = recipe.upstream.lfs
    required = set(spec.required)
    candidates = set(required)
    for root in _roots(spec.include):
        base = tree / root if root else tree
        if not base.is_dir():
            continue
        for folder, _dirs, files in os.walk(base):
            for name in files:
                rel = (Path(folder) / name).relative_to(tree).as_posix()
                if matches(rel, spec.include):
                    candidates.add(rel)
    found = []
    for rel in sorted(candidates):
        path = tree / rel
        if not is_lfs_pointer(path):
            continue
        pointer = parse_pointer(path.read_text(encoding="utf-8", errors="replace"))
        if pointer is not None:
            oid, size = pointer
            found.append(LfsObject(path=rel, oid=oid, size=size, required=rel in required))
    return found


def _row(obj: LfsObject) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", obj.oid):
        msg = f"{obj.path}: LFS pointer oid {obj.oid!r} is not a sha256"
        raise ValueError(msg)
    required = "$true" if obj.required else "$false"
    return (
        f"  @{{ Path = {quote_pwsh(obj.path.replace('/', chr(92)))}; Oid = '{obj.oid}'; "
        f"Size = [long]{int(obj.size)}; Required = {required} }}"
    )


def lfs_ps1(recipe: Recipe, objects: Sequence[LfsObject]) -> str:
    """``02-lfs.ps1``: fetch, verify and place every object; exit 4 naming what failed."""
    rows = [_row(o) for o in objects]
    table = ["$objects = @(", *rows, ")"] if rows else ["$objects = @()"]
    smudge = ", ".join(quote_pwsh(a) for a in SMUDGE_ARGS)
    lines = [
        "# npulab-script: win-lfs v1",
        "$ErrorActionPreference = 'Stop'",
        "$build = Split-Path -Parent $PSScriptRoot",
        "$tree = Join-Path $build 'tree'",
        "$repo = Join-Path $build '.npulab-win\\lfs-repo'",
        f"$remote = {quote_pwsh(recipe.upstream.repo_url)}",
        *table,
        "function Test-LfsObject([string] $file, [string] $oid, [long] $size) {",
        "  if (-not (Test-Path -LiteralPath $file -PathType Leaf)) { return $false }",
        "  if ((Get-Item -LiteralPath $file).Length -ne $size) { return $false }",
        "  return (Get-FileHash -LiteralPath $file -Algorithm SHA256).Hash.ToLowerInvariant() "
        "-eq $oid",
        "}",
        "$todo = @($objects | Where-Object { -not (Test-LfsObject (Join-Path $tree $_.Path) "
        "$_.Oid $_.Size) })",
        "if ($todo.Count -eq 0) {",
        '  Write-Output "lfs: all $($objects.Count) object(s) present and verified"',
        "  exit 0",
        "}",
        "$git = Get-Command git -CommandType Application -ErrorAction SilentlyContinue "
        "| Select-Object -First 1",
        "if (-not $git) {",
        "  Write-Output 'lfs: git not found (fix: install Git for Windows with Git LFS)'",
        f"  exit {EXIT_NO_GIT}",
        "}",
        "# Native programs' stderr must not become terminating errors (Windows PowerShell 5.1).",
        "$ErrorActionPreference = 'Continue'",
        "if (-not (Test-Path -LiteralPath (Join-Path $repo '.git'))) {",
        "  New-Item -ItemType Directory -Force -Path $repo | Out-Null",
        "  & $git.Source -C $repo init -q",
        f"  if ($LASTEXITCODE -ne 0) {{ exit {EXIT_NO_GIT} }}",
        "}",
        "& $git.Source -C $repo config remote.origin.url $remote",
        f"if ($LASTEXITCODE -ne 0) {{ exit {EXIT_NO_GIT} }}",
        "# A reachable LFS mirror for hosts that cannot reach the upstream's endpoint.",
        "if ($env:NPULAB_LFS_URL) { & $git.Source -C $repo config lfs.url $env:NPULAB_LFS_URL }",
        "else { & $git.Source -C $repo config --unset lfs.url *> $null }",
        "$ErrorActionPreference = 'Stop'",
        "$failed = @()",
        "$i = 0",
        "foreach ($o in $todo) {",
        "  $i++",
        "  $dest = Join-Path $tree $o.Path",
        '  $ptr = "$dest.npulab-pointer"',
        '  $part = "$dest.npulab-part"',
        '  $err = "$dest.npulab-err"',
        "  Write-Output ('lfs: [{0}/{1}] {2} ({3:N1} MiB)' -f $i, $todo.Count, $o.Path, "
        "($o.Size / 1048576))",
        f'  $text = "{POINTER_VERSION}`noid sha256:$($o.Oid)`nsize $($o.Size)`n"',
        "  [IO.File]::WriteAllText($ptr, $text)",
        "  # Start-Process redirects to files: the object's bytes never pass through a "
        "PowerShell pipeline.",
        f"  $p = Start-Process -FilePath $git.Source -ArgumentList {smudge} "
        "-WorkingDirectory $repo -NoNewWindow -Wait -PassThru -RedirectStandardInput $ptr "
        "-RedirectStandardOutput $part -RedirectStandardError $err",
        "  if (Test-LfsObject $part $o.Oid $o.Size) {",
        "    Move-Item -LiteralPath $part -Destination $dest -Force",
        "  } else {",
        "    $failed += $o",
        '    Write-Output "lfs: $($o.Path): git lfs smudge exited $($p.ExitCode); '
        'content does not match sha256 $($o.Oid) size $($o.Size)"',
        "    if (Test-Path -LiteralPath $err) { Get-Content -LiteralPath $err "
        "| Select-Object -Last 5 }",
        "    Remove-Item -LiteralPath $part -Force -ErrorAction SilentlyContinue",
        "  }",
        "  Remove-Item -LiteralPath $ptr, $err -Force -ErrorAction SilentlyContinue",
        "}",
        "if ($failed.Count -gt 0) {",
        "  $names = ($failed | ForEach-Object { $_.Path + $(if ($_.Required) "
        "{ ' (required)' } else { '' }) }) -join ', '",
        '  Write-Output "lfs: $($failed.Count) object(s) not fetched: $names"',
        '  Write-Output "fix: make $remote (or NPULAB_LFS_URL) reachable from this host '
        '(git lfs env shows the endpoint), then run invoke build again"',
        f"  exit {EXIT_NOT_FETCHED}",
        "}",
        'Write-Output "lfs: fetched $($todo.Count) of $($objects.Count) object(s), all verified"',
        "exit 0",
    ]
    return CRLF.join(lines) + CRLF
