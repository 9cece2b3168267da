"""`invoke lock --check` and `invoke wrappers`: the thin task adapters."""

from __future__ import annotations

from pathlib import Path

import pytest
from invoke.context import Context
from invoke.exceptions import Exit

from invoke_tasks import lock as lock_tasks
from invoke_tasks import wrappers as wrapper_tasks

RECIPE = "ryzenai-sw-1.1-llama3.1"


def test_lock_check_passes_on_the_committed_lock(capsys: pytest.CaptureFixture[str]) -> None:
    lock_tasks.lock(Context(), recipe=RECIPE, check=True)
    assert "follows" in capsys.readouterr().out


def test_lock_check_fails_cleanly_on_a_stale_lock(
    tmp_path: Path, project_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = tmp_path / "r.yaml"
    text = (project_root / "recipes" / f"{RECIPE}.yaml").read_text()
    recipe.write_text(text.replace("torch: 2.3.1", "torch: 2.4.1"))
    with pytest.raises(Exit) as info:
        lock_tasks.lock(Context(), recipe=str(recipe), check=True)
    assert info.value.code == 10  # DriftError
    assert "torch: recipe pins 2.4.1, lock has 2.3.1" in str(info.value.message)
    assert "invoke lock" in str(info.value.message)


def test_wrappers_task_writes_crlf_files(tmp_path: Path) -> None:
    wrapper_tasks.wrappers(
        Context(),
        out=str(tmp_path),
        transformers_dir="C:\\b (1)\\tree\\example\\transformers",
        conda_root="C:\\mc",
        smoke_runner="C:\\s\\runner.py",
        recipe=RECIPE,
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pip.cmd", "python.cmd", "smoke.cmd"]
    assert b"\r\nchcp 65001 >nul\r\n" in (tmp_path / "python.cmd").read_bytes()


def test_wrappers_task_refuses_a_tree_setup_bat_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(Exit) as info:
        wrapper_tasks.wrappers(
            Context(),
            out=str(tmp_path),
            transformers_dir="C:\\R&D",
            conda_root="C:\\mc",
            recipe=RECIPE,
        )
    assert info.value.code == 2
