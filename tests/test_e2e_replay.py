"""The hosted Windows job's controller commands, replayed here against the simulated lab.

Every controller line of the committed ``.github/workflows/windows-e2e.yml`` runs, in the
workflow's order and with its arguments, in a copy of the checkout (as ``~/npulab`` on the
runner), through bash like the runner's ``wsl-bash`` shell. A typo in a task name, an option, a
tag or a step id fails here, not on the runner. The runner is played by one simulated lab host
(:class:`npulab.testing.fleet.FakeFleet`, what ``invoke lab.sim`` serves: real pywinrm, NTLM,
WS-Man) with the facts of a machine without the NPU, answering the build protocol with the
build host model of ``tests/test_winbuild_winrm.py`` (:class:`tests.winhost.BuildHost`): the
simulated lab does not run build steps itself yet.

What differs from the runner, and why:

* ``invoke ci.e2e-pins`` runs in-process with the downloads served from memory (no network
  here), and the git installer's published checksum replaced by that of the served bytes;
* the inventory it writes names 127.0.0.1:5985; the simulated host's port replaces 5985;
* the ``lab.provision`` lines run with ``--dry-run`` (the simulated host cannot run Ansible's
  PowerShell modules), and the ansible-playbook command they print runs for real with
  ``--list-tasks``: the inventory, the playbook and the tags are Ansible's to accept;
* the upstream is a small git repository of the 1.1 layout (``tests/gitrepo.py``) under the
  recipe's own name, with its commit and tree pinned and a one-patch series: the partial mirror
  of amd/RyzenAI-SW this machine has lacks files of 4 MiB and more, and the build refuses an
  incomplete source;
* the import check's exit code (6, no NPU driver) is scripted on the host model, which runs no
  Python; everything npulab does around it is real.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from npulab.ci import e2e, e2e_pins
from npulab.testing.fakehost import FakeHost, preset
from npulab.testing.fleet import FakeFleet, SimHost
from tests.gitrepo import git, make_patch, make_upstream, write_series
from tests.test_build import DLL, MODELING
from tests.test_ci_e2e import _bodies, _session
from tests.test_winrun import ALL
from tests.winhost import BuildHost

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
_TOP_IGNORE = {".git", "build", "e2e", ".venv", ".ci", "bench"}


def _ignore(directory: str, names: list[str]) -> set[str]:
    """What the runner's clone would not have: outputs, caches, the venv (top level only for
    names like ``build``, which is also a package under npulab/)."""
    skip = {n for n in names if n == "__pycache__" or n.endswith("_cache")}
    if Path(directory) == ROOT:
        skip |= _TOP_IGNORE & set(names)
    return skip


@dataclasses.dataclass
class Runner:
    checkout: Path
    env: dict[str, str]
    host: BuildHost
    port: int


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runner]:
    checkout = tmp_path / "npulab"
    shutil.copytree(ROOT, checkout, ignore=_ignore)
    data = e2e.load_e2e()
    upstream = _small_upstream(tmp_path / "up", checkout, data.recipe)
    password = secrets.token_urlsafe(16)
    host = FakeHost(data.host, preset("no-npu"), password=password)
    model = BuildHost(host)
    # No NPU driver: the import check's documented exit code (docs/windows-build.md).
    model.codes["import-check.cmd"] = 6
    with FakeFleet([SimHost(host, data.chip)]) as fleet:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("NPULAB_", "GITHUB_"))}
        env = keep | {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(checkout),
            "NPULAB_WINRM_USER": host.user,
            "NPULAB_WINRM_PASSWORD": password,
            "NPULAB_UPSTREAM": str(upstream),
            "NPULAB_CACHE": str(tmp_path / "cache"),
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_REPOSITORY": "lab-owner/npulab",
        }
        monkeypatch.chdir(checkout)
        monkeypatch.setenv("NPULAB_ROOT", str(checkout))
        yield Runner(checkout, env, model, fleet.server(data.host).port)


def _small_upstream(up: Path, checkout: Path, recipe_name: str) -> Path:
    commit = make_upstream(up)
    tree = git(up, "rev-parse", "HEAD^{tree}")
    patch = make_patch(up, commit, MODELING, "line 5\n", "line five\n")
    write_series(checkout / "patches" / "test" / "1", {"0001-five.patch": patch})
    path = checkout / "recipes" / f"{recipe_name}.yaml"
    recipe = yaml.safe_load(path.read_text())
    recipe["upstream"].update(commit=commit, tree=tree)
    recipe["upstream"]["lfs"]["required"] = [DLL]
    recipe["patches"] = {"component": "test", "version": "1"}
    path.write_text(yaml.safe_dump(recipe))
    return up


def _bash(r: Runner, line: str, step_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "--noprofile", "--norc", "-euo", "pipefail", "-c", line],
        cwd=r.checkout,
        env=r.env | step_env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def _pins(r: Runner, line: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``invoke ci.e2e-pins ...`` through invoke's own parser, in-process."""
    from invoke import Program

    import tasks

    bodies = _bodies()
    lab = e2e_pins.lab_installers()
    data = e2e.load_e2e()
    served = hashlib.sha256(bodies[lab["git"]["url"]]).hexdigest()
    installers = tuple(
        dataclasses.replace(i, sha256=served) if i.key == "git" else i for i in data.installers
    )
    monkeypatch.setattr(e2e, "load_e2e", lambda: dataclasses.replace(data, installers=installers))
    session = _session(bodies)  # built before requests.Session is replaced
    monkeypatch.setattr(e2e_pins.requests, "Session", lambda: session)
    argv = shlex.split(line)
    assert argv[0] == "invoke"
    Program(namespace=tasks.ns).run(argv, exit=False)
    hosts = r.checkout / e2e.INVENTORY
    text = hosts.read_text()
    assert "ansible_port: 5985" in text
    hosts.write_text(text.replace("ansible_port: 5985", f"ansible_port: {r.port}"))


def _provision_dry_run(r: Runner, line: str, step_env: dict[str, str]) -> str:
    """The inner ``invoke lab.provision ...`` with ``--dry-run``; then its ansible-playbook
    command with ``--list-tasks``. Returns the list of tasks."""
    inner = line.split(" -- ", 1)[1]
    done = _bash(r, inner + " --dry-run", step_env)
    assert done.returncode == 0, done.stderr
    printed = next(
        ln for ln in done.stderr.splitlines() if ln.startswith("(dry run) + ") and "playbook" in ln
    )
    argv = shlex.split(printed.removeprefix("(dry run) + "))
    ansible_dir = r.checkout / "ansible"
    listed = subprocess.run(
        [*argv, "--list-tasks"],
        cwd=ansible_dir,
        env=r.env | step_env | {"ANSIBLE_CONFIG": str(ansible_dir / "ansible.cfg")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    tags = argv[argv.index("--tags") + 1].split(",")
    for tag in tags:
        assert re.search(rf"^\s+{tag} : ", listed.stdout, re.MULTILINE), (tag, listed.stdout)
    assert "--limit" in argv
    assert argv[argv.index("--limit") + 1] == e2e.load_e2e().host
    return listed.stdout


def _step_id(line: str) -> str:
    return shlex.split(line)[3]


def test_the_workflows_controller_lines_run_against_the_simulated_lab(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = e2e.load_e2e()
    workflow_text = (runner.checkout / ".github" / "workflows" / "windows-e2e.yml").read_text()
    step_env = {"NPULAB_INVENTORY": e2e.INVENTORY}
    lines = e2e.controller_lines(workflow_text)
    ran: list[str] = []
    for line in lines:
        if line.startswith("invoke ci.e2e-pins "):
            _pins(runner, line, monkeypatch)
        elif line.startswith(e2e.STEP_RUNNER + " ") and " lab.provision " in line:
            tasks_listed = _provision_dry_run(runner, line, step_env)
            if " --tags npu_driver " in line + " ":
                assert "Require an XDNA1 NPU" in tasks_listed
        elif line.startswith(e2e.STEP_RUNNER + " "):
            done = _bash(runner, line, step_env)
            assert done.returncode == 0, (line, done.stdout[-2000:], done.stderr[-6000:])
            assert f"{_step_id(line)}: as expected" in done.stderr
        elif line.startswith("invoke ci.e2e-summary "):
            done = _bash(runner, line, step_env)
            assert done.returncode == 0, done.stderr
        else:
            pytest.fail(f"the replay does not know how to run {line!r}")
        ran.append(line)
    assert ran == lines
    assert len(lines) == len(data.steps) + 2

    out = runner.checkout / e2e.OUT_DIR
    # lab.probe --json: one record per host as it finishes, then a summary line.
    *hosts, summary_line = map(json.loads, (out / "probe.json").read_text().splitlines())
    assert summary_line["summary"]["hosts"] == [data.host]
    (host,) = hosts
    assert (host["host"], host["verdict"], host["npu"]) == (data.host, "mismatch", None)

    # The two builds: everything before the import check ran once, then only the checks.
    ran_scripts = runner.host.ran
    assert ran_scripts[:6] == ALL
    assert ran_scripts[6:] == ["prereqs.ps1", "lfs.ps1", "import-check.cmd"]
    records = {r["id"]: r for r in map(json.loads, (out / "steps.jsonl").read_text().splitlines())}
    assert set(records) == {"probe", "build", "build-again"}
    assert all(r["ok"] for r in records.values())
    again = records["build-again"]["build_steps"]
    assert again["win-ops-cpp"]["status"] == "up-to-date"
    step_log = runner.checkout / "build" / data.recipe / "logs" / "import-check.log"
    assert step_log.read_text().endswith("--- exit code 6\n")

    summary = (out / "summary.md").read_text()
    assert "3 of 3 steps as expected." in summary
    row = next(ln for ln in summary.splitlines() if ln.startswith("| ↳ win-import-check"))
    assert "expected failed / actual failed" in row
    skipped = [ln for ln in summary.splitlines() if "| up-to-date ✅ | skipped |" in ln]
    assert len(skipped) == 4, summary  # upload, conda env, pip lock, ops\cpp of the second build
