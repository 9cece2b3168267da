"""One host layout: every consumer, rendered, agrees with ``npulab/data/host-layout.yaml``.

The Ansible side is rendered by Ansible itself (a playbook on localhost loading the same
vars_files as site.yml plus each role's defaults); the probe script and the nightly workflow are
rendered by npulab. A consumer that keeps its own copy of a path fails here."""

from __future__ import annotations

import json
import shutil
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from npulab import cmd
from npulab.ci import matrix, workflow
from npulab.errors import ConfigError
from npulab.hosts import layout
from npulab.lab import probe_script
from npulab.quoting import quote_pwsh

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE = ROOT / "ansible"
PLAYBOOK = ROOT / "ansible" / "site.yml"

#: The role variables that come from the layout, and the layout value each must equal.
EXPECTED = {
    "miniconda_prefix": lambda lay: lay.conda_root,
    "npulab_installer_dir": lambda lay: lay.installer_cache,
    "controller_python_dir": lambda lay: lay.controller_python.dir,
    "controller_python_version": lambda lay: lay.controller_python.version,
    "npulab_stack_python": lambda lay: lay.controller_python.exe,
    "npulab_stack_dir": lambda lay: lay.stack_dir,
    "gha_runner_dir": lambda lay: lay.runner_dir,
    "gha_runner_work": lambda lay: lay.runner_work,
    "pinned_python": lambda lay: lay.controller_python.version,
}


MACHINE_PATH = "C:\\Windows\\system32;C:\\Windows;C:\\Program Files\\Git\\cmd"


def _ansible_view(tmp_path: Path) -> dict[str, Any]:
    """What the roles will see: site.yml's vars_files, group_vars and every role's defaults."""
    site = yaml.safe_load(PLAYBOOK.read_text())[0]
    files = [str((ANSIBLE / f).resolve()) for f in site["vars_files"]]
    # provisioning.yml only: winrm.yml would make this local play connect over WinRM
    files.append(str(ANSIBLE / "inventories" / "lab" / "group_vars" / "all" / "provisioning.yml"))
    files += [str(p) for p in sorted(ANSIBLE.glob("roles/*/defaults/main.yml"))]
    names = [n for n in EXPECTED if n != "pinned_python"]
    out = tmp_path / "view.json"
    content = "{{ {" + ", ".join(f"'{n}': {n}" for n in names) + ", "
    content += "'npulab_host_env': npulab_host_env, 'npulab_host_dirs': npulab_host_dirs, "
    content += "'npulab_stack_environment': npulab_stack_environment, "
    content += "'pinned_python': npulab_installers.python.version, "
    content += "'gha_runner_env_file': gha_runner_env_file, "
    content += "'npu_driver_dir': npu_driver_dir} | to_json }}"
    play = [{
        "hosts": "localhost", "gather_facts": False, "connection": "local",
        "vars_files": files, "vars": {
            "ansible_python_interpreter": sys.executable,
            # what the gha_runner role reads from the registry on the host
            "gha_runner_machine_path": {"stdout": MACHINE_PATH + "\r\n"},
        },
        "tasks": [{"ansible.builtin.copy": {"content": content, "dest": str(out)}}],
    }]  # fmt: skip
    book = tmp_path / "view.yml"
    book.write_text(yaml.safe_dump(play))
    exe = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert exe, "ansible-playbook is not installed beside this interpreter"
    cmd.run(
        exe, "-i", "localhost,", str(book), quiet=True, env={"ANSIBLE_NOCOLOR": "1"}, timeout=120
    )
    return dict(json.loads(out.read_text()))


@pytest.mark.integration
def test_roles_render_the_layout(tmp_path: Path) -> None:
    lay = layout.load()
    view = _ansible_view(tmp_path)
    for name, expected in EXPECTED.items():
        assert view[name] == expected(lay), name
    # the machine-wide variables the npulab_host role sets are the ones npulab documents
    assert view["npulab_host_env"] == lay.machine_env()
    for key in ("NPULAB_CONDA_ROOT", "NPULAB_BUILD_DIR", "NPULAB_CACHE"):
        assert view["npulab_stack_environment"][key] == lay.machine_env()[key]
    assert view["npu_driver_dir"].startswith(lay.cache + "\\")
    # the runner service reads its .env at start: PATH as the machine has it now (Git's
    # installer changed it after the SCM took its copy), and the layout's variables
    env_lines = view["gha_runner_env_file"].split("\n")
    assert env_lines[-1] == ""
    runner_env = dict(line.split("=", 1) for line in env_lines[:-1])
    assert runner_env.pop("PATH") == MACHINE_PATH
    assert runner_env == {k: v for k, v in lay.machine_env().items() if k != "NPULAB_BUILD_DIR"}
    assert {lay.cache, lay.installer_cache, lay.hf_home, lay.model_root, lay.build_root} == set(
        view["npulab_host_dirs"]
    )


def test_probe_and_nightly_render_the_layout() -> None:
    lay = layout.load()
    assert quote_pwsh(lay.conda_root) in probe_script.PROBE_SCRIPT
    text = workflow.render_nightly(matrix.load_matrix())
    env = yaml.safe_load(text)["jobs"]["smoke"]["env"]
    for key, value in lay.machine_env().items():
        if key != "NPULAB_BUILD_DIR":  # the nightly builds in its own workspace
            assert env[key] == value, key
    assert "& $env:NPULAB_PYTHON -m venv" in text


def test_every_powershell_step_bypasses_the_execution_policy() -> None:
    """Windows 11 clients default to Restricted: `shell: powershell` would refuse the step."""
    data = yaml.safe_load(workflow.render_nightly(matrix.load_matrix()))
    checked = 0
    for job in data["jobs"].values():
        default = job.get("defaults", {}).get("run", {}).get("shell")
        windows = "Windows" in str(job.get("runs-on")) or "matrix.labels" in str(job.get("runs-on"))
        for step in job["steps"]:
            if "run" not in step:
                continue
            shell = step.get("shell", default)
            if windows or "powershell" in str(shell) or "pwsh" in str(shell):
                checked += 1
                assert shell == workflow.PWSH_SHELL, step.get("name")
    assert checked >= 5
    assert "-NoProfile -ExecutionPolicy Bypass" in workflow.PWSH_SHELL


def test_roles_leave_the_machine_execution_policy_alone() -> None:
    for path in ANSIBLE.rglob("*.yml"):
        assert "Set-ExecutionPolicy" not in path.read_text(), path
        assert "ExecutionPolicy" not in path.read_text() or "Bypass" not in path.read_text(), path


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("conda_root", "C:\\Program Data\\miniconda3", "without spaces"),
        ("conda_root", "%USERPROFILE%\\miniconda3", "absolute Windows path"),
        ("runner_dir", "C:\\Users\\lab\\runner", "outside C:\\Users"),
        ("runner_work", "..\\x", "relative to runner_dir"),
        ("cahce", "C:\\x", "did you mean 'cache'"),
    ],
)
def test_a_bad_layout_is_refused_with_the_key(
    tmp_path: Path, key: str, value: str, expected: str
) -> None:
    data = yaml.safe_load(layout.default_path().read_text())
    data["npulab_host_layout"][key] = value
    path = tmp_path / "host-layout.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        layout.load(path)
    assert expected in err.value.message
    assert "npulab_host_layout" in err.value.message


def test_controller_python_must_run_npulab(tmp_path: Path) -> None:
    data = yaml.safe_load(layout.default_path().read_text())
    data["npulab_host_layout"]["controller_python"]["version"] = "3.9.20"
    path = tmp_path / "host-layout.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r">= 3\.11"):
        layout.load(path)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=" + ".".join(map(str, layout.MIN_CONTROLLER_PYTHON))


def test_rendered_build_scripts_default_to_the_layout(tmp_path: Path) -> None:
    """Every step script, the runtime env files and the wrappers find conda where the miniconda
    role puts it when NPULAB_CONDA_ROOT is unset (a service account's profile has none)."""
    from npulab.recipe import DEFAULT_RECIPE, find_recipe, load_recipe
    from npulab.windows import steps as winsteps
    from npulab.windows import wrappers

    lay = layout.load()
    recipe = load_recipe(find_recipe(DEFAULT_RECIPE))
    scripts = winsteps.render_scripts(recipe)
    written = wrappers.render_staged(recipe, tmp_path / "tree", tmp_path)
    scripts |= {p.name: p.read_text(encoding="utf-8") for p in written if p.suffix == ".cmd"}
    for name, text in scripts.items():
        assert "USERPROFILE" not in text, name
    for name in ("conda-env.cmd", "pip-lock.cmd", "ops-cpp.cmd", "import-check.cmd"):
        assert (
            f'if not defined NPULAB_CONDA_ROOT set "NPULAB_CONDA_ROOT={lay.conda_root}"'
            in (scripts[name])
        ), name
    assert f"else {{ {quote_pwsh(lay.conda_root)} }}" in scripts["prereqs.ps1"]
    assert lay.conda_root == wrappers.STAGED_CONDA_DEFAULT
    assert winsteps.remote_root(recipe, {"host": "phx-01"}) == lay.build_dir(recipe.name)


def test_no_system_cmake_is_required() -> None:
    """The VS 2019 role installs no CMake component and the build does not need one (pip's
    isolated build and the conda env supply it): the prerequisite check does not ask for it."""
    from npulab.recipe import DEFAULT_RECIPE, find_recipe, load_recipe
    from npulab.windows import steps as winsteps

    prereqs = winsteps.render_scripts(load_recipe(find_recipe(DEFAULT_RECIPE)))["prereqs.ps1"]
    assert "cmake" not in prereqs.lower()
    assert "cmake" not in winsteps.STEPS_BY_NAME["win-prereqs"].does
