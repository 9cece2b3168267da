"""The hash-locked win_amd64 / cp39 requirements against the recipe (offline unless noted)."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from npulab.errors import DriftError
from npulab.recipe import DEFAULT_RECIPE, Recipe, find_recipe, load_recipe
from npulab.source import envlock as lock
from tests.upstream_tree import UpstreamTrees

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def recipe() -> Recipe:
    return load_recipe(find_recipe(DEFAULT_RECIPE))


@pytest.fixture
def lock_text(recipe: Recipe) -> str:
    return (ROOT / recipe.env.lock).read_text(encoding="utf-8")


def _with_env(recipe: Recipe, **changes: object) -> Recipe:
    return dataclasses.replace(recipe, env=dataclasses.replace(recipe.env, **changes))


def test_committed_lock_follows_the_recipe(recipe: Recipe, lock_text: str) -> None:
    assert lock.check_lock(recipe.env, lock_text) == []
    lock.verify(recipe)


def test_every_locked_package_is_pinned_and_hashed(lock_text: str) -> None:
    parsed = lock.parse_lock(lock_text)
    assert parsed.versions["torch"] == "2.3.1"
    assert parsed.versions["numpy"].startswith("1.")
    # win_amd64 resolution: Windows-only dependencies are in, nothing is left unhashed.
    assert {"colorama", "mkl", "intel-openmp"} <= parsed.versions.keys()
    assert parsed.hashes.keys() == parsed.versions.keys()
    assert min(parsed.hashes.values()) >= 1
    assert "\r" not in lock_text


def test_a_recipe_pin_the_lock_does_not_follow_fails(recipe: Recipe, lock_text: str) -> None:
    bumped = _with_env(recipe, pins={**recipe.env.pins, "torch": "2.4.1"})
    problems = lock.check_lock(bumped.env, lock_text)
    assert "torch: recipe pins 2.4.1, lock has 2.3.1" in problems
    assert any("input-sha256 differs" in p for p in problems)


def test_a_lock_edited_by_hand_fails(recipe: Recipe, lock_text: str) -> None:
    edited = lock_text.replace("\ntokenizers==0.19.1 ", "\ntokenizers==0.20.0 ")
    assert edited != lock_text
    assert lock.check_lock(recipe.env, edited) == [
        "tokenizers: recipe pins 0.19.1, lock has 0.20.0"
    ]


def test_a_constraint_the_lock_breaks_fails(recipe: Recipe, lock_text: str) -> None:
    edited = lock_text.replace("\nnumpy==1.26.4 ", "\nnumpy==2.0.2 ")
    assert "numpy: lock has 2.0.2, recipe requires numpy<2" in lock.check_lock(recipe.env, edited)


def test_a_missing_requirement_or_hash_fails(recipe: Recipe, lock_text: str) -> None:
    more = _with_env(recipe, requirements=(*recipe.env.requirements, "sentencepiece"))
    assert "sentencepiece: required (sentencepiece) but not in the lock" in lock.check_lock(
        more.env, lock_text
    )
    unhashed = "\n".join(
        line for line in lock_text.splitlines() if "--hash" not in line or "tqdm" in line
    )
    assert any("no sha256 hash" in p for p in lock.check_lock(recipe.env, unhashed))


def test_verify_names_the_fixing_command(
    recipe: Recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NPULAB_ROOT", str(tmp_path))
    with pytest.raises(DriftError, match="lock file missing") as info:
        lock.verify(recipe)
    assert "invoke lock" in str(info.value)


def test_compile_command_targets_windows_cp39(recipe: Recipe) -> None:
    argv = lock.compile_argv("uv", recipe.env, "out.txt")
    joined = " ".join(argv)
    assert "--python-platform x86_64-pc-windows-msvc" in joined
    assert "--python-version 3.9" in joined
    assert "--generate-hashes" in argv


def test_dry_run_writes_nothing(
    recipe: Recipe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NPULAB_ROOT", str(tmp_path))
    dest = lock.generate(recipe, uv="/nonexistent/uv", dry_run=True)
    assert dest == tmp_path / recipe.env.lock
    assert not dest.exists()


def test_env_yaml_pip_part_is_read() -> None:
    text = "name: x\ndependencies:\n  - python=3.9\n  - pip:\n    - torch==2.3.1\n    - tqdm\n"
    assert lock.env_yaml_pip(text) == ["torch==2.3.1", "tqdm"]
    assert lock.env_yaml_pip("name: x\ndependencies: [python=3.9]\n") == []


def test_env_yaml_disagreeing_with_the_pins_is_reported(recipe: Recipe, lock_text: str) -> None:
    pip = [f"{n}=={v}" for n, v in recipe.env.pins.items()] + ["numpy<2", "tqdm"]
    assert lock.check_env_yaml(recipe.env, pip, lock_text) == []
    stale = [line.replace("transformers==4.43.3", "transformers==4.34.0") for line in pip]
    stale[stale.index("numpy<2")] = "numpy>=2"
    problems = lock.check_env_yaml(recipe.env, stale, lock_text)
    assert "env.yaml: transformers should be ==4.43.3, is transformers==4.34.0" in problems
    assert "env.yaml: numpy>=2 does not admit the locked numpy==1.26.4" in problems


@pytest.mark.integration
def test_generate_writes_header_and_verifies(
    recipe: Recipe, lock_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in uv (same argv contract) answers with the committed body: the file is rebuilt."""
    body = lock_text.split("\n\n", 1)[1]
    (tmp_path / "body.txt").write_text(body)
    fake = tmp_path / "uv"
    fake.write_text(
        f"#!{sys.executable}\nimport sys, shutil\n"
        "args = sys.argv[1:]\n"
        "assert args[:3] == ['pip', 'compile', '--quiet'], args\n"
        "assert open('requirements.in').read().startswith('transformers==4.43.3\\n')\n"
        f"shutil.copy({str(tmp_path / 'body.txt')!r}, args[args.index('-o') + 1])\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("NPULAB_ROOT", str(tmp_path / "root"))
    dest = lock.generate(recipe, uv=str(fake))
    assert dest.read_text(encoding="utf-8") == lock_text
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]


@pytest.mark.upstream
def test_patched_env_yaml_agrees_with_recipe_and_lock(
    upstream_trees: UpstreamTrees, lock_text: str
) -> None:
    env = upstream_trees.recipe.env
    text = (upstream_trees.patched / env.env_file).read_text(encoding="utf-8")
    pip = lock.env_yaml_pip(text)
    assert "transformers==4.43.3" in pip
    assert not any(line.startswith("diffusers") for line in pip)
    assert lock.check_env_yaml(env, pip, lock_text) == []
    pristine = (upstream_trees.pristine / env.env_file).read_text(encoding="utf-8")
    assert lock.check_env_yaml(env, lock.env_yaml_pip(pristine), lock_text)


@pytest.mark.upstream
@pytest.mark.integration
def test_patched_env_yaml_pip_part_resolves_for_win_cp39(
    upstream_trees: UpstreamTrees, tmp_path: Path
) -> None:
    """The whole pip part (not only what we lock) resolves for win_amd64 / cp39. Needs PyPI."""
    if not os.environ.get("NPULAB_RESOLVE"):
        pytest.skip("set NPULAB_RESOLVE=1 to resolve against the package index (network)")
    env = upstream_trees.recipe.env
    pip = lock.env_yaml_pip((upstream_trees.patched / env.env_file).read_text(encoding="utf-8"))
    (tmp_path / "in.txt").write_text("\n".join(pip) + "\n")
    argv = [lock.find_uv(), "pip", "compile", "--quiet", "--no-header", "--python-platform"]
    argv += [lock.PLATFORM, "--python-version", env.python, "in.txt", "-o", "out.txt"]
    subprocess.run(argv, cwd=tmp_path, check=True, timeout=300)
    resolved = lock.parse_lock((tmp_path / "out.txt").read_text())
    for name, version in env.pins.items():
        assert resolved.versions[name] == version
