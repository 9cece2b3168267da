"""The stamped Windows steps run through a model of cmd.exe: skip when up to date, run and stamp
otherwise, invalidate the steps built on them, and never leave a stamp after a failure.

The model (:class:`Cmd`) knows exactly the commands our templates use and cmd.exe's ERRORLEVEL
rules for them (findstr 0/1; VER, TYPE, MKDIR clear it on success; ECHO, IF, GOTO, SET keep it;
programs set their exit code); anything else is an error, so a template change that uses a
command the model does not know fails here instead of passing silently.
"""

from __future__ import annotations

import ntpath
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from npulab.recipe import DEFAULT_RECIPE, Recipe, load_recipe
from npulab.windows import steps as winsteps
from npulab.windows.steps import TreeFacts
from tests.winemu import phase1, split_argv

Program = Callable[[list[str]], int]
STATE = "C:\\b\\.npulab-win"


class Cmd:
    """One machine: files by normalized path, directories, and what programs return."""

    def __init__(self, programs: dict[str, int] | None = None) -> None:
        self.files: dict[str, str] = {}
        self.dirs: set[str] = {"c:\\b", "c:\\b\\scripts"}
        self.programs = programs or {}
        self.ran: list[list[str]] = []
        self.printed: list[str] = []

    @staticmethod
    def _norm(path: str) -> str:
        return ntpath.normpath(path).lower()

    def stamp(self, name: str) -> str | None:
        return self.files.get(self._norm(f"{STATE}\\{name}.stamp"))

    def run(self, text: str, env: dict[str, str] | None = None) -> int:
        lines = text.split("\r\n")
        labels = {ln[1:]: i for i, ln in enumerate(lines) if ln.startswith(":")}
        self.env = {"~dp0": "C:\\b\\scripts\\", "USERPROFILE": "C:\\Users\\lab", **(env or {})}
        self.errorlevel = 0
        pc = 0
        while pc < len(lines):
            raw = lines[pc]
            pc += 1
            if not raw or raw.startswith((":", "rem ")) or raw == "@echo off":
                continue
            line = phase1(raw, env={**self.env, "errorlevel": str(self.errorlevel)}, batch=True)
            jump = self._line(line, labels)
            if isinstance(jump, tuple):
                return jump[1]
            if jump is not None:
                pc = jump
        return self.errorlevel

    def _line(self, line: str, labels: dict[str, int]) -> int | tuple[str, int] | None:
        m = re.fullmatch(r"if (not )?errorlevel 1 (.*)", line)
        if m:
            if (self.errorlevel >= 1) != bool(m.group(1)):
                return self._line(m.group(2), labels)
            return None
        m = re.fullmatch(r'if (not )?exist "([^"]*)" (.*)', line)
        if m:
            path = self._norm(m.group(2))
            if (path in self.files or path in self.dirs) != bool(m.group(1)):
                return self._line(m.group(3), labels)
            return None
        m = re.fullmatch(r"if not defined (\S+) (.*)", line)
        if m:
            return None if m.group(1) in self.env else self._line(m.group(2), labels)
        m = re.fullmatch(r"exit /b (\d+)", line)
        if m:
            return ("exit", int(m.group(1)))
        m = re.fullmatch(r"goto :(\w+)", line)
        if m:
            return labels[m.group(1)]
        m = re.fullmatch(r'set "([^=]+)=(.*)"', line)
        if m:
            self.env[m.group(1)] = m.group(2)
            return None
        m = re.fullmatch(r'findstr /x /c:(\S+) "([^"]*)" >nul 2>nul', line)
        if m:
            text = self.files.get(self._norm(m.group(2)))
            found = text is not None and m.group(1) in text.splitlines()
            self.errorlevel = 0 if found else 1
            return None
        m = re.fullmatch(r'type nul >"([^"]*)"', line)
        if m:
            self._write(m.group(1), "")
            return None
        m = re.fullmatch(r'>"([^"]*)" echo (.*)', line)
        if m:
            self._write(m.group(1), m.group(2) + "\r\n")
            return None
        m = re.fullmatch(r'mkdir "([^"]*)"', line)
        if m:
            self.dirs.add(self._norm(m.group(1)))
            self.errorlevel = 0
            return None
        if line in ("ver >nul", "chcp 65001 >nul"):
            self.errorlevel = 0
            return None
        if line.startswith("echo "):
            self.printed.append(line[5:])
            return None
        if line.startswith("for /f ") and "vswhere" in line:
            self.env["NPULAB_VS"] = "C:\\VS\\2019\\BuildTools"
            return None
        if line.startswith("cd /d "):
            self.errorlevel = 0
            return None
        argv = split_argv(line.removeprefix("call "))
        name = ntpath.basename(argv[0]).lower()
        if name not in ("conda.bat", "python", "vcvars64.bat", "setup.bat"):
            msg = f"the model does not know {line!r}"
            raise AssertionError(msg)
        self.ran.append([name, *argv[1:]])
        self.errorlevel = self.programs.get(" ".join([name, *argv[1:3]]), 0)
        return None

    def _write(self, path: str, text: str) -> None:
        norm = self._norm(path)
        if ntpath.dirname(norm) not in self.dirs:
            self.errorlevel = 1  # "The system cannot find the path specified."
            return
        self.files[norm] = text
        self.errorlevel = 0


@pytest.fixture
def recipe(project_root: Path) -> Recipe:
    return load_recipe(project_root / "recipes" / f"{DEFAULT_RECIPE}.yaml")


def scripts(recipe: Recipe, env_yaml: str = "a") -> dict[str, str]:
    facts = TreeFacts(env_file_sha256=env_yaml * 64, lock_sha256="1" * 64)
    return winsteps.render_scripts(recipe, facts)


def test_first_run_works_and_stamps_second_run_skips(recipe: Recipe) -> None:
    host = Cmd()
    conda = scripts(recipe)["03-conda-env.cmd"]
    assert host.run(conda) == 0
    assert host.ran == [
        ["conda.bat", "env", "create", "-n", "ryzenai-transformers", "-f",
         "C:\\b\\scripts\\..\\tree\\example\\transformers\\env.yaml"],
    ]  # fmt: skip
    assert host.stamp("conda-env") == winsteps.stamp_digest(conda) + "\r\n"
    host.ran.clear()
    assert host.run(conda) == 0
    assert host.ran == []
    assert host.printed[-1].startswith("conda-env: up to date")


def test_changed_input_reruns_and_invalidates_later_steps(recipe: Recipe) -> None:
    host = Cmd()
    first = scripts(recipe, env_yaml="a")
    for name in ("03-conda-env.cmd", "04-pip-lock.cmd", "05-ops-cpp.cmd"):
        assert host.run(first[name]) == 0, name
    host.ran.clear()
    changed = scripts(recipe, env_yaml="b")  # env.yaml's content changed
    assert changed["04-pip-lock.cmd"] == first["04-pip-lock.cmd"]
    assert host.run(changed["03-conda-env.cmd"]) == 0
    assert host.stamp("pip-lock") == ""
    assert host.stamp("ops-cpp") == ""
    # The pip and ops\cpp scripts did not change, yet they run again: the env under them did.
    assert host.run(changed["04-pip-lock.cmd"]) == 0
    assert host.run(changed["05-ops-cpp.cmd"]) == 0
    names = [r[0] for r in host.ran]
    assert names[0] == "conda.bat"
    assert names.count("python") == 3  # pip install, check-lock, pip install ops\cpp
    assert "setup.bat" in names


def test_failure_leaves_no_stamp_and_propagates_the_code(recipe: Recipe) -> None:
    host = Cmd(programs={"python -m pip": 13})
    s = scripts(recipe)
    assert host.run(s["03-conda-env.cmd"]) == 0
    assert host.run(s["04-pip-lock.cmd"]) == 13
    assert host.stamp("pip-lock") == ""
    assert host.ran[-1][:3] == ["python", "-m", "pip"]
    host.programs.clear()
    host.ran.clear()
    assert host.run(s["04-pip-lock.cmd"]) == 0, "the rerun does the work"
    assert ["python", "-m", "pip"] in [r[:3] for r in host.ran]
    assert host.stamp("pip-lock") == winsteps.stamp_digest(s["04-pip-lock.cmd"]) + "\r\n"


def test_drift_check_failure_stops_the_step(recipe: Recipe) -> None:
    host = Cmd(
        programs={
            "python C:\\b\\scripts\\check-lock.py C:\\b\\scripts\\" + Path(recipe.env.lock).name: 5
        }
    )
    s = scripts(recipe)
    assert host.run(s["04-pip-lock.cmd"]) == 5
    assert not host.stamp("pip-lock")


def test_the_model_sees_a_missing_errorlevel_reset(recipe: Recipe) -> None:
    """Without ``ver >nul`` the errorlevel 1 of a missed findstr would stop the step: the model
    reproduces that, which is why the template resets it."""
    text = scripts(recipe)["03-conda-env.cmd"].replace("ver >nul\r\n", "")
    host = Cmd()
    assert host.run(text) == 1
    assert host.ran == []
