"""Executor of the Windows steps (kind ``winscript``) through a :class:`Transport`.

Local on Windows, ``npulab.transport.connect(host)`` for ``invoke build --host NAME`` (the
option ``host`` in ``Options.extra``). Each step uploads its script into the host's
``<remote_root>\\scripts`` (option ``remote_root``; without it the script runs in place), runs it,
saves its output to ``build/<recipe>/logs/NN-<step>.log`` and fails with the log path and
exit code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from npulab import log
from npulab.build import Context, Outcome, Runner, register
from npulab.errors import BuildStepError
from npulab.plan import Step
from npulab.recipe import Recipe
from npulab.transport import Transport
from npulab.winsteps import WIN_STEPS, render_scripts, script_name
from npulab.wrappers import write_all

#: Makes the transport for a build (tests replace it with a scripted fake).
TransportFactory = Callable[[Context], Transport]


def default_transport(ctx: Context) -> Transport:
    from npulab.transport import connect

    return connect(ctx.options.extra.get("host", "local"))


TRANSPORT: list[TransportFactory] = [default_transport]
DEFAULT_REMOTE_ROOT = "C:\\npulab\\build"


def render_windows(recipe: Recipe, tree: Path, scripts: Path) -> list[Path]:
    """Staging renderer: the step scripts and npulab-env.cmd/.ps1 into ``scripts/``."""
    return write_all(render_scripts(recipe), scripts)


def _script_for(step: Step) -> str:
    for i, (name, suffix, _, _) in enumerate(WIN_STEPS, 1):
        if name == step.name:
            return script_name(i, name, suffix)
    msg = f"internal: {step.name} is not a Windows step"
    raise BuildStepError(msg)


def script_digest(ctx: Context, key: str) -> Any:
    """Input ``winscript:<file>``: the sha256 of the rendered script."""
    name = key.removeprefix("winscript:")
    text = render_scripts(ctx.recipe).get(name)
    return hashlib.sha256(text.encode()).hexdigest() if text is not None else None


def remote_root(recipe: Recipe, extra: dict[str, str]) -> str | None:
    """The build dir on the host: ``remote_root``, else ``C:\\npulab\\build\\<recipe>`` for
    a remote host; None (run in place) for this machine."""
    if "remote_root" in extra:
        return extra["remote_root"]
    if extra.get("host", "local") in ("local", "localhost"):
        return None
    return DEFAULT_REMOTE_ROOT + "\\" + recipe.name


def _run(ctx: Context, step: Step) -> Outcome:
    script = _script_for(step)
    local = ctx.scripts / script
    if not local.is_file():
        msg = f"step {step.name}: {local} is missing (the render step writes it)"
        raise BuildStepError(msg, hint="invoke build (re-renders scripts/)")
    transport = TRANSPORT[0](ctx)
    root = remote_root(ctx.recipe, ctx.options.extra)
    remote = str(local) if root is None else root.rstrip("\\/") + "\\scripts\\" + script
    if root is not None:
        transport.put_file(local, remote)
        for extra in ("npulab-env.cmd", Path(ctx.recipe.env.lock).name):
            if (ctx.scripts / extra).is_file():
                transport.put_file(ctx.scripts / extra, remote.rsplit("\\", 1)[0] + "\\" + extra)
    if script.endswith(".ps1"):
        argv = ["powershell.exe", "-NoProfile", "-ExecutionPolicy", "Bypass", "-File", remote]
    else:
        argv = ["cmd.exe", "/d", "/v:off", "/c", remote]
    done = transport.run(argv, check=False)
    logs = ctx.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / (script.rsplit(".", 1)[0] + ".log")
    text = f"$ {' '.join(argv)}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}\n"
    text += f"--- exit code {done.returncode}\n"
    log_path.write_text(text, encoding="utf-8")
    for line in done.stdout.splitlines():
        log.info(f"    {line}")
    if done.returncode != 0:
        msg = (
            f"step {step.name} failed on {transport.host} with exit code {done.returncode} "
            f"(log: {log_path})"
        )
        raise BuildStepError(msg, hint=f"read {log_path}, fix the cause, then invoke build again")
    return Outcome(
        detail={"host": transport.host, "script": script, "log": str(log_path), "exit_code": 0}
    )


def register_all() -> None:
    from npulab import build, stagesteps

    register("winscript", Runner(run=_run))
    build.INPUT_PROVIDERS["winscript:"] = script_digest
    if render_windows not in stagesteps.RENDERERS:
        stagesteps.RENDERERS.append(render_windows)
