"""`invoke ci.report` on recorded nights: a passing night, a regression, a failed build."""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from npulab.ci import markdown
from npulab.ci.matrix import load_matrix
from npulab.ci.nightly import job_summary, run_report
from npulab.ci.report import MISSING, NO_SMOKE, Entry, read_history, update_history
from npulab.ci.results import parse_manifest, parse_smoke, read_json
from npulab.errors import ConfigError

DATA = Path(__file__).parent / "data" / "ci"
NIGHTS = DATA / "nights"


@pytest.fixture
def history(tmp_path: Path) -> Path:
    path = tmp_path / "history" / "history.jsonl"
    path.parent.mkdir()
    shutil.copy(DATA / "history-before.jsonl", path)
    return path


def report(tmp_path: Path, history: Path, night_dir: str, night: str):  # type: ignore[no-untyped-def]
    return run_report(NIGHTS / night_dir, history, tmp_path / "site", night=night, run_id="77")


def test_runner_report_from_issue7_code_is_read() -> None:
    """A report the real smoke runner wrote (CPU backend, tiny model) parses fully."""
    smoke = parse_smoke(read_json(DATA / "runner-cpu-report.json") or {})
    assert smoke.verdict == "PASS"
    assert smoke.chip == "7940HS"
    assert smoke.tokens_per_s == pytest.approx((226.699 + 359.161) / 2)
    assert smoke.time_to_first_token_s == pytest.approx(0.0078)
    assert smoke.load_time_s == pytest.approx(0.003)
    assert smoke.peak_memory_bytes == 362106880
    assert [a.prompt for a in smoke.answers] == ["hello paris", "w1 w2"]
    assert all(a.stop_token_reached for a in smoke.answers)
    assert smoke.versions["transformers"] == "4.43.3"
    assert smoke.reasons == ()


def test_defensive_reading_of_broken_reports(tmp_path: Path) -> None:
    assert parse_smoke({}).verdict == "ERROR"
    odd = parse_smoke({"verdict": "fail", "prompts": "nope", "host": 3, "tokens_per_s": "fast"})
    assert (odd.verdict, odd.answers, odd.host, odd.tokens_per_s) == ("FAIL", (), None, None)
    flat = parse_smoke(
        {
            "verdict": "PASS",
            "chip": "8845HS",
            "tokens_per_s": 4.0,
            "load_time_s": 40,
            "reasons": ["slow"],
            "error": "RuntimeError: boom\ntrace",
        }
    )
    assert (flat.chip, flat.tokens_per_s, flat.load_time_s) == ("8845HS", 4.0, 40.0)
    # The flat fields are read, but a PASS with no prompts or checks is not believed (issue 15).
    assert flat.verdict == "ERROR"
    assert flat.reasons[:2] == ("slow", "RuntimeError: boom")
    assert "PASS with no prompts answered" in flat.reasons[2]
    (tmp_path / "bad.json").write_text("{not json")
    assert read_json(tmp_path / "bad.json") is None
    assert parse_manifest({"patches": [{"sha256": "x"}]}).patches == ()


def test_manifest_series_hash_matches_the_build_code() -> None:
    from npulab.build.executor import _sha

    data = read_json(next(NIGHTS.glob("pass/smoke-phx-7940hs/*/manifest.json"))) or {}
    facts = parse_manifest(data)
    assert facts.upstream_commit == "cac1398aff7de83f9b26c34cbaf3fc7d9a601815"
    assert facts.series_sha256 == _sha({p["name"]: p["sha256"] for p in data["patches"]})
    assert facts.patches == (
        "0001-env-yaml-transformers-4.43.3.patch",
        "0002-llama3-rope-modeling.patch",
    )


def test_passing_night(tmp_path: Path, history: Path) -> None:
    result = report(tmp_path, history, "pass", "2026-11-27")
    assert result.ok
    assert [(e.machine, e.verdict) for e in result.entries] == [
        ("phx-7940hs", "PASS"),
        ("hpt-8845hs", "PASS"),
    ]
    phx = result.entries[0]
    assert phx.tokens_per_s == pytest.approx((4.12 + 4.202) / 2)
    assert phx.load_time_s == 41.8
    assert phx.host == "LAB-PHX-01"
    summary = result.summary.read_text()
    assert "All machine kinds passed; no regression." in summary
    assert "| phx-7940hs | 7940HS | ✅ PASS | 4.16 | 41.8 | 1.41 | `cac1398aff7d` |" in summary
    lines = history.read_text().splitlines()
    assert len(lines) == 14 + 2
    assert json.loads(lines[-1])["night"] == "2026-11-27"


def test_history_is_idempotent_per_night_and_machine(tmp_path: Path, history: Path) -> None:
    report(tmp_path, history, "pass", "2026-11-27")
    first = history.read_text()
    report(tmp_path, history, "pass", "2026-11-27")
    assert history.read_text() == first
    # A rerun of the night with a different result replaces, not adds.
    report(tmp_path, history, "build-failed", "2026-11-27")
    entries = [e for e in read_history(history) if e.night == "2026-11-27"]
    assert [(e.machine, e.verdict) for e in entries] == [
        ("hpt-8845hs", NO_SMOKE),
        ("phx-7940hs", "PASS"),
    ]


def test_regression_is_flagged_against_the_median(tmp_path: Path, history: Path) -> None:
    report(tmp_path, history, "pass", "2026-11-27")
    result = report(tmp_path, history, "regression", "2026-11-28")
    assert not result.ok
    assert all(e.verdict == "PASS" for e in result.entries)
    flagged = {(f.machine, f.metric) for f in result.flags}
    assert flagged == {("phx-7940hs", "tokens/s"), ("phx-7940hs", "load time s")}
    speed = next(f for f in result.flags if f.metric == "tokens/s")
    # Median of the last 7 passing nights of phx (2026-11-21 .. 27), recorded history + tonight.
    earlier = [e.tokens_per_s for e in read_history(history) if e.machine == "phx-7940hs"]
    assert speed.baseline == pytest.approx(sorted(earlier[1:8])[3])
    assert speed.change_pct < -15
    summary = result.summary.read_text()
    assert "### Regressions" in summary
    assert "phx-7940hs: tokens/s 3.04 vs median" in summary


def test_regression_threshold_is_from_the_matrix(tmp_path: Path, history: Path) -> None:
    matrix = load_matrix()
    loose = type(matrix)(
        recipe=matrix.recipe,
        cron=matrix.cron,
        machines=tuple(
            type(m)(
                id=m.id, chip=m.chip, family=m.family, device=m.device,
                runner_labels=m.runner_labels,
                thresholds=type(m.thresholds)(tokens_per_s_drop_pct=40, load_time_rise_pct=60),
            )
            for m in matrix.machines
        ),
    )  # fmt: skip
    result = run_report(
        NIGHTS / "regression", history, tmp_path / "site", night="2026-11-28", matrix=loose
    )
    assert result.flags == []


def test_failed_build_night(tmp_path: Path, history: Path) -> None:
    result = report(tmp_path, history, "build-failed", "2026-11-29")
    assert not result.ok
    hpt = result.entries[1]
    assert (hpt.machine, hpt.verdict, hpt.tokens_per_s) == ("hpt-8845hs", NO_SMOKE, None)
    assert hpt.reasons == ("no smoke report: the build step failed (see the job log)",)
    summary = result.summary.read_text()
    assert "**1 failing, 0 regression(s).**" in summary
    assert "- **hpt-8845hs** (NO-SMOKE): no smoke report: the build step failed" in summary


def test_missing_machine_and_wrong_chip(tmp_path: Path, history: Path) -> None:
    reports = tmp_path / "reports"
    shutil.copytree(NIGHTS / "pass" / "smoke-phx-7940hs", reports / "smoke-phx-7940hs")
    result = run_report(reports, history, tmp_path / "site", night="2026-11-27")
    assert result.entries[1].verdict == MISSING
    shutil.copytree(NIGHTS / "pass" / "smoke-phx-7940hs", reports / "smoke-hpt-8845hs")
    with pytest.raises(ConfigError, match="report from chip 7940HS, but hpt-8845hs is 8845HS"):
        run_report(reports, history, tmp_path / "site", night="2026-11-27")


def test_bad_history_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text(
        '{"night": "2026-01-01", "machine": "m", "chip": "7940HS", "verdict": "PASS"}\n[]\n'
    )
    with pytest.raises(ConfigError, match=r"h.jsonl:2: not a history entry"):
        read_history(path)


def test_history_keeps_unknown_fields_out_and_round_trips(tmp_path: Path) -> None:
    entry = Entry(night="2026-01-02", machine="m", chip="7940HS", verdict="PASS",
                  answers=(("q", "a"),), reasons=("r",))  # fmt: skip
    path = tmp_path / "h.jsonl"
    update_history(path, [entry])
    assert read_history(path) == [entry]


def test_html_page_is_self_contained_with_a_chart(tmp_path: Path, history: Path) -> None:
    report(tmp_path, history, "pass", "2026-11-27")
    report(tmp_path, history, "regression", "2026-11-28")
    result = report(tmp_path, history, "build-failed", "2026-11-29")
    text = result.page.read_text()
    assert "<script" not in text
    assert not re.search(r"(src|href)=\"https?:", text)
    svgs = re.findall(r"<svg .*?</svg>", text, flags=re.S)
    assert len(svgs) == 2
    for svg in svgs:
        root = ET.fromstring(svg)  # well-formed XML
        ns = {"s": "http://www.w3.org/2000/svg"}
        lines = root.findall("s:polyline", ns)
        # phx: one unbroken line; hpt: broken by its failed nights (11-23; 11-29 ends it).
        assert [line.get("stroke") for line in lines] == ["#1f77b4", "#d62728", "#d62728"]
    speed = ET.fromstring(svgs[0])
    points = [c for c in speed.findall("{http://www.w3.org/2000/svg}circle") if c.get("r") == "3.5"]
    # 10 nights x 2 machines, minus the nights without a speed (hpt 11-23 FAIL, 11-29 no smoke).
    assert len(points) == 18
    titles = [t.text for t in speed.iter("{http://www.w3.org/2000/svg}title")]
    assert "hpt-8845hs 2026-11-29: NO-SMOKE" in titles
    assert "phx-7940hs 2026-11-28: 3.04" in "".join(titles).replace("3.0401", "3.04")
    assert "tokens/s" in text
    # The regression of 11-28 stays marked on later pages (kept in the history).
    rings = [c for c in speed.iter("{http://www.w3.org/2000/svg}circle") if c.get("r") == "8"]
    assert len(rings) == 1
    assert "regression: phx-7940hs 2026-11-28" in (rings[0].findtext("{*}title") or "")
    assert "load time" in text.lower()


def test_answers_are_escaped_in_markdown() -> None:
    assert markdown.cell("<script>|x\ny") == "&lt;script&gt;\\|x<br>y"
    assert markdown.cell("a" * 300, 10) == "a" * 9 + "…"


def test_job_summary_for_a_passing_and_a_failed_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step))
    text = job_summary("phx-7940hs", NIGHTS / "pass" / "smoke-phx-7940hs")
    assert text.startswith("## phx-7940hs (7940HS): ✅ PASS")
    assert "| upstream | `cac1398aff7d` (v1.1) |" in text
    assert "| patch series | `" in text
    assert "(2 patches)" in text
    assert "| tokens/s | 4.16 |" in text
    assert "| time to first token | 1.41 s |" in text
    assert "The capital of France is Paris." in text
    assert "Silicon mind at work,<br>fans whisper" in text
    failed = job_summary("hpt-8845hs", NIGHTS / "build-failed" / "smoke-hpt-8845hs")
    assert "⚠️ NO-SMOKE" in failed
    assert "no manifest.json" in failed
    assert step.read_text() == text + failed


def test_invoke_tasks_report_and_render(
    tmp_path: Path, history: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from invoke.context import Context
    from invoke.exceptions import Exit

    from invoke_tasks import ci

    ci.report(Context(), reports=str(NIGHTS / "pass"), history=str(history),
              out=str(tmp_path / "site"), night="2026-11-27")  # fmt: skip
    assert "All machine kinds passed" in capsys.readouterr().out
    with pytest.raises(Exit) as failure:
        ci.report(Context(), reports=str(NIGHTS / "regression"), history=str(history),
                  out=str(tmp_path / "site"), night="2026-11-28")  # fmt: skip
    assert failure.value.code == 1
    ci.report(Context(), reports=str(NIGHTS / "regression"), history=str(history),
              out=str(tmp_path / "site"), night="2026-11-28", report_only=True)  # fmt: skip
    with pytest.raises(Exit, match="--night: expected a date"):
        ci.report(Context(), reports=str(NIGHTS / "pass"), history=str(history), night="monday")
    ci.render(Context(), check=True)


def test_newest_stamped_smoke_report_wins(tmp_path: Path) -> None:
    from npulab.ci.results import find_smoke_report

    for stamp in ("20261127T010000Z", "20261127T030000Z"):
        (tmp_path / "smoke" / stamp).mkdir(parents=True)
        (tmp_path / "smoke" / stamp / "report.json").write_text("{}")
    (tmp_path / "old-smoke.json").write_text("{}")
    assert find_smoke_report(tmp_path) == tmp_path / "smoke" / "20261127T030000Z" / "report.json"


@pytest.mark.integration
def test_screenshot_script_renders_the_page_in_chromium(tmp_path: Path) -> None:
    import subprocess
    import sys

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    out = tmp_path / "report.png"
    script = Path(__file__).resolve().parent.parent / "scripts" / "screenshot_report.py"
    subprocess.run(
        [sys.executable, str(script), "--out", str(out), "--chromium", chromium],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000  # a blank page is a few kB; tables and two charts are far more


def test_manifest_is_taken_from_the_recipe_directory_not_deep_inside(tmp_path: Path) -> None:
    from npulab.ci.results import find_manifest

    deep = tmp_path / "recipe" / "env" / "Lib" / "site-packages" / "pkg" / "manifest.json"
    deep.parent.mkdir(parents=True)
    deep.write_text("{}")
    assert find_manifest(tmp_path) is None
    (tmp_path / "recipe" / "manifest.json").write_text("{}")
    assert find_manifest(tmp_path) == tmp_path / "recipe" / "manifest.json"


def test_failed_nights_are_not_part_of_the_regression_baseline() -> None:
    from npulab.ci.report import regressions

    matrix = load_matrix()
    machine = matrix.machines[0].id
    chip = matrix.machines[0].chip

    def night(day: int, verdict: str, speed: float, load: float) -> Entry:
        return Entry(
            night=f"2026-11-{day:02d}",
            machine=machine,
            chip=chip,
            verdict=verdict,
            tokens_per_s=speed,
            load_time_s=load,
        )

    # Seven good nights at 4 tok/s / 40 s, then four that FAILED with odd numbers (a crash after
    # a fast first token, a cold cache): they must not move the baseline.
    history = [night(d, "PASS", 4.0, 40.0) for d in range(1, 8)]
    history += [night(d, v, 9.0, 10.0) for d, v in ((8, "FAIL"), (9, "FAIL"), (10, "BUILD-FAILED"))]
    history.append(night(11, "FAIL", 9.0, 10.0))
    steady = night(12, "PASS", 3.9, 41.0)
    assert regressions([steady], history, matrix) == []
    slow = night(12, "PASS", 3.0, 60.0)
    flags = {f.metric: f for f in regressions([slow], history, matrix)}
    assert sorted(flags) == ["load time s", "tokens/s"]
    assert (flags["tokens/s"].baseline, flags["load time s"].baseline) == (4.0, 40.0)


def test_passage_perplexity_is_kept_and_a_rise_is_flagged() -> None:
    """The fixed passage's perplexity follows the rule of the other figures: the median of the
    machine's earlier passing nights, the matrix's perplexity_rise_pct (10)."""
    from npulab.ci.report import regressions, with_flags

    matrix = load_matrix()
    smoke = parse_smoke({"verdict": "FAIL", "passage": {"perplexity": 3.25}})
    assert smoke.perplexity == 3.25

    def night(day: int, perplexity: float, verdict: str = "PASS") -> Entry:
        return Entry(
            night=f"2026-12-{day:02d}", machine="phx-7940hs", chip="7940HS",
            verdict=verdict, perplexity=perplexity,
        )  # fmt: skip

    history = [night(1, 3.0), night(2, 3.1), night(3, 2.9), night(4, 90.0, "FAIL")]
    assert regressions([night(5, 3.3)], history, matrix) == []  # +6.5% of the median 3.0
    flags = regressions([night(5, 3.4)], history, matrix)
    assert [(f.metric, f.baseline) for f in flags] == [("passage perplexity", 3.0)]
    assert with_flags([night(5, 3.4)], flags)[0].flags == ("perplexity",)
    assert Entry.from_json(night(5, 3.4).to_json()).perplexity == 3.4


def test_a_drop_exactly_at_the_limit_is_not_a_regression_and_tonight_is_not_its_own_baseline() -> (
    None
):
    import dataclasses

    from npulab.ci.report import regressions

    matrix = load_matrix()
    kind = matrix.machines[0]
    limits = dataclasses.replace(
        kind.thresholds, tokens_per_s_drop_pct=25.0, load_time_rise_pct=25.0
    )
    matrix = dataclasses.replace(
        matrix, machines=(dataclasses.replace(kind, thresholds=limits), *matrix.machines[1:])
    )

    def night(day: int, speed: float, load: float) -> Entry:
        return Entry(
            night=f"2026-12-{day:02d}",
            machine=kind.id,
            chip=kind.chip,
            verdict="PASS",
            tokens_per_s=speed,
            load_time_s=load,
        )

    history = [night(1, 4.0, 40.0)]
    assert regressions([night(2, 3.0, 50.0)], history, matrix) == []  # -25 % / +25 %: at the limit
    tonight = night(2, 2.99, 50.5)
    # A re-run of the night: tonight's own earlier entry is in the history; it is no baseline.
    flags = {f.metric: f for f in regressions([tonight], [*history, tonight], matrix)}
    assert flags["tokens/s"].baseline == 4.0
    assert flags["tokens/s"].change_pct == pytest.approx(-25.25)
    assert flags["load time s"].change_pct == pytest.approx(26.25)
