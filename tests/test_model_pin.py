"""model.pin against the hub double: revision and hashes written into the recipe text."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from npulab.errors import ConfigError, SourceError
from npulab.model import pin as model_pin
from npulab.recipe import load_recipe
from npulab.testing.hub_server import HubServer

REPO = "dahara1/llama3.1-8b-Instruct-amd-npu"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        yield server


@pytest.fixture
def recipe(project_root: Path, tmp_path: Path) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text((project_root / "recipes" / "ryzenai-sw-1.1-llama3.1.yaml").read_text())
    return path


def hub_files() -> dict[str, bytes]:
    model = load_recipe(Path("recipes/ryzenai-sw-1.1-llama3.1.yaml")).model
    return {f.path: f"content of {f.path}".encode() * 10 for f in model.files}


def test_pin_writes_revision_and_hashes_and_keeps_everything_else(
    hub: HubServer, recipe: Path
) -> None:
    files = hub_files()
    commit = hub.add_repo(REPO, files, lfs={"llama3.1_8b_w_bit_4_awq_amd.pt"})
    before = recipe.read_text()
    diff = model_pin.pin(recipe)
    after = recipe.read_text()
    model = load_recipe(recipe).model
    assert model.pinned
    assert model.revision == commit
    for f in model.files:
        assert f.sha256 == hashlib.sha256(files[f.path]).hexdigest()
        assert f.size == len(files[f.path])
    # Only pin lines change; every other original line (comments included) survives in order.
    removed = [ln for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    assert removed
    assert all(re.match(r"-\s*(revision|sha256|size): ", ln) for ln in removed), removed
    kept = [ln for ln in before.splitlines() if f"-{ln}" not in removed]
    assert [ln for ln in after.splitlines() if ln in kept] == kept
    assert "# Plain git files: the hub publishes no sha256." in after
    # Re-pinning a moved branch replaces the old values instead of stacking new ones.
    files["tokenizer.json"] = b'{"changed": true}'
    commit2 = hub.add_repo(REPO, files, lfs={"llama3.1_8b_w_bit_4_awq_amd.pt"})
    model_pin.pin(recipe)
    text = recipe.read_text()
    assert text.count("revision:") == 1
    assert text.count("sha256:") == len(files)
    assert load_recipe(recipe).model.revision == commit2
    assert model_pin.pin(recipe) == ""  # idempotent


def test_pin_dry_run_writes_nothing(hub: HubServer, recipe: Path) -> None:
    hub.add_repo(REPO, hub_files())
    before = recipe.read_text()
    diff = model_pin.pin(recipe, dry_run=True)
    assert "+  revision: " in diff
    assert recipe.read_text() == before


def test_pin_fails_on_a_file_the_hub_lacks(hub: HubServer, recipe: Path) -> None:
    files = hub_files()
    del files["tokenizer.json"]
    hub.add_repo(REPO, files)
    with pytest.raises(SourceError, match=r"no file 'tokenizer\.json'"):
        model_pin.pin(recipe)


def test_pin_of_a_missing_revision_names_it(hub: HubServer, recipe: Path) -> None:
    hub.add_repo(REPO, hub_files())
    with pytest.raises(SourceError, match=r"cannot read .*@v9"):
        model_pin.pin(recipe, revision="v9")


def test_rewrite_refuses_a_recipe_without_a_model_block() -> None:
    with pytest.raises(ConfigError, match="no top-level 'model:'"):
        model_pin.rewrite_model_pins("name: x\n", "a" * 40, {}, where="r.yaml")
