"""The local transport: this machine, through :func:`npulab.cmd.run`."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from npulab import cmd, log
from npulab.cmd import Completed, OutputSink
from npulab.errors import VerificationError
from npulab.transport.base import Shell


class LocalTransport:
    """Runs on this machine; scripts go to a temporary file (no command-line limits)."""

    def __init__(self, name: str = "local") -> None:
        self._name = name

    @property
    def host(self) -> str:
        return self._name

    @property
    def is_windows(self) -> bool:
        return sys.platform == "win32"

    def __repr__(self) -> str:
        return f"LocalTransport({self._name!r})"

    def close(self) -> None:
        """Nothing to close (same interface as the WinRM transport)."""

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
        return cmd.run(
            *argv,
            cwd=Path(cwd) if cwd else None,
            env=env,
            timeout=timeout,
            check=check,
            dry_run=dry_run,
            on_output=on_output,
        )

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
        if shell == "powershell":
            exe = "powershell.exe" if self.is_windows else "pwsh"
            suffix = ".ps1"
            prefix: list[str] = [exe, "-NoProfile", "-NonInteractive"]
            if self.is_windows:
                prefix += ["-ExecutionPolicy", "Bypass"]
            prefix.append("-File")
            text = script
        else:
            suffix = ".cmd"
            prefix = ["cmd.exe", "/d", "/c", "call"]
            text = "@chcp 65001 >nul\r\n" + script.replace("\r\n", "\n").replace("\n", "\r\n")
        if dry_run:
            first = script.strip().splitlines()[0] if script.strip() else ""
            log.command(f"{shell} script: {first[:120]}", dry_run=True)
            return Completed(
                argv=(*prefix, "<script>"), returncode=0, stdout="", stderr="", dry_run=True
            )
        fd, name = tempfile.mkstemp(prefix="npulab-", suffix=suffix)
        try:
            # Windows PowerShell 5.1 reads a .ps1 without a byte order mark in the ANSI code
            # page: the BOM makes it read a non-ASCII path in the script as written.
            encoding = "utf-8-sig" if suffix == ".ps1" else "utf-8"
            with os.fdopen(fd, "w", encoding=encoding, newline="") as fh:
                fh.write(text)
            return cmd.run(*prefix, name, timeout=timeout, check=check, on_output=on_output)
        finally:
            Path(name).unlink(missing_ok=True)

    def put_file(self, local: Path, remote: str, *, dry_run: bool = False) -> None:
        log.command(f"copy {local} -> {remote}", dry_run=dry_run)
        if dry_run:
            return
        _copy_verified(Path(local), Path(remote))

    def get_file(self, remote: str, local: Path) -> None:
        log.command(f"copy {remote} -> {local}")
        _copy_verified(Path(remote), Path(local))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _copy_verified(src: Path, dest: Path) -> None:
    expected = _sha256(src)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        if _sha256(Path(tmp)) != expected:
            msg = f"copy of {src} to {dest} does not match its sha256"
            raise VerificationError(msg, hint="re-run; check the disk")
        Path(tmp).replace(dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
