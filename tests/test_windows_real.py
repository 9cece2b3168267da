"""One test body, two shells (``-m windows``): on Windows the real CreateProcess, cmd.exe,
Windows PowerShell 5.1 and the rendered wrappers; elsewhere the cmd.exe model (tests/winemu.py)
and tree-sitter-powershell. The test ids are the same on both, so a run on GitHub's Windows
runner checks exactly what the model claims here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from npulab.quoting import quote_argv, quote_cmd_line, quote_pwsh
from npulab.windows import wrappers
from tests.test_winquote import HOSTILE
from tests.winemu import Cmd, phase1, phase2, split_argv

pytestmark = [pytest.mark.windows, pytest.mark.integration]

REAL = sys.platform == "win32"
#: Which shell answers in this run (the closing note of issue 17 lists both per test).
SHELL = "real" if REAL else "model"
ECHO = "import sys, json; print(json.dumps(sys.argv[1:]))"
#: Arguments cmd.exe can carry (CR, LF, NUL never reach a program through it).
TABLE = [a for a in HOSTILE if a]


def _py() -> str:
    return sys.executable if REAL else "C:\\Python 3.11 (x86)\\python.exe"


def _real(line: str, **kw: object) -> list[str]:
    done = subprocess.run(
        line, capture_output=True, check=True, encoding="utf-8", env=_utf8_env(), **kw
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def _utf8_env() -> dict[str, str]:
    return {**os.environ, "PYTHONUTF8": "1", "PYTHONIOENCODING": "utf-8"}


@pytest.mark.parametrize("arg", TABLE)
def test_argv_through_createprocess(arg: str) -> None:
    """quote_argv -> CreateProcess -> the UCRT argv split in python.exe."""
    line = quote_argv([_py(), "-c", ECHO, arg, "z"])
    got = _real(line) if REAL else split_argv(line)[3:]
    assert got == [arg, "z"]


@pytest.mark.parametrize("arg", TABLE)
def test_argv_through_cmd_c(arg: str) -> None:
    """quote_cmd_line(batch=False) on ``cmd /d /v:off /s /c "<line>"``."""
    line = quote_cmd_line([_py(), "-c", ECHO, arg, "z"], batch=False)
    if REAL:
        comspec = os.environ.get("COMSPEC", "cmd.exe")
        got = _real(f'"{comspec}" /d /v:off /s /c "{line}"')
    else:
        got = split_argv(phase2(phase1(line, env={"PATH": "C:\\Windows"}, batch=False)))[3:]
    assert got == [arg, "z"]


@pytest.mark.parametrize("arg", TABLE)
def test_argv_through_a_batch_percent_star(arg: str, tmp_path: Path) -> None:
    """cmd parses the line once and the batch's ``%*`` line again (passes=2)."""
    bat = str(tmp_path / "fwd (x86) & co.cmd") if REAL else "C:\\t\\fwd (x86) & co.cmd"
    text = '@echo off\r\n"%NPULAB_PY%" -c "%NPULAB_ECHO%" %*\r\n'
    tail = quote_cmd_line([arg, "z"], batch=False, passes=2)
    if REAL:
        Path(bat).write_bytes(text.encode("utf-8"))
        comspec = os.environ.get("COMSPEC", "cmd.exe")
        env = {**_utf8_env(), "NPULAB_PY": _py(), "NPULAB_ECHO": ECHO}
        line = f'"{comspec}" /d /v:off /s /c ""{bat}" {tail}"'
        done = subprocess.run(line, capture_output=True, check=True, encoding="utf-8", env=env)
        got = json.loads(done.stdout.strip().splitlines()[-1])
    else:
        seen: list[list[str]] = []
        host = Cmd(
            env={"NPULAB_PY": _py(), "NPULAB_ECHO": ECHO},
            programs={"python.exe": lambda cmd, argv: seen.append(argv) or 0},
        )
        host.run_batch(bat, phase2(phase1(tail, env={}, batch=False)), text)
        got = seen[0][3:]
    assert got == [arg, "z"]


@pytest.mark.parametrize("arg", [*TABLE[:17], "it's", "‘curly’", "$(Remove-Item x)", "`$a"])
def test_pwsh_literal_in_windows_powershell(arg: str, tmp_path: Path) -> None:
    """quote_pwsh: Windows PowerShell 5.1 prints the value verbatim (tree-sitter: one verbatim
    string whose value is the argument)."""
    value = quote_pwsh(arg)
    script = f"$ErrorActionPreference = 'Stop'\r\nWrite-Output (ConvertTo-Json @({value}, 'z'))\r\n"
    if REAL:
        path = tmp_path / "lit.ps1"
        path.write_bytes(b"\xef\xbb\xbf" + script.encode("utf-8"))  # 5.1 needs the BOM
        done = subprocess.run(
            ["powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass",
             "-Command", f"[Console]::OutputEncoding = [Text.Encoding]::UTF8; & '{path}'"],
            capture_output=True, check=True, encoding="utf-8",
        )  # fmt: skip
        got = json.loads(done.stdout)
    else:
        from tests.pwsh import bad_nodes, string_values

        assert bad_nodes(script) == []
        got = string_values(script)[1:]
    assert got == [arg, "z"]


def test_wrapper_on_a_utf8_console_with_a_non_ascii_path_and_gbk_named_file(
    tmp_path: Path,
) -> None:
    """python.cmd: chcp 65001, conda activate, setup.bat, %* forwarded, code page restored."""
    base = tmp_path if REAL else Path("C:/lab")
    tree = str(base / "构建 (x86)" / "example" / "transformers").replace("/", "\\")
    conda = str(base / "mini conda").replace("/", "\\")
    data = str(base / "数据" / "模型.txt").replace("/", "\\")
    text = wrappers.render(
        wrappers.default_entry_points()[0],
        wrappers.RuntimeEnv(transformers_dir=tree, conda_root=conda, env_name="stack"),
    )
    report = (
        "import sys, json, os; print(json.dumps([open(sys.argv[1], encoding='utf-8').read(), "
        "os.environ['PYTHONPATH'].split(';')[0], os.environ['DEVICE']]))"
    )
    args = ["-c", report, data]
    if REAL:
        prefix = sys.base_prefix  # holds python.exe on Windows
        for folder, name, body in (
            (conda + "\\condabin", "conda.bat", f'@set "CONDA_PREFIX={prefix}"\r\n'),
            (tree, "setup.bat", '@set "DEVICE=phx"\r\n'),
        ):
            Path(folder).mkdir(parents=True, exist_ok=True)
            Path(folder, name).write_bytes(body.encode("utf-8"))
        Path(data).parent.mkdir(parents=True)
        Path(data).write_text("ok 模型", encoding="utf-8")
        wrapper = tmp_path / "python.cmd"
        wrapper.write_bytes(text.encode("utf-8"))
        line = f'"{wrapper}" {quote_cmd_line(args, batch=False, passes=2)}'
        comspec = os.environ.get("COMSPEC", "cmd.exe")
        before = subprocess.run("chcp", shell=True, capture_output=True, text=True).stdout
        done = subprocess.run(
            f'"{comspec}" /d /v:off /s /c "{line} & chcp"',
            capture_output=True, check=True, encoding="utf-8", env=os.environ.copy(),
        )  # fmt: skip
        got = json.loads(done.stdout.strip().splitlines()[0])
        assert done.stdout.strip().splitlines()[-1].split()[-1] == before.split()[-1]
    else:
        seen: list[list[str]] = []

        def conda_bat(cmd: Cmd, argv: list[str]) -> int:
            cmd.env["CONDA_PREFIX"] = "C:\\Python311"
            return 0

        def setup_bat(cmd: Cmd, argv: list[str]) -> int:
            cmd.env["DEVICE"] = "phx"
            return 0

        def python(cmd: Cmd, argv: list[str]) -> int:
            assert cmd.codepage == "65001"
            seen.append(argv)
            content = "ok 模型" if cmd.exists(argv[-1]) else "missing"
            cmd.out(json.dumps([content, cmd.env["PYTHONPATH"].split(";")[0], cmd.env["DEVICE"]]))
            return 0

        host = Cmd(
            dirs={conda + "\\condabin", tree},
            files={tree + "\\setup.bat": "", data: "ok 模型"},
            programs={"conda.bat": conda_bat, "setup.bat": setup_bat, "python.exe": python},
        )
        tail = phase2(phase1(quote_cmd_line(args, batch=False, passes=2), env={}, batch=False))
        host.run_batch("C:\\lab\\python.cmd", tail, text)
        assert seen[0][1:] == args
        assert host.codepage == "936"
        got = json.loads(next(t for k, t in host.events if k == "stdout"))
    assert got == ["ok 模型", tree + "\\models\\llama2", "phx"]
