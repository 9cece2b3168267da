"""Issue 15 finding 3: a smoke or chat verdict is the run's own, never another run's or a word.

The runner is replaced by a tiny interpreter script that writes a given report and exits with a
given status (it stands where ``--python`` points, like a broken conda env would), so every case
is one real subprocess run through ``npulab.cmd``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from invoke.context import Context
from invoke.exceptions import Exit

from invoke_tasks import smoke as smoke_tasks
from npulab.ci.results import parse_smoke
from npulab.errors import SmokeFailure
from npulab.recipe import load_recipe
from npulab.smoke import report_check
from npulab.smoke import run as smoke_run
from tests.test_smoke_tasks import tiny_recipe

DATA = Path(__file__).parent / "data" / "ci"


def fake_python(tmp_path: Path, name: str, report: Any, code: int) -> Path:
    """An 'interpreter' that ignores the runner, writes ``report`` (None: nothing) to the
    ``--report`` path it is given and exits with ``code``."""
    script = tmp_path / name
    text = json.dumps(json.dumps(report))
    body = "" if report is None else f"open(a[a.index('--report') + 1], 'w').write({text})\n"
    script.write_text(f"#!{sys.executable}\nimport sys\na = sys.argv\n{body}sys.exit({code})\n")
    script.chmod(0o755)
    return script


def real_report() -> dict[str, Any]:
    data = json.loads((DATA / "runner-cpu-report.json").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture
def recipe(project_root: Path, tmp_path: Path, isolated_cache: Path):  # type: ignore[no-untyped-def]
    return load_recipe(tiny_recipe(project_root, tmp_path))


@pytest.mark.integration
def test_a_planted_report_does_not_speak_for_a_failing_runner(tmp_path: Path, recipe: Any) -> None:
    dest = tmp_path / "run"
    dest.mkdir()
    (dest / "report.json").write_text(json.dumps(real_report()))
    with pytest.raises(SmokeFailure, match="left no report") as err:
        smoke_run.smoke(recipe, backend="cpu", model_dir="/m", python="/bin/false", dest=dest)
    assert "exit status 1" in str(err.value)


@pytest.mark.integration
def test_two_runs_in_the_same_second_never_share_a_report(
    tmp_path: Path, recipe: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20261208T031500Z")
    good = fake_python(tmp_path, "good", real_report(), 0)
    crashed = fake_python(tmp_path, "crashed", None, 3)
    first = smoke_run.smoke(recipe, backend="cpu", model_dir="/m", python=str(good))
    assert first.verdict == "PASS"
    with pytest.raises(SmokeFailure, match="left no report"):
        smoke_run.smoke(recipe, backend="cpu", model_dir="/m", python=str(crashed))
    runs = sorted(p.name for p in first.report_path.parent.parent.iterdir())
    assert len(runs) == 2
    assert all(r.startswith("20261208T031500Z-") for r in runs)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("report", "code", "why"),
    [
        ({"verdict": "PASS"}, 0, "PASS with no prompts answered"),
        ({**real_report(), "prompts": []}, 0, "PASS with no prompts answered"),
        (real_report(), 1, "the runner exited with 1"),
        ({**real_report(), "verdict": "FAIL"}, 0, "the runner exited with 0"),
    ],
)
def test_a_report_the_run_did_not_earn_is_error(
    tmp_path: Path, recipe: Any, report: Any, code: int, why: str
) -> None:
    python = fake_python(tmp_path, "runner", report, code)
    with pytest.raises(SmokeFailure, match="smoke ERROR") as err:
        smoke_run.smoke(recipe, backend="cpu", model_dir="/m", python=str(python))
    assert why in str(err.value)


def test_report_schema_names_what_is_wrong() -> None:
    assert report_check.problems(real_report()) == []
    broken = {**real_report(), "prompts": [{"prompt": "p", "answer": 3, "new_tokens": -1}]}
    found = report_check.problems(broken)
    assert "prompts[0].answer is not text" in found
    assert "prompts[0].new_tokens is not a count" in found
    assert "prompts[0].time_to_first_token_s is not a number >= 0" in found
    assert report_check.problems([]) == ["the report is not a JSON object"]
    failed_check = {**real_report(), "checks": [{"name": "x", "ok": False, "detail": ""}]}
    assert report_check.verdict(failed_check, 0)[0] == "ERROR"
    assert report_check.verdict({**failed_check, "verdict": "FAIL"}, 1) == ("FAIL", [])


def test_ci_report_refuses_a_bare_pass() -> None:
    bare = parse_smoke({"verdict": "PASS"})
    assert bare.verdict == "ERROR"
    assert any("PASS with no prompts answered" in r for r in bare.reasons)
    assert parse_smoke(real_report()).verdict == "PASS"


def test_ci_report_calls_a_truncated_report_what_it_is(tmp_path: Path) -> None:
    from npulab.ci.matrix import load_matrix
    from npulab.ci.report import entry_for

    machine = load_matrix().machines[0]
    run = tmp_path / "smoke" / "20261208T031500Z-1-abcdef"
    run.mkdir(parents=True)
    (run / "report.json").write_text('{"verdict": "PASS", "prom')
    (tmp_path / "manifest.json").write_text("{}")
    entry = entry_for(tmp_path, machine, "2026-12-08", None)
    assert entry.verdict == "ERROR"
    assert "truncated" in entry.reasons[0]
    assert "model fetch" not in entry.reasons[0]


@pytest.mark.integration
def test_chat_exits_with_the_runners_status(tmp_path: Path, recipe: Any) -> None:
    crashed = fake_python(tmp_path, "crashed", None, 3)
    with pytest.raises(Exit) as err:
        smoke_tasks.chat(Context(), recipe=recipe.source, backend="cpu", model_dir="/m",
                         python=str(crashed))  # fmt: skip
    assert err.value.code == 3


def test_smoke_dry_run_writes_nothing(tmp_path: Path, recipe: Any) -> None:
    outcome = smoke_run.smoke(recipe, backend="cpu", model_dir="/m", dry_run=True)
    assert outcome.verdict == "DRY-RUN"
    assert not (tmp_path / "build").exists()
    assert smoke_run.chat(recipe, backend="cpu", model_dir="/m", dry_run=True) == 0
    assert not (tmp_path / "build").exists()
