"""Executor of the Windows steps through a :class:`Transport`.

Local on Windows, ``npulab.transport.connect(host)`` for ``invoke build --host NAME`` (the
option ``host`` in ``Options.extra``). For a remote host ``win-upload`` first puts ``tree\\`` and
``scripts\\`` under ``<remote_root>`` (:mod:`npulab.windows.upload`); every other step runs its
script there (or in place, on this machine), its output saved to
``build/<recipe>/logs/<step>.log``, and fails with the log path and exit code.

Resume: a stamped step (conda env, pip lock, ops\\cpp) whose inputs are unchanged is skipped only
while the host's own stamp still holds the script's digest, so a rebuilt or wiped host is redone;
the checks (prerequisites, LFS objects, import) run every time.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from npulab import log
from npulab.build.context import Context, Outcome
from npulab.build.plan import Step
from npulab.cmd import Completed
from npulab.errors import BuildStepError, CommandError
from npulab.transport import Transport, connect
from npulab.windows import upload as winupload
from npulab.windows.script import CMD_C_BREAKERS, cmd_c_path_problem
from npulab.windows.steps import (
    STEPS_BY_NAME,
    WIN_STEPS,
    WinStep,
    remote_root,
    stamp_digest,
    stamp_read_ps1,
)


def _transport(ctx: Context) -> Transport:
    """The build host's transport, made once per build: every step, stamp read and upload
    shares one connection (and one credential lookup)."""
    if ctx.transport is None:
        ctx.transport = connect(ctx.options.extra.get("host", "local"))
    return ctx.transport


def _record(step: Step) -> WinStep:
    if step.name not in STEPS_BY_NAME:
        msg = f"internal: {step.name} is not a Windows step"
        raise BuildStepError(msg)
    return STEPS_BY_NAME[step.name]


def script_digest(ctx: Context, key: str) -> Any:
    """Input ``winscript:<file>``: the sha256 the render step recorded for the script it wrote
    (the very file the step runs; render re-runs whenever the tree, recipe or lock change)."""
    name = key.removeprefix("winscript:")
    return ctx.data["steps"].get("render", {}).get("detail", {}).get("files", {}).get(name)


def upload_content(ctx: Context, key: str) -> Any:
    """Input ``winupload:content``: the staged tree's git tree hash, the rendered scripts'
    digests and where they go."""
    steps = ctx.data.get("steps", {})
    return {
        "tree": steps.get("patch", {}).get("detail", {}).get("tree"),
        "scripts": steps.get("render", {}).get("detail", {}).get("files"),
        "host": ctx.options.extra.get("host", "local"),
        "root": remote_root(ctx.recipe, ctx.options.extra),
    }


def _where(ctx: Context, script: str) -> str:
    root = remote_root(ctx.recipe, ctx.options.extra)
    if root is None:
        return str(ctx.scripts / script)
    return root.rstrip("\\/") + "\\scripts\\" + script


class StepLog:
    """``logs/<step>.log``, written while the step runs: the command, then its output as it
    arrives (stderr lines marked ``[stderr]``), then the exit code. Complete lines are echoed to
    the console with the step's indent."""

    def __init__(self, path: Path, argv: Sequence[str], host: str) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("w", encoding="utf-8", newline="\n")
        self._fh.write(f"$ {' '.join(argv)}\n# host: {host}\n")
        self._fh.flush()
        self._pending = {"stdout": "", "stderr": ""}
        self.streamed = False

    def __call__(self, stream: str, text: str) -> None:
        self.streamed = self.streamed or bool(text)
        lines = (self._pending.get(stream, "") + text).split("\n")
        self._pending[stream] = lines.pop()
        for line in lines:
            self._emit(stream, line)
        self._fh.flush()

    def _emit(self, stream: str, line: str) -> None:
        line = line.rstrip("\r")
        self._fh.write(("[stderr] " if stream == "stderr" else "") + line + "\n")
        log.info(f"    {'! ' if stream == 'stderr' else ''}{line}")

    def finish(self, footer: str, done: Completed | None = None) -> None:
        """Flush partial lines; when the transport did not stream (nothing arrived), write the
        whole output it returned."""
        for stream, rest in self._pending.items():
            if rest:
                self._emit(stream, rest)
        if done is not None and not self.streamed:
            for stream, text in (("stdout", done.stdout), ("stderr", done.stderr)):
                for line in text.splitlines():
                    self._emit(stream, line)
        self._fh.write(footer + "\n")
        self._fh.close()


def run_script_step(ctx: Context, step: Step) -> Outcome:
    win = _record(step)
    script = win.script
    local = ctx.scripts / script
    if not local.is_file():
        msg = f"step {step.name}: {local} is missing (the render step writes it)"
        raise BuildStepError(msg, hint="invoke build (re-renders scripts/)")
    transport = _transport(ctx)
    if not transport.is_windows:
        msg = f"step {step.name} runs on Windows; {transport.host} is {sys.platform}"
        raise BuildStepError(
            msg,
            hint="invoke build --host NAME (a lab host over WinRM), or invoke build on the "
            "Windows machine; --target stage stages here",
        )
    remote = _where(ctx, script)
    _refuse_cmd_c_path(ctx, remote)
    if win.shell == "powershell":
        argv = ["powershell.exe", "-NoProfile", "-ExecutionPolicy", "Bypass", "-File", remote]
    else:
        argv = ["cmd.exe", "/d", "/v:off", "/c", remote]
    log_path = ctx.out / "logs" / (win.stem + ".log")
    timeout = win.timeout
    sink = StepLog(log_path, argv, transport.host)
    try:
        done = transport.run(argv, check=False, timeout=timeout, on_output=sink)
    except CommandError as exc:
        # The transport gave up waiting (timeout) or could not start it: keep what it printed.
        partial = Completed(argv=tuple(argv), returncode=-1, stdout=exc.stdout, stderr=exc.stderr)
        sink.finish(f"--- stopped: {exc.message}", partial)
        msg = f"step {step.name} on {transport.host}: {exc.message} (log: {log_path})"
        slow = "timed out" in exc.message
        hint = "if the step is just slow, run invoke build again" if slow else exc.hint
        raise BuildStepError(msg, hint=f"read {log_path}; {hint or 'fix the cause'}") from exc
    except BaseException:
        sink.finish("--- interrupted")
        raise
    sink.finish(f"--- exit code {done.returncode}", done)
    if done.returncode != 0:
        msg = (
            f"step {step.name} failed on {transport.host} with exit code {done.returncode} "
            f"(log: {log_path})"
        )
        raise BuildStepError(msg, hint=f"read {log_path}, fix the cause, then invoke build again")
    return Outcome(
        detail={"host": transport.host, "script": script, "log": str(log_path), "exit_code": 0}
    )


def _refuse_cmd_c_path(ctx: Context, path: str) -> None:
    """The .cmd steps start as ``cmd.exe /d /v:off /c <path>``: refuse a build folder that
    command line cannot carry, before anything is sent or run."""
    problem = cmd_c_path_problem(path)
    if problem is None:
        return
    where = "remote_root" if remote_root(ctx.recipe, ctx.options.extra) else "the build folder"
    msg = f"the Windows steps cannot start from {where}: {problem}"
    raise BuildStepError(
        msg,
        hint="build from a folder (or set the host's remote_root to one) whose path has none "
        f"of {' '.join(CMD_C_BREAKERS)}",
    )


def read_host_stamp(ctx: Context, name: str) -> str | None:
    """The build host's ``.npulab-win\\<name>`` (None when absent), read through the transport
    like everything else on the host."""
    root = remote_root(ctx.recipe, ctx.options.extra) or str(ctx.out)
    text = stamp_read_ps1(root, name)
    done = _transport(ctx).run_script(text, shell="powershell", idempotent=True)
    return done.stdout.strip() or None


def _script_for_first_cmd() -> str:
    return next(w.script for w in WIN_STEPS if w.shell == "cmd")


def stamp_intact(ctx: Context, step: Step) -> bool:
    """Unchanged inputs skip a stamped step only while the host's stamp still matches."""
    win = _record(step)
    expected = stamp_digest((ctx.scripts / win.script).read_bytes().decode("utf-8"))
    if expected is None:
        return True
    found = read_host_stamp(ctx, win.stem + ".stamp")
    if found != expected:
        log.info(f"    {step.name}: the host's stamp is {found or 'absent'}: running it again")
        return False
    return True


def upload(ctx: Context, step: Step) -> Outcome:
    root = remote_root(ctx.recipe, ctx.options.extra)
    if root is None:
        msg = "internal: win-upload runs only for a remote host"
        raise BuildStepError(msg)
    _refuse_cmd_c_path(ctx, root.rstrip("\\/") + "\\scripts\\" + _script_for_first_cmd())
    archive = winupload.build_archive(ctx.out, ctx.state / "upload")
    transport = _transport(ctx)
    log.info(f"    archive: {winupload.describe(archive)}")
    state = transport.run_script(winupload.state_ps1(root), shell="powershell", idempotent=True)
    stamp, have = winupload.parse_state(state.stdout)
    sent = 0
    if stamp == archive.sha256:
        log.info(f"    {transport.host} already holds this upload: nothing sent")
    else:
        for i, (name, sha) in enumerate(archive.parts, 1):
            if have.get(name) == sha:
                log.info(f"    upload: part {i}/{len(archive.parts)} {name} already on the host")
                continue
            part = ctx.state / "upload" / name
            winupload.progress(i, len(archive.parts), name, part.stat().st_size)
            transport.put_file(part, root.rstrip("\\/") + "\\upload\\" + name)
            sent += 1
        done = transport.run_script(
            winupload.expand_ps1(root, archive), shell="powershell", check=False
        )
        if done.returncode != 0:
            msg = (
                f"win-upload: unpacking on {transport.host}:{root} failed with exit code "
                f"{done.returncode}: {(done.stdout + done.stderr).strip()[-400:]}"
            )
            raise BuildStepError(msg, hint="invoke build again (parts already sent are kept)")
    for name, _ in archive.parts:
        (ctx.state / "upload" / name).unlink(missing_ok=True)
    archive.path.unlink(missing_ok=True)
    return Outcome(
        detail={
            "host": transport.host,
            "root": root,
            "sha256": archive.sha256,
            "bytes": archive.size,
            "parts": len(archive.parts),
            "parts_sent": sent,
        }
    )


def upload_intact(ctx: Context, step: Step) -> bool:
    root = remote_root(ctx.recipe, ctx.options.extra)
    before = ctx.previous.get("steps", {}).get(step.name, {}).get("detail", {})
    if root is None or not before.get("sha256"):
        return False
    return read_host_stamp(ctx, "upload.sha256") == str(before["sha256"])
