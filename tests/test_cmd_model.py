"""The cmd.exe model itself (tests/winemu.py), against what Microsoft documents for cmd.exe
(``cmd /?``, ``for /?``, ``call /?``, ``setlocal /?``), and every rendered ``.cmd`` line through it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from npulab.recipe import DEFAULT_RECIPE, Recipe, load_recipe
from npulab.windows import steps as winsteps
from npulab.windows import wrappers
from npulab.windows.steps import TreeFacts
from tests.winemu import Cmd, CmdSyntax, Parser, cmd_c_string, phase1

CRLF = "\r\n"


def _batch(*lines: str, **kw: object) -> tuple[int, Cmd]:
    host = Cmd(**kw)  # type: ignore[arg-type]
    rc = host.run_batch("C:\\s\\t.cmd", "", CRLF.join(lines) + CRLF)
    return rc, host


def _stdout(host: Cmd) -> list[str]:
    return [text for kind, text in host.events if kind == "stdout"]


def _echo_argv(cmd: Cmd, argv: list[str]) -> int:
    cmd.out("|".join(argv[1:]))
    return 0


def test_for_f_reads_a_string_a_command_and_a_backquoted_command() -> None:
    _, host = _batch(
        "@echo off",
        'for /f "tokens=2" %%a in ("one two three") do echo %%a',
        "for /f %%a in ('prog x') do echo got %%a",
        'for /f "usebackq delims=" %%a in (`prog "a b" c`) do echo [%%a]',
        programs={"prog.exe": _echo_argv},
    )
    assert _stdout(host) == ["two", "got x", "[a b|c]"]


def test_an_unescaped_paren_closes_the_for_set_and_the_line_is_a_syntax_error() -> None:
    with pytest.raises(CmdSyntax, match=r"unexpected|never closed|closing"):
        _batch("@echo off", "for /f %%a in ('prog [1,2)') do echo %%a", programs={"p": _echo_argv})


def test_escaped_comma_and_paren_reach_the_command_and_unescaped_commas_split() -> None:
    _, host = _batch(
        "@echo off",
        "for /f %%a in ('prog [1^,2^)') do echo %%a",
        "for /f %%a in ('prog [1,2^)') do echo %%a",
        "for /f %%a in ('prog \"[1,2)\"') do echo %%a",
        programs={"prog.exe": _echo_argv},
    )
    assert _stdout(host) == ["[1,2)", "[1|2)", "[1,2)"]


def test_a_quoted_paren_in_a_for_set_does_not_close_it() -> None:
    _, host = _batch(
        "@echo off",
        'set "P=C:\\Program Files (x86)\\prog.exe"',
        'for /f "usebackq delims=" %%a in (`"%P%" x`) do echo %%a',
        programs={"prog.exe": _echo_argv},
    )
    assert _stdout(host) == ["x"]


def test_blocks_span_lines_and_expand_percent_vars_before_they_run() -> None:
    _, host = _batch(
        "@echo off",
        'set "X=old"',
        "(",
        '  set "X=new"',
        "  echo %X%",
        ")",
        "echo %X%",
    )
    assert _stdout(host) == ["old", "new"]


def test_a_block_never_closed_is_a_syntax_error() -> None:
    with pytest.raises(CmdSyntax, match="never closed"):
        _batch("@echo off", "if 1==1 (", "  echo a")


def test_if_else_and_the_and_or_operators() -> None:
    _, host = _batch(
        "@echo off",
        'if "a"=="b" (echo same) else (echo differ)',
        "prog && echo after-ok || echo after-fail",
        "missing-prog && echo no || echo yes %ERRORLEVEL%",
        programs={"prog.exe": lambda cmd, argv: 0},
    )
    assert _stdout(host) == ["differ", "after-ok", "yes 0"]  # %ERRORLEVEL% as the line was read


def test_call_label_returns_with_exit_b_and_setlocal_scopes_variables() -> None:
    rc, host = _batch(
        "@echo off",
        "setlocal",
        'set "A=1"',
        "call :sub x y",
        "echo back %ERRORLEVEL%",
        "endlocal",
        "echo A=%A%",
        "exit /b 0",
        ":sub",
        "echo sub %*",
        "exit /b 4",
    )
    assert rc == 0
    assert _stdout(host) == ["sub x y", "back 4", "A="]


def test_percent_star_and_dp0() -> None:
    host = Cmd(programs={"prog.exe": _echo_argv})
    text = CRLF.join(["@echo off", '"%~dp0prog.exe" %*', ""])
    host.run_batch("D:\\a b\\w.cmd", '"x y" z', text)
    assert ("run", ["D:\\a b\\prog.exe", "x y", "z"]) in host.events


def test_lines_decode_with_the_code_page_current_when_read() -> None:
    """cmd reads each batch line in the active code page: UTF-8 text before chcp 65001 is
    garbled on a 936 console, after it intact."""
    _, host = _batch("@echo off", "echo 构建", "chcp 65001 >nul", "echo 构建")
    out = _stdout(host)
    assert out[1] == "构建"
    assert out[0] != "构建"


@pytest.mark.parametrize(
    ("after_c", "s_flag", "runs"),
    [
        ('"C:\\a b\\x.cmd"', False, '"C:\\a b\\x.cmd"'),  # rule 1: quotes kept
        ('"C:\\R&D x\\x.cmd"', False, "C:\\R&D x\\x.cmd"),  # special char: rule 2 strips
        ('"C:\\ab\\x.cmd"', False, "C:\\ab\\x.cmd"),  # no whitespace: rule 2 strips
        ('""C:\\R&D x\\x.cmd""', True, '"C:\\R&D x\\x.cmd"'),  # /s with outer quotes
    ],
)
def test_cmd_c_quote_rules(after_c: str, s_flag: bool, runs: str) -> None:
    assert cmd_c_string(after_c, s_flag=s_flag, is_program=lambda p: True) == runs


def test_list2cmdline_step_path_with_an_ampersand_splits_under_cmd_c() -> None:
    """What the issue found: ``cmd /c "<path>"`` as list2cmdline builds it loses its quotes when
    the path holds ``&`` (cmd /? rule 2), so cmd runs ``C:\\R`` and then ``D x\\06.cmd``."""
    line = subprocess.list2cmdline(["cmd.exe", "/d", "/v:off", "/c", "C:\\R&D x\\06.cmd"])
    runs = cmd_c_string(line.split(" /c ", 1)[1], s_flag=False, is_program=lambda p: True)
    host = Cmd(files={"C:\\R&D x\\06.cmd": "@echo off\r\nexit /b 0\r\n"})
    host.run_cmd_c(runs)
    assert [e for e in host.events if e[0] == "notfound"]


# --- every rendered .cmd line through the model --------------------------------------------


@pytest.fixture(scope="module")
def recipe() -> Recipe:
    root = Path(__file__).resolve().parent.parent
    return load_recipe(root / "recipes" / f"{DEFAULT_RECIPE}.yaml")


def rendered_cmd_files(recipe: Recipe) -> dict[str, str]:
    """Every .cmd npulab renders: the steps, npulab-env.cmd and the staged wrappers."""
    facts = TreeFacts(env_file_sha256="a" * 64, lock_sha256="1" * 64)
    out = {k: v for k, v in winsteps.render_scripts(recipe, facts).items() if k.endswith(".cmd")}
    entries = wrappers.default_entry_points(wrappers.Raw("%~dp0runner.py"))
    out.update(wrappers.render_all(entries, wrappers.staged_env(recipe)))
    return out


HOSTILE_ENV = {
    "USERPROFILE": "C:\\Users\\Zoë (R&D) 100%",
    "NPULAB_CONDA_ROOT": "C:\\mini conda (x86)",
    "ProgramFiles(x86)": "C:\\Program Files (x86)",
    "PATH": "C:\\Windows;C:\\a (x86)",
    "ERRORLEVEL": "0",
    "~dp0": "D:\\实验 (x86)\\b & c\\scripts\\",
}


def _every_line(text: str) -> int:
    """Parse every line as cmd would (phase 1 with hostile values, phase 2 into commands)."""
    lines = text.split(CRLF)[:-1]
    parsed = 0
    it = iter(lines)
    for line in it:
        if not line.strip() or line.lstrip().startswith(":"):
            continue

        def more() -> str | None:
            nxt = next(it, None)
            return None if nxt is None else phase1(nxt, env=HOSTILE_ENV, batch=True)

        Parser(phase1(line, env=HOSTILE_ENV, batch=True), more).parse()
        parsed += 1
    return parsed


NAMES = [
    "conda-env.cmd",
    "pip-lock.cmd",
    "ops-cpp.cmd",
    "import-check.cmd",
    "npulab-env.cmd",
    "pip.cmd",
    "python.cmd",
    "smoke.cmd",
]


@pytest.mark.parametrize("name", NAMES)
def test_every_rendered_cmd_line_parses_in_the_model(recipe: Recipe, name: str) -> None:
    files = rendered_cmd_files(recipe)
    assert _every_line(files[name]) > 3


def test_the_list_covers_every_rendered_cmd(recipe: Recipe) -> None:
    assert sorted(NAMES) == sorted(rendered_cmd_files(recipe))


# --- every way into a step: cmd.exe /d /v:off /c <path>, as list2cmdline builds it -------------

PATH_CHARS = sorted(set(" !#$&'()+,-;=@[]^_`{}~%.") | {"é", "构"})


@pytest.mark.parametrize("ch", PATH_CHARS)
def test_a_step_path_is_refused_or_reaches_cmd_whole(ch: str) -> None:
    """For each character a Windows path may hold: either the runner refuses the path, or
    ``cmd /c`` (cmd /? quote rules, then the model) starts exactly that script."""
    from npulab.windows.script import cmd_c_path_problem

    for path in (f"C:\\a{ch}b x\\scripts\\conda-env.cmd", f"C:\\a{ch}b\\conda-env.cmd"):
        if cmd_c_path_problem(path) is not None:
            continue
        line = subprocess.list2cmdline(["cmd.exe", "/d", "/v:off", "/c", path])
        host = Cmd(files={path: "@echo off\r\necho started %~dp0\r\nexit /b 0\r\n"})
        runs = cmd_c_string(line.split(" /c ", 1)[1], s_flag=False, is_program=host.exists)
        assert host.run_cmd_c(runs) == 0, path
        assert ("stdout", f"started {path.rsplit(chr(92), 1)[0]}\\") in host.events, path


def test_the_vswhere_line_fails_in_the_model_without_its_escapes(recipe: Recipe) -> None:
    """Finding 1 (issue 17): with the range as vswhere's help writes it, the ) ends the set."""
    text = rendered_cmd_files(recipe)["ops-cpp.cmd"]
    assert winsteps.VS_RANGE_IN_FOR in text
    with pytest.raises(CmdSyntax):
        _every_line(text.replace(winsteps.VS_RANGE_IN_FOR, winsteps.VS_RANGE))
