"""The hash lock holds: no pip requirement reaches the 1.1 env without a hash.

``conda env create -f env.yaml`` runs pip on env.yaml's pip section itself, from the index and
without hashes; the lock's ``--require-hashes`` install after it then finds everything there and
checks nothing. So conda gets only the conda part, and every pip install of the build's steps
either comes from the lock with ``--require-hashes`` or installs a local tree with ``--no-deps``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from npulab.recipe import DEFAULT_RECIPE, Recipe, find_recipe, load_recipe
from npulab.source import envlock
from npulab.windows import steps as winsteps
from npulab.windows.script import CRLF
from npulab.windows.steps import TreeFacts

#: The shape of RyzenAI-SW 1.1's env.yaml after the series: conda packages, then pip's list.
ENV_YAML = """\
name: ryzenai-transformers
channels:
  - conda-forge
  - defaults
dependencies:
  - python=3.9
  - pip
  - numpy<2
  - pip:
      - torch==2.3.1
      - transformers==4.43.3
      - tokenizers==0.19.1
"""


@pytest.fixture
def recipe() -> Recipe:
    return load_recipe(find_recipe(DEFAULT_RECIPE))


def _rendered(recipe: Recipe, tmp_path: Path) -> dict[str, str]:
    env = tmp_path / "tree" / recipe.env.env_file
    env.parent.mkdir(parents=True)
    env.write_text(ENV_YAML)
    return winsteps.render_scripts(recipe, TreeFacts.read(recipe, tmp_path / "tree"))


def _conda_files(scripts: dict[str, str]) -> list[str]:
    """The files every ``conda env create/update -f`` of the steps reads (scripts\\ names)."""
    found = []
    for name, text in scripts.items():
        if not name.endswith(".cmd"):
            continue
        lines = text.split(CRLF)
        sets = dict(re.findall(r'^set "([A-Z_]+)=(.*)"$', "\n".join(lines), re.M))
        for line in lines:
            match = re.search(r'conda\.bat" env (?:create|update) .* -f "%(\w+)%"', line)
            if match:
                value = sets[match.group(1)]
                assert value.startswith("%~dp0"), (
                    f"{name}: conda reads {value} (not beside the scripts)"
                )
                found.append(value.removeprefix("%~dp0"))
    return found


def test_conda_gets_only_the_conda_part(recipe: Recipe, tmp_path: Path) -> None:
    scripts = _rendered(recipe, tmp_path)
    files = _conda_files(scripts)
    assert files == [winsteps.CONDA_ENV, winsteps.CONDA_ENV]  # create and update
    data = yaml.safe_load(scripts[winsteps.CONDA_ENV])
    assert data["name"] == "ryzenai-transformers"
    assert data["channels"] == ["conda-forge", "defaults"]
    assert data["dependencies"] == ["python=3.9", "pip", "numpy<2"]
    assert not [d for d in data["dependencies"] if isinstance(d, dict)]


def test_every_pip_install_of_the_steps_is_hashed_or_local(recipe: Recipe, tmp_path: Path) -> None:
    scripts = _rendered(recipe, tmp_path)
    installs = [
        (name, line)
        for name, text in scripts.items()
        if name.endswith(".cmd") and name not in {"npulab-env.cmd"}
        for line in text.split(CRLF)
        if re.search(r"\bpip(\.exe)?\b.*\binstall\b", line)
    ]
    assert len(installs) >= 2
    for name, line in installs:
        hashed = "--require-hashes" in line and "--no-deps" in line and " -r " in line
        local = "--no-deps" in line and re.search(r"install (ops\\cpp|\.)\b", line)
        assert hashed or local, f"{name}: {line}"


def test_the_conda_part_changes_with_the_conda_side_only() -> None:
    """The conda step's stamp follows what conda installs: a pip pin edit leaves it alone (the
    lock step reruns for that), a conda pin edit reruns it."""
    base = envlock.conda_part(ENV_YAML)
    assert envlock.conda_part(ENV_YAML.replace("torch==2.3.1", "torch==2.3.0")) == base
    assert envlock.conda_part(ENV_YAML.replace("numpy<2", "numpy<1.27")) != base
    assert envlock.env_yaml_pip(ENV_YAML) == [
        "torch==2.3.1", "transformers==4.43.3", "tokenizers==0.19.1",
    ]  # fmt: skip
    assert envlock.env_yaml_pip(base) == []


def test_a_malformed_env_yaml_is_named() -> None:
    from npulab.errors import ConfigError

    with pytest.raises(ConfigError, match="expected a mapping"):
        envlock.conda_part("- just\n- a list\n")
