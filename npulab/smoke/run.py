"""Drive the smoke runner here or on a lab host, and bring its report back.

Locally the runner runs as ``<python> runner.py --config smoke.json --report report.json``
through :func:`npulab.cmd.run`; on a host the runner and its config are uploaded through the
host's :class:`~npulab.transport.Transport` (``npulab.transport.connect``), run there, and the
report is fetched. Either way the report lands in ``build/smoke/<stamp>-<pid>-<random>/report.json``
(a directory made for this run alone, so no other run's report is ever read) and a verdict other
than PASS raises (SmokeFailure, or VerificationError when the runner refused the files). The
verdict is earned, not read: the report must pass :mod:`npulab.smoke.report_check` and agree
with the runner's exit status, else it is ERROR.
"""

from __future__ import annotations

import importlib
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from npulab import cmd, log, paths
from npulab.errors import ConfigError, SmokeFailure, TransportError, VerificationError
from npulab.hosts import layout as host_layout
from npulab.model.fetch import model_dir as local_model_dir
from npulab.model.host import host_model_dir
from npulab.recipe import Recipe, RopeOnLoad
from npulab.smoke import config as smoke_config
from npulab.smoke import report_check
from npulab.smoke.config import Backend
from npulab.transport import Transport

RUNNER = Path(__file__).with_name("runner.py")
#: Remote working directory for uploads (Windows lab hosts).
REMOTE_DIR = "C:\\npulab\\smoke"
UTF8_ENV = {"PYTHONUTF8": "1", "PYTHONIOENCODING": "utf-8"}
EXIT_REFUSED = 2


@dataclass(frozen=True, kw_only=True)
class Outcome:
    report_path: Path
    report: dict[str, Any]
    #: What this run earned (report_check.verdict), not merely what the report says.
    verdict: str
    reasons: tuple[str, ...] = ()


def run_dir_name() -> str:
    """``20261208T031500Z-4242-a1b2c3``: sorts by time; pid and random part keep two runs in the
    same second (or on two machines sharing build/) apart."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{stamp}-{os.getpid()}-{secrets.token_hex(3)}"


def new_run_dir() -> Path:
    """A directory under ``build/smoke/`` that this run alone owns (created exclusively)."""
    parent = paths.build_root() / "smoke"
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = parent / run_dir_name()
        try:
            path.mkdir()
        except FileExistsError:  # pragma: no cover - 24 random bits collided within a second
            continue
        return path


def python_for(
    backend: Backend, python: str | None, recipe: Recipe, *, windows: bool = os.name == "nt"
) -> str:
    """The interpreter that runs the runner: --python, NPULAB_SMOKE_PYTHON, on Windows the
    build's ``scripts\\python.cmd`` (conda env + setup.bat + chcp 65001, from ``invoke build``),
    or for the cpu backend this interpreter."""
    chosen = python or os.environ.get("NPULAB_SMOKE_PYTHON")
    if chosen:
        return chosen
    if backend == "cpu":
        return sys.executable
    from npulab.build.executor import output_dir

    wrapper = output_dir(recipe) / "scripts" / "python.cmd"
    if windows and wrapper.is_file():
        return str(wrapper)
    msg = "the npu backend runs inside the RyzenAI-SW 1.1 conda env, and none was given"
    raise ConfigError(
        msg,
        hint=f"run `invoke build` on this Windows machine (it writes {wrapper}), or pass "
        "--python <conda env>\\python.exe with setup.bat's variables set, or set "
        "NPULAB_SMOKE_PYTHON",
    )


def smoke(
    recipe: Recipe,
    *,
    host: str | None = None,
    backend: Backend = "npu",
    chip: str | None = None,
    model_dir: str | None = None,
    python: str | None = None,
    dest: Path | None = None,
    timeout: float = 3600.0,
    dry_run: bool = False,
    rope: RopeOnLoad | None = None,
) -> Outcome:
    """Run the smoke test (locally, or on ``host``) and return its report. ``rope``: override
    the recipe's ``model.rope.on_load`` (``as-saved`` for the A/B against ``repair``)."""
    if host is None:
        where = model_dir or str(local_model_dir(recipe.model))
    else:
        where = model_dir or host_model_dir(recipe, host)
    settings = smoke_config.render(recipe, model_dir=where, backend=backend, chip=chip, rope=rope)
    # On a host: the python.cmd of its `invoke build --host` (conda env + setup.bat + chcp).
    remote_python = (
        python
        or os.environ.get("NPULAB_SMOKE_PYTHON")
        or host_layout.load().build_dir(recipe.name) + "\\scripts\\python.cmd"
    )
    local_python = python_for(backend, python, recipe) if host is None else ""
    if dry_run:
        # Nothing is written: the config is shown instead of saved.
        dest = dest or paths.build_root() / "smoke" / "<stamp>-<pid>-<random>"
        log.info(f"[dry-run] would write {dest / 'smoke.json'}:\n{json.dumps(settings, indent=2)}")
        report_path = dest / "report.json"
        if host is None:
            _run_local(local_python, dest / "smoke.json", report_path, timeout, dry_run)
        else:
            _run_remote(host, str(remote_python), dest / "smoke.json", report_path, timeout, True)
        return Outcome(report_path=report_path, report={}, verdict="DRY-RUN")
    if dest is None:
        dest = new_run_dir()
    else:
        dest.mkdir(parents=True, exist_ok=True)
    config_path = smoke_config.write(settings, dest / "smoke.json")
    report_path = dest / "report.json"
    # A report already there is not this run's: never let it speak for this run.
    report_path.unlink(missing_ok=True)
    if host is None:
        code = _run_local(local_python, config_path, report_path, timeout, dry_run)
    else:
        code = _run_remote(host, str(remote_python), config_path, report_path, timeout, dry_run)
    return judge(report_path, code)


def _run_local(
    python: str,
    config_path: Path,
    report_path: Path,
    timeout: float,
    dry_run: bool,
) -> int | None:
    argv = [python, str(RUNNER), "--config", str(config_path)]
    return cmd.run(
        *argv,
        "--report",
        str(report_path),
        env=UTF8_ENV,
        capture=False,
        check=False,
        timeout=timeout,
        dry_run=dry_run,
    ).returncode


def _run_remote(
    host: str, python: str, config_path: Path, report_path: Path, timeout: float, dry_run: bool
) -> int | None:
    connect = getattr(importlib.import_module("npulab.transport"), "connect", None)
    if connect is None:
        msg = f"no transport to reach {host}: npulab.transport.connect is not available"
        raise TransportError(msg, hint="run `invoke smoke` on the host itself")
    transport: Transport = connect(host)
    stamp = config_path.parent.name
    remote = f"{REMOTE_DIR}\\{stamp}"
    transport.put_file(RUNNER, f"{remote}\\runner.py", dry_run=dry_run)
    transport.put_file(config_path, f"{remote}\\smoke.json", dry_run=dry_run)
    done = transport.run(
        [python, f"{remote}\\runner.py", "--config", f"{remote}\\smoke.json",
         "--report", f"{remote}\\report.json"],
        env=UTF8_ENV,
        timeout=timeout,
        check=False,
        dry_run=dry_run,
    )  # fmt: skip
    if dry_run:
        return None
    try:
        transport.get_file(f"{remote}\\report.json", report_path)
    except TransportError as exc:
        log.warning(f"no report fetched from {host}: {exc.message}")
    return done.returncode


def judge(report_path: Path, returncode: int | None = None) -> Outcome:
    """Read this run's report; raise unless the run earned PASS (a sound report whose verdict
    the runner's exit status ``returncode`` confirms)."""
    code = f" (runner exit status {returncode})" if returncode is not None else ""
    try:
        report = json.loads(report_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        msg = f"smoke ERROR: the runner left no report at {report_path}{code}"
        raise SmokeFailure(msg, hint="see the runner output above") from None
    except (OSError, ValueError) as exc:
        msg = f"smoke ERROR: unreadable report {report_path}{code}: {exc}"
        raise SmokeFailure(msg, hint="see the runner output above") from None
    verdict, reasons = report_check.verdict(report, returncode)
    outcome = Outcome(
        report_path=report_path, report=report, verdict=verdict, reasons=tuple(reasons)
    )
    log.info(f"smoke verdict {verdict}: {report_path}")
    if verdict == "PASS":
        return outcome
    if reasons:
        msg = f"smoke ERROR: the report is not to be believed: {'; '.join(reasons)}{code}"
        raise SmokeFailure(msg, hint=f"read {report_path} and the runner output above")
    failed = [f"{c['name']} ({c['detail']})" for c in report["checks"] if not c["ok"]]
    if verdict == "REFUSED":
        msg = f"smoke refused to load the model: {report.get('error')}"
        raise VerificationError(msg, hint="`invoke model.fetch --verify` on that machine")
    detail = "; ".join(failed) or str(report.get("error", "no detail"))
    msg = f"smoke {verdict}: {detail} (report: {report_path})"
    raise SmokeFailure(msg, hint="read the report; rerun `invoke smoke` after fixing the stack")


def chat(
    recipe: Recipe,
    *,
    backend: Backend = "npu",
    model_dir: str | None = None,
    python: str | None = None,
    dry_run: bool = False,
) -> int:
    """Interactive chat on this machine (the runner's ``--chat`` mode, same loader)."""
    where = model_dir or str(local_model_dir(recipe.model))
    settings = smoke_config.render(recipe, model_dir=where, backend=backend)
    interpreter = python_for(backend, python, recipe)
    if dry_run:
        config_path = paths.build_root() / "smoke" / "<stamp>-<pid>-<random>" / "chat.json"
    else:
        config_path = smoke_config.write(settings, new_run_dir() / "chat.json")
    done = cmd.run(
        interpreter,
        str(RUNNER),
        "--config",
        str(config_path),
        "--chat",
        env=UTF8_ENV,
        capture=False,
        check=False,
        dry_run=dry_run,
    )
    if done.returncode == EXIT_REFUSED:
        msg = f"chat refused to load the model in {where}"
        raise VerificationError(msg, hint="`invoke model.fetch --verify`")
    return done.returncode
