"""The Windows step executor, driven through a scripted fake transport."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from npulab import build, manifest, plan, winrun
from npulab.cmd import Completed
from npulab.errors import BuildStepError
from npulab.patches import Series
from npulab.recipe import DEFAULT_RECIPE, Recipe, load_recipe
from npulab.sources import Origin
from npulab.workflow import run_build


class FakeTransport:
    """Answers each script run with the scripted exit code (default 0) and records calls."""

    def __init__(self, codes: dict[str, int] | None = None) -> None:
        self.codes = codes if codes is not None else {}
        self.calls: list[tuple[str, ...]] = []
        self.uploads: list[str] = []

    host = "fake-npu"
    is_windows = True

    def run(self, argv: Sequence[str], **kw: Any) -> Completed:
        self.calls.append(tuple(argv))
        script = argv[-1].replace("/", "\\").rsplit("\\", 1)[-1]
        code = self.codes.get(script, 0)
        return Completed(
            argv=tuple(argv),
            returncode=code,
            stdout=f"ran {script}\n",
            stderr="boom\n" if code else "",
        )

    def run_script(self, script: str, **kw: Any) -> Completed:
        msg = "steps upload and run files"
        raise AssertionError(msg)

    def put_file(self, local: Path, remote: str, *, dry_run: bool = False) -> None:
        assert local.is_file()
        self.uploads.append(remote)

    def get_file(self, remote: str, local: Path) -> None:
        msg = "not used"
        raise AssertionError(msg)


@pytest.fixture
def recipe(project_root: Path) -> Recipe:
    return load_recipe(project_root / "recipes" / f"{DEFAULT_RECIPE}.yaml")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeTransport]]:
    made: list[FakeTransport] = []
    codes: dict[str, int] = {}

    def factory(ctx: build.Context) -> FakeTransport:
        made.append(FakeTransport(codes))
        return made[-1]

    monkeypatch.setattr(winrun, "TRANSPORT", [factory])
    made.append(FakeTransport(codes))  # made[0].codes is the shared script of exit codes
    return made


def _windows_steps(recipe: Recipe, options: plan.Options) -> list[plan.Step]:
    return [s for s in plan.plan(recipe, options) if s.where == "windows"]


def _run(recipe: Recipe, out: Path, extra: dict[str, str]) -> dict[str, str]:
    """What build.run does for the Windows part: render, then each step via _run_step."""
    winrun.register_all()
    options = plan.Options(target="windows", extra=extra)
    ctx = build.Context(
        recipe=recipe,
        options=options,
        origin=Origin(location="test", chosen_by="test"),
        out=out,
        series=Series(directory=out, patches=()),
        previous=manifest.load(out),
        data={"steps": {}},
    )
    winrun.render_windows(recipe, ctx.tree, ctx.scripts)
    statuses = {}
    for step in _windows_steps(recipe, options):
        statuses[step.name] = build._run_step(ctx, step, build.RUNNERS[step.kind])
    manifest.save(out, ctx.data)
    return statuses


def _ran(made: list[FakeTransport]) -> list[str]:
    return [c[-1].replace("/", "\\").rsplit("\\", 1)[-1] for t in made[1:] for c in t.calls]


def test_failing_step_stops_with_log_and_exit_code(
    recipe: Recipe, tmp_path: Path, fake: list[FakeTransport]
) -> None:
    fake[0].codes["04-pip-lock.cmd"] = 7
    out = tmp_path / "b"
    out.mkdir()
    with pytest.raises(BuildStepError) as err:
        _run(recipe, out, {"remote_root": "C:\\npulab\\b"})
    log_path = out / "logs" / "04-pip-lock.log"
    assert "win-pip-lock" in str(err.value)
    assert "exit code 7" in str(err.value)
    assert str(log_path) in str(err.value)
    assert "boom" in log_path.read_text()
    assert "--- exit code 7" in log_path.read_text()
    assert _ran(fake) == ["01-prereqs.ps1", "02-lfs.cmd", "03-conda-env.cmd", "04-pip-lock.cmd"]
    assert fake[1].calls[0][:2] == ("powershell.exe", "-NoProfile")
    assert fake[2].calls[0][:4] == ("cmd.exe", "/d", "/v:off", "/c")
    assert "C:\\npulab\\b\\scripts\\02-lfs.cmd" in fake[2].uploads
    saved = manifest.load(out)
    assert saved["steps"]["win-conda-env"]["status"] == "done"
    assert saved["steps"]["win-pip-lock"]["status"] == "failed"


def test_rerun_resumes_after_last_good_step(
    recipe: Recipe, tmp_path: Path, fake: list[FakeTransport]
) -> None:
    out = tmp_path / "b"
    out.mkdir()
    fake[0].codes["05-ops-cpp.cmd"] = 2
    with pytest.raises(BuildStepError, match="exit code 2"):
        _run(recipe, out, {})
    del fake[1:]
    fake[0].codes.clear()
    statuses = _run(recipe, out, {})
    assert _ran(fake) == ["05-ops-cpp.cmd", "06-import-check.cmd"]
    assert statuses["win-prereqs"] == "up-to-date"
    assert statuses["win-ops-cpp"] == "done"
    # A changed input (here: the rendered lock script) re-runs exactly that step.
    del fake[1:]
    changed = recipe.__class__(
        **{
            **recipe.__dict__,
            "env": recipe.env.__class__(
                **{**recipe.env.__dict__, "lock": "recipes/locks/other.txt"}
            ),
        }
    )
    _run(changed, out, {})
    assert _ran(fake) == ["04-pip-lock.cmd"]


def test_local_run_uploads_nothing(
    recipe: Recipe, tmp_path: Path, fake: list[FakeTransport]
) -> None:
    out = tmp_path / "b"
    out.mkdir()
    _run(recipe, out, {})
    assert all(not t.uploads for t in fake)
    assert fake[1].calls[0][-1] == str(out / "scripts" / "01-prereqs.ps1")


def test_dry_run_runs_nothing(
    project_root: Path,
    isolated_cache: Path,
    capsys: pytest.CaptureFixture[str],
    fake: list[FakeTransport],
) -> None:
    assert run_build(DEFAULT_RECIPE, target="windows", dry_run=True, extra={"host": "x"}) is None
    text = capsys.readouterr().out
    for n, name in enumerate(["win-prereqs", "win-lfs", "win-conda-env", "win-pip-lock"], 5):
        assert f"{n:2}. {name} [windows]" in text
    assert "pip install ops\\cpp --force-reinstall" in text
    assert "import qlinear, RyzenAI" in text
    assert len(fake) == 1
    assert not fake[0].calls
    assert not any(isolated_cache.iterdir()) if isolated_cache.exists() else True


def test_remote_root_defaults(recipe: Recipe) -> None:
    assert winrun.remote_root(recipe, {}) is None
    assert winrun.remote_root(recipe, {"host": "localhost"}) is None
    assert winrun.remote_root(recipe, {"host": "npu-01"}) == f"C:\\npulab\\build\\{recipe.name}"
    assert winrun.remote_root(recipe, {"host": "npu-01", "remote_root": "D:\\b"}) == "D:\\b"
