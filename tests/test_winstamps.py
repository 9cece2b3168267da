"""The stamped Windows steps run through the cmd.exe model (tests/winemu.py): skip when up to
date, run and stamp otherwise, invalidate the steps built on them, and never leave a stamp after
a failure.

Every line of the rendered scripts goes through the model; the tools (conda, pip, vswhere,
vcvars64, setup.bat) are stub handlers. ``npulab-env.cmd`` is rendered too and runs where a step
calls it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from npulab.recipe import DEFAULT_RECIPE, Recipe, load_recipe
from npulab.windows import steps as winsteps
from npulab.windows.steps import TreeFacts
from tests.winemu import Cmd

BUILD = "C:\\b"
SCRIPTS = BUILD + "\\scripts"
STATE = BUILD + "\\.npulab-win"
VS = "C:\\VS\\2019\\BuildTools"


class Host:
    """One machine: the rendered scripts under C:\\b\\scripts, stub tools, what programs return."""

    def __init__(self, programs: dict[str, int] | None = None, vs: str | None = VS) -> None:
        self.programs = programs or {}
        self.ran: list[list[str]] = []
        self.vs = vs
        tree = BUILD + "\\tree\\example\\transformers"
        self.cmd = Cmd(
            env={
                "USERPROFILE": "C:\\Users\\lab",
                "PATH": "C:\\Windows",
                "ProgramFiles(x86)": "C:\\Program Files (x86)",
            },
            dirs={BUILD, SCRIPTS, tree},
            programs={
                "conda.bat": self._tool("conda.bat"),
                "python": self._tool("python"),
                "vcvars64.bat": self._tool("vcvars64.bat"),
                "setup.bat": self._tool("setup.bat"),
                "vswhere.exe": self._vswhere,
                # The NPU check of import-check.cmd: 0 (a started XDNA1 NPU) unless told.
                "powershell.exe": self._tool("powershell.exe"),
            },
        )

    def _tool(self, name: str):  # type: ignore[no-untyped-def]
        def run(cmd: Cmd, argv: list[str]) -> int:
            args = argv[1:]
            self.ran.append([name, *args])
            return self.programs.get(" ".join([name, *args[:2]]), 0)

        return run

    def _vswhere(self, cmd: Cmd, argv: list[str]) -> int:
        self.ran.append(["vswhere.exe", *argv[1:]])
        if self.vs and argv[argv.index("-version") + 1] == winsteps.VS_RANGE:
            cmd.out(self.vs)
        return 0

    @property
    def printed(self) -> list[str]:
        return [text for kind, text in self.cmd.events if kind == "stdout"]

    def stamp(self, name: str) -> str | None:
        return self.cmd.stamp(f"{STATE}\\{name}.stamp")

    def run(self, scripts: dict[str, str], name: str) -> int:
        for other, text in scripts.items():
            if other.endswith(".cmd"):
                self.cmd.files[self.cmd.norm(f"{SCRIPTS}\\{other}")] = text
        return self.cmd.run_batch(f"{SCRIPTS}\\{name}")


@pytest.fixture
def recipe(project_root: Path) -> Recipe:
    return load_recipe(project_root / "recipes" / f"{DEFAULT_RECIPE}.yaml")


def scripts(recipe: Recipe, env_yaml: str = "a") -> dict[str, str]:
    facts = TreeFacts(conda_env_sha256=env_yaml * 64, lock_sha256="1" * 64)
    return winsteps.render_scripts(recipe, facts)


def test_first_run_works_and_stamps_second_run_skips(recipe: Recipe) -> None:
    host = Host()
    s = scripts(recipe)
    conda = s["conda-env.cmd"]
    assert host.run(s, "conda-env.cmd") == 0
    assert host.ran == [
        ["conda.bat", "env", "create", "-n", "ryzenai-transformers", "-f",
         "C:\\b\\scripts\\env-conda.yaml"],
    ]  # fmt: skip
    assert host.stamp("conda-env") == winsteps.stamp_digest(conda) + "\r\n"
    host.ran.clear()
    assert host.run(s, "conda-env.cmd") == 0
    assert host.ran == []
    assert host.printed[-1].startswith("conda-env: up to date")


def test_changed_input_reruns_and_invalidates_later_steps(recipe: Recipe) -> None:
    host = Host()
    first = scripts(recipe, env_yaml="a")
    for name in ("conda-env.cmd", "pip-lock.cmd", "ops-cpp.cmd"):
        assert host.run(first, name) == 0, name
    host.ran.clear()
    changed = scripts(recipe, env_yaml="b")  # env.yaml's content changed
    assert changed["pip-lock.cmd"] == first["pip-lock.cmd"]
    assert host.run(changed, "conda-env.cmd") == 0
    assert host.stamp("pip-lock") == ""
    assert host.stamp("ops-cpp") == ""
    # The pip and ops\cpp scripts did not change, yet they run again: the env under them did.
    assert host.run(changed, "pip-lock.cmd") == 0
    assert host.run(changed, "ops-cpp.cmd") == 0
    names = [r[0] for r in host.ran]
    assert names[0] == "conda.bat"
    assert names.count("python") == 3  # pip install, check-lock, pip install ops\cpp
    assert "setup.bat" in names


def test_failure_leaves_no_stamp_and_propagates_the_code(recipe: Recipe) -> None:
    host = Host(programs={"python -m pip": 13})
    s = scripts(recipe)
    assert host.run(s, "conda-env.cmd") == 0
    assert host.run(s, "pip-lock.cmd") == 13
    assert host.stamp("pip-lock") == ""
    assert host.ran[-1][:3] == ["python", "-m", "pip"]
    host.programs.clear()
    host.ran.clear()
    assert host.run(s, "pip-lock.cmd") == 0, "the rerun does the work"
    assert ["python", "-m", "pip"] in [r[:3] for r in host.ran]
    assert host.stamp("pip-lock") == winsteps.stamp_digest(s["pip-lock.cmd"]) + "\r\n"


def test_drift_check_failure_stops_the_step(recipe: Recipe) -> None:
    host = Host(
        programs={
            "python C:\\b\\scripts\\check-lock.py C:\\b\\scripts\\" + Path(recipe.env.lock).name: 5
        }
    )
    s = scripts(recipe)
    assert host.run(s, "pip-lock.cmd") == 5
    assert not host.stamp("pip-lock")


def test_the_model_sees_a_missing_errorlevel_reset(recipe: Recipe) -> None:
    """Without ``ver >nul`` the errorlevel 1 of a missed findstr would stop the step: the model
    reproduces that, which is why the template resets it."""
    s = scripts(recipe)
    s["conda-env.cmd"] = s["conda-env.cmd"].replace("ver >nul\r\n", "")
    host = Host()
    assert host.run(s, "conda-env.cmd") == 1
    assert host.ran == []


def test_ops_cpp_finds_vs2019_through_vswhere_in_the_for_set(recipe: Recipe) -> None:
    """The for /f line runs vswhere with the range intact, and vcvars64 comes from its answer."""
    host = Host()
    s = scripts(recipe)
    assert host.run(s, "conda-env.cmd") == 0
    assert host.run(s, "ops-cpp.cmd") == 0
    vswhere = next(r for r in host.ran if r[0] == "vswhere.exe")
    assert vswhere[vswhere.index("-version") + 1] == "[16,17)"
    assert ["vcvars64.bat"] in host.ran
    calls = [argv for kind, argv in host.cmd.events if kind == "call"]
    assert any(argv[1] == VS + "\\VC\\Auxiliary\\Build\\vcvars64.bat" for argv in calls)


def test_ops_cpp_without_vs2019_exits_3(recipe: Recipe) -> None:
    host = Host(vs=None)
    s = scripts(recipe)
    assert host.run(s, "ops-cpp.cmd") == 3
    assert "vcvars64.bat" not in [r[0] for r in host.ran]
    assert not host.stamp("ops-cpp")


@pytest.mark.parametrize("fail", [False, True])
def test_every_step_gives_the_console_its_code_page_back(recipe: Recipe, fail: bool) -> None:
    """Success, skip and failure alike: the caller's console is on its own code page after."""
    programs = {"python -m pip": 13, "conda.bat env": 2} if fail else {}
    s = scripts(recipe)
    for name in [w.script for w in winsteps.WIN_STEPS if w.shell == "cmd"]:
        host = Host(programs=programs)
        host.run(s, name)
        assert host.cmd.codepage == "936", name


@pytest.mark.parametrize("before", [None, "E:\\mine"])
def test_npulab_env_cmd_adds_no_empty_pythonpath_entry(recipe: Recipe, before: str | None) -> None:
    """Finding 3 (issue 17): with PYTHONPATH unset, npulab-env.cmd left it ending in ';' (an
    empty entry: the current directory on sys.path)."""
    host = Host()
    if before is not None:
        host.cmd.env["PYTHONPATH"] = before
    seen: dict[str, str] = {}

    def python(cmd: Cmd, argv: list[str]) -> int:
        seen.update(cmd.env)
        return 0

    host.cmd.programs["python"] = python
    assert host.run(scripts(recipe), "import-check.cmd") == 0
    entries = seen["PYTHONPATH"].split(";")
    assert "" not in entries
    assert entries[0].endswith("\\models\\llama2")
    assert entries[-1] == (before or entries[-1])
    assert len(entries) == 10 + (before is not None)  # TVM_LIBRARY_PATH holds two


NO_NPU = "powershell.exe -NoProfile -NonInteractive"
IMPORT = "python -c import os, qlinear, RyzenAI; print(os.environ['DEVICE'], RyzenAI)"


@pytest.mark.parametrize(("python_rc", "said"), [(0, "the build imports"), (1, "fails as well")])
def test_import_check_without_the_npu_driver_exits_6(
    recipe: Recipe, python_rc: int, said: str
) -> None:
    """Documented exit 6 (docs/windows-build.md): no started XDNA1 NPU; the import is still
    tried, and the log says how it went."""
    host = Host(programs={NO_NPU: 1, IMPORT: python_rc})
    assert host.run(scripts(recipe), "import-check.cmd") == 6
    assert [r[0] for r in host.ran][-2:] == ["powershell.exe", "python"]
    printed = [text for stream, text in host.cmd.events if stream == "stdout"]
    assert any("no XDNA1 NPU with a started driver" in line for line in printed)
    assert any(said in line for line in printed)
    assert host.cmd.codepage == "936"


def test_import_check_with_the_npu_keeps_pythons_exit_code(recipe: Recipe) -> None:
    host = Host(programs={IMPORT: 1})
    assert host.run(scripts(recipe), "import-check.cmd") == 1
    assert Host().run(scripts(recipe), "import-check.cmd") == 0
    check = next(r for r in host.ran if r[0] == "powershell.exe")
    assert "PCI\\VEN_1022&DEV_1502*" in check[-1]
