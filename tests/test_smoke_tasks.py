"""invoke smoke / chat / model.* wiring: local runs, a host run over a transport, clean errors."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from invoke.context import Context
from invoke.exceptions import Exit

import npulab.transport
from invoke_tasks import smoke as smoke_tasks
from npulab import cmd
from npulab.cmd import Completed
from npulab.errors import ConfigError, SmokeFailure, TransportError, VerificationError
from npulab.recipe import load_recipe
from npulab.smoke import run as smoke_run
from tests import tiny_llama


def tiny_recipe(project_root: Path, tmp_path: Path, *, eot_bias: float = 1.0) -> Path:
    """The real recipe with its model block swapped for a pinned tiny model in tmp/model."""
    pins = tiny_llama.write_model_dir(tmp_path / "model", eot_bias=eot_bias)
    lines = ["model:", "  repo_id: local/tiny", f"  revision: {'b' * 40}", "  checkpoint: model.pt",
             "  files:"]  # fmt: skip
    for name, pin in pins.items():
        lines += [
            f"    - path: {name}",
            f"      sha256: {pin['sha256']}",
            f"      size: {pin['size']}",
        ]
    text = (project_root / "recipes" / "ryzenai-sw-1.1-llama3.1.yaml").read_text()
    text = re.sub(r"(?ms)^model:\n.*?(?=^devices:)", "\n".join(lines) + "\n\n", text)
    text = text.replace("max_new_tokens: 64", "max_new_tokens: 16")
    # The tiny model answers "w0 w1 w2 w3" and cannot score the passage: no content rules here
    # (tests/test_quality_rules.py has them).
    text = re.sub(r"(?m)^      expect: .*\n", "", text)
    text = re.sub(r"(?m)^  passage:\n(    .*\n)+", "", text)
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    assert load_recipe(path).model.pinned
    return path


def test_npu_backend_without_an_env_python_says_how_to_name_it(
    project_root: Path, tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NPULAB_SMOKE_PYTHON", raising=False)
    recipe = load_recipe(tiny_recipe(project_root, tmp_path))
    with pytest.raises(ConfigError, match="conda env") as err:
        smoke_run.smoke(recipe, model_dir=str(tmp_path / "model"))
    assert "--python" in str(err.value)


def test_host_run_finds_model_and_env_from_the_host_layout(
    project_root: Path, tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --model-dir, no --python: the layout's model_root and the host build's python.cmd."""
    from npulab.hosts import layout

    recipe = load_recipe(tiny_recipe(project_root, tmp_path))
    monkeypatch.delenv("NPULAB_SMOKE_PYTHON", raising=False)
    transport = _Unbuilt(tmp_path / "host")
    monkeypatch.setattr(npulab.transport, "connect", lambda host: transport)
    with pytest.raises(SmokeFailure):  # the host's build left no python.cmd: no report
        smoke_run.smoke(recipe, host="lab1", dest=tmp_path / "out")
    lay = layout.load()
    python, runner = transport.ran[-1][:2]
    assert python == lay.build_dir(recipe.name) + "\\scripts\\python.cmd"
    assert runner.endswith("\\runner.py")
    config = json.loads((tmp_path / "out" / "smoke.json").read_text())
    assert recipe.model.revision
    assert config["model_dir"] == lay.model_dir(recipe.model.repo_id, recipe.model.revision)
    assert config["model_dir"].startswith(lay.model_root + "\\")
    unpinned = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, revision=None))
    with pytest.raises(ConfigError, match="no pinned revision"):
        smoke_run.smoke(unpinned, host="lab1")


class _Unbuilt:
    """A host that has files but no build: every command it is asked to run is not found."""

    def __init__(self, root: Path) -> None:
        self.files = DirTransport(root)
        self.ran: list[Sequence[str]] = []

    def run(self, argv: Sequence[str], **kw: Any) -> Completed:
        self.ran.append(argv)
        return Completed(argv=tuple(argv), returncode=9009, stdout="", stderr="not recognized")

    def put_file(self, local: Path, remote: str, *, dry_run: bool = False) -> None:
        self.files.put_file(local, remote)

    def get_file(self, remote: str, local: Path) -> None:
        msg = f"{remote}: no such file on lab1"
        raise TransportError(msg)


def test_host_run_needs_a_transport(
    project_root: Path, tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = load_recipe(tiny_recipe(project_root, tmp_path))
    monkeypatch.delattr(npulab.transport, "connect", raising=False)
    with pytest.raises(TransportError, match=r"npulab\.transport\.connect"):
        smoke_run.smoke(recipe, host="lab1", model_dir="D:\\m", python="py.cmd")


class DirTransport:
    """A Transport whose 'remote' is a local directory (remote paths map into it)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.ran: list[Sequence[str]] = []

    host = "lab1"
    is_windows = True

    def local(self, remote: str) -> Path:
        return self.root / remote.replace("C:\\", "").replace("\\", "/")

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        check: bool = True,
        dry_run: bool = False,
    ) -> Completed:
        self.ran.append(argv)
        mapped = [str(self.local(a)) if a.startswith("C:\\") else a for a in argv]
        return cmd.run(*mapped, env=dict(env or {}), check=check, timeout=timeout, dry_run=dry_run)

    def run_script(self, script: str, **kw: Any) -> Completed:
        raise NotImplementedError

    def put_file(self, local: Path, remote: str, *, dry_run: bool = False) -> None:
        target = self.local(remote)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)

    def get_file(self, remote: str, local: Path) -> None:
        shutil.copyfile(self.local(remote), local)


@pytest.mark.integration
def test_smoke_on_a_host_uploads_runs_and_fetches_the_report(
    project_root: Path, tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = DirTransport(tmp_path / "remote")
    monkeypatch.setattr(npulab.transport, "connect", lambda host: fake, raising=False)
    recipe = load_recipe(tiny_recipe(project_root, tmp_path))
    outcome = smoke_run.smoke(
        recipe, host="lab1", backend="cpu", chip="8845HS", model_dir=str(tmp_path / "model"),
        python=sys.executable,
    )  # fmt: skip
    assert outcome.verdict == "PASS"
    assert outcome.report_path.is_relative_to(isolated_cache.parent / "build" / "smoke")
    assert outcome.report["host"]["chip"] == "8845HS"
    assert fake.ran[0][1].endswith("\\runner.py")


@pytest.mark.integration
def test_invoke_smoke_cpu_locally_passes_and_fails_with_exit_codes(
    project_root: Path, tmp_path: Path, isolated_cache: Path
) -> None:
    recipe = tiny_recipe(project_root, tmp_path)
    smoke_tasks.smoke(
        Context(), recipe=str(recipe), backend="cpu", model_dir=str(tmp_path / "model")
    )
    reports = list((isolated_cache.parent / "build" / "smoke").glob("*/report.json"))
    assert json.loads(reports[0].read_text())["verdict"] == "PASS"
    bad = tiny_recipe(project_root, tmp_path / "bad", eot_bias=30.0)  # empty answers
    with pytest.raises(Exit) as err:
        smoke_tasks.smoke(Context(), recipe=str(bad), backend="cpu",
                          model_dir=str(tmp_path / "bad" / "model"))  # fmt: skip
    assert err.value.code == SmokeFailure.exit_code
    assert "non-empty answer" in str(err.value.message)


def test_judge_maps_refusal_to_a_verification_error(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    refused = {"report_version": 1, "verdict": "REFUSED", "prompts": [], "checks": [],
               "error": "model.pt: sha256 x, pinned y"}  # fmt: skip
    report.write_text(json.dumps(refused))
    with pytest.raises(VerificationError, match="sha256 x"):
        smoke_run.judge(report)
    with pytest.raises(SmokeFailure, match="left no report"):
        smoke_run.judge(tmp_path / "missing.json")


def test_dry_run_renders_the_config_and_runs_nothing(
    project_root: Path, tmp_path: Path, isolated_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = load_recipe(tiny_recipe(project_root, tmp_path))
    outcome = smoke_run.smoke(recipe, backend="cpu", model_dir="/m", dry_run=True)
    assert outcome.verdict == "DRY-RUN"
    err = capsys.readouterr().err
    shown = err[err.index("smoke.json:\n") + len("smoke.json:\n") : err.index("\n}\n") + 2]
    cfg = json.loads(shown)
    assert cfg["model_dir"] == "/m"
    assert cfg["backend"] == "cpu"
    assert not outcome.report_path.parent.exists()  # shown, not written


def test_npu_backend_on_windows_uses_the_build_python_wrapper(
    project_root: Path, tmp_path: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from npulab.build.executor import output_dir

    monkeypatch.delenv("NPULAB_SMOKE_PYTHON", raising=False)
    recipe = load_recipe(tiny_recipe(project_root, tmp_path))
    wrapper = output_dir(recipe) / "scripts" / "python.cmd"
    with pytest.raises(ConfigError, match="invoke build"):
        smoke_run.python_for("npu", None, recipe, windows=True)
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text("@echo off\r\n")
    assert smoke_run.python_for("npu", None, recipe, windows=True) == str(wrapper)
    with pytest.raises(ConfigError):
        smoke_run.python_for("npu", None, recipe, windows=False)
    assert smoke_run.python_for("npu", "C:\\py.exe", recipe, windows=True) == "C:\\py.exe"
    assert smoke_run.python_for("cpu", None, recipe) == sys.executable
