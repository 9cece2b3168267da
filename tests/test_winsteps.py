"""The Windows build steps: plan, rendered scripts and their static rules."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import tree_sitter
import tree_sitter_powershell

from npulab import plan, winsteps
from npulab.recipe import DEFAULT_RECIPE, Lfs, Recipe, load_recipe
from npulab.winscript import CRLF, check_cmd
from tests.winemu import phase1, phase2, split_argv

PS = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))

WIN_NAMES = [
    "win-prereqs",
    "win-lfs",
    "win-conda-env",
    "win-pip-lock",
    "win-ops-cpp",
    "win-import-check",
]


@pytest.fixture
def recipe(project_root: Path) -> Recipe:
    return load_recipe(project_root / "recipes" / f"{DEFAULT_RECIPE}.yaml")


def _bad_nodes(text: str) -> list[str]:
    out = []
    stack = [PS.parse(text.encode()).root_node]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            out.append(f"{node.type} at {node.start_point}")
        stack.extend(node.children)
    return out


def test_windows_plan_exact_order(recipe: Recipe) -> None:
    steps = plan.plan(recipe, plan.Options(target="windows"))
    names = [s.name for s in steps]
    assert names == ["fetch", "verify", "patch", "render", *WIN_NAMES, "manifest"]
    win = [s for s in steps if s.where == "windows"]
    assert [s.kind for s in win] == ["winscript"] * 6
    assert [s.inputs for s in win] == [
        ("winscript:01-prereqs.ps1",),
        ("winscript:02-lfs.cmd",),
        ("winscript:03-conda-env.cmd",),
        ("winscript:04-pip-lock.cmd",),
        ("winscript:05-ops-cpp.cmd",),
        ("winscript:06-import-check.cmd",),
    ]
    assert not [s for s in plan.plan(recipe, plan.Options()) if s.where == "windows"]


def test_step_commands(recipe: Recipe) -> None:
    s = winsteps.render_scripts(recipe)
    assert (
        "-version '[16,17)' -requires 'Microsoft.VisualStudio.Component.VC.Tools.x86.x64'"
        in (s["01-prereqs.ps1"])
    )
    assert "LongPathsEnabled" in s["01-prereqs.ps1"]
    assert (
        "git lfs pull --include example/transformers/third_party/**,"
        "example/transformers/dll/phx/**\r\nif errorlevel 1" in s["02-lfs.cmd"]
    )
    assert "env create -n ryzenai-transformers -f" in s["03-conda-env.cmd"]
    assert "env update -n ryzenai-transformers -f" in s["03-conda-env.cmd"]
    assert 'set "NPULAB_ENV_FILE=example\\transformers\\env.yaml"' in s["03-conda-env.cmd"]
    assert "pip install --require-hashes --no-deps -r" in s["04-pip-lock.cmd"]
    assert Path(recipe.env.lock).name in s["04-pip-lock.cmd"]
    ops = s["05-ops-cpp.cmd"].split(CRLF)
    order = [
        next(i for i, line in enumerate(ops) if needle in line)
        for needle in ("vswhere", "vcvars64.bat", "activate", "call setup.bat", "ops\\cpp")
    ]
    assert order == sorted(order), "VS env, conda, setup.bat, then ops\\cpp in one session"
    assert "python -m pip install ops\\cpp --force-reinstall" in ops
    check = s["06-import-check.cmd"].split(CRLF)
    env_at = next(i for i, line in enumerate(check) if "npulab-env.cmd" in line)
    imp_at = next(i for i, line in enumerate(check) if "import os, qlinear, RyzenAI" in line)
    assert env_at < imp_at


def test_runtime_env_sets_exactly(recipe: Recipe) -> None:
    env = dict(winsteps.runtime_env(recipe))
    assert list(env) == [
        "DEVICE",
        "PYTORCH_AIE_PATH",
        "THIRD_PARTY",
        "TVM_LIBRARY_PATH",
        "XRT_PATH",
        "PATH",
        "PYTHONPATH",
    ]
    assert env["DEVICE"] == "phx"
    assert env["PATH"].startswith("%THIRD_PARTY%\\xrt-ipu\\xrt;%TVM_LIBRARY_PATH%;")
    pp = env["PYTHONPATH"].split(";")
    assert pp[0] == "%PYTORCH_AIE_PATH%\\models\\llama2"
    assert "%PYTORCH_AIE_PATH%\\ops\\python" in pp
    assert "%THIRD_PARTY%" in pp
    assert pp[-1] == "%PYTHONPATH%"
    text = winsteps.render_scripts(recipe)["npulab-env.cmd"]
    sets = [line for line in text.split(CRLF) if line.startswith("set ")]
    assert [line.split("=")[0] for line in sets] == [f'set "{k}' for k in env]


def _digests(recipe: Recipe) -> dict[str, str]:
    return {
        k: hashlib.sha256(v.encode()).hexdigest()
        for k, v in winsteps.render_scripts(recipe).items()
    }


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda r: {"env": dataclasses.replace(r.env, lock="recipes/locks/other.txt")},
            {"04-pip-lock.cmd"},
        ),
        (
            lambda r: {"upstream": dataclasses.replace(r.upstream, lfs=Lfs(include=("x/**",)))},
            {"02-lfs.cmd"},
        ),
        (
            lambda r: {"env": dataclasses.replace(r.env, env_file="a/env.yaml")},
            {"03-conda-env.cmd"},
        ),
        (
            lambda r: {"env": dataclasses.replace(r.env, name="other-env")},
            {"03-conda-env.cmd", "04-pip-lock.cmd", "05-ops-cpp.cmd", "06-import-check.cmd"},
        ),
        (
            lambda r: {"upstream": dataclasses.replace(r.upstream, subdir="a/b")},
            {"05-ops-cpp.cmd", "npulab-env.cmd", "npulab-env.ps1"},
        ),
    ],
)
def test_changed_key_changes_exactly(recipe: Recipe, change, expected) -> None:  # type: ignore[no-untyped-def]
    before = _digests(recipe)
    after = _digests(dataclasses.replace(recipe, **change(recipe)))
    assert {k for k in before if before[k] != after[k]} == expected


def test_ps1_parse_clean(recipe: Recipe) -> None:
    ps1 = {k: v for k, v in winsteps.render_scripts(recipe).items() if k.endswith(".ps1")}
    assert set(ps1) == {"01-prereqs.ps1", "npulab-env.ps1"}
    for name, text in ps1.items():
        assert _bad_nodes(text) == [], name


def test_ps1_checker_sees_a_broken_script() -> None:
    assert _bad_nodes("if ($x -eq 1) {\r\n  Write-Output 'a'\r\n") != []
    assert _bad_nodes("$env:A = 'x' +\r\n") != []


def test_cmd_rules_hold(recipe: Recipe) -> None:
    cmds = {k: v for k, v in winsteps.render_scripts(recipe).items() if k.endswith(".cmd")}
    assert len(cmds) == 6
    for name, text in cmds.items():
        assert check_cmd(text, name=name) == [], name
        assert text.startswith("@echo off\r\nchcp 65001 >nul\r\nif errorlevel 1")


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        (
            "@echo off\r\ngit lfs pull\r\nif errorlevel 1 exit /b 1\r\n".replace("\r\n", "\n"),
            "CRLF",
        ),
        ("git lfs pull\r\nif errorlevel 1 exit /b 1\r\n", "@echo off"),
        ("@echo off\r\ngit lfs pull\r\npython x.py\r\nif errorlevel 1 exit /b 1\r\n", "errorlevel"),
        ("@echo off\r\necho a & del x\r\nif errorlevel 1 exit /b 1\r\n", "unquoted &"),
        ("@echo off\r\ngit clone x a&b\r\nif errorlevel 1 exit /b 1\r\n", "unquoted &"),
        ("@echo off\r\npython 100%done\r\nif errorlevel 1 exit /b 1\r\n", "unescaped %"),
    ],
)
def test_cmd_checker_fails_broken(broken: str, problem: str) -> None:
    assert any(problem in p for p in check_cmd(broken)), check_cmd(broken)


def test_hostile_data_is_quoted(recipe: Recipe) -> None:
    hostile = Lfs(include=("a&b/**", "100%/x", "^(y)|z"))
    r = dataclasses.replace(recipe, upstream=dataclasses.replace(recipe.upstream, lfs=hostile))
    text = winsteps.render_scripts(r)["02-lfs.cmd"]
    assert check_cmd(text) == []
    line = next(x for x in text.split(CRLF) if x.startswith("git lfs pull"))
    assert line == "git lfs pull --include a^&b/**,100%%/x,^^^(y^)^|z"
    with pytest.raises(ValueError, match="plain name"):
        winsteps.render_scripts(dataclasses.replace(r, env=dataclasses.replace(r.env, name="a&b")))


def test_hostile_lfs_line_reaches_git_intact(recipe: Recipe) -> None:
    include = ("a&b/**", "100%/x", "^(y)|z", 'sp ace/"q"')
    r = dataclasses.replace(
        recipe, upstream=dataclasses.replace(recipe.upstream, lfs=Lfs(include=include))
    )
    text = winsteps.render_scripts(r)["02-lfs.cmd"]
    line = next(x for x in text.split(CRLF) if x.startswith("git lfs pull"))
    argv = split_argv(phase2(phase1(line, env={"PATH": "C:\\x"}, batch=True)))
    assert argv == ["git", "lfs", "pull", "--include", ",".join(include)]


def test_lfs_step_refuses_pointer_files(recipe: Recipe) -> None:
    lines = winsteps.render_scripts(recipe)["02-lfs.cmd"].split(CRLF)
    required = recipe.upstream.lfs.required
    assert required
    for path in required:
        at = lines.index(f'set "NPULAB_F={path.replace("/", chr(92))}"')
        assert lines[at + 1].startswith(
            'findstr /b /c:"version https://git-lfs.github.com/spec/v1"'
        )
        assert lines[at + 2] == "if not errorlevel 1 exit /b 4"
