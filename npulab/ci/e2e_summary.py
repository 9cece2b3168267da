"""``invoke ci.e2e-summary``: one table of the hosted Windows job from its step records.

Rows: every controller step (``steps.jsonl``, written by :mod:`npulab.ci.e2e_step`) and, under
each build, the build's Windows steps from that run's manifest. Columns: step, result, time,
expected vs actual (exit code, output, recap, step status) for the NPU-bound steps and wherever
the outcome differed. Written to ``<dir>/summary.md`` and the job's step summary.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from npulab.ci import markdown
from npulab.ci.e2e_step import read_records

OK = "✅ as expected"
NOT_OK = "❌ not as expected"


def _seconds(text: str) -> str:
    value = float(text)
    if value >= 90:
        return f"{value / 60:.1f} min"
    return f"{value:.1f} s"


def _parse_time(value: Any) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return None


def _build_time(step: dict[str, Any]) -> str:
    if step.get("status") == "up-to-date":
        return "skipped"
    if isinstance(step.get("seconds"), int | float):
        return _seconds(str(step["seconds"]))
    start, end = _parse_time(step.get("started_at")), _parse_time(step.get("finished_at"))
    if start and end:
        return _seconds(str((end - start).total_seconds()))
    return "–"


def _expected_vs_actual(record: dict[str, Any]) -> str:
    expected = [f"exit {record.get('expected_exit_code')}"]
    actual = [f"exit {record.get('exit_code')}"]
    missing = record.get("missing_output") or []
    recap = record.get("recap")
    if recap:
        actual.append(f"changed={recap.get('changed', 0)} failed={recap.get('failures', 0)}")
    if missing:
        actual.append("missing: " + ", ".join(repr(m) for m in missing))
    return f"expected {'; '.join(expected)} / actual {'; '.join(actual)}"


def rows(records: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    table = []
    for record in records:
        ok = bool(record.get("ok"))
        shown = record.get("npu_bound") or not ok
        detail = _expected_vs_actual(record) if shown else ""
        if not ok:
            detail += " — " + "; ".join(record.get("problems") or [])
        name = f"`{record.get('id')}` {record.get('title', '')}"
        if record.get("npu_bound"):
            name += " (NPU-bound)"
        seconds = record.get("seconds")
        time = _seconds(str(seconds)) if isinstance(seconds, int | float) else "–"
        table.append((name, OK if ok else NOT_OK, time, detail))
        expected = record.get("expected_steps") or {}
        for step_name, step in (record.get("build_steps") or {}).items():
            if not str(step_name).startswith("win-"):
                continue
            status = str(step.get("status", "–"))
            wanted = expected.get(step_name)
            mark = "" if wanted is None else (" ✅" if wanted == status else " ❌")
            vs = "" if wanted is None else f"expected {wanted} / actual {status}"
            table.append((f"↳ {step_name}", status + mark, _build_time(step), vs))
    return table


def render(records: list[dict[str, Any]], *, title: str = "Hosted Windows, no NPU") -> str:
    lines = [f"## {title}", ""]
    if not records:
        lines.append("No step records: the job stopped before its first controller step.")
        return "\n".join(lines) + "\n"
    passed = sum(1 for r in records if r.get("ok"))
    lines += [f"{passed} of {len(records)} steps as expected.", ""]
    lines += ["| step | result | time | expected vs actual |", "|---|---|---|---|"]
    for name, result, time, detail in rows(records):
        cells = [markdown.cell(name, 300), result, time, markdown.cell(detail, 600)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_summary(directory: Path) -> str:
    text = render(read_records(directory))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "summary.md").write_text(text, encoding="utf-8")
    markdown.write_step_summary(text)
    return text
