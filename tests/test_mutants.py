"""`nox -s mutants` (npulab.ci.mutants): config, scoring, allow-list, ratchet, and a real cosmic-ray
session over a tiny module."""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import pytest

from npulab import paths
from npulab.ci import mutants
from npulab.errors import ConfigError

TINY = """def at_least(n: int, limit: int) -> bool:
    return n >= limit


def enabled() -> bool:
    return True
"""
TINY_TEST = """from npulab.tiny import at_least, enabled


def test_tiny() -> None:
    assert at_least(3, 2)
    assert not at_least(1, 2)
    assert enabled() is True
"""


def _mutant(outcome: str, before: str = "a == b", after: str = "a != b") -> mutants.Mutant:
    return mutants.Mutant(
        module="npulab/x.py", line=3, operator="op", before=before, after=after, outcome=outcome
    )


def test_the_committed_config_names_real_modules_and_tests() -> None:
    root = paths.project_root()
    config, equivalents, floors = mutants.load_config(root)
    for target in config.modules:
        assert (root / target.module).is_file(), target.module
        files = [a for a in target.tests if a.startswith("tests/")]
        assert files, target.module
        for name in files:
            assert (root / name).is_file(), f"{target.module}: {name}"
    named = {t.module for t in config.modules}
    for module in ("hashing", "model/fetch", "source/lfs", "windows/lfs", "windows/upload"):
        assert f"npulab/{module}.py" in named
    assert any(m.startswith("npulab/transport/") for m in named)
    assert set(floors) <= named
    assert all(0.0 <= f <= 1.0 for f in floors.values())
    for entry in equivalents:
        assert entry.module in named
        assert entry.before != entry.after
        assert len(entry.reason) > 20, entry


def test_unknown_module_is_refused_with_the_known_ones() -> None:
    config, _, _ = mutants.load_config(paths.project_root())
    with pytest.raises(ConfigError, match=r"no module 'npulab/hash\.py'; known: npulab/hashing"):
        config.select(["npulab/hash.py"])
    assert config.select([]) == list(config.modules)


def test_changed_lines_of_a_cosmic_ray_diff() -> None:
    diff = (
        "--- mutation diff ---\n--- anpulab/x.py\n+++ bnpulab/x.py\n@@ -3,1 +3,1 @@\n"
        "-    if a == b:\n+    if a != b:\n"
    )
    assert mutants.changed_lines(diff) == ("if a == b:", "if a != b:")


def test_score_counts_incompetent_as_killed_and_leaves_out_equivalents_and_skipped() -> None:
    found = [
        _mutant("killed"),
        _mutant("incompetent"),
        _mutant("skipped"),
        _mutant("survived"),
        _mutant("survived", "n = 1", "n = 2"),
    ]
    plain = mutants.score("npulab/x.py", found, [])
    assert (plain.killed, len(plain.survivors), plain.value) == (2, 2, 0.5)
    listed = mutants.Equivalent(
        module="npulab/x.py", before="n = 1", after="n = 2", reason="n is never read"
    )
    allowed = mutants.score("npulab/x.py", found, [listed])
    assert [m.before for m in allowed.survivors] == ["a == b"]
    assert [m.before for m in allowed.equivalent] == ["n = 1"]
    assert allowed.value == pytest.approx(2 / 3)
    other = mutants.Equivalent(module="npulab/y.py", before="n = 1", after="n = 2", reason="r")
    assert mutants.score("npulab/x.py", found, [other]).equivalent == ()
    assert mutants.stale_equivalents([listed, other], [allowed]) == []
    assert mutants.stale_equivalents([listed], [plain]) == [listed]


def test_ratchet_only_raises_and_the_floor_fails_a_lower_score() -> None:
    low = mutants.score("npulab/x.py", [_mutant("killed"), _mutant("survived")], [])
    high = mutants.score("npulab/y.py", [_mutant("killed")] * 2, [])
    floors = {"npulab/x.py": 0.8, "npulab/y.py": 0.5}
    assert mutants.ratchet(floors, [low, high]) == {"npulab/x.py": 0.8, "npulab/y.py": 1.0}
    assert mutants.below_floor(floors, [low, high]) == [low]
    two_thirds = mutants.score("npulab/z.py", [_mutant("killed")] * 2 + [_mutant("survived")], [])
    raised = mutants.ratchet({}, [two_thirds])["npulab/z.py"]
    assert raised == 0.666
    assert mutants.below_floor({"npulab/z.py": raised}, [two_thirds]) == []


def test_the_test_command_runs_only_the_module_tests_and_filters_operators() -> None:
    target = mutants.Target(module="npulab/x.py", tests=("tests/t.py", "-k", "a or b"))
    config = mutants.Config(operators=("core/AddNot",), modules=(target,), timeout=9.0)
    text = mutants.cosmic_config(
        target,
        config,
        ["core/AddNot", "core/NumberReplacer"],
        timeout=mutants.mutant_timeout(config, 0.5),
    )
    import tomllib

    data = tomllib.loads(text)["cosmic-ray"]
    assert data["module-path"] == "npulab/x.py"
    assert data["timeout"] == 9.0  # the ceiling: 10 x 0.5 s would be 5 s, but at least 30 s
    roomy = dataclasses.replace(config, timeout=600.0)
    assert mutants.mutant_timeout(roomy, 0.5) == 30.0
    assert mutants.mutant_timeout(roomy, 12.0) == 120.0
    assert shlex.split(data["test-command"])[-3:] == ["tests/t.py", "-k", "a or b"]
    assert data["filters"]["operators-filter"]["exclude-operators"] == ["^core/NumberReplacer$"]


@pytest.mark.integration
@pytest.mark.slow
def test_a_real_session_finds_the_untested_boundary(tmp_path: Path) -> None:
    pytest.importorskip("cosmic_ray")
    (tmp_path / "npulab").mkdir()
    (tmp_path / "npulab" / "__init__.py").write_text("")
    (tmp_path / "npulab" / "tiny.py").write_text(TINY)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_tiny.py").write_text(TINY_TEST)
    target = mutants.Target(module="npulab/tiny.py", tests=("tests/test_tiny.py",))
    config = mutants.Config(
        operators=("core/ReplaceComparisonOperator_GtE_Gt", "core/ReplaceTrueWithFalse"),
        modules=(target,),
        timeout=120.0,
    )
    found = mutants.run_module(target, config, tmp_path, nice=0)
    counted = sorted((m.operator, m.outcome) for m in found if m.outcome != "skipped")
    assert counted == [
        ("core/ReplaceComparisonOperator_GtE_Gt", "survived"),
        ("core/ReplaceTrueWithFalse", "killed"),
    ]
    result = mutants.score(target.module, found, [])
    assert [m.describe() for m in result.survivors] == [
        "npulab/tiny.py:2 core/ReplaceComparisonOperator_GtE_Gt: "
        "`return n >= limit` -> `return n > limit`"
    ]
    assert result.value == 0.5
    assert (tmp_path / "npulab" / "tiny.py").read_text() == TINY  # restored after the session
    report = mutants.report([result], {target.module: 0.9})
    assert "score 50.0% (killed 1, survived 1, equivalent 0); floor 90.0%" in report
    assert json.loads(json.dumps(mutants._as_json(result)))["score"] == 0.5
