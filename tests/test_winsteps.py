"""The Windows build steps: plan, rendered scripts and their static rules."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import tomllib
from pathlib import Path

import pytest

from npulab.build import plan
from npulab.recipe import DEFAULT_RECIPE, Lfs, Recipe, load_recipe
from npulab.windows import steps as winsteps
from npulab.windows import upload as winupload
from npulab.windows.lfs import LfsObject
from npulab.windows.script import CRLF, ScriptTemplate, check_cmd
from npulab.windows.steps import TreeFacts
from tests.pwsh import bad_nodes, string_values

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


def _pointer(data: bytes) -> str:
    oid = hashlib.sha256(data).hexdigest()
    return LfsObject(path="", oid=oid, size=len(data), required=False).pointer_text()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A staged tree with what the scripts read: env.yaml, setup.bat, ops\\cpp, LFS pointers."""
    files = {
        "example/transformers/env.yaml": "name: ryzenai-transformers\n",
        "example/transformers/setup.bat": "@echo off\r\n",
        "example/transformers/ops/cpp/setup.py": "# build\n",
        "example/transformers/third_party/lib/tvm_ipu.dll": _pointer(b"tvm"),
        "example/transformers/dll/phx/qlinear/libGemm.dll": _pointer(b"gemm"),
        "example/transformers/ext/smoothquant/act_scales/opt.pt": _pointer(b"scales"),
    }
    for rel, text in files.items():
        (tmp_path / "tree" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tree" / rel).write_text(text)
    return tmp_path / "tree"


def test_windows_plan_exact_order(recipe: Recipe) -> None:
    steps = plan.plan(recipe, plan.Options(target="windows"))
    names = [s.name for s in steps]
    assert names == ["fetch", "verify", "patch", "render", *WIN_NAMES, "manifest"]
    win = [s for s in steps if s.where == "windows"]
    assert [s.kind for s in win] == [
        "wincheck",
        "wincheck",
        "winscript",
        "winscript",
        "winscript",
        "wincheck",
    ]
    assert [s.inputs for s in win] == [
        ("winscript:prereqs.ps1",),
        ("winscript:lfs.ps1",),
        ("winscript:conda-env.cmd",),
        ("winscript:pip-lock.cmd",),
        ("winscript:ops-cpp.cmd",),
        ("winscript:import-check.cmd",),
    ]
    assert not [s for s in plan.plan(recipe, plan.Options()) if s.where == "windows"]
    # A remote host gets the staged tree and scripts first.
    remote = plan.plan(recipe, plan.Options(target="windows", extra={"host": "npu-01"}))
    win = [s for s in remote if s.where == "windows"]
    assert [s.name for s in win] == ["win-upload", *WIN_NAMES]
    assert win[0].kind == "winupload"
    assert f"npu-01:C:\\npulab\\build\\{recipe.name}" in win[0].description


def test_step_commands(recipe: Recipe, tree: Path) -> None:
    s = winsteps.render_scripts(recipe, TreeFacts.read(recipe, tree))
    assert (
        "-version '[16,17)' -requires 'Microsoft.VisualStudio.Component.VC.Tools.x86.x64'"
        in (s["prereqs.ps1"])
    )
    assert "LongPathsEnabled" in s["prereqs.ps1"]
    lfs = string_values(s["lfs.ps1"])
    assert "example\\transformers\\third_party\\lib\\tvm_ipu.dll" in lfs
    assert "example\\transformers\\dll\\phx\\qlinear\\libGemm.dll" in lfs
    assert not [v for v in lfs if "smoothquant" in v], "not under upstream.lfs.include"
    assert recipe.upstream.repo_url in lfs
    assert "env create -n ryzenai-transformers -f" in s["conda-env.cmd"]
    assert "env update -n ryzenai-transformers -f" in s["conda-env.cmd"]
    # conda reads the conda part written beside the scripts, never the whole env.yaml
    assert 'set "NPULAB_ENV_FILE=%~dp0env-conda.yaml"' in s["conda-env.cmd"]
    conda_sha = hashlib.sha256(s["env-conda.yaml"].encode()).hexdigest()
    assert f"rem input: conda part of env.yaml sha256 {conda_sha}" in s["conda-env.cmd"]
    assert "pip install --require-hashes --no-deps -r" in s["pip-lock.cmd"]
    assert Path(recipe.env.lock).name in s["pip-lock.cmd"]
    assert 'python "%~dp0check-lock.py" "%~dp0%NPULAB_LOCK%"' in s["pip-lock.cmd"]
    assert s["check-lock.py"] == (Path(winsteps.__file__).parent / "check_lock.py").read_text()
    ops = s["ops-cpp.cmd"].split(CRLF)
    order = [
        next(i for i, line in enumerate(ops) if needle in line)
        for needle in ("vswhere", "vcvars64.bat", "activate", "call setup.bat", "pip install ops")
    ]
    assert order == sorted(order), "VS env, conda, setup.bat, then ops\\cpp in one session"
    assert "python -m pip install ops\\cpp --force-reinstall --no-deps" in ops
    check = s["import-check.cmd"].split(CRLF)
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
    names = [m.group(1) for m in re.finditer(r'set "(\w+)=', text)]
    assert list(dict.fromkeys(names)) == list(env)


def _digests(recipe: Recipe, tree: Path) -> dict[str, str]:
    return {
        k: hashlib.sha256(v.encode()).hexdigest()
        for k, v in winsteps.render_scripts(recipe, TreeFacts.read(recipe, tree)).items()
    }


LOCK_SCRIPT = "pip-lock.cmd"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda r: {"env": dataclasses.replace(r.env, lock="recipes/locks/other.txt")},
            {LOCK_SCRIPT},
        ),
        (
            lambda r: {"upstream": dataclasses.replace(r.upstream, lfs=Lfs(include=("x/**",)))},
            {"lfs.ps1"},
        ),
        (
            lambda r: {"upstream": dataclasses.replace(r.upstream, repo_url="https://m/r.git")},
            {"lfs.ps1"},
        ),
        (
            lambda r: {"env": dataclasses.replace(r.env, env_file="a/env.yaml")},
            {"conda-env.cmd", "env-conda.yaml"},
        ),
        (
            lambda r: {"env": dataclasses.replace(r.env, name="other-env")},
            {"conda-env.cmd", LOCK_SCRIPT, "ops-cpp.cmd", "import-check.cmd"},
        ),
        (
            lambda r: {"upstream": dataclasses.replace(r.upstream, subdir="a/b")},
            {"ops-cpp.cmd", "npulab-env.cmd", "npulab-env.ps1"},
        ),
    ],
)
def test_changed_key_changes_exactly(recipe: Recipe, tree: Path, change, expected) -> None:  # type: ignore[no-untyped-def]
    before = _digests(recipe, tree)
    after = _digests(dataclasses.replace(recipe, **change(recipe)), tree)
    assert {k for k in before if before[k] != after[k]} == expected


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("example/transformers/env.yaml", {"conda-env.cmd", "env-conda.yaml"}),
        ("example/transformers/ops/cpp/setup.py", {"ops-cpp.cmd"}),
        ("example/transformers/setup.bat", {"ops-cpp.cmd"}),
        ("example/transformers/third_party/lib/tvm_ipu.dll", {"lfs.ps1"}),
        ("example/transformers/models/llama2/modeling_llama_amd.py", set()),
    ],
)
def test_changed_tree_file_changes_exactly(
    recipe: Recipe, tree: Path, edit: str, expected: set[str]
) -> None:
    before = _digests(recipe, tree)
    path = tree / edit
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_pointer(b"new") if edit.endswith(".dll") else "changed: 1\n")
    after = _digests(recipe, tree)
    assert {k for k in before if before[k] != after[k]} == expected


def test_changed_lock_content_changes_the_pip_step(
    recipe: Recipe, tree: Path, tmp_path: Path
) -> None:
    lock = tmp_path / "lock.txt"
    lock.write_text("a==1\n")
    r = dataclasses.replace(recipe, env=dataclasses.replace(recipe.env, lock=str(lock)))
    before = _digests(r, tree)
    lock.write_text("a==2\n")
    after = _digests(r, tree)
    assert {k for k in before if before[k] != after[k]} == {LOCK_SCRIPT}


def _all_ps1(recipe: Recipe, tree: Path) -> dict[str, str]:
    hostile_root = "D:\\it's $(boom)\\`b`\\a&b %x%"
    archive = winupload.Archive(
        path=tree, sha256="f" * 64, size=1, parts=(("ffff.000", "0" * 64), ("ffff.001", "1" * 64))
    )
    scripts = {
        k: v
        for k, v in winsteps.render_scripts(recipe, TreeFacts.read(recipe, tree)).items()
        if k.endswith(".ps1")
    }
    scripts["upload-state"] = winupload.state_ps1(hostile_root)
    scripts["upload-expand"] = winupload.expand_ps1(hostile_root, archive)
    scripts["stamp-read"] = winsteps.stamp_read_ps1(hostile_root, "ops-cpp.stamp")
    return scripts


def test_ps1_parse_clean(recipe: Recipe, tree: Path) -> None:
    ps1 = _all_ps1(recipe, tree)
    assert set(ps1) == {
        "prereqs.ps1",
        "lfs.ps1",
        "npulab-env.ps1",
        "upload-state",
        "upload-expand",
        "stamp-read",
    }
    for name, text in ps1.items():
        assert bad_nodes(text) == [], name
        assert "\n" not in text.replace("\r\n", ""), name
    for name in ("upload-state", "upload-expand", "stamp-read"):
        assert "D:\\it's $(boom)\\`b`\\a&b %x%" in string_values(ps1[name]), name


def test_ps1_checker_sees_a_broken_script() -> None:
    assert bad_nodes("if ($x -eq 1) {\r\n  Write-Output 'a'\r\n") != []
    assert bad_nodes("$env:A = 'x' +\r\n") != []


CMD_NAMES = [
    "conda-env.cmd",
    "pip-lock.cmd",
    "ops-cpp.cmd",
    "import-check.cmd",
    "npulab-env.cmd",
]


@pytest.mark.parametrize("name", CMD_NAMES)
def test_cmd_rules_hold(recipe: Recipe, tree: Path, name: str) -> None:
    scripts = winsteps.render_scripts(recipe, TreeFacts.read(recipe, tree))
    assert len([k for k in scripts if k.endswith(".cmd")]) == len(CMD_NAMES)
    text = scripts[name]
    assert check_cmd(text, name=name) == [], name
    assert text.startswith("@echo off\r\n")


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
        (
            "@echo off\r\nfor /f %%i in ('vswhere -version [16^,17)') do set \"V=%%i\"\r\n"
            "if errorlevel 1 exit /b 1\r\n",
            "unescaped ) inside a FOR set",
        ),
        (
            "@echo off\r\nfor /f %%i in ('vswhere -version [16,17^)') do set \"V=%%i\"\r\n"
            "if errorlevel 1 exit /b 1\r\n",
            "unescaped , inside a FOR /F",
        ),
        ("@echo off\r\nif defined X (\r\n  echo a\r\n", "never closed"),
    ],
)
def test_cmd_checker_fails_broken(broken: str, problem: str) -> None:
    assert any(problem in p for p in check_cmd(broken)), check_cmd(broken)


def test_cmd_checker_passes_escaped_for_sets_and_closed_blocks() -> None:
    ok = (
        '@echo off\r\nfor /f "usebackq delims=" %%i in (`"%P%" -version [16^,17^)`) do '
        'set "V=%%i"\r\nif errorlevel 1 exit /b 1\r\nif defined V (\r\n  echo %V%\r\n)\r\n'
    )
    assert [p for p in check_cmd(ok) if "errorlevel check" not in p] == []


def test_hostile_data_is_quoted(recipe: Recipe, tree: Path) -> None:
    hostile = "x&y/%PATH%/it's"
    r = dataclasses.replace(recipe, env=dataclasses.replace(recipe.env, env_file=hostile))
    rendered = winsteps.render_scripts(r, TreeFacts.read(r, tree))
    text = rendered["conda-env.cmd"]
    assert check_cmd(text) == []
    # the env file's path never reaches a script: its conda part is a file beside them
    assert not [k for k, v in rendered.items() if k.endswith(".cmd") and "x&y" in v]
    assert 'set "NPULAB_ENV_FILE=%~dp0env-conda.yaml"' in text.split(CRLF)
    with pytest.raises(ValueError, match="plain name"):
        winsteps.render_scripts(dataclasses.replace(r, env=dataclasses.replace(r.env, name="a&b")))


def test_stamps_skip_and_invalidate_later_steps(recipe: Recipe, tree: Path) -> None:
    """A stamped step checks its stamp first; when it runs it empties its own stamp and those of
    the steps built on it, so they run too, and writes its digest only at the end."""
    scripts = winsteps.render_scripts(recipe, TreeFacts.read(recipe, tree))
    emptied = {}
    for name in ("conda-env.cmd", LOCK_SCRIPT, "ops-cpp.cmd"):
        lines = scripts[name].split(CRLF)
        digest = winsteps.stamp_digest(scripts[name])
        assert digest is not None
        check = next(i for i, x in enumerate(lines) if x.startswith("findstr /x /c:"))
        assert lines[check + 1] == "if not errorlevel 1 goto :uptodate"
        assert lines[check + 2 : check + 4] == ["ver >nul", "if errorlevel 1 exit /b %errorlevel%"]
        emptied[name] = [x.split("\\")[-1].rstrip('"') for x in lines if x.startswith("type nul >")]
        write = next(i for i, x in enumerate(lines) if x.startswith('>"%NPULAB_STATE%'))
        last_command = max(i for i, x in enumerate(lines[:write]) if "python" in x or "conda" in x)
        assert last_command < write, "the stamp is written after the work"
        assert lines[write] == f'>"%NPULAB_STATE%\\{name[:-4]}.stamp" echo {digest}'
    assert emptied == {
        "conda-env.cmd": ["conda-env.stamp", "pip-lock.stamp", "ops-cpp.stamp"],
        LOCK_SCRIPT: ["pip-lock.stamp", "ops-cpp.stamp"],
        "ops-cpp.cmd": ["ops-cpp.stamp"],
    }
    assert winsteps.stamp_digest(scripts["import-check.cmd"]) is None


TEMPLATES = Path(winsteps.__file__).parent.parent / "templates" / "windows"


def test_every_step_is_one_record_and_one_template() -> None:
    """Each record names its own template (script named by the step, not its position), and
    every template file belongs to a record."""
    assert [w.name for w in winsteps.WIN_STEPS] == WIN_NAMES
    for win in winsteps.WIN_STEPS:
        assert win.name == "win-" + win.stem, win
        assert win.script == win.template
        assert (TEMPLATES / win.template).is_file(), win.template
        assert win.template.endswith(".ps1" if win.shell == "powershell" else ".cmd")
        assert win.timeout > 0
    assert sorted(p.name for p in TEMPLATES.iterdir()) == sorted(
        w.template for w in winsteps.WIN_STEPS
    )
    assert [w.stem for w in winsteps.WIN_STEPS if w.stamped] == [
        "conda-env",
        "pip-lock",
        "ops-cpp",
    ]


def test_templates_ship_as_package_data(project_root: Path) -> None:
    """The wheel carries every template: the package-data globs match each file."""
    config = tomllib.loads((project_root / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["npulab"]
    package = project_root / "npulab"
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    assert {p for p in TEMPLATES.iterdir()} <= shipped


def test_a_template_reads_only_what_its_record_declares(recipe: Recipe, tree: Path) -> None:
    """``reads`` is what the step depends on: a template naming an undeclared fact, or any
    unknown placeholder, does not render."""
    facts = TreeFacts.read(recipe, tree)
    conda = winsteps.STEPS_BY_NAME["win-conda-env"]
    undeclared = dataclasses.replace(conda, reads=())
    with pytest.raises(KeyError, match="conda_env_sha256"):
        winsteps.render_step(undeclared, recipe, facts)
    assert "conda part of env.yaml sha256" in winsteps.render_step(conda, recipe, facts)


def test_template_placeholders_are_strict() -> None:
    assert ScriptTemplate("a {{x}} $y %z% @{ k = 1 }").substitute(x="1") == "a 1 $y %z% @{ k = 1 }"
    with pytest.raises(ValueError, match="Invalid placeholder"):
        ScriptTemplate("a {{ x }}").substitute(x="1")
    with pytest.raises(KeyError):
        ScriptTemplate("a {{x}}").substitute()
