"""The one door to local processes.

Every local command npulab runs goes through :func:`run`: it logs the command, honours dry run,
resolves the executable up front (a clear error instead of ``FileNotFoundError``), and raises
:class:`~npulab.errors.CommandError` carrying the output. Nothing else in the package imports
``subprocess`` (a ruff banned-api rule enforces it).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from npulab import log
from npulab.errors import CommandError


@dataclass(frozen=True, kw_only=True)
class Completed:
    """What a finished (or dry-run) command left behind."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def format_argv(argv: Sequence[str]) -> str:
    return shlex.join(argv)


def which(program: str) -> str | None:
    return shutil.which(program)


def run(
    *argv: str | os.PathLike[str],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = True,
    check: bool = True,
    dry_run: bool = False,
    quiet: bool = False,
    input_text: str | None = None,
    timeout: float | None = None,
    hint: str | None = None,
) -> Completed:
    """Run ``argv`` locally.

    ``env`` is merged over ``os.environ``. With ``check`` a non-zero exit raises CommandError (with
    ``hint`` as the mending command); ``dry_run`` only logs. ``quiet`` skips the echo (for
    commands run many times per operation, e.g. ``git cat-file`` probes).
    """
    args = tuple(os.fspath(a) for a in argv)
    if not args:
        msg = "cmd.run() needs a command"
        raise ValueError(msg)
    if not quiet or dry_run:
        log.command(format_argv(args), dry_run=dry_run)
    if dry_run:
        return Completed(argv=args, returncode=0, stdout="", stderr="", dry_run=True)
    exe = shutil.which(args[0]) if os.sep not in args[0] else args[0]
    if exe is None:
        msg = f"command not found: {args[0]!r} (needed to run: {format_argv(args)})"
        raise CommandError(
            msg,
            command=args,
            returncode=None,
            hint=hint or f"install {args[0]} and make sure it is on PATH",
        )
    full_env = {**os.environ, **env} if env is not None else None
    try:
        proc = subprocess.run(
            (exe, *args[1:]),
            cwd=cwd,
            env=full_env,
            input=input_text,
            capture_output=capture,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        msg = f"command timed out after {timeout}s: {format_argv(args)}"
        raise CommandError(
            msg,
            command=args,
            returncode=None,
            stdout=_text(exc.stdout),
            stderr=_text(exc.stderr),
            hint=hint,
        ) from exc
    result = Completed(
        argv=args,
        returncode=proc.returncode,
        stdout=proc.stdout or "",
        stderr=proc.stderr or "",
    )
    if check and proc.returncode != 0:
        where = f" (in {cwd})" if cwd else ""
        msg = f"command failed with exit code {proc.returncode}{where}: {format_argv(args)}"
        raise CommandError(
            msg,
            command=args,
            returncode=proc.returncode,
            stdout=result.stdout,
            stderr=result.stderr,
            hint=hint,
        )
    return result


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return data
