"""The Ansible tree: module options against the installed DOCUMENTATION, idempotence by
construction, pins, inventory, syntax-check and ansible-lint (integration)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from npulab import cmd
from npulab.hosts import inventory
from npulab.lab import ansible_check as ac
from npulab.lab import ansible_idempotence as ai

ROOT = Path(__file__).resolve().parent.parent
ANSIBLE = ROOT / "ansible"
ROLES = ("npu_driver", "miniconda", "git_lfs", "vs2019_buildtools", "gha_runner", "npulab_stack")
BIN = Path(sys.executable).parent

# Located, not imported: importing ansible patches sys.intern for the whole test process.
if importlib.util.find_spec("ansible_collections") is None:
    pytest.skip("ansible not installed (pip install '.[ansible]')", allow_module_level=True)


def _tool(name: str) -> str:
    exe = BIN / name
    if exe.exists():
        return str(exe)
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} not installed (pip install '.[ansible]')")
    return found


# -- module options ------------------------------------------------------------------------------
def test_shipped_tree_matches_module_documentation() -> None:
    assert ac.check_options(ANSIBLE) == []


def test_every_role_task_is_checked() -> None:
    modules = {
        ac.task_module(t) for _, items in ac.task_files(ANSIBLE) for t in ac.iter_tasks(items)
    }
    assert None not in modules
    assert {"ansible.windows.win_package", "ansible.windows.win_get_url",
            "community.windows.win_unzip", "ansible.windows.win_reboot"} <= modules  # fmt: skip


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (
            {"name": "x", "ansible.windows.win_package": {"path": "a.exe",
                                                          "expected_return_codez": [0]}},
            "unknown option 'expected_return_codez' (did you mean 'expected_return_code'?)",
        ),
        (
            {"name": "x", "ansible.windows.win_package": {"path": "a.exe",
                                                          "state": "installed_bogus"}},
            "state='installed_bogus' is not one of: absent, present",
        ),
        (
            {"name": "x", "ansible.windows.win_get_url": {"url": "u", "dest": "d",
                                                          "checksum_algorithm": "sha265"}},
            "checksum_algorithm='sha265' is not one of",
        ),
        ({"name": "x", "ansible.windows.win_shell": "dir", "args": {"chdirr": "C:\\"}},
         "unknown option 'chdirr'"),
        ({"name": "x", "ansible.windows.win_command": "git.exe x creates=C:\\a chdirr=C:\\"},
         "unknown option 'chdirr'"),
        ({"name": "x", "ansible.windows.win_regedit": {"path": "HKLM:\\X", "type": "dwrod"}},
         "type='dwrod' is not one of"),
        ({"name": "x", "ansible.windows.win_service": {"name": "s", "start_mode": "automatic"}},
         "start_mode='automatic' is not one of"),
        ({"name": "x", "ansible.windows.win_package": {"path": "a", "expected_return_code": "0"}},
         "must be a list of int"),
        ({"name": "x", "ansible.windows.win_stat": {"path": "p", "get_checksum": "sure"}},
         "get_checksum must be a bool"),
        ({"name": "x", "win_stat": {"path": "p"}}, "use the fully qualified name"),
        ({"name": "x", "ansible.windows.win_nope": {}}, "no such module"),
        ({"name": "x", "ansible.windows.win_stat": {"path": "p"}, "whenn": "x"},
         "cannot tell the module"),
    ],
)  # fmt: skip
def test_bad_tasks_are_caught(task: dict[str, Any], expected: str) -> None:
    problems = ac.check_task(task)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    "task",
    [
        # aliases, templated values, free-form commands with args:, list choices
        {"ansible.windows.win_get_url": {"url": "u", "dest": "d", "timeout": 5}},
        {"ansible.windows.win_package": {"path": "a", "state": "{{ s }}"}},
        {"ansible.windows.win_shell": "Get-Item x", "args": {"chdir": "C:\\", "executable": "cmd"}},
        {"ansible.windows.win_command": "git.exe x creates=C:\\a"},
        {"ansible.builtin.set_fact": {"anything_goes": 1}},
        {"ansible.builtin.include_role": {"name": "npulab_fetch"}, "vars": {"a": 1}},
    ],
)
def test_good_tasks_pass(task: dict[str, Any]) -> None:
    assert ac.check_task({"name": "x", **task}) == []


def test_a_bad_task_in_a_role_fails_the_tree_check(tmp_path: Path) -> None:
    tree = tmp_path / "ansible"
    shutil.copytree(ANSIBLE, tree, ignore=shutil.ignore_patterns("__pycache__"))
    tasks = tree / "roles" / "miniconda" / "tasks" / "main.yml"
    text = tasks.read_text().replace("expected_return_code:", "expected_return_codez:")
    tasks.write_text(text.replace("state: present", "state: installed_bogus"))
    messages = [f.message for f in ac.check_options(tree)]
    assert any("'expected_return_codez'" in m for m in messages)
    assert any("'installed_bogus'" in m for m in messages)
    assert ai.main([str(tree)]) == 1


def test_block_tasks_are_found_and_inherit_when() -> None:
    items = [{"block": [{"ansible.windows.win_command": "x"}], "when": "probe.rc != 0"}]
    (task,) = ac.iter_tasks(items)
    assert task["__inherited_when"] == ("probe.rc != 0",)
    assert ac.task_module(task) == "ansible.windows.win_command"


# -- idempotence by construction -----------------------------------------------------------------
def test_roles_are_idempotent_by_construction() -> None:
    assert ai.check_idempotence(ANSIBLE) == []


def _messages(tasks: list[dict[str, Any]]) -> list[str]:
    return [f.message for f in ai.check_tasks("t.yml", list(ac.iter_tasks(tasks)))]


def test_unguarded_command_is_refused() -> None:
    assert any("without a guard" in m for m in _messages([{"ansible.windows.win_command": "x"}]))


@pytest.mark.parametrize(
    "task",
    [
        {"ansible.windows.win_command": {"cmd": "x", "creates": "C:\\x"}},
        {"ansible.windows.win_shell": "Get-Item x", "changed_when": False},
        {"ansible.windows.win_command": "x", "changed_when": "'y' in r.stdout",
         "tags": ["self-idempotent"]},
    ],
)  # fmt: skip
def test_guarded_commands_pass(task: dict[str, Any]) -> None:
    assert _messages([task]) == []


def test_when_must_read_a_registered_check() -> None:
    probe = {"ansible.windows.win_stat": {"path": "p"}, "register": "found"}
    guarded = {"ansible.windows.win_command": "x", "when": "not found.stat.exists"}
    unrelated = {"ansible.windows.win_command": "x", "when": "ansible_check_mode"}
    assert _messages([probe, guarded]) == []
    assert any("without a guard" in m for m in _messages([probe, unrelated]))


def test_installer_must_handle_reboot_codes() -> None:
    install = {
        "ansible.windows.win_package": {"path": "a", "creates_path": "b"},
        "register": "inst",
        "tags": ["installer"],
    }
    messages = _messages([install])
    assert any("does not accept 3010" in m for m in messages)
    assert any("not followed by a win_reboot" in m for m in messages)
    install["ansible.windows.win_package"]["expected_return_code"] = [0, 3010]  # type: ignore[index]
    reboot = {"ansible.windows.win_reboot": {}, "when": "inst.rc in [3010, 1641]"}
    assert _messages([install, reboot]) == []
    assert any(
        "win_reboot without a when" in m for m in _messages([{"ansible.windows.win_reboot": {}}])
    )


def test_unlisted_module_is_refused() -> None:
    messages = _messages([{"community.windows.win_firewall_rule": {"name": "x"}}])
    assert any("not on the idempotent allow-list" in m for m in messages)


# -- roles, pins, documentation ------------------------------------------------------------------
@pytest.mark.parametrize("role", ROLES)
def test_role_layout_and_documented_defaults(role: str) -> None:
    base = ANSIBLE / "roles" / role
    assert (base / "tasks" / "main.yml").is_file()
    specs = yaml.safe_load((base / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    documented = set(specs["main"]["options"])
    defaults = yaml.safe_load((base / "defaults" / "main.yml").read_text()) or {}
    assert set(defaults) <= documented, set(defaults) - documented
    assert all(name.startswith(f"{role}_") for name in defaults)


def test_every_installer_is_pinned_with_version_file_and_hash_slot() -> None:
    gv = ANSIBLE / "inventories" / "lab" / "group_vars" / "all" / "provisioning.yml"
    data = yaml.safe_load(gv.read_text())
    installers = data["npulab_installers"]
    assert set(data["npulab_provision_installers"]) == set(installers)
    for key, pin in installers.items():
        assert {"version", "file", "url", "sha256"} <= set(pin), key
        # a hash is either a real 64-hex pin or left for the lab owner; never a fake shape
        assert pin["sha256"] == "" or re.fullmatch(r"[0-9a-f]{64}", pin["sha256"]), key
        assert "{{" not in pin["url"]


def test_installer_tasks_run_only_verified_files() -> None:
    """Every win_package/unzip reads the path set by npulab_fetch, which asserts the sha256."""
    fetch = (ANSIBLE / "roles" / "npulab_fetch" / "tasks" / "main.yml").read_text()
    assert 'checksum: "{{ npulab_fetch_sha256 }}"' in fetch
    assert "npulab_fetch_final.stat.checksum == npulab_fetch_sha256" in fetch
    for path, items in ac.task_files(ANSIBLE):
        for task in ac.iter_tasks(items):
            module = ac.task_module(task)
            if module in ("ansible.windows.win_package", "community.windows.win_unzip"):
                args = task[module]
                src = args.get("path") or args.get("src")
                assert src == "{{ npulab_fetch_path }}", (path, task["name"])


def test_runner_token_is_never_logged() -> None:
    tasks = yaml.safe_load((ANSIBLE / "roles" / "gha_runner" / "tasks" / "main.yml").read_text())
    for task in ac.iter_tasks(tasks):
        if "gha_runner_token" in yaml.safe_dump(task):
            assert task.get("no_log") is True, task["name"]


# -- integration: real ansible tools -------------------------------------------------------------
@pytest.mark.integration
def test_inventory_graph_shows_both_chip_groups() -> None:
    out = cmd.run(
        _tool("ansible-inventory"), "-i", str(ANSIBLE / "inventories" / "lab"), "--graph",
        env={"ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg")},
    ).stdout  # fmt: skip
    assert re.search(r"@npu_lab:\s*\n\s*\|\s*\|--@phx:", out), out
    assert "@hpt:" in out
    lab = inventory.load(ANSIBLE / "inventories" / "lab" / "hosts.yml")
    assert {lab.hosts[h].vars.npulab_chip for h in lab.groups["phx"]} == {"7940HS"}
    assert {lab.hosts[h].vars.npulab_chip for h in lab.groups["hpt"]} == {"8845HS"}
    assert "npulab_installers" in lab.hosts["phx-01"].extra


@pytest.mark.integration
def test_playbook_syntax_check() -> None:
    done = cmd.run(
        _tool("ansible-playbook"), "--syntax-check", "site.yml", cwd=ANSIBLE,
        env={"ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg")},
    )  # fmt: skip
    assert "playbook: site.yml" in done.stdout


@pytest.mark.integration
@pytest.mark.slow
def test_ansible_lint_production_profile_offline() -> None:
    env = {"ANSIBLE_CONFIG": str(ANSIBLE / "ansible.cfg"), "PATH": f"{BIN}{os.pathsep}"
           f"{os.environ.get('PATH', '')}", "NO_COLOR": "1"}  # fmt: skip
    done = cmd.run(
        _tool("ansible-lint"), "--offline", "--profile", "production", "--nocolor",
        cwd=ANSIBLE, env=env, check=False, timeout=280,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Profile 'production' was required, and it passed" in done.stdout + done.stderr


# -- the lab facts each role encodes -------------------------------------------------------------
def _role_tasks(role: str) -> dict[str, dict[str, Any]]:
    out = {}
    for path in (ANSIBLE / "roles" / role / "tasks").glob("*.yml"):
        for task in ac.iter_tasks(yaml.safe_load(path.read_text())):
            out[task["name"]] = task
    return out


def test_npu_driver_success_codes_and_device() -> None:
    tasks = _role_tasks("npu_driver")
    installers = [t for t in tasks.values() if "installer" in (t.get("tags") or [])]
    assert len(installers) == 2  # pnputil and amd_install_kipudrv.bat
    pnp, bat = sorted(installers, key=lambda t: "kipudrv" in t["name"])
    assert re.search(r"rc not in \[0, 259, 3010\]", pnp["failed_when"])
    # the batch file's exit code is its last command's: the device state decides, not rc
    assert bat["failed_when"] is False
    # run where AMD's amd_drivers_install.bat runs it: inside the extracted folder
    assert "npu_driver_bat.files[0].path" in bat["args"]["chdir"]
    assert "win_dirname" in bat["args"]["chdir"]
    after = list(tasks)
    reboot = tasks["Reboot when the NPU is not started after amd_install_kipudrv.bat"]
    assert after.index(bat["name"]) < after.index(reboot["name"])
    assert any("status != 'OK'" in w for w in reboot["when"])
    defaults = yaml.safe_load((ANSIBLE / "roles/npu_driver/defaults/main.yml").read_text())
    assert defaults["npu_driver_pci_id"] == "PCI\\VEN_1022&DEV_1502"
    pnputil = next(t for t in installers if "pnputil" in t["name"])
    assert pnputil["ansible.windows.win_command"]["cmd"].startswith("pnputil.exe /add-driver")
    assert pnputil["ansible.windows.win_command"]["cmd"].endswith("/install")


def test_miniconda_d_is_last_and_unquoted() -> None:
    task = _role_tasks("miniconda")["Install Miniconda (/D= last, unquoted)"]
    args = task["ansible.windows.win_package"]["arguments"].strip()
    assert args.startswith("/S ")
    assert args.endswith(" /D={{ miniconda_prefix }}")  # last, no quotes around the path


def test_vs2019_components_flags_and_reboot_codes() -> None:
    tasks = _role_tasks("vs2019_buildtools")
    task = next(t for t in tasks.values() if "ansible.windows.win_package" in t)
    args = task["ansible.windows.win_package"]
    assert args["expected_return_code"] == [0, 3010, 1641]
    assert {"--quiet", "--wait", "--norestart"} <= set(args["arguments"].split())
    defaults = yaml.safe_load((ANSIBLE / "roles/vs2019_buildtools/defaults/main.yml").read_text())
    assert {"Microsoft.VisualStudio.Workload.VCTools",
            "Microsoft.VisualStudio.Component.VC.Tools.x86.x64"} <= set(
        defaults["vs2019_buildtools_components"])  # fmt: skip


def test_runner_registration_flags() -> None:
    task = _role_tasks("gha_runner")["Register the runner as a service"]
    argv = task["ansible.windows.win_command"]["argv"]
    for flag in ("--unattended", "--url", "--token", "--name", "--labels", "--work", "--replace",
                 "--runasservice"):  # fmt: skip
        assert flag in argv
    assert task["no_log"] is True
    assert "--disableupdate" not in argv  # GitHub stops serving runners below its minimum
    names = list(_role_tasks("gha_runner"))
    # the service's first start already sees the machine PATH (Git's installer changed it)
    env = names.index("Write the runner's environment (.env) before the service first starts")
    assert names.index("Read the machine PATH") < env < names.index(task["name"])
    keep = _role_tasks("gha_runner")["Keep the runner service running and automatic"]
    assert "gha_runner_env_written is changed" in keep["ansible.windows.win_service"]["state"]


def test_stack_build_changed_status_comes_from_the_stamps_not_console_text() -> None:
    """The Windows checks run every build, so a summary line cannot tell a no-op from work; the
    task compares the stamp digests before and after instead (and says so as JSON)."""
    task = _role_tasks("npulab_stack")[
        "Run invoke build (each step skipped when its inputs did not change)"
    ]
    assert " in " not in task["changed_when"]
    assert "from_json" in task["changed_when"]
    script = task["ansible.windows.win_shell"]
    assert ".npulab-win" in script
    assert "*.stamp" in script
    assert script.index("$before = Get-Stamps") < script.index("invoke.exe' build")
    assert "changed = ($before -ne (Get-Stamps))" in script


_VALIDATE = """
import json, sys
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
options, values = json.load(sys.stdin)
print(json.dumps(ArgumentSpecValidator(options).validate(values).error_messages))
"""


def _validate(options: dict[str, Any], values: dict[str, Any]) -> list[str]:
    # In a child: importing ansible patches sys.intern, which breaks torch later in this process.
    done = cmd.run(sys.executable, "-c", _VALIDATE, input_text=json.dumps([options, values]),
                   quiet=True)  # fmt: skip
    return list(json.loads(done.stdout))


@pytest.mark.integration
@pytest.mark.parametrize("role", [*ROLES, "npulab_fetch"])
def test_role_defaults_satisfy_their_argument_spec(role: str) -> None:
    """Ansible's own validator (the one the role runs at start) accepts the shipped defaults, and
    each documented default is the value in defaults/main.yml."""
    base = ANSIBLE / "roles" / role
    spec = yaml.safe_load((base / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load((base / "defaults" / "main.yml").read_text())
    values = {k: v for k, v in defaults.items() if not (isinstance(v, str) and "{{" in v)}
    if role == "npulab_fetch":
        values.update(npulab_fetch_key="git", npulab_fetch_item={})
    assert _validate(options, values) == []
    for name, option in options.items():
        if "default" in option:
            assert option["default"] == defaults[name], name
    if role == "miniconda":
        assert _validate(options, {**values, "miniconda_installation_type": "Everyone"})


@pytest.mark.integration
@pytest.mark.parametrize("clone_flags", [(), ("--no-checkout",)], ids=["clone", "no-checkout"])
def test_stack_checkout_leaves_a_project_to_install(
    tmp_path: Path, clone_flags: tuple[str, ...]
) -> None:
    """The npulab_stack role's git commands, run with real git here: after the role's steps the
    checkout holds pyproject.toml, also when an earlier run left a clone without a work tree
    (HEAD equals FETCH_HEAD there, which alone decided the checkout before)."""
    import jinja2

    from tests.gitrepo import GIT_ENV

    origin = tmp_path / "origin"
    origin.mkdir()
    env = {**os.environ, **GIT_ENV}

    def git(*args: str, cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)

    git("init", "-q", "-b", "main", cwd=origin)
    (origin / "pyproject.toml").write_text("[project]\nname = 'npulab'\n")
    git("add", ".", cwd=origin)
    git("commit", "-qm", "one", cwd=origin)
    dest = tmp_path / "stack"
    if clone_flags:  # what the role's earlier version left behind
        git("clone", "-q", *clone_flags, str(origin), str(dest))
    facts: dict[str, Any] = {
        "npulab_stack_git": "git",
        "npulab_stack_repo": str(origin),
        "npulab_stack_dir": str(dest),
        "npulab_stack_version": "main",
        "ansible_check_mode": False,
    }
    jenv = jinja2.Environment(undefined=jinja2.StrictUndefined)
    order = ["Clone npulab", "Fetch the pinned version", "Read the checked-out commit",
             "Read the pinned commit", "Look for the checked-out project",
             "Check out the pinned version"]  # fmt: skip
    tasks = _role_tasks("npulab_stack")
    names = list(tasks)
    assert [n for n in names if n in order] == order
    for name in order:
        task = tasks[name]
        whens = task.get("when", [])
        whens = [whens] if isinstance(whens, str) else whens
        if not all(jenv.compile_expression(w)(**facts) for w in whens):
            continue
        if "ansible.windows.win_stat" in task:
            path = Path(jenv.from_string(task["ansible.windows.win_stat"]["path"]).render(**facts))
            result: dict[str, Any] = {
                "stat": {"exists": Path(str(path).replace("\\", "/")).exists()}
            }
        else:
            args = task["ansible.windows.win_command"]
            argv = [jenv.from_string(a).render(**facts) for a in args["argv"]]
            creates = args.get("creates")
            if (
                creates
                and Path(jenv.from_string(creates).render(**facts).replace("\\", "/")).exists()
            ):
                continue
            done = git(*argv[1:])
            assert done.returncode == 0 or task.get("failed_when") is False, (name, done.stderr)
            result = {"rc": done.returncode, "stdout": done.stdout}
        if "register" in task:
            facts[task["register"]] = result
    assert (dest / "pyproject.toml").is_file()


@pytest.mark.parametrize(
    ("url", "runs"),
    [
        ("manual", "Require the hand-placed file of"),
        ("https://example.invalid/x.zip", "Download over https"),
        ("\\\\labfs\\npulab\\x.zip", "Copy from the lab share"),
    ],
)
def test_fetch_source_decides_the_one_way_in(url: str, runs: str) -> None:
    """url: manual (a lab without a share) never downloads or copies: a missing or wrong file in
    the installer cache stops the run naming it; a cached file with the pinned hash is used."""
    import jinja2

    jenv = jinja2.Environment(undefined=jinja2.StrictUndefined)
    tasks = _role_tasks("npulab_fetch")
    ways = ("Require the hand-placed file of", "Download over https", "Copy from the lab share")
    for cached in (False, True):
        facts = {
            "npulab_fetch_item": {"url": url},
            "npulab_fetch_sha256": "a" * 64,
            "npulab_fetch_cached": {"stat": {"exists": cached, "checksum": "a" * 64}},
        }
        ran = [
            way
            for way in ways
            for name, task in tasks.items()
            if name.startswith(way)
            and all(jenv.compile_expression(w)(**facts) for w in task["when"])
        ]
        assert ran == ([] if cached else [runs]), (url, cached)
