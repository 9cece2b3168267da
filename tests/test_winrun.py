"""The Windows step executor, driven through a scripted fake transport."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from npulab import paths
from npulab.build import executor as build
from npulab.build import manifest, plan
from npulab.build.workflow import run_build
from npulab.cmd import Completed
from npulab.errors import BuildStepError, CommandError, ConfigError
from npulab.recipe import DEFAULT_RECIPE, Recipe, load_recipe
from npulab.source.patches import Series
from npulab.source.sources import Origin
from npulab.testing import psmodel
from npulab.transport import Transport
from npulab.windows import run as winrun
from npulab.windows import steps as winsteps
from npulab.windows import upload as winupload
from tests.pwsh import string_values


class FakeTransport:
    """A Windows host in miniature: runs step scripts with the scripted exit code (default 0),
    keeps the stamps a succeeding stamped script writes, answers stamp reads, keeps uploaded
    files on its disk (``state["fs"]``) and runs the upload scripts themselves through the
    PowerShell model (their own sha256 check decides), and records every call."""

    def __init__(self, host: dict[str, Any]) -> None:
        self.state = host  # shared by every transport of one test: the host's disk
        self.calls: list[tuple[str, ...]] = []
        self.uploads: list[str] = []
        self.scripts: list[str] = []

    host = "fake-npu"
    is_windows = True

    @property
    def codes(self) -> dict[str, int]:
        return self.state["codes"]  # type: ignore[no-any-return]

    def run(self, argv: Sequence[str], **kw: Any) -> Completed:
        self.calls.append(tuple(argv))
        script = argv[-1].replace("/", "\\").rsplit("\\", 1)[-1]
        code = self.codes.get(script, 0)
        text = (self.state["scripts_dir"] / script).read_bytes().decode("utf-8")
        for line in text.split("\r\n"):  # what the script does first: empty later stamps
            if line.startswith('type nul >"%NPULAB_STATE%'):
                self.state["stamps"][line.rsplit("\\", 1)[-1].rstrip('"')] = ""
        if code == 0:
            digest = winsteps.stamp_digest(text)
            if digest is not None:
                self.state["stamps"][script.rsplit(".", 1)[0] + ".stamp"] = digest
        out, err = f"ran {script}\n", "boom\n" if code else ""
        self.state.setdefault("timeouts", {})[script] = kw.get("timeout")
        sink = kw.get("on_output")
        if sink is not None and self.state.get("stream", True):
            sink("stdout", out[:3])  # split mid-line: the log joins it
            sink("stdout", out[3:])
            if err:
                sink("stderr", err)
        if script in self.state.get("hang", ()):
            msg = f"[fake-npu] command timed out after {kw.get('timeout')}s: {script}"
            raise CommandError(
                msg,
                command=tuple(argv),
                returncode=None,
                stdout="half of the work\n",
            )
        return Completed(argv=tuple(argv), returncode=code, stdout=out, stderr=err)

    def run_script(self, script: str, **kw: Any) -> Completed:
        marker = script.split("\r\n", 1)[0]
        self.scripts.append(marker)
        out, rc = "", 0
        if marker == "# npulab-script: stamp-read v1":
            name = string_values(script)[-1].rsplit("\\", 1)[-1]
            out = self.state["stamps"].get(name, "")
        elif marker in ("# npulab-script: upload-state v1", "# npulab-script: upload-expand v1"):
            ran = psmodel.run(script, self.state["fs"])
            return Completed(
                argv=("powershell",), returncode=ran.rc, stdout=ran.stdout, stderr=ran.stderr
            )
        else:
            raise AssertionError(marker)
        return Completed(argv=("powershell",), returncode=rc, stdout=out, stderr="")

    def put_file(self, local: Path, remote: str, *, dry_run: bool = False) -> None:
        """What put_file guarantees (its receiver is tested in test_hostchecks): the file."""
        self.uploads.append(remote)
        self.state["fs"].mkdir(remote.rsplit("\\", 1)[0])
        self.state["fs"].write(remote, local.read_bytes())

    def get_file(self, remote: str, local: Path) -> None:
        msg = "not used"
        raise AssertionError(msg)


@pytest.fixture
def recipe(project_root: Path) -> Recipe:
    return load_recipe(project_root / "recipes" / f"{DEFAULT_RECIPE}.yaml")


@pytest.fixture
def fake() -> list[FakeTransport]:
    """made[0].state is the host everybody shares; each build gets its own transport after."""
    host: dict[str, Any] = {"codes": {}, "stamps": {}, "fs": psmodel.WinFS()}
    return [FakeTransport(host)]


def _windows_steps(recipe: Recipe, options: plan.Options) -> list[plan.Step]:
    return [s for s in plan.plan(recipe, options) if s.where == "windows"]


def _run(
    recipe: Recipe,
    out: Path,
    extra: dict[str, str],
    made: list[FakeTransport] | None = None,
    transport: Transport | None = None,
) -> dict[str, str]:
    """What build.run does for the Windows part: render, then each step via _run_step, through
    one new transport on the host of ``made`` (or the given ``transport``)."""
    options = plan.Options(target="windows", extra=extra)
    if transport is None:
        assert made is not None
        made.append(FakeTransport(made[0].state))
        made[0].state["scripts_dir"] = out / "scripts"
        transport = made[-1]
    ctx = build.Context(
        recipe=recipe,
        options=options,
        origin=Origin(location="test", chosen_by="test"),
        out=out,
        series=Series(directory=out, patches=()),
        previous=manifest.load(out),
        data={"steps": {"patch": {"detail": {"tree": "t" * 40}}}},
        transport=transport,
    )
    env_yaml = ctx.tree / recipe.env.env_file
    env_yaml.parent.mkdir(parents=True, exist_ok=True)
    env_yaml.write_text("name: x\n")
    render = next(s for s in plan.plan(recipe, options) if s.name == "render")
    statuses = {}
    try:
        for step in [render, *_windows_steps(recipe, options)]:
            statuses[step.name] = build._run_step(ctx, step, build.RUNNERS[step.kind])
    finally:
        manifest.save(
            out,
            {
                **ctx.previous,
                **ctx.data,
                "steps": {**ctx.previous.get("steps", {}), **ctx.data["steps"]},
            },
        )
    return statuses


def _ran(made: list[FakeTransport]) -> list[str]:
    return [c[-1].replace("/", "\\").rsplit("\\", 1)[-1] for t in made[1:] for c in t.calls]


def _fresh(made: list[FakeTransport]) -> None:
    """Forget the calls so far (the host keeps its state)."""
    del made[1:]


ALL = [
    "prereqs.ps1",
    "lfs.ps1",
    "conda-env.cmd",
    "pip-lock.cmd",
    "ops-cpp.cmd",
    "import-check.cmd",
]


def test_failing_step_stops_with_log_and_exit_code(
    recipe: Recipe, tmp_path: Path, fake: list[FakeTransport]
) -> None:
    fake[0].codes["pip-lock.cmd"] = 7
    out = tmp_path / "b"
    with pytest.raises(BuildStepError) as err:
        _run(recipe, out, {"host": "npu-01", "remote_root": "C:\\npulab\\b"}, fake)
    log_path = out / "logs" / "pip-lock.log"
    assert "win-pip-lock" in str(err.value)
    assert "exit code 7" in str(err.value)
    assert str(log_path) in str(err.value)
    text = log_path.read_text()
    assert text.startswith("$ cmd.exe /d /v:off /c C:\\npulab\\b\\scripts\\pip-lock.cmd\n")
    assert "\nran pip-lock.cmd\n[stderr] boom\n--- exit code 7\n" in text
    assert _ran(fake) == ALL[:4]
    steps = [c for t in fake[1:] for c in t.calls]
    assert steps[0][:2] == ("powershell.exe", "-NoProfile")
    assert steps[0][-1] == "C:\\npulab\\b\\scripts\\prereqs.ps1"
    assert steps[2][:4] == ("cmd.exe", "/d", "/v:off", "/c")
    uploads = [u for t in fake[1:] for u in t.uploads]
    assert uploads
    assert all(u.startswith("C:\\npulab\\b\\upload\\") for u in uploads)
    on_host = fake[0].state["fs"]
    assert on_host.is_file("C:\\npulab\\b\\scripts\\pip-lock.cmd")
    assert on_host.is_file("C:\\npulab\\b\\tree\\" + recipe.env.env_file.replace("/", "\\"))
    assert not on_host.children("C:\\npulab\\b\\upload"), "parts removed once unpacked"
    saved = manifest.load(out)
    assert saved["steps"]["win-upload"]["status"] == "done"
    assert saved["steps"]["win-conda-env"]["status"] == "done"
    assert saved["steps"]["win-pip-lock"]["status"] == "failed"


def test_rerun_resumes_after_last_good_step(
    recipe: Recipe, tmp_path: Path, fake: list[FakeTransport]
) -> None:
    out = tmp_path / "b"
    fake[0].codes["ops-cpp.cmd"] = 2
    with pytest.raises(BuildStepError, match="exit code 2"):
        _run(recipe, out, {}, fake)
    _fresh(fake)
    fake[0].codes.clear()
    statuses = _run(recipe, out, {}, fake)
    # The checks run every time; the stamped steps that succeeded are not redone.
    assert _ran(fake) == ["prereqs.ps1", "lfs.ps1", "ops-cpp.cmd", "import-check.cmd"]
    assert statuses["win-conda-env"] == statuses["win-pip-lock"] == "up-to-date"
    assert statuses["win-ops-cpp"] == "done"
    # A changed input (here: the lock) re-runs that step and the one built on it.
    _fresh(fake)
    changed = dataclasses.replace(
        recipe, env=dataclasses.replace(recipe.env, lock="recipes/locks/other.txt")
    )
    _run(changed, out, {}, fake)
    assert _ran(fake) == [
        "prereqs.ps1",
        "lfs.ps1",
        "pip-lock.cmd",
        "ops-cpp.cmd",
        "import-check.cmd",
    ]


def test_wiped_host_is_rebuilt(recipe: Recipe, tmp_path: Path, fake: list[FakeTransport]) -> None:
    out = tmp_path / "b"
    _run(recipe, out, {"host": "npu-01"}, fake)
    _fresh(fake)
    assert _run(recipe, out, {"host": "npu-01"}, fake)["win-conda-env"] == "up-to-date"
    assert len(fake) == 2, "stamp reads share the build's transport"
    assert _ran(fake) == ["prereqs.ps1", "lfs.ps1", "import-check.cmd"]
    assert not [u for t in fake[1:] for u in t.uploads], "the host holds this upload"
    _fresh(fake)
    fake[0].state["stamps"].clear()  # a reinstalled machine under the same name
    fake[0].state["fs"] = psmodel.WinFS()
    statuses = _run(recipe, out, {"host": "npu-01"}, fake)
    assert statuses["win-upload"] == "done"
    assert _ran(fake) == ALL


def test_interrupted_upload_resumes_without_resending_parts(
    recipe: Recipe, tmp_path: Path, fake: list[FakeTransport], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(winupload, "PART_SIZE", 64)
    out = tmp_path / "b"
    full = "There is not enough space on the disk."
    fake[0].state["fs"].refuse = lambda path: full if "\\.npulab-new\\" in path else None
    with pytest.raises(BuildStepError, match="unpacking on fake-npu") as err:
        _run(recipe, out, {"host": "npu-01"}, fake)
    assert full in str(err.value)
    assert "parts already sent are kept" in str(err.value.hint)
    sent = [u for t in fake[1:] for u in t.uploads]
    assert len(sent) > 2
    _fresh(fake)
    fake[0].state["fs"].refuse = None
    _run(recipe, out, {"host": "npu-01"}, fake)
    assert not [u for t in fake[1:] for u in t.uploads], "every part was already on the host"
    upload = json.loads((out / "manifest.json").read_text())["steps"]["win-upload"]["detail"]
    stamp = fake[0].state["fs"].read(upload["root"] + "\\.npulab-win\\upload.sha256")
    assert stamp.decode().strip() == upload["sha256"]
    assert not list((out / ".npulab" / "upload").iterdir()), "local parts are cleaned up"


def test_local_run_uploads_nothing(
    recipe: Recipe, tmp_path: Path, fake: list[FakeTransport]
) -> None:
    out = tmp_path / "b"
    _run(recipe, out, {}, fake)
    assert len(fake) == 2, "one transport for the whole build"
    assert all(not t.uploads for t in fake)
    assert fake[1].calls[0][-1] == str(out / "scripts" / "prereqs.ps1")


def test_dry_run_runs_nothing(
    project_root: Path,
    isolated_cache: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_connect(*args: object, **kw: object) -> None:
        msg = "a dry run opened a transport"
        raise AssertionError(msg)

    monkeypatch.setattr(winrun, "connect", no_connect)
    assert (
        run_build(DEFAULT_RECIPE, target="windows", dry_run=True, extra={"host": "phx-01"}) is None
    )
    text = capsys.readouterr().out
    names = ["win-upload", "win-prereqs", "win-lfs", "win-conda-env", "win-pip-lock"]
    for n, name in enumerate(names, 5):
        assert f"{n:2}. {name} [windows]" in text
    assert "pip install ops\\cpp --force-reinstall" in text
    assert "import qlinear, RyzenAI" in text
    assert not any(isolated_cache.iterdir()) if isolated_cache.exists() else True


def test_remote_root_defaults(recipe: Recipe) -> None:
    assert winrun.remote_root(recipe, {}) is None
    assert winrun.remote_root(recipe, {"host": "localhost"}) is None
    assert winrun.remote_root(recipe, {"host": "npu-01"}) == f"C:\\npulab\\build\\{recipe.name}"
    assert winrun.remote_root(recipe, {"host": "npu-01", "remote_root": "D:\\b"}) == "D:\\b"


def test_unknown_host_fails_before_staging(
    project_root: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match=r"no host 'phx-1' \(did you mean 'phx-01'\?\)"):
        run_build(DEFAULT_RECIPE, target="windows", extra={"host": "phx-1"})
    with pytest.raises(ConfigError, match="no host 'phx-1'"):
        run_build(DEFAULT_RECIPE, target="windows", dry_run=True, extra={"host": "phx-1"})
    monkeypatch.delenv("NPULAB_WINRM_USER", raising=False)
    monkeypatch.delenv("NPULAB_WINRM_PASSWORD", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(isolated_cache / "no-config"))
    monkeypatch.setenv("HOME", str(isolated_cache / "no-home"))
    with pytest.raises(ConfigError, match="no WinRM user for host 'phx-01'"):
        run_build(DEFAULT_RECIPE, target="windows", extra={"host": "phx-01"})
    assert not paths.build_root().exists(), "nothing staged"


def test_step_log_streams_or_falls_back_and_timeouts_keep_output(
    recipe: Recipe, tmp_path: Path, fake: list[FakeTransport]
) -> None:
    out = tmp_path / "b"
    fake[0].state["stream"] = False  # a transport that returns output only at the end
    _run(recipe, out, {}, fake)
    assert (
        (out / "logs" / "conda-env.log")
        .read_text()
        .endswith("ran conda-env.cmd\n--- exit code 0\n")
    )
    conda_env = winsteps.STEPS_BY_NAME["win-conda-env"]
    assert fake[0].state["timeouts"]["conda-env.cmd"] == conda_env.timeout
    _fresh(fake)
    fake[0].state["stamps"].clear()
    fake[0].state["hang"] = {"conda-env.cmd"}
    with pytest.raises(BuildStepError, match=r"win-conda-env on fake-npu: .*timed out") as err:
        _run(recipe, out, {}, fake)
    log_text = (out / "logs" / "conda-env.log").read_text()
    assert "half of the work\n--- stopped: [fake-npu] command timed out after 3600.0s" in log_text
    assert str(out / "logs" / "conda-env.log") in str(err.value)


def test_windows_steps_refuse_a_non_windows_machine(recipe: Recipe, tmp_path: Path) -> None:
    from npulab.transport.local import LocalTransport

    with pytest.raises(BuildStepError, match="win-prereqs runs on Windows; local is ") as err:
        _run(recipe, tmp_path / "b", {}, transport=LocalTransport())
    assert "invoke build --host NAME" in str(err.value.hint)
    assert not (tmp_path / "b" / "logs").exists(), "nothing was started"


def test_target_windows_here_fails_before_staging_off_windows(
    project_root: Path, isolated_cache: Path
) -> None:
    if sys.platform == "win32":
        pytest.skip("this machine is Windows: --target windows runs here")
    with pytest.raises(ConfigError, match="--target windows runs the Windows steps on this"):
        run_build(DEFAULT_RECIPE, target="windows")
    with pytest.raises(ConfigError, match="--target windows"):
        run_build(DEFAULT_RECIPE, target="windows", extra={"host": "localhost"})
    assert not paths.build_root().exists(), "nothing staged"


@pytest.mark.parametrize("root", ["C:\\R&D\\b", "D:\\npu (x86)\\b", "C:\\100%\\b"])
def test_a_build_folder_cmd_c_cannot_carry_is_refused_before_upload(
    recipe: Recipe, tmp_path: Path, fake: list[FakeTransport], root: str
) -> None:
    """Finding 4 (issue 17): cmd /c "<root>\\scripts\\NN.cmd" would split such a path."""
    with pytest.raises(BuildStepError, match="cannot start from remote_root") as err:
        _run(recipe, tmp_path / "b", {"host": "npu-01", "remote_root": root}, fake)
    assert "win-upload" in str(err.value) or "cmd /c" in str(err.value)
    assert [u for t in fake[1:] for u in t.uploads] == []
    assert _ran(fake) == []
