"""Markdown for GitHub: the night's summary (report job) and one job's summary (``ci.summary``).

Model answers and error text are untrusted: they are HTML-escaped, table pipes and newlines are
neutralised, and the text is cut so a summary stays well under the runner's 1 MiB step cap.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from npulab.ci.report import Entry, Flag
from npulab.ci.results import BuildFacts, SmokeResult

MAX_ANSWER_CHARS = 600
MAX_SUMMARY_BYTES = 512 * 1024
ICONS = {"PASS": "✅ PASS", "FAIL": "❌ FAIL"}


def cell(text: str | None, limit: int = 200) -> str:
    """Text safe inside a Markdown table cell."""
    if text is None or text == "":
        return "–"
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    escaped = html.escape(text, quote=False).replace("|", "\\|")
    return escaped.replace("\r", "").replace("\n", "<br>")


def fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}"


def short(sha: str | None) -> str:
    return f"`{sha[:12]}`" if sha else "–"


def verdict(text: str) -> str:
    return ICONS.get(text, f"⚠️ {text}")


def night_summary(night: str, entries: list[Entry], flags: list[Flag]) -> str:
    lines = [f"## Nightly NPU matrix — {night}", ""]
    bad = [e for e in entries if e.verdict != "PASS"]
    if not bad and not flags:
        lines += ["All machine kinds passed; no regression.", ""]
    else:
        lines += [f"**{len(bad)} failing, {len(flags)} regression(s).**", ""]
    lines += [
        "| machine | chip | verdict | tokens/s | load s | TTFT s | upstream | series | host |",
        "|---|---|---|---:|---:|---:|---|---|---|",
    ]
    for e in entries:
        lines.append(
            f"| {e.machine} | {e.chip} | {verdict(e.verdict)} | {fmt(e.tokens_per_s)} "
            f"| {fmt(e.load_time_s, digits=1)} | {fmt(e.time_to_first_token_s)} "
            f"| {short(e.upstream_commit)} | {short(e.series_sha256)} | {cell(e.host)} |"
        )
    if flags:
        lines += ["", "### Regressions", ""]
        lines += [f"- {cell(str(f), 400)}" for f in flags]
    if bad:
        lines += ["", "### Failures", ""]
        for e in bad:
            reasons = "; ".join(e.reasons) or "no reason recorded"
            lines.append(f"- **{e.machine}** ({e.verdict}): {cell(reasons, 600)}")
    return "\n".join(lines) + "\n"


def job_summary(machine: str, facts: BuildFacts | None, smoke: SmokeResult | None) -> str:
    """One machine kind's job summary: pins, series hash, verdict, speed, answers."""
    outcome = smoke.verdict if smoke else "NO-SMOKE"
    lines = [f"## {machine}: {verdict(outcome)}", "", "| | |", "|---|---|"]
    if facts:
        tag = f" ({cell(facts.upstream_tag)})" if facts.upstream_tag else ""
        lines += [
            f"| recipe | {cell(facts.recipe)} {short(facts.recipe_digest)} |",
            f"| upstream | {short(facts.upstream_commit)}{tag} |",
            f"| patch series | {short(facts.series_sha256)} ({len(facts.patches)} patches) |",
        ]
    else:
        lines.append("| build | no manifest.json: the build did not get far |")
    if smoke:
        memory = smoke.peak_memory_bytes
        lines += [
            f"| host | {cell(smoke.host)} ({cell(smoke.chip)}) |",
            f"| model revision | {short(smoke.model_revision)} |",
            f"| tokens/s | {fmt(smoke.tokens_per_s)} |",
            f"| time to first token | {fmt(smoke.time_to_first_token_s, ' s')} |",
            f"| load time | {fmt(smoke.load_time_s, ' s', 1)} |",
            f"| peak memory | {fmt(memory / 2**30 if memory else None, ' GiB')} |",
        ]
        for name in ("torch", "transformers", "tokenizers", "python"):
            if name in smoke.versions:
                lines.append(f"| {name} | {cell(smoke.versions[name])} |")
        if smoke.reasons:
            lines += ["", "**Why:** " + cell("; ".join(smoke.reasons), 1000)]
        for number, answer in enumerate(smoke.answers, 1):
            stop = {True: "stop token", False: "length cap", None: "?"}[answer.stop_token_reached]
            lines += [
                "",
                f"<details><summary>prompt {number} ({stop}): {cell(answer.prompt, 120)}</summary>",
                "",
                cell(answer.answer, MAX_ANSWER_CHARS) if answer.answer else "*(empty answer)*",
                "",
                "</details>",
            ]
    else:
        lines += ["", "No smoke report: the build or model fetch failed (see the log above)."]
    text = "\n".join(lines) + "\n"
    return text.encode("utf-8")[:MAX_SUMMARY_BYTES].decode("utf-8", "ignore")


def write_step_summary(text: str, path: str | None = None) -> Path | None:
    """Append to ``$GITHUB_STEP_SUMMARY`` when set; return the file written (None: not set)."""
    target = path or os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as f:
        f.write(text)
    return Path(target)
