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


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # wrong scalar types
        ("  tag: v1.1\n", "  tag: 1.1\n", r"upstream\.tag: expected a string, got float"),
        (
            "  max_new_tokens: 64\n",
            "  max_new_tokens: lots\n",
            r"smoke\.max_new_tokens: expected an integer",
        ),
        ("  do_sample: true\n", "  do_sample: 1\n", r"smoke\.do_sample: expected true or false"),
        ("  temperature: 0.6\n", "  temperature: hot\n", r"smoke\.temperature: expected a number"),
        # value checks
        (
            "  temperature: 0.6\n",
            "  temperature: 0\n",
            r"smoke\.temperature: expected a number > 0",
        ),
        (
            "  tree: d5dbc6bb0eba773533eddae96f4730e63fc6af77\n",
            "  tree: D5DBC6BB0EBA773533EDDAE96F4730E63FC6AF77\n",
            r"upstream\.tree: expected a full 40-hex lowercase",
        ),
        (
            "  repo_url: https://github.com/amd/RyzenAI-SW.git\n",
            '  repo_url: ""\n',
            r"upstream\.repo_url: expected a git URL",
        ),
        # unknown key at the top level, with a suggestion
        (
            "description:",
            "descripton:",
            r"descripton: unknown key \(did you mean 'description'\?\)",
        ),
        # literals
        (
            "    family: HPT\n",
            "    family: HAWK\n",
            r"devices\[1\]\.family: expected one of \['PHX', 'HPT'\]",
        ),
        # cross-field checks (__post_init__)
        ('python: "3.9"', 'python: "3"', r"env: python: expected a 'major\.minor' string"),
        (
            "  checkpoint: llama3.1_8b_w_bit_4_awq_amd.pt\n",
            "  checkpoint: other.pt\n",
            r"model: checkpoint 'other\.pt' is not one of the files",
        ),
        (
            "  - chip: 8845HS\n",
            "  - chip: 7940HS\n",
            r"devices: chip\(s\) listed more than once: 7940HS",
        ),
        # computed keys may not be written
        ("name: ryzenai", "digest: x\nname: ryzenai", r"'source' and 'digest' are computed"),
    ],
)
def test_each_kind_of_bad_input(
    tmp_path: Path, project_root: Path, old: str, new: str, expected: str
) -> None:
    path = _write(tmp_path, project_root, old, new)
    with pytest.raises(ConfigError, match=expected) as info:
        load_recipe(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert "\n" not in message


def test_not_a_mapping_and_empty_file(tmp_path: Path) -> None:
    for text, expected in (("- a\n- b\n", r"\(top level\): expected a mapping"), ("", "nothing")):
        path = tmp_path / "r.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=expected):
            load_recipe(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_recipe(tmp_path / "missing.yaml")


def test_digest_ignores_comments_and_order(tmp_path: Path, project_root: Path) -> None:
    shipped = load_recipe(project_root / "recipes" / f"{DEFAULT_RECIPE}.yaml")
    path = _write(tmp_path, project_root, "name: ryzenai", "# a comment\nname: ryzenai")
    assert load_recipe(path).digest == shipped.digest
    path = _write(tmp_path, project_root, "seed: 1234", "seed: 1235")
    assert load_recipe(path).digest != shipped.digest


def test_recipe_readme_documents_every_key(project_root: Path) -> None:
    import dataclasses
    import typing

    from npulab import recipe as recipe_mod

    readme = (project_root / "recipes" / "README.md").read_text()
    missing = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name in ("source", "digest"):
                continue
            if f"`{f.name}`" not in readme and f".{f.name}`" not in readme:
                missing.append(f"{prefix}{f.name}")
            for tp in (hints[f.name], *typing.get_args(hints[f.name])):
                if dataclasses.is_dataclass(tp) and isinstance(tp, type):
                    walk(tp, f"{prefix}{f.name}.")

    walk(recipe_mod.Recipe, "")
    assert not missing, f"recipes/README.md does not document: {missing}"


@pytest.mark.parametrize(
    ("key_path", "value", "expected"),
    [
        (("env", "pins"), ["transformers==4.43.3"], r"env\.pins: expected a mapping, got list"),
        (("patches",), "ryzenai-sw/1.1", r"patches: expected a mapping for PatchSeriesRef"),
        (("smoke", "warmup_prompts"), "Hello", r"smoke\.warmup_prompts: expected a list"),
        (("devices",), [], r"devices: expected a non-empty value"),
        (("model", "files", 0), "config.json", r"model\.files\[0\]: expected a mapping"),
        (("upstream", "lfs", "required", 0), 7, r"upstream\.lfs\.required\[0\]: expected a str"),
    ],
)
def test_wrong_shapes(
    tmp_path: Path,
    project_root: Path,
    key_path: tuple[str | int, ...],
    value: object,
    expected: str,
) -> None:
    import yaml

    data = yaml.safe_load((project_root / "recipes" / f"{DEFAULT_RECIPE}.yaml").read_text())
    node = data
    for key in key_path[:-1]:
        node = node[key]
    node[key_path[-1]] = value
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=expected):
        load_recipe(path)
