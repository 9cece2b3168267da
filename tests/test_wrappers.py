"""chcp 65001 wrappers: rendered text, CRLF, and runs through a model of cmd.exe (tests/winemu)."""

from __future__ import annotations

from pathlib import Path

import pytest

from npulab.quoting import quote_cmd_line
from npulab.windows.wrappers import (
    SMOKE_RUNNER,
    EntryPoint,
    RuntimeEnv,
    default_entry_points,
    render,
    render_all,
    render_staged,
    write_all,
)
from tests.test_winquote import HOSTILE
from tests.winemu import Cmd, phase1, phase2, split_argv

ENV_NAME = "ryzenai-transformers"
ROOT = Path(__file__).resolve().parent.parent
TREES = [
    "C:\\npulab\\build\\RyzenAI-SW\\example\\transformers",
    "C:\\Program Files (x86)\\npu lab\\example\\transformers",
    "D:\\构建\\100% ready!\\example\\transformers",
    "C:\\Users\\Zoë\\(old) tree\\example\\transformers",
]
CONDAS = [
    "C:\\Miniconda3",
    "C:\\Users\\Zoë\\R&D (x86)\\mini^conda 100%",
    "C:\\用户\\!bang!\\miniconda3",
]


def _outer_parse(args: list[str]) -> str:
    """What a wrapper sees as %* when started as `cmd /d /v:off /c "python.cmd <args>"`."""
    line = "python.cmd " + quote_cmd_line(args, batch=False, passes=2)
    return phase2(phase1(line, env={"PATH": "x"}, batch=False)).removeprefix("python.cmd ")


def _run(
    text: str,
    tree: str,
    conda: str,
    args: list[str],
    *,
    conda_rc: int = 0,
    has_setup: bool = True,
    console: str = "Active code page: 936",
) -> tuple[int, Cmd, dict[str, str]]:
    seen: dict[str, str] = {}

    def conda_bat(run: Cmd, argv: list[str]) -> int:
        assert argv == ["conda.bat", "activate", ENV_NAME]
        assert run.codepage == "65001"
        run.env["CONDA_PREFIX"] = f"{conda}\\envs\\{ENV_NAME}"
        return conda_rc

    def setup_bat(run: Cmd, argv: list[str]) -> int:
        assert argv == ["setup.bat"]
        assert run.cwd == tree  # %~dp0 is the tree: setup.bat's own variables follow
        run.env["PYTHONPATH"] = f"{run.env.get('PYTHONPATH', '')};{tree}\\ops\\python"
        run.env["DEVICE"] = "phx"
        return 0

    def program(run: Cmd, argv: list[str]) -> int:
        assert run.codepage == "65001"
        seen.update(run.env)
        return 7

    run = Cmd(
        env={"PATH": "C:\\Windows", "PYTHONPATH": ""},
        dirs={f"{conda}\\condabin", tree},
        files={f"{tree}\\setup.bat": "@echo off\r\n"} if has_setup else {},
        programs={"conda.bat": conda_bat, "setup.bat": setup_bat, "python.exe": program},
        console_chcp=console,
    )
    rc = run.run_batch("C:\\scripts\\w.cmd", _outer_parse(args), text=text)
    return rc, run, seen


def _env(tree: str, conda: str) -> RuntimeEnv:
    return RuntimeEnv(transformers_dir=tree, conda_root=conda, env_name=ENV_NAME)


@pytest.mark.parametrize("tree", TREES)
@pytest.mark.parametrize("conda", CONDAS)
def test_wrapper_runs_the_program_in_the_prepared_session(tree: str, conda: str) -> None:
    runner = "C:\\npulab & co\\smoke (v1)\\runner 100%.py"
    entry = default_entry_points(runner)[2]
    args = ["--config", "C:\\tmp\\模型 & (1)\\smoke.json", "--prompt", 'say "hi" ^ 50%!']
    rc, run, seen = _run(render(entry, _env(tree, conda)), tree, conda, args)
    assert rc == 7
    python = f"{conda}\\envs\\{ENV_NAME}\\python.exe"
    assert run.events[0] == ("chcp", "65001")
    kinds = [kind for kind, _ in run.events]
    assert kinds == ["chcp", "call", "call", "run", "chcp"]
    assert run.events[1][1] == [f"{conda}\\condabin", "conda.bat", "activate", ENV_NAME]
    assert run.events[2][1] == [tree, "setup.bat"]
    assert run.events[3][1] == [python, runner, *args]
    assert run.events[-1] == ("chcp", "936")  # restored
    assert seen["PYTHONUTF8"] == "1"
    assert seen["PYTHONIOENCODING"] == "utf-8"
    assert seen["DEVICE"] == "phx"
    assert seen["PYTHONPATH"].startswith(f"{tree}\\models\\llama2;")
    assert f"{tree}\\ops\\python" in seen["PYTHONPATH"]
    assert "NPULAB_RC" not in run.env  # endlocal: the caller's environment is untouched


@pytest.mark.parametrize("arg", HOSTILE)
def test_every_hostile_argument_reaches_python_verbatim(arg: str) -> None:
    tree, conda = TREES[1], CONDAS[1]
    text = render(default_entry_points()[0], _env(tree, conda))
    rc, run, _ = _run(text, tree, conda, ["-c", "pass", arg, "last"])
    assert rc == 7
    assert run.events[3][1][1:] == ["-c", "pass", arg, "last"]


def test_pip_runs_as_python_dash_m_pip() -> None:
    text = render(default_entry_points()[1], _env(TREES[0], CONDAS[0]))
    _, run, _ = _run(text, TREES[0], CONDAS[0], ["install", "--require-hashes", "-r", "a b.txt"])
    assert run.events[3][1][1:] == ["-m", "pip", "install", "--require-hashes", "-r", "a b.txt"]


def test_missing_setup_bat_fails_with_9009_and_restores_the_code_page() -> None:
    text = render(default_entry_points()[0], _env(TREES[2], CONDAS[0]))
    rc, run, _ = _run(text, TREES[2], CONDAS[0], [], has_setup=False)
    assert rc == 9009
    assert [k for k, _ in run.events] == ["chcp", "stderr", "chcp"]
    assert "invoke build" in str(run.events[1][1])
    assert run.events[-1] == ("chcp", "936")


def test_failed_conda_activate_stops_before_the_program() -> None:
    text = render(default_entry_points()[0], _env(TREES[0], CONDAS[2]))
    rc, run, _ = _run(text, TREES[0], CONDAS[2], ["x"], conda_rc=2)
    assert rc == 2
    assert "run" not in [k for k, _ in run.events]
    assert run.events[-1] == ("chcp", "936")


def test_localized_chcp_answer_is_restored() -> None:
    text = render(default_entry_points()[0], _env(TREES[0], CONDAS[0]))
    _, run, _ = _run(text, TREES[0], CONDAS[0], [], console="Aktive Codepage: 850.")
    assert run.events[-1] == ("chcp", "850")


def test_crlf_utf8_and_ascii_until_the_code_page_switch(tmp_path: Path) -> None:
    files = render_all(default_entry_points("C:\\s\\runner.py"), _env(TREES[2], CONDAS[2]))
    assert sorted(files) == ["pip.cmd", "python.cmd", "smoke.cmd"]
    written = write_all(files, tmp_path)
    for path in written:
        data = path.read_bytes()
        assert not data.startswith(b"\xef\xbb\xbf")
        assert data.endswith(b"\r\n")
        assert data.count(b"\n") == data.count(b"\r\n")
        before, _, after = data.partition(b"chcp 65001 >nul\r\n")
        assert after, "no code page switch"
        assert before.isascii()
        assert "构建".encode() in after
        assert data.decode("utf-8") == files[path.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pip.cmd", "python.cmd", "smoke.cmd"]


@pytest.mark.parametrize("tree", ["C:\\R&D\\example\\transformers", "C:\\a^b\\t", "C:\\x|y\\t"])
def test_trees_that_break_upstream_setup_bat_are_refused(tree: str) -> None:
    with pytest.raises(ValueError, match=r"setup\.bat cannot live under"):
        render(default_entry_points()[0], _env(tree, CONDAS[0]))


@pytest.mark.parametrize(
    "entry",
    [EntryPoint(name="a b"), EntryPoint(name="x", program="..\\%x%.exe"), EntryPoint(name="")],
)
def test_bad_entry_points_are_refused(entry: EntryPoint) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        render(entry, _env(TREES[0], CONDAS[0]))


def test_duplicate_wrapper_names_are_refused() -> None:
    with pytest.raises(ValueError, match="two wrappers"):
        render_all([EntryPoint(name="p"), EntryPoint(name="p")], _env(TREES[0], CONDAS[0]))


SCRIPTS = "D:\\实验室\\npu lab (x86)\\100%!\\build\\ryzenai-sw-1.1-llama3.1\\scripts\\"
STAGED_TREE = "D:\\实验室\\npu lab (x86)\\100%!\\build\\ryzenai-sw-1.1-llama3.1\\tree"


@pytest.mark.parametrize(
    ("caller_env", "conda"),
    [
        # no NPULAB_CONDA_ROOT: the host layout's conda root, not the user's profile
        ({"USERPROFILE": "C:\\Users\\Zoë & Co"}, "C:\\ProgramData\\miniconda3"),
        ({"USERPROFILE": "C:\\u", "NPULAB_CONDA_ROOT": "E:\\conda ^ 50%"}, "E:\\conda ^ 50%"),
    ],
)
def test_staged_wrappers_find_tree_and_conda_at_run_time(
    tmp_path: Path, caller_env: dict[str, str], conda: str
) -> None:
    from npulab.recipe import DEFAULT_RECIPE, find_recipe, load_recipe

    recipe = load_recipe(find_recipe(DEFAULT_RECIPE))
    written = render_staged(recipe, tmp_path / "tree", tmp_path)
    lock = Path(recipe.env.lock)
    names = sorted(p.name for p in written)
    assert names == sorted(["pip.cmd", "python.cmd", "runner.py", "smoke.cmd", lock.name])
    assert (tmp_path / "runner.py").read_bytes() == SMOKE_RUNNER.read_bytes()
    assert (tmp_path / lock.name).read_bytes() == (ROOT / lock).read_bytes()
    tree = f"{STAGED_TREE}\\example\\transformers"
    seen: list[list[str]] = []

    def conda_bat(run: Cmd, argv: list[str]) -> int:
        run.env["CONDA_PREFIX"] = f"{conda}\\envs\\{argv[2]}"
        return 0

    def setup_bat(run: Cmd, argv: list[str]) -> int:
        assert run.cwd == tree
        return 0

    def program(run: Cmd, argv: list[str]) -> int:
        seen.append(argv)
        assert run.env["PYTHONPATH"].startswith(f"{SCRIPTS}..\\tree\\example\\transformers\\models")
        return 0

    run = Cmd(
        env={"PATH": "C:\\Windows", **caller_env},
        dirs={f"{conda}\\condabin", tree},
        files={f"{tree}\\setup.bat": "@echo off\r\n"},
        programs={"conda.bat": conda_bat, "setup.bat": setup_bat, "python.exe": program},
    )
    text = (tmp_path / "smoke.cmd").read_bytes().decode("utf-8")
    tail = _outer_parse(["--config", "a & b.json"])
    assert run.run_batch(SCRIPTS + "smoke.cmd", tail, text=text) == 0
    python = f"{conda}\\envs\\ryzenai-transformers\\python.exe"
    assert seen == [[python, f"{SCRIPTS}runner.py", "--config", "a & b.json"]]


@pytest.mark.parametrize(
    "wrapper", ["C:\\b\\scripts\\python.cmd", "D:\\实验 (x86)\\R&D\\python.cmd"]
)
def test_quote_wrapper_call_reaches_the_program(wrapper: str) -> None:
    """The whole cmd /c line: wrapper path parsed once, arguments twice (line, then %*)."""
    from npulab.quoting import quote_wrapper_call

    tree, conda = TREES[0], CONDAS[0]
    args = ["-c", "pass", *HOSTILE]
    line = phase2(phase1(quote_wrapper_call(wrapper, args), env={"PATH": "x"}, batch=False))
    assert split_argv(line)[0] == wrapper
    token_end = line.index('"', 1) + 1 if line.startswith('"') else line.index(" ")
    tail = line[token_end:].lstrip(" ")
    seen: list[list[str]] = []
    run = Cmd(
        env={"PATH": "C:\\Windows"},
        dirs={f"{conda}\\condabin", tree},
        files={f"{tree}\\setup.bat": "@echo off\r\n"},
        programs={
            "conda.bat": _set_prefix(conda),
            "setup.bat": lambda run, argv: 0,
            "python.exe": lambda run, argv: seen.append(argv) or 0,
        },
    )
    text = render(default_entry_points()[0], _env(tree, conda))
    assert run.run_batch("C:\\scripts\\python.cmd", tail, text=text) == 0
    assert seen == [[f"{conda}\\envs\\{ENV_NAME}\\python.exe", *args]]


def _set_prefix(conda: str) -> object:
    def conda_bat(run: Cmd, argv: list[str]) -> int:
        run.env["CONDA_PREFIX"] = f"{conda}\\envs\\{argv[2]}"
        return 0

    return conda_bat
