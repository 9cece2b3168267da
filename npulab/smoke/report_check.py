"""What a smoke report must hold before its verdict is believed.

The runner (``npulab/smoke/runner.py``) writes ``report.json``; ``invoke smoke`` and
``invoke ci.report`` read it. A report is only data in a file: a stale one, a truncated one or a
hand-written ``{"verdict": "PASS"}`` must never certify a run. :func:`problems` lists what is
wrong with a report (empty when it is sound); :func:`verdict` combines a sound report with the
runner's exit status. Either disagreement makes the verdict ``ERROR``, never ``PASS``.

The schema (``report_version`` 1):

- ``verdict``: one of :data:`VERDICTS`;
- ``prompts``: a list of objects, each with the ``prompt`` (text), the ``answer`` (text) and the
  figures (``new_tokens`` an integer >= 0, ``time_to_first_token_s`` and ``generate_s`` numbers
  >= 0, ``tokens_per_s`` / ``decode_tokens_per_s`` numbers >= 0 or null);
- ``checks``: a list of ``{name, ok, detail}`` behind the verdict.

A ``PASS`` also needs at least one prompt, a non-empty answer for each, at least one check and
every check ``ok``: PASS is earned by answers, not by the word.
"""

from __future__ import annotations

from typing import Any

VERDICTS = ("PASS", "FAIL", "REFUSED", "ERROR")
REPORT_VERSION = 1
#: The runner's exit status for each verdict (runner.py EXIT_*).
EXIT_FOR = {"PASS": 0, "FAIL": 1, "REFUSED": 2, "ERROR": 3}
_FIGURES = ("time_to_first_token_s", "generate_s")
_OPTIONAL_FIGURES = ("tokens_per_s", "decode_tokens_per_s")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _prompt_problems(n: int, item: Any) -> list[str]:
    where = f"prompts[{n}]"
    if not isinstance(item, dict):
        return [f"{where} is not an object"]
    found = []
    for key in ("prompt", "answer"):
        if not isinstance(item.get(key), str):
            found.append(f"{where}.{key} is not text")
    tokens = item.get("new_tokens")
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
        found.append(f"{where}.new_tokens is not a count")
    found += [
        f"{where}.{key} is not a number >= 0" for key in _FIGURES if not _number(item.get(key))
    ]
    found += [
        f"{where}.{key} is not a number >= 0 or null"
        for key in _OPTIONAL_FIGURES
        if item.get(key) is not None and not _number(item.get(key))
    ]
    return found


def _check_problems(checks: Any) -> list[str]:
    if not isinstance(checks, list):
        return ["checks is not a list"]
    found = []
    for n, check in enumerate(checks):
        if not (
            isinstance(check, dict)
            and isinstance(check.get("name"), str)
            and isinstance(check.get("ok"), bool)
        ):
            found.append(f"checks[{n}] is not {{name, ok, detail}}")
    return found


def problems(report: Any) -> list[str]:
    """Everything that keeps ``report`` from being believed (empty: it is sound)."""
    if not isinstance(report, dict):
        return ["the report is not a JSON object"]
    found: list[str] = []
    verdict = report.get("verdict")
    if verdict not in VERDICTS:
        found.append(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
    if report.get("report_version") != REPORT_VERSION:
        found.append(
            f"report_version is {report.get('report_version')!r}, expected {REPORT_VERSION}"
        )
    prompts = report.get("prompts")
    if not isinstance(prompts, list):
        found.append("prompts is not a list")
        prompts = []
    for n, item in enumerate(prompts):
        found += _prompt_problems(n, item)
    checks = report.get("checks")
    found += _check_problems(checks)
    if verdict == "PASS":
        found += _pass_problems(prompts, checks if isinstance(checks, list) else [])
    return found


def _pass_problems(prompts: list[Any], checks: list[Any]) -> list[str]:
    found = []
    if not prompts:
        found.append("PASS with no prompts answered")
    if any(isinstance(p, dict) and not p.get("answer") for p in prompts):
        found.append("PASS with an empty answer")
    if not checks:
        found.append("PASS with no checks")
    failed = [c.get("name") for c in checks if isinstance(c, dict) and c.get("ok") is not True]
    if failed:
        found.append(f"PASS although check(s) failed: {failed}")
    return found


def verdict(report: Any, returncode: int | None) -> tuple[str, list[str]]:
    """The verdict this run earned: the report's, if the report is sound and the runner's exit
    status says the same; else ``ERROR`` with the reasons."""
    found = problems(report)
    if found:
        return "ERROR", found
    claimed = str(report["verdict"])
    if returncode is not None and returncode != EXIT_FOR[claimed]:
        return "ERROR", [
            f"the report says {claimed} but the runner exited with {returncode} "
            f"(a {claimed} exits with {EXIT_FOR[claimed]})"
        ]
    return claimed, []
