"""The hosted Windows job: its data, the rendered workflow's rules, the step checker, the pins."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from npulab.ci import e2e, e2e_pins, e2e_step, e2e_summary, workflow
from npulab.ci.nightly import render_e2e_workflow
from npulab.errors import ConfigError, VerificationError
from npulab.hosts import inventory
from npulab.recipe import find_recipe
from npulab.schema import build
from tests.test_ci_workflows import ROOT, WORKFLOWS, load

WORKFLOW = WORKFLOWS / "windows-e2e.yml"
DATA = ROOT / "ci" / "windows-e2e.yaml"


def test_committed_workflow_is_the_rendering_of_the_data() -> None:
    assert WORKFLOW.read_text() == e2e.render(e2e.load_e2e())
    assert render_e2e_workflow(check=True)


def test_a_changed_step_makes_the_check_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(ROOT / "ci", tmp_path / "ci")
    shutil.copytree(WORKFLOWS, tmp_path / ".github" / "workflows")
    monkeypatch.setenv("NPULAB_ROOT", str(tmp_path))
    assert render_e2e_workflow(check=True)
    data = tmp_path / "ci" / "windows-e2e.yaml"
    data.write_text(data.read_text().replace("--tags npu_driver --check", "--tags npu_driver"))
    assert not render_e2e_workflow(check=True)
    render_e2e_workflow(check=False)
    assert (
        "e2e_step npu-driver-check -- invoke lab.provision --hosts gha-windows --tags npu_driver\n"
        in (tmp_path / ".github" / "workflows" / "windows-e2e.yml").read_text()
    )


def test_only_schedule_and_dispatch_and_no_secret() -> None:
    data = load(WORKFLOW)
    assert set(data["on"]) == {"schedule", "workflow_dispatch"}
    assert data["on"]["schedule"] == [{"cron": e2e.load_e2e().cron}]
    assert data["permissions"] == {}
    text = WORKFLOW.read_text()
    # The only credential is the job-local WinRM password the set-up script makes and masks.
    assert "secrets." not in text
    assert "github.token" not in text
    assert "GITHUB_TOKEN" not in text
    (job,) = data["jobs"].values()
    assert job["permissions"] == {"contents": "read"}
    assert job["runs-on"] == e2e.load_e2e().runs_on
    assert "NPULAB_WINRM_PASSWORD" in job["env"]["WSLENV"].split(":")


def test_every_step_has_a_timeout_and_actions_are_pinned() -> None:
    (job,) = load(WORKFLOW)["jobs"].values()
    for step in job["steps"]:
        assert "timeout-minutes" in step, step["name"]
        assert "${{" not in step.get("run", ""), step["name"]
    known = {a.repo: a for a in (workflow.CHECKOUT, workflow.UPLOAD_ARTIFACT, e2e.SETUP_WSL)}
    used = workflow.pinned_actions(WORKFLOW.read_text())
    assert {a.repo for a in used} == set(known)
    assert all(known[a.repo] == a for a in used)
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout"))
    assert checkout["with"]["persist-credentials"] is False
    wsl = next(s for s in job["steps"] if s.get("uses", "").startswith("Vampire/setup-wsl"))
    assert wsl["with"]["wsl-version"] == 1


def test_controller_steps_are_the_data_steps_in_order() -> None:
    data = e2e.load_e2e()
    lines = e2e.controller_lines(WORKFLOW.read_text())
    assert lines[0] == "invoke ci.e2e-pins --out e2e"
    assert lines[1:-1] == [f"python -m npulab.ci.e2e_step {s.id} -- {s.run}" for s in data.steps]
    assert lines[-1] == "invoke ci.e2e-summary --dir e2e"
    (job,) = load(WORKFLOW)["jobs"].values()
    for step in job["steps"]:
        if any(line in step.get("run", "") for line in lines):
            assert step["shell"] == "wsl-bash {0}"
            assert step["env"]["NPULAB_INVENTORY"] == e2e.INVENTORY


def test_data_names_a_real_recipe_and_roles() -> None:
    data = e2e.load_e2e()
    assert find_recipe(data.recipe).exists()
    lab = e2e_pins.lab_installers()
    assert {i.key for i in data.installers} <= set(lab)


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        ("  - id: probe\n", "  - id: Probe\n", r"steps\[0\]\.id: expected a lowercase id"),
        ("    timeout_minutes: 5\n", "    timeout_minute: 5\n", r"did you mean 'timeout_minutes'"),
        (
            "run: invoke lab.probe --hosts",
            "run: lab.probe --hosts",
            r"steps\[0\]\.run: expected an invoke task",
        ),
        (
            "--hosts gha-windows --json",
            "--hosts gha-windows --json; rm -rf /",
            r"steps\[0\]\.run: expected one command",
        ),
        ("win-lfs: done", "win-lfs: skipped", r"expect\.steps\.win-lfs: .*'done'"),
        ("  version: 1\n", "  version: 3\n", r"wsl\.version"),
        ("job_timeout_minutes: 330", "job_timeout_minutes: 60", r"must exceed the steps"),
    ],
)
def test_data_errors_name_the_key(tmp_path: Path, old: str, new: str, error: str) -> None:
    text = DATA.read_text()
    assert old in text
    bad = tmp_path / "windows-e2e.yaml"
    bad.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=error):
        e2e.load_e2e(bad)


# --- the step checker, on real commands ---------------------------------------------------


def _data(**step: Any) -> e2e.E2E:
    raw = yaml.safe_load(DATA.read_text())
    raw["steps"] = [{"id": "s", "title": "t", "run": "invoke x", "timeout_minutes": 1, **step}]
    return build(e2e.E2E, raw, source="test")


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


@pytest.mark.integration
def test_a_step_that_fails_as_documented_passes(tmp_path: Path) -> None:
    data = _data(expect={"exit_code": 5, "output": ["no PCI\\VEN_1022&DEV_1502 device"]})
    code = (
        "import sys; print('x'); "
        "sys.stderr.write('no PCI\\\\VEN_1022&DEV_1502 device on h'); sys.exit(5)"
    )
    record = e2e_step.run_step(data, "s", _py(code), tmp_path)
    assert record.ok, record.problems
    assert record.exit_code == 5
    log_text = (tmp_path / "logs" / "s.log").read_text()
    assert log_text.startswith("$ ")
    assert "no PCI\\VEN_1022&DEV_1502 device on h" in log_text
    assert log_text.endswith("--- exit code 5\n")
    (line,) = (tmp_path / "steps.jsonl").read_text().splitlines()
    assert json.loads(line)["ok"] is True


@pytest.mark.integration
def test_a_wrong_exit_code_or_message_fails(tmp_path: Path) -> None:
    data = _data(expect={"exit_code": 5, "output": ["refused"]})
    record = e2e_step.run_step(data, "s", _py("print('fine')"), tmp_path)
    assert record.problems == ["exit code 0, expected 5", "output lacks 'refused'"]
    assert record.missing_output == ["refused"]


RECAP = (
    "\nPLAY RECAP ****************************************************************\n"
    "gha-windows                : ok=23   changed={changed}    unreachable=0    failed=0    "
    "skipped=9    rescued=0    ignored=0\n"
    "localhost                  : ok=1    changed=0    unreachable=0    failed=0    "
    "skipped=0    rescued=0    ignored=0\n"
)


@pytest.mark.integration
@pytest.mark.parametrize(("changed", "ok"), [(0, True), (3, False)])
def test_zero_changed_tasks_is_read_from_the_recap(tmp_path: Path, changed: int, ok: bool) -> None:
    data = _data(expect={"exit_code": 0, "recap_changed": 0, "recap_failures": 0})
    script = tmp_path / "recap.txt"
    script.write_text(RECAP.format(changed=changed))
    record = e2e_step.run_step(data, "s", _py(f"print(open({str(script)!r}).read())"), tmp_path)
    assert record.recap is not None
    assert record.recap["changed"] == changed
    assert record.ok is ok
    if not ok:
        assert record.problems == ["recap changed=3, expected 0"]


@pytest.mark.integration
def test_no_recap_fails_a_recap_expectation(tmp_path: Path) -> None:
    data = _data(expect={"exit_code": 0, "recap_changed": 0})
    record = e2e_step.run_step(data, "s", _py("print('no ansible here')"), tmp_path)
    assert record.problems == ["no PLAY RECAP line for the host (expected changed=0)"]


@pytest.mark.integration
def test_build_step_statuses_come_from_this_runs_manifest(tmp_path: Path) -> None:
    data = _data(expect={"exit_code": 0, "steps": {"win-ops-cpp": "up-to-date"}})
    build_dir = tmp_path / "build"
    manifest_file = build_dir / data.recipe / "manifest.json"
    manifest_file.parent.mkdir(parents=True)
    old = {
        "schema": 1,
        "started_at": "2000-01-01T00:00:00.000000Z",
        "steps": {"win-ops-cpp": {"status": "up-to-date"}},
    }
    manifest_file.write_text(json.dumps(old))
    # A manifest older than the step is someone else's run: not evidence.
    record = e2e_step.run_step(data, "s", _py("pass"), tmp_path / "out", build_dir=build_dir)
    assert record.problems == ["this build wrote no manifest (it stopped before any step ran)"]
    writer = (
        "import json, datetime as dt, sys; now = dt.datetime.now(dt.UTC).strftime("
        "'%Y-%m-%dT%H:%M:%S.%fZ'); run = {'started_at': now, 'steps': {'win-ops-cpp': "
        "{'status': 'done'}}}; json.dump({'schema': 1, 'started_at': '2000', 'steps': {}, "
        f"'last_failure': run}}, open({str(manifest_file)!r}, 'w'))"
    )
    record = e2e_step.run_step(data, "s", _py(writer), tmp_path / "out", build_dir=build_dir)
    assert record.problems == ["build step win-ops-cpp: done, expected up-to-date"]


@pytest.mark.integration
def test_step_checker_cli_exit_codes(tmp_path: Path) -> None:
    probe = e2e.load_e2e().step("probe")
    fake = (
        'import sys; print(\'"verdict": "mismatch" no NPU (no PCI VEN_1022&DEV_1502)\'); '
        "sys.exit(1)"
    )
    env = {"PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent)}
    ran = subprocess.run(
        [sys.executable, "-m", "npulab.ci.e2e_step", probe.id, "--out", str(tmp_path), "--",
         sys.executable, "-c", fake],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "mismatch" in (tmp_path / "probe.json").read_text()
    wrong = subprocess.run(
        [sys.executable, "-m", "npulab.ci.e2e_step", probe.id, "--out", str(tmp_path), "--",
         sys.executable, "-c", "print('ok')"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert wrong.returncode == 1
    assert "probe: not as expected: exit code 0, expected 1" in wrong.stderr
    unknown = subprocess.run(
        [sys.executable, "-m", "npulab.ci.e2e_step", "prob", "--", "true"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert unknown.returncode == 2
    assert "no step 'prob'" in unknown.stderr


@pytest.mark.integration
def test_summary_table_from_records(tmp_path: Path) -> None:
    data = _data(npu_bound=True, expect={"exit_code": 5, "output": ["refused"]})
    e2e_step.run_step(data, "s", _py("import sys; print('refused'); sys.exit(5)"), tmp_path)
    text = e2e_summary.run_summary(tmp_path)
    assert "1 of 1 steps as expected." in text
    row = next(line for line in text.splitlines() if line.startswith("| `s`"))
    assert "(NPU-bound)" in row
    assert e2e_summary.OK in row
    assert "expected exit 5 / actual exit 5" in row
    assert (tmp_path / "summary.md").read_text() == text
    assert "No step records" in e2e_summary.render([])


# --- installer pins ------------------------------------------------------------------------


class _Files(requests.adapters.BaseAdapter):
    """requests transport serving fixed bodies by URL (the network stays out of the tests)."""

    def __init__(self, bodies: dict[str, bytes]) -> None:
        super().__init__()
        self.bodies = bodies
        self.asked: list[str] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        assert request.url is not None
        self.asked.append(request.url)
        response = requests.Response()
        response.url = request.url
        response.request = request
        body = self.bodies.get(request.url)
        response.status_code = 200 if body is not None else 404
        response.raw = __import__("io").BytesIO(body or b"not found")
        return response

    def close(self) -> None:
        pass


def _session(bodies: dict[str, bytes]) -> requests.Session:
    session = requests.Session()
    session.mount("https://", _Files(bodies))
    return session


def _bodies(miniconda: bytes = b"miniconda", index_sha: str | None = None) -> dict[str, bytes]:
    lab = e2e_pins.lab_installers()
    sha = index_sha or hashlib.sha256(miniconda).hexdigest()
    index = (
        '<table><tr><td><a href="Miniconda3-latest.exe">x</a></td><td>1</td><td>'
        + "0" * 64
        + f'</td></tr><tr><td><a href="{lab["miniconda"]["file"]}">'
        + f"{lab['miniconda']['file']}</a></td><td>80.1M</td><td>2024-10-23</td>"
        + f"<td>{sha}</td></tr></table>"
    )
    return {
        lab["git"]["url"]: b"git",
        lab["miniconda"]["url"]: miniconda,
        "https://repo.anaconda.com/miniconda/": index.encode(),
        "https://aka.ms/vs/16/release/vs_buildtools.exe": b"vs",
    }


def test_pins_check_public_hashes_and_record_the_rest(tmp_path: Path) -> None:
    data = e2e.load_e2e()
    git = e2e.Installer(key="git", sha256=hashlib.sha256(b"git").hexdigest())
    data = dataclasses.replace(data, installers=(git, *data.installers[1:]))
    pins = e2e_pins.run_pins(data, tmp_path, session=_session(_bodies()))
    assert [(p.key, p.source) for p in pins] == [
        ("git", "public"), ("miniconda", "index"), ("vs2019_buildtools", "recorded")]  # fmt: skip
    written = json.loads((tmp_path / "installers.json").read_text())
    assert written[2]["sha256"] == hashlib.sha256(b"vs").hexdigest()
    inv = inventory.load(tmp_path / "inventory" / "hosts.yml")
    (host,) = inv.select(None)
    assert (host.name, host.vars.ansible_host, host.vars.port) == (data.host, "127.0.0.1", 5985)
    assert host.vars.npulab_chip == data.chip
    prov = yaml.safe_load((tmp_path / "inventory/group_vars/all/provisioning.yml").read_text())
    assert prov["npulab_provision_installers"] == ["git", "miniconda", "vs2019_buildtools"]
    assert prov["npulab_installers"]["vs2019_buildtools"]["url"].startswith("https://aka.ms/")


def test_a_download_that_differs_from_the_published_hash_stops(tmp_path: Path) -> None:
    data = e2e.load_e2e()
    with pytest.raises(
        VerificationError, match=r"Git-2\.47\.1-64-bit\.exe .*published checksum is 2552"
    ):
        e2e_pins.run_pins(data, tmp_path, session=_session(_bodies()))
    git = e2e.Installer(key="git", sha256=hashlib.sha256(b"git").hexdigest())
    data = dataclasses.replace(data, installers=(git, *data.installers[1:]))
    with pytest.raises(VerificationError, match=r"Miniconda3-.*published checksum is 0{64}"):
        e2e_pins.run_pins(data, tmp_path, session=_session(_bodies(index_sha="0" * 64)))
    assert not (tmp_path / "inventory").exists(), "nothing written before every pin is checked"


def test_index_row_is_the_files_own() -> None:
    page = (
        '<tr><td><a href="a.exe">a</a></td><td>' + "1" * 64 + '</td></tr><tr><td><a href="b.exe">'
    )
    assert e2e_pins.sha256_from_index(page, "a.exe") == "1" * 64
    assert e2e_pins.sha256_from_index(page, "b.exe") is None
    assert e2e_pins.sha256_from_index(page, "c.exe") is None


@pytest.mark.integration
def test_ansible_reads_the_jobs_inventory(tmp_path: Path) -> None:
    git = e2e.Installer(key="git", sha256=hashlib.sha256(b"git").hexdigest())
    data = e2e.load_e2e()
    data = dataclasses.replace(data, installers=(git, *data.installers[1:]))
    e2e_pins.run_pins(data, tmp_path, session=_session(_bodies()))
    exe = Path(sys.executable).parent / "ansible-inventory"
    shown = subprocess.run(
        [str(exe), "-i", str(tmp_path / "inventory" / "hosts.yml"), "--host", data.host],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    host_vars = json.loads(shown.stdout)
    assert host_vars["ansible_connection"] == "winrm"
    assert host_vars["npulab_installers"]["git"]["sha256"] == git.sha256
    assert host_vars["npulab_provision_installers"] == ["git", "miniconda", "vs2019_buildtools"]


@pytest.mark.integration
def test_expected_text_may_be_folded_over_lines(tmp_path: Path) -> None:
    data = _data(expect={"exit_code": 0, "output": ["the inventory says npulab_chip=7940HS"]})
    folded = "print(\"msg: 'h reports CPU; the inventory\\n    says npulab_chip=7940HS'\")"
    assert e2e_step.run_step(data, "s", _py(folded), tmp_path).ok


def test_the_winrm_script_the_workflow_calls_exists() -> None:
    (job,) = load(WORKFLOW)["jobs"].values()
    run = next(s["run"] for s in job["steps"] if "enable-winrm-localhost.ps1" in s.get("run", ""))
    text = (ROOT / "ci" / "windows" / "enable-winrm-localhost.ps1").read_text(encoding="utf-8")
    assert "[string] $HostName" in text
    assert f"-HostName {e2e.load_e2e().host}" in run
    assert "::add-mask::$password" in text
    for name in ("NPULAB_WINRM_USER", "NPULAB_WINRM_PASSWORD"):
        assert name in text
        assert name in job["env"]["WSLENV"].split(":")


def test_docs_list_every_step() -> None:
    docs = (ROOT / "docs" / "nightly.md").read_text(encoding="utf-8")
    section = docs[docs.index("## The hosted Windows job") :]
    for step in e2e.load_e2e().steps:
        assert f"`{step.id}`" in section, step.id
