"""One night of the hardware matrix: merge the jobs' results, keep the history, flag regressions.

``collect`` reads the downloaded artifacts (one directory per machine kind, ``smoke-<id>/``) into
:class:`Entry` records; ``update_history`` merges them into ``history.jsonl`` (one JSON object a
line, keyed by night + machine, so re-running a night replaces its entries instead of adding);
``regressions`` compares each entry with the median of the machine's previous passing nights;
``markdown`` writes the summary. :mod:`npulab.ci.page` renders the HTML page.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from npulab.ci.matrix import Machine, Matrix
from npulab.ci.results import (
    find_manifest,
    find_smoke_report,
    parse_manifest,
    parse_smoke,
    read_json,
)
from npulab.errors import ConfigError

#: A machine kind whose job left no artifact at all (runner offline, job cancelled).
MISSING = "MISSING"
#: The job ran but left no smoke report: build or model fetch failed first.
NO_SMOKE = "NO-SMOKE"


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One machine kind on one night: what the history keeps."""

    night: str
    machine: str
    chip: str
    verdict: str
    run_id: str | None = None
    host: str | None = None
    tokens_per_s: float | None = None
    load_time_s: float | None = None
    time_to_first_token_s: float | None = None
    peak_memory_bytes: int | None = None
    perplexity: float | None = None
    upstream_commit: str | None = None
    series_sha256: str | None = None
    recipe_digest: str | None = None
    model_revision: str | None = None
    reasons: tuple[str, ...] = ()
    answers: tuple[tuple[str, str], ...] = ()
    #: Metrics flagged as a regression that night (``tokens_per_s``, ``load_time_s``).
    flags: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.night, self.machine)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["reasons"] = list(self.reasons)
        data["answers"] = [list(a) for a in self.answers]
        data["flags"] = list(self.flags)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["reasons"] = tuple(kwargs.get("reasons") or ())
        kwargs["answers"] = tuple(tuple(a) for a in kwargs.get("answers") or ())
        kwargs["flags"] = tuple(kwargs.get("flags") or ())
        return cls(**kwargs)


@dataclass(frozen=True, kw_only=True)
class Flag:
    machine: str
    #: ``tokens/s`` or ``load time s`` (the report's wording)
    metric: str
    value: float
    baseline: float
    change_pct: float
    limit_pct: float

    def __str__(self) -> str:
        return (
            f"{self.machine}: {self.metric} {self.value:.3g} vs median {self.baseline:.3g} "
            f"of earlier nights ({self.change_pct:+.1f}%, limit {self.limit_pct:g}%)"
        )


def _machine_dir(reports: Path, machine: Machine) -> Path | None:
    for name in (f"smoke-{machine.id}", machine.id):
        if (reports / name).is_dir():
            return reports / name
    return None


def entry_for(directory: Path | None, machine: Machine, night: str, run_id: str | None) -> Entry:
    """Read one machine kind's artifact directory (None: the job left nothing)."""
    entry = Entry(
        night=night, machine=machine.id, chip=machine.chip, verdict=MISSING, run_id=run_id
    )
    if directory is None:
        reason = "no artifact: the job did not run (runner offline?) or was cancelled"
        return dataclasses.replace(entry, reasons=(reason,))
    manifest_path = find_manifest(directory)
    if manifest_path is not None:
        facts = parse_manifest(read_json(manifest_path) or {})
        entry = dataclasses.replace(
            entry,
            upstream_commit=facts.upstream_commit,
            series_sha256=facts.series_sha256,
            recipe_digest=facts.recipe_digest,
        )
    smoke_path = find_smoke_report(directory)
    data = read_json(smoke_path) if smoke_path else None
    if smoke_path is not None and data is None:
        # A report that is there but does not parse (truncated, not JSON): the smoke run broke
        # while writing it, not the model fetch.
        reason = f"unreadable smoke report {smoke_path} (truncated or not JSON): ERROR"
        return dataclasses.replace(entry, verdict="ERROR", reasons=(reason,))
    if data is None:
        stage = "model fetch or smoke" if manifest_path else "build"
        reason = f"no smoke report: the {stage} step failed (see the job log)"
        return dataclasses.replace(entry, verdict=NO_SMOKE, reasons=(reason,))
    smoke = parse_smoke(data)
    if smoke.chip and smoke.chip != machine.chip:
        msg = f"{smoke_path}: report from chip {smoke.chip}, but {machine.id} is {machine.chip}"
        raise ConfigError(msg, hint="check the runner labels of the machine that ran it")
    return dataclasses.replace(
        entry,
        verdict=smoke.verdict,
        recipe_digest=entry.recipe_digest or smoke.recipe_digest,
        host=smoke.host,
        tokens_per_s=smoke.tokens_per_s,
        load_time_s=smoke.load_time_s,
        time_to_first_token_s=smoke.time_to_first_token_s,
        peak_memory_bytes=smoke.peak_memory_bytes,
        perplexity=smoke.perplexity,
        model_revision=smoke.model_revision,
        reasons=smoke.reasons,
        answers=tuple((a.prompt, a.answer) for a in smoke.answers),
    )


def collect(reports: Path, matrix: Matrix, night: str, run_id: str | None = None) -> list[Entry]:
    """One entry per machine kind of the matrix, in matrix order."""
    return [entry_for(_machine_dir(reports, m), m, night, run_id) for m in matrix.machines]


def read_history(path: Path) -> list[Entry]:
    if not path.exists():
        return []
    if path.is_dir():
        msg = f"--history {path}: is a directory, not a history file"
        raise ConfigError(
            msg, hint=f"give the JSON-lines file, e.g. --history {path}/history.jsonl"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        msg = f"--history {path}: not a history file (not UTF-8 text at byte {exc.start})"
        raise ConfigError(msg, hint="give the history.jsonl that ci.report wrote") from None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(Entry.from_json(json.loads(line)))
        except (json.JSONDecodeError, TypeError, AttributeError) as exc:
            msg = f"{path}:{number}: not a history entry ({exc})"
            raise ConfigError(msg, hint="remove or repair that line") from None
    return entries


def update_history(path: Path, new: list[Entry], keep_nights: int | None = None) -> list[Entry]:
    """Merge ``new`` into the history file (same night + machine: replaced), sorted, atomically."""
    merged = {e.key: e for e in read_history(path)}
    for entry in new:
        merged[entry.key] = entry
    entries = sorted(merged.values(), key=lambda e: e.key)
    if keep_nights is not None:
        nights = sorted({e.night for e in entries})[-keep_nights:]
        entries = [e for e in entries if e.night in set(nights)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    text = "".join(json.dumps(e.to_json(), sort_keys=True) + "\n" for e in entries)
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return entries


def _change(value: float, baseline: float) -> float:
    return (value - baseline) / baseline * 100.0


def regressions(tonight: list[Entry], history: list[Entry], matrix: Matrix) -> list[Flag]:
    """Entries whose tokens/s dropped, or load time or passage perplexity rose, beyond the
    machine's thresholds (against the median of its earlier passing nights)."""
    flags: list[Flag] = []
    for entry in tonight:
        limits = matrix.machine(entry.machine).thresholds
        earlier = [
            e
            for e in history
            if e.machine == entry.machine and e.night < entry.night and e.verdict == "PASS"
        ][-limits.baseline_nights :]
        speeds = [e.tokens_per_s for e in earlier if e.tokens_per_s]
        if entry.tokens_per_s is not None and speeds:
            base = statistics.median(speeds)
            change = _change(entry.tokens_per_s, base)
            if -change > limits.tokens_per_s_drop_pct:
                flags.append(
                    Flag(
                        machine=entry.machine,
                        metric="tokens/s",
                        value=entry.tokens_per_s,
                        baseline=base,
                        change_pct=change,
                        limit_pct=limits.tokens_per_s_drop_pct,
                    )
                )
        loads = [e.load_time_s for e in earlier if e.load_time_s]
        if entry.load_time_s is not None and loads:
            base = statistics.median(loads)
            change = _change(entry.load_time_s, base)
            if change > limits.load_time_rise_pct:
                flags.append(
                    Flag(
                        machine=entry.machine,
                        metric="load time s",
                        value=entry.load_time_s,
                        baseline=base,
                        change_pct=change,
                        limit_pct=limits.load_time_rise_pct,
                    )
                )
        perplexities = [e.perplexity for e in earlier if e.perplexity]
        if entry.perplexity is not None and perplexities:
            base = statistics.median(perplexities)
            change = _change(entry.perplexity, base)
            if change > limits.perplexity_rise_pct:
                flags.append(
                    Flag(
                        machine=entry.machine,
                        metric="passage perplexity",
                        value=entry.perplexity,
                        baseline=base,
                        change_pct=change,
                        limit_pct=limits.perplexity_rise_pct,
                    )
                )
    return flags


METRIC_FIELDS = {
    "tokens/s": "tokens_per_s",
    "load time s": "load_time_s",
    "passage perplexity": "perplexity",
}


def with_flags(entries: list[Entry], flags: list[Flag]) -> list[Entry]:
    """``entries`` with each one's flagged metrics recorded (kept in the history for the chart)."""
    return [
        dataclasses.replace(
            e, flags=tuple(METRIC_FIELDS[f.metric] for f in flags if f.machine == e.machine)
        )
        for e in entries
    ]


def failures(tonight: list[Entry]) -> list[Entry]:
    return [e for e in tonight if e.verdict != "PASS"]
