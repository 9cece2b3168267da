"""Typed, defensive readers of what a nightly job leaves behind: the smoke report and manifest.

The smoke report is written by ``npulab/smoke/runner.py`` (``report_version`` 1) inside the 1.1
env; the manifest by ``invoke build`` (``build/<recipe>/manifest.json``). Both are read with
``.get`` and type checks, never indexing: a report from an older or crashed run yields ``None``
fields and a reason, not a traceback. The fields consumed here:

smoke report: ``verdict`` (PASS/FAIL/REFUSED/ERROR), ``error``, ``checks[{name, ok, detail}]``,
``host{name, chip, device}``, ``model{repo_id, revision}``, ``recipe``, ``recipe_digest``,
``load{load_s}``, ``prompts[{prompt, answer, stop_token_reached, time_to_first_token_s,
tokens_per_s, decode_tokens_per_s}]``, ``passage{perplexity}``, ``peak_memory_bytes``,
``versions{...}``, ``started_at``.
Flat ``load_time_s`` / ``time_to_first_token_s`` / ``tokens_per_s`` / ``chip`` / ``reasons`` are
accepted too.

manifest: ``recipe{name, digest}``, ``upstream{tag, commit, tree}``, ``patches[{name, sha256}]``.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from npulab.smoke import report_check


@dataclass(frozen=True)
class Answer:
    prompt: str
    answer: str
    stop_token_reached: bool | None


@dataclass(frozen=True)
class SmokeResult:
    verdict: str
    host: str | None = None
    chip: str | None = None
    load_time_s: float | None = None
    time_to_first_token_s: float | None = None
    tokens_per_s: float | None = None
    peak_memory_bytes: int | None = None
    #: Of the recipe's fixed passage (lower is better).
    perplexity: float | None = None
    model_revision: str | None = None
    recipe_digest: str | None = None
    started_at: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    answers: tuple[Answer, ...] = ()
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True)
class BuildFacts:
    recipe: str | None = None
    recipe_digest: str | None = None
    upstream_tag: str | None = None
    upstream_commit: str | None = None
    series_sha256: str | None = None
    patches: tuple[str, ...] = ()


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def parse_smoke(data: dict[str, Any]) -> SmokeResult:
    host = _dict(data.get("host"))
    prompts = [_dict(p) for p in _list(data.get("prompts"))]
    answers = tuple(
        Answer(
            prompt=_str(p.get("prompt")) or "",
            answer=str(p.get("answer") or ""),
            stop_token_reached=p.get("stop_token_reached")
            if isinstance(p.get("stop_token_reached"), bool)
            else None,
        )
        for p in prompts
    )
    rates = [
        r
        for p in prompts
        if (r := _num(p.get("decode_tokens_per_s", p.get("tokens_per_s")))) is not None
    ]
    ttfts = [t for p in prompts if (t := _num(p.get("time_to_first_token_s"))) is not None]
    tokens_per_s = _num(data.get("tokens_per_s"))
    if tokens_per_s is None:
        tokens_per_s = _median(rates)
    ttft = _num(data.get("time_to_first_token_s"))
    if ttft is None and ttfts:
        ttft = max(ttfts)
    load_time = _num(data.get("load_time_s"))
    if load_time is None:
        load_time = _num(_dict(data.get("load")).get("load_s"))
    reasons = [r for r in _list(data.get("reasons")) if isinstance(r, str)]
    for check in _list(data.get("checks")):
        check = _dict(check)
        if check.get("ok") is False:
            reasons.append(f"{check.get('name', '?')}: {check.get('detail', '')}".rstrip(": "))
    if _str(data.get("error")):
        reasons.append(str(data["error"]).splitlines()[0])
    versions = {str(k): str(v) for k, v in _dict(data.get("versions")).items() if v is not None}
    memory = _num(data.get("peak_memory_bytes"))
    verdict = (_str(data.get("verdict")) or "ERROR").upper()
    doubts = report_check.problems(data) if verdict == "PASS" else []
    if doubts:
        # A PASS is earned by answers the report holds, never by the word alone.
        verdict = "ERROR"
        reasons.append("the report says PASS but is not to be believed: " + "; ".join(doubts))
    return SmokeResult(
        verdict=verdict,
        host=_str(host.get("name")) or _str(data.get("host")),
        chip=_str(host.get("chip")) or _str(data.get("chip")),
        load_time_s=load_time,
        time_to_first_token_s=ttft,
        tokens_per_s=tokens_per_s,
        peak_memory_bytes=int(memory) if memory is not None else None,
        perplexity=_num(_dict(data.get("passage")).get("perplexity")),
        model_revision=_str(_dict(data.get("model")).get("revision")),
        recipe_digest=_str(data.get("recipe_digest")),
        started_at=_str(data.get("started_at")),
        versions=versions,
        answers=answers,
        reasons=tuple(reasons),
    )


def series_sha256(patches: list[dict[str, Any]]) -> str:
    """The patch series hash, as ``npulab.build.executor.series_digest`` computes it."""
    value = {str(p.get("name")): p.get("sha256") for p in patches}
    blob = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def parse_manifest(data: dict[str, Any]) -> BuildFacts:
    recipe = _dict(data.get("recipe"))
    upstream = _dict(data.get("upstream"))
    patches = [_dict(p) for p in _list(data.get("patches"))]
    return BuildFacts(
        recipe=_str(recipe.get("name")),
        recipe_digest=_str(recipe.get("digest")),
        upstream_tag=_str(upstream.get("tag")),
        upstream_commit=_str(upstream.get("commit")),
        series_sha256=series_sha256(patches) if patches else None,
        patches=tuple(n for p in patches if (n := _str(p.get("name")))),
    )


def find_smoke_report(directory: Path) -> Path | None:
    """The newest smoke report under ``directory``: ``smoke/<stamp>/report.json`` (what
    ``invoke smoke`` writes; stamps sort by time) or any ``*smoke*.json``."""
    stamped = sorted(p for p in directory.rglob("report.json") if p.parent.parent.name == "smoke")
    if stamped:
        return stamped[-1]
    named = sorted(p for p in directory.rglob("*smoke*.json") if p.is_file())
    return named[-1] if named else None


def find_manifest(directory: Path) -> Path | None:
    """``build/<recipe>/manifest.json``: at most one level down, never deep inside a staged tree
    or conda env (which may ship unrelated ``manifest.json`` files)."""
    found = sorted(p for p in (directory / "manifest.json", *directory.glob("*/manifest.json"))
                   if p.is_file())  # fmt: skip
    return found[-1] if found else None
