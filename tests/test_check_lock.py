"""check-lock.py: the drift check pip-lock.cmd runs after installing the hash lock."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from npulab.recipe import DEFAULT_RECIPE, load_recipe
from npulab.windows import check_lock
from npulab.windows import steps as winsteps


def test_pins_of_the_committed_lock(project_root: Path) -> None:
    recipe = load_recipe(project_root / "recipes" / f"{DEFAULT_RECIPE}.yaml")
    pins = check_lock.pins((project_root / recipe.env.lock).read_text())
    for name, version in recipe.env.pins.items():
        assert pins[check_lock.norm(name)] == version
    assert len(pins) > len(recipe.env.pins)
    assert "--hash" not in "".join(pins.values())


def test_drift_names_each_package() -> None:
    locked = check_lock.pins(
        "Torch==2.3.1 \\\n    --hash=sha256:ab\nhuggingface_hub==0.24.7\nx[extra]==1\n"
    )
    assert locked == {"torch": "2.3.1", "huggingface-hub": "0.24.7", "x": "1"}
    installed = {"torch": "2.3.1", "huggingface-hub": "0.25.0"}
    assert check_lock.drift(locked, installed) == [
        "huggingface-hub: locked 0.24.7, installed 0.25.0",
        "x: locked 1, installed nothing",
    ]
    assert check_lock.drift({"torch": "2.3.1"}, installed) == []


@pytest.mark.integration
def test_rendered_script_runs_standalone(tmp_path: Path) -> None:
    """The copy in scripts\\ runs with nothing but the standard library, against this Python's
    real installed distributions."""
    script = tmp_path / winsteps.CHECK_LOCK
    script.write_text(winsteps.render_scripts(load_recipe_default())[winsteps.CHECK_LOCK])
    lock = tmp_path / "lock.txt"
    pytest_version = metadata.version("pytest")
    lock.write_text(f"pytest=={pytest_version} \\\n    --hash=sha256:00\n")
    ok = subprocess.run(
        [sys.executable, "-I", str(script), str(lock)], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "1 package(s) installed exactly as locked" in ok.stdout
    lock.write_text("pytest==0.0.1\nno-such-package-npulab==1.0\n")
    bad = subprocess.run(
        [sys.executable, "-I", str(script), str(lock)], capture_output=True, text=True, check=False
    )
    assert bad.returncode == check_lock.EXIT_DRIFT
    assert f"pytest: locked 0.0.1, installed {pytest_version}" in bad.stdout
    assert "no-such-package-npulab: locked 1.0, installed nothing" in bad.stdout


def load_recipe_default():  # type: ignore[no-untyped-def]
    from npulab.paths import project_root

    return load_recipe(project_root() / "recipes" / f"{DEFAULT_RECIPE}.yaml")
