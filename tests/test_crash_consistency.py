"""Issue 15: kill -9 at seeded points of a cold build, a model fetch and a smoke run, rerun,
and check that nothing left behind lies (bench/crash_harness.py runs the same with many kills).

A few kills each keep this test's share of the suite small; ``python bench/crash_harness.py
--kills 200`` is the full run (its figures are in docs/build.md).
"""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parent.parent / "bench" / "crash_harness.py"


def _harness() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crash_harness", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["crash_harness"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def harness() -> ModuleType:
    return _harness()


def _kills(h: Any, scenario: Any, base: Path, seed: int, count: int) -> Any:
    """``count`` kills at seeded points of one clean run's duration, each followed by a rerun."""
    report = h.Report()
    rng = random.Random(seed)
    clean = h.clean_run(scenario, base)
    for _ in range(3 * count):
        if report.kills >= count:
            break
        h.trial(scenario, base, rng, report, clean=clean)
    return report


def test_cold_build_killed_anywhere_reruns_to_a_true_manifest(harness: Any, tmp_path: Path) -> None:
    scenario = harness.build_scenario(tmp_path / "b", files=80, kib=4)
    report = _kills(harness, scenario, tmp_path, seed=3, count=2)
    assert report.kills >= 1
    assert report.violations == []
    harness.concurrent(scenario, tmp_path, 3, report)
    assert report.violations == []


def test_model_fetch_killed_anywhere_reruns_to_the_pinned_files(
    harness: Any, tmp_path: Path
) -> None:
    from npulab.testing.hub_server import HubServer

    with HubServer() as hub:
        hub.set_latency(0.002)
        scenario = harness.fetch_scenario(tmp_path / "f", hub, mib=8)
        report = _kills(harness, scenario, tmp_path, seed=5, count=2)
    assert report.kills >= 1
    assert report.violations == []


def test_smoke_killed_then_rerun_and_many_at_once_never_lie(harness: Any, tmp_path: Path) -> None:
    scenario = harness.smoke_scenario(tmp_path / "s")
    report = harness.Report()
    # One kill where the model is loading (no clean run: torch's import dominates its time).
    harness.trial(scenario, tmp_path, random.Random(7), report, clean=4.0)
    assert report.violations == []
    harness.concurrent(scenario, tmp_path, 2, report)
    assert report.violations == []


def test_the_checks_catch_what_they_guard(harness: Any, tmp_path: Path) -> None:
    """The invariants fail on a lying result: a manifest naming another tree, scratch left."""
    import json

    scenario = harness.build_scenario(tmp_path / "b", files=20, kib=1)
    env = scenario.fresh(tmp_path / "t")
    done = harness.run(harness._argv(scenario, env), env)
    assert done.returncode == 0, done.stderr
    assert scenario.check(env, done) == []
    out = Path(env["NPULAB_BUILD_DIR"]) / "crash"
    data = json.loads((out / "manifest.json").read_text())
    data["staged"]["tree"] = "0" * 40
    (out / "manifest.json").write_text(json.dumps(data))
    (out / ".tree.new-x").mkdir()
    found = scenario.check(env, done)
    assert any("manifest names tree" in f for f in found)
    assert any("scratch left" in f for f in found)
