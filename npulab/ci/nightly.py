"""Entry points behind ``invoke ci.report``, ``ci.summary`` and ``ci.render`` (tasks stay short)."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from npulab import log
from npulab.ci import markdown, page, workflow
from npulab.ci.matrix import Matrix, load_matrix
from npulab.ci.report import (
    Entry,
    Flag,
    collect,
    failures,
    read_history,
    regressions,
    update_history,
    with_flags,
)
from npulab.ci.results import (
    find_manifest,
    find_smoke_report,
    parse_manifest,
    parse_smoke,
    read_json,
)
from npulab.errors import ConfigError


@dataclass(frozen=True)
class NightResult:
    night: str
    entries: list[Entry]
    flags: list[Flag]
    summary: Path
    page: Path
    history: Path

    @property
    def ok(self) -> bool:
        return not self.flags and not failures(self.entries)


def today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def run_report(
    reports: Path,
    history: Path,
    out: Path,
    *,
    night: str | None = None,
    run_id: str | None = None,
    matrix: Matrix | None = None,
) -> NightResult:
    """Merge one night, update the history, write ``summary.md`` and ``index.html`` in ``out``."""
    matrix = matrix or load_matrix()
    night = night or today()
    try:
        dt.date.fromisoformat(night)
    except ValueError:
        msg = f"--night: expected a date YYYY-MM-DD, got {night!r}"
        raise ConfigError(msg) from None
    if not reports.is_dir():
        log.warning(f"{reports}: no reports directory; every machine kind counts as missing")
    entries = collect(reports, matrix, night, run_id)
    before = read_history(history)
    flags = regressions(entries, before, matrix)
    entries = with_flags(entries, flags)
    merged = update_history(history, entries, keep_nights=None)
    shown = [
        e for e in merged if e.night in sorted({e.night for e in merged})[-matrix.history_nights :]
    ]
    summary = markdown.night_summary(night, entries, flags)
    _write(out / "summary.md", summary)
    machines = [m.id for m in matrix.machines]
    _write(out / "index.html", page.render(night, entries, shown, flags, machines))
    markdown.write_step_summary(summary)
    for flag in flags:
        log.warning(f"regression: {flag}")
    for entry in failures(entries):
        log.error(f"{entry.machine}: {entry.verdict}: {'; '.join(entry.reasons)}")
    return NightResult(night, entries, flags, out / "summary.md", out / "index.html", history)


def job_summary(machine_id: str, build_dir: Path, *, matrix: Matrix | None = None) -> str:
    """The Markdown summary of one machine kind's job from what its build directory holds."""
    machine = (matrix or load_matrix()).machine(machine_id)
    manifest_path = find_manifest(build_dir) if build_dir.is_dir() else None
    smoke_path = find_smoke_report(build_dir) if build_dir.is_dir() else None
    facts = parse_manifest(read_json(manifest_path) or {}) if manifest_path else None
    data = read_json(smoke_path) if smoke_path else None
    smoke = parse_smoke(data) if data is not None else None
    text = markdown.job_summary(f"{machine.id} ({machine.chip})", facts, smoke)
    markdown.write_step_summary(text)
    return text


def render_workflow(*, check: bool, matrix: Matrix | None = None) -> bool:
    """Write the nightly workflow from the matrix; ``check``: only say if it is current."""
    return _render_to(
        workflow.nightly_path(), workflow.render_nightly(matrix or load_matrix()), check
    )


def render_e2e_workflow(*, check: bool) -> bool:
    """Write the hosted Windows job from ``ci/windows-e2e.yaml``; ``check``: only compare."""
    from npulab.ci import e2e

    return _render_to(e2e.workflow_path(), e2e.render(e2e.load_e2e()), check)


def _render_to(path: Path, text: str, check: bool) -> bool:
    current = path.read_text(encoding="utf-8") if path.exists() else None
    if check:
        return current == text
    if current != text:
        _write(path, text)
        log.info(f"rendered {path}")
    else:
        log.info(f"{path} is up to date")
    return True
