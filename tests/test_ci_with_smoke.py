"""The nightly chain on this machine: `invoke smoke` (CPU backend, tiny model) writes its report
where the nightly job finds it, and `ci.summary` / `ci.report` read what it wrote."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from invoke.context import Context

from invoke_tasks import smoke as smoke_tasks
from npulab.ci.nightly import job_summary, run_report
from tests.test_smoke_tasks import tiny_recipe


@pytest.mark.integration
def test_report_written_by_invoke_smoke_feeds_summary_and_history(
    project_root: Path, tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    recipe = tiny_recipe(project_root, tmp_path)
    smoke_tasks.smoke(Context(), recipe=str(recipe), backend="cpu", chip="7940HS",
                      model_dir=str(tmp_path / "model"))  # fmt: skip
    build = isolated_cache.parent / "build"

    text = job_summary("phx-7940hs", build)
    assert text.startswith("## phx-7940hs (7940HS): ✅ PASS")
    assert "| tokens/s | " in text
    assert "| tokens/s | – |" not in text
    assert "| time to first token | " in text
    assert "<details><summary>prompt 1 (stop token)" in text

    # As the report job sees it: the artifact of the machine kind, downloaded by name.
    shutil.copytree(build, tmp_path / "reports" / "smoke-phx-7940hs")
    result = run_report(
        tmp_path / "reports", tmp_path / "history.jsonl", tmp_path / "site", night="2026-11-30"
    )
    phx, hpt = result.entries
    assert phx.verdict == "PASS"
    assert phx.tokens_per_s is not None
    assert phx.tokens_per_s > 0
    assert phx.load_time_s is not None
    assert phx.load_time_s > 0
    assert phx.answers
    assert all(answer for _, answer in phx.answers)
    assert hpt.verdict == "MISSING"
