from __future__ import annotations

from pathlib import Path

import pytest

from npulab.errors import ConfigError
from npulab.recipe import DEFAULT_RECIPE, find_recipe, load_recipe


def test_shipped_recipe_loads(project_root: Path) -> None:
    recipe = load_recipe(project_root / "recipes" / f"{DEFAULT_RECIPE}.yaml")
    assert recipe.upstream.commit == "cac1398aff7de83f9b26c34cbaf3fc7d9a601815"
    assert {d.chip: d.device for d in recipe.devices} == {"7940HS": "phx", "8845HS": "phx"}
    assert recipe.env.pins["transformers"] == "4.43.3"
    assert len(recipe.digest) == 64


def _write(tmp_path: Path, project_root: Path, old: str, new: str) -> Path:
    text = (project_root / "recipes" / f"{DEFAULT_RECIPE}.yaml").read_text()
    assert old in text
    path = tmp_path / "r.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "  commit: cac",
            "  comit: cac",
            r"upstream\.comit: unknown key \(did you mean 'commit'\?\)",
        ),
        (
            "commit: cac1398aff7de83f9b26c34cbaf3fc7d9a601815",
            "commit: cac1398",
            r"upstream\.commit: expected a full 40-hex",
        ),
        ('python: "3.9"', "python: 3.9", r"env\.python: expected a string, got float 3\.9"),
        (
            "    device: phx\n    pci_id",
            "    device: phy\n    pci_id",
            r"devices\[0\]\.device: .*did you mean 'phx'",
        ),
        ("  repo_id: dahara1", "  repo: dahara1", r"model\.repo: unknown key"),
        ("    7940HS:\n", "    7940H:\n", r"smoke\.thresholds\.7940H: expected one of"),
    ],
)
def test_bad_recipe_names_file_and_key_path(
    tmp_path: Path, project_root: Path, old: str, new: str, expected: str
) -> None:
    path = _write(tmp_path, project_root, old, new)
    with pytest.raises(ConfigError, match=expected) as info:
        load_recipe(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_key_and_bad_yaml(tmp_path: Path, project_root: Path) -> None:
    path = _write(tmp_path, project_root, "  tag: v1.1\n", "")
    with pytest.raises(ConfigError, match=r"upstream\.tag: required key is missing"):
        load_recipe(path)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+:\d+: invalid YAML"):
        load_recipe(broken)


def test_find_recipe_unknown_name_lists_known() -> None:
    with pytest.raises(ConfigError, match=DEFAULT_RECIPE):
        find_recipe("no-such-recipe")
