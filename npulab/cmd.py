"""The one door to local processes.

Every local command npulab runs goes through :func:`run`: it logs the command, honours dry run,
resolves the executable up front (a clear error instead of ``FileNotFoundError``), and raises
:class:`~npulab.errors.CommandError` carrying the output. Nothing else in the package imports
``subprocess`` (a ruff banned-api rule enforces it).

With ``on_output`` the output is also handed over as it arrives (one reader thread per pipe,
decoded incrementally), for long steps whose log should grow while they run.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import queue
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from npulab import log
from npulab.errors import CommandError

OutputSink = Callable[[str, str], None]
"""Called with the stream name (``"stdout"`` or ``"stderr"``) and a chunk of text, as it arrives."""

_BLOCK = 65536
_POLL = 0.5
_GRACE = 5.0  # seconds to wait for the pipes to close once the child is killed


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
    on_output: OutputSink | None = None,
) -> Completed:
    """Run ``argv`` locally.

    ``env`` is merged over ``os.environ``. With ``check`` a non-zero exit raises CommandError (with
    ``hint`` as the mending command); ``dry_run`` only logs. ``quiet`` skips the echo (for
    commands run many times per operation, e.g. ``git cat-file`` probes).

    ``on_output(stream, text)`` (needs ``capture``) sees the output while the command runs:
    blocks as read (a partial line is not held back), UTF-8 decoded with the same replacement
    and newline translation as the returned :class:`Completed`, which still holds all of it. It
    is called from the calling thread, never during dry run; if it raises, the child is killed
    and reaped and the exception propagates.
    """
    args = tuple(os.fspath(a) for a in argv)
    if not args:
        msg = "cmd.run() needs a command"
        raise ValueError(msg)
    if on_output is not None and not capture:
        msg = "cmd.run(on_output=...) needs capture=True"
        raise ValueError(msg)
    if not quiet or dry_run:
        log.command(format_argv(args), dry_run=dry_run)
    if dry_run:
        return Completed(argv=args, returncode=0, stdout="", stderr="", dry_run=True)
    exe = shutil.which(args[0]) if os.sep not in args[0] else args[0]
    if exe is not None and os.sep in exe and not (Path(exe).is_file() and os.access(exe, os.X_OK)):
        why = "is not an executable file" if Path(exe).exists() else "does not exist"
        msg = f"cannot run {exe}: it {why} (needed to run: {format_argv(args)})"
        raise CommandError(msg, command=args, returncode=None, hint=hint or f"check the path {exe}")
    if exe is None:
        msg = f"command not found: {args[0]!r} (needed to run: {format_argv(args)})"
        raise CommandError(
            msg,
            command=args,
            returncode=None,
            hint=hint or f"install {args[0]} and make sure it is on PATH",
        )
    full_env = {**os.environ, **env} if env is not None else None
    if on_output is not None:
        rc, out, err = _stream((exe, *args[1:]), cwd, full_env, input_text, timeout, on_output)
        if rc is None:
            msg = f"command timed out after {timeout}s: {format_argv(args)}"
            raise CommandError(
                msg, command=args, returncode=None, stdout=out, stderr=err, hint=hint
            )
        proc = subprocess.CompletedProcess(args, rc, out, err)
    else:
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


# -- streaming ----------------------------------------------------------------------------
_Event = tuple[str, str | None]  # (stream, text); text None: that pipe reached its end


def _stream(
    argv: tuple[str, ...],
    cwd: Path | None,
    env: Mapping[str, str] | None,
    input_text: str | None,
    timeout: float | None,
    sink: OutputSink,
) -> tuple[int | None, str, str]:
    """Run ``argv`` with both pipes read by threads; the sink is called from this thread.

    Returns ``(returncode, stdout, stderr)``; returncode None when ``timeout`` expired (the child
    was killed; the output is what it wrote until then)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if input_text is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    events: queue.Queue[_Event] = queue.Queue()
    assert proc.stdout is not None
    assert proc.stderr is not None
    threads = [
        threading.Thread(target=_pump, args=(pipe, name, events), name=f"npulab-{name}")
        for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr))
    ]
    if input_text is not None:
        assert proc.stdin is not None
        data = input_text.replace("\n", os.linesep).encode("utf-8", errors="replace")
        threads.append(threading.Thread(target=_feed, args=(proc.stdin, data), daemon=True))
    for thread in threads:
        thread.daemon = True
        thread.start()
    text: dict[str, list[str]] = {"stdout": [], "stderr": []}
    open_pipes = 2
    rc: int | None = None
    try:
        open_pipes = _collect(events, text, sink, open_pipes, deadline)
        if open_pipes == 0:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            rc = proc.wait(left)
    except subprocess.TimeoutExpired:
        pass  # the pipes closed but the child lives on past the deadline
    except BaseException:
        _kill(proc, threads)
        raise
    if rc is None:
        _kill(proc, threads)
        _collect(events, text, sink, open_pipes, time.monotonic())  # what came before the kill
    else:
        _join(proc, threads)
    return rc, "".join(text["stdout"]), "".join(text["stderr"])


def _collect(
    events: queue.Queue[_Event],
    text: dict[str, list[str]],
    sink: OutputSink,
    open_pipes: int,
    deadline: float | None,
) -> int:
    """Hand events to the sink until both pipes end or ``deadline`` passes (then drain what is
    queued); returns how many pipes are still open."""
    while open_pipes:
        # short waits: an untimed Queue.get cannot be interrupted by Ctrl-C on Windows
        wait = _POLL if deadline is None else min(_POLL, deadline - time.monotonic())
        try:
            name, chunk = events.get(timeout=wait) if wait > 0 else events.get_nowait()
        except queue.Empty:
            if deadline is None or time.monotonic() < deadline:
                continue
            break
        if chunk is None:
            open_pipes -= 1
            continue
        text[name].append(chunk)
        sink(name, chunk)
    return open_pipes


def _pump(pipe: IO[bytes], name: str, events: queue.Queue[_Event]) -> None:
    """Read ``pipe`` block by block until it ends, queueing decoded text."""
    decoder = io.IncrementalNewlineDecoder(
        codecs.getincrementaldecoder("utf-8")(errors="replace"), translate=True
    )
    try:
        while block := os.read(pipe.fileno(), _BLOCK):
            if chunk := decoder.decode(block):
                events.put((name, chunk))
        if chunk := decoder.decode(b"", final=True):
            events.put((name, chunk))
    except (OSError, ValueError):
        pass  # closed under us after a kill
    finally:
        events.put((name, None))


def _feed(pipe: IO[bytes], data: bytes) -> None:
    try:
        pipe.write(data)
    except (BrokenPipeError, OSError, ValueError):
        pass  # the child exited (or was killed) without reading it all
    finally:
        with contextlib.suppress(OSError):
            pipe.close()


def _kill(proc: subprocess.Popen[bytes], threads: list[threading.Thread]) -> None:
    proc.kill()
    _join(proc, threads)


def _join(proc: subprocess.Popen[bytes], threads: list[threading.Thread]) -> None:
    """Reap the child and wait (bounded) for the pipe threads, then close the pipes."""
    proc.wait()
    end = time.monotonic() + _GRACE
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    for thread, pipe in zip(threads[:2], (proc.stdout, proc.stderr), strict=True):
        if thread.is_alive():  # never close a pipe under a blocked read
            log.warning(f"pid {proc.pid}: a process it started still holds its {thread.name[7:]}")
        elif pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
