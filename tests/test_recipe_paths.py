"""Issue 15 findings 4, 7-9 (recipe side): every recipe value that becomes a path or a Windows
token is refused at load time with the reason; the YAML reader refuses what PyYAML lets by."""

from __future__ import annotations

from pathlib import Path

import pytest

from npulab.errors import ConfigError
from npulab.hosts import inventory
from npulab.recipe import DEFAULT_RECIPE, load_recipe
from npulab.schema import load_yaml


def _recipe(tmp_path: Path, project_root: Path, old: str, new: str) -> Path:
    text = (project_root / "recipes" / f"{DEFAULT_RECIPE}.yaml").read_text()
    assert old in text
    path = tmp_path / "r.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def _one_line(err: pytest.ExceptionInfo[ConfigError], path: Path) -> str:
    text = str(err.value)
    assert text.startswith(str(path))
    assert "\n" not in text.split("\n  fix:")[0]
    return text


@pytest.mark.parametrize(
    ("old", "new", "key", "reason"),
    [
        ("name: ryzenai-sw-1.1-llama3.1", 'name: ".."', "name", "a plain name"),
        ("name: ryzenai-sw-1.1-llama3.1", "name: ../../../elsewhere", "name", "a plain name"),
        ("name: ryzenai-sw-1.1-llama3.1", "name: /tmp/x", "name", "a plain name"),
        ("name: ryzenai-sw-1.1-llama3.1", "name: CON", "name", "reserved Windows device"),
        ("name: ryzenai-sw-1.1-llama3.1", "name: build.", "name", "trailing '.'"),
        ("  name: ryzenai-transformers", '  name: "a&b"', "env.name", "a plain name"),
        ("  name: ryzenai-transformers", '  name: "x y"', "env.name", "a plain name"),
        ("  subdir: example/transformers", "  subdir: ../..", "upstream.subdir", "'..'"),
        ("  subdir: example/transformers", "  subdir: /etc", "upstream.subdir", "leading '/'"),
        ("  component: ryzenai-sw", "  component: ../x", "patches.component", "a plain name"),
        (
            "  lock: recipes/locks/",
            "  lock: ../../etc/",
            "env.lock",
            "a relative path inside the tree",
        ),
        (
            "  env_file: example/transformers/env.yaml",
            '  env_file: "C:\\\\env.yaml"',
            "env.env_file",
            "has ':\\\\'",
        ),
        (
            "    - path: tokenizer.json",
            "    - path: ../tokenizer.json",
            "model.files[1].path",
            "'..'",
        ),
        (
            "  repo_url: https://github.com/amd/RyzenAI-SW.git",
            "  repo_url: /srv/mirror/RyzenAI-SW",
            "upstream.repo_url",
            "a git URL",
        ),
        ("  repo_id: dahara1/", "  repo_id: ../dahara1/", "model.repo_id", "hub repo id"),
    ],
)
def test_values_that_become_paths_are_refused_at_load(
    tmp_path: Path, project_root: Path, old: str, new: str, key: str, reason: str
) -> None:
    path = _recipe(tmp_path, project_root, old, new)
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    text = _one_line(err, path)
    assert f": {key}: expected " in text
    assert reason in text


def test_usual_values_still_load(tmp_path: Path, project_root: Path) -> None:
    for url in ("git@github.com:amd/RyzenAI-SW.git", "file:///srv/mirror.git", "ssh://h/r.git"):
        path = _recipe(
            tmp_path,
            project_root,
            "  repo_url: https://github.com/amd/RyzenAI-SW.git",
            f"  repo_url: {url}",
        )
        assert load_recipe(path).upstream.repo_url == url


def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path, project_root: Path) -> None:
    path = _recipe(tmp_path, project_root, "description:", "name: other\ndescription:")
    with pytest.raises(ConfigError, match=r"key 'name' is given twice \(lines 3 and \d+\)") as err:
        load_recipe(path)
    _one_line(err, path)
    nested = tmp_path / "n.yaml"
    nested.write_text("a:\n  b: 1\n  b: 2\n")
    with pytest.raises(ConfigError, match=r"n\.yaml:3:\d+: invalid YAML: key 'b' is given twice"):
        load_yaml(nested)


def test_a_non_utf8_recipe_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: x\ndescription: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml:2: not UTF-8 text \(byte 0xe9") as err:
        load_recipe(path)
    assert "iconv" in str(err.value)


def test_missing_chip_names_the_choices_not_the_type(tmp_path: Path, project_root: Path) -> None:
    path = _recipe(tmp_path, project_root, "  - chip: 8845HS\n", "  - \n")
    with pytest.raises(ConfigError) as err:
        load_recipe(path)
    text = str(err.value)
    assert "Literal" not in text
    assert "required key is missing (one of '7940HS', '8845HS')" in text


def test_a_vault_value_is_one_line_not_a_constructor_error(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(
        "all:\n  hosts:\n    phx-01:\n      ansible_host: 127.0.0.1\n      npulab_chip: 7940HS\n"
        "      ansible_user: !vault |\n          $ANSIBLE_VAULT;1.1;AES256\n          6231\n"
    )
    with pytest.raises(ConfigError) as err:
        inventory.load(hosts)
    text = str(err.value)
    assert "\n" not in text
    assert "Ansible Vault value (!vault, line 6)" in text
    assert "ANSIBLE_VAULT" not in text


def test_a_missing_secrets_file_is_named(tmp_path: Path) -> None:
    from npulab.hosts import credentials

    gone = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as err:
        credentials.resolve("h", env={"NPULAB_SECRETS_FILE": str(gone)})
    assert f"NPULAB_SECRETS_FILE={gone}: no such file" in str(err.value)
