"""One test body, two shells (``-m windows``): on Windows the real CreateProcess, cmd.exe,
Windows PowerShell 5.1 and the rendered wrappers; elsewhere the cmd.exe model (tests/winemu.py)
and tree-sitter-powershell. The test ids are the same on both, so a run on GitHub's Windows
runner checks exactly what the model claims here.
"""

from __future__ import annotations

import json
import os
import shutil
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


# --- rendered PowerShell: Windows PowerShell 5.1's own parser, or tree-sitter ---------------


def _rendered_ps1() -> dict[str, str]:
    from npulab.lab import probe_script
    from npulab.recipe import DEFAULT_RECIPE, find_recipe, load_recipe
    from npulab.windows import steps as winsteps
    from npulab.windows import upload as winupload

    recipe = load_recipe(find_recipe(DEFAULT_RECIPE))
    root = "D:\\it's $(boom)\\`b`\\a&b %x%"
    archive = winupload.Archive(
        path=Path("x"), sha256="f" * 64, size=1, parts=(("ffff.000", "0" * 64),)
    )
    out = {k: v for k, v in winsteps.render_scripts(recipe).items() if k.endswith(".ps1")}
    out["upload-state"] = winupload.state_ps1(root)
    out["upload-expand"] = winupload.expand_ps1(root, archive)
    out["stamp-read"] = winsteps.stamp_read_ps1(root, "ops-cpp.stamp")
    out["probe"] = probe_script.render("C:\\Users\\Zoë (R&D)\\miniconda3")
    return out


PS1_NAMES = sorted(_rendered_ps1())


@pytest.mark.parametrize("name", PS1_NAMES)
def test_rendered_ps1_parses_in_windows_powershell(name: str, tmp_path: Path) -> None:
    text = _rendered_ps1()[name]
    assert text.startswith(("$ErrorActionPreference = 'Stop'", "# npulab-script")), name
    if name.endswith(".ps1"):
        # Written into scripts\ without a BOM and run with -File: 5.1 reads them as ANSI.
        assert text.isascii(), name
    if REAL:
        path = tmp_path / "s.ps1"
        path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
        check = (
            "$e = $null; $null = [System.Management.Automation.Language.Parser]::ParseFile("
            f"{quote_pwsh(str(path))}, [ref]$null, [ref]$e); $e | ForEach-Object {{ $_.Message }}"
        )
        done = subprocess.run(
            ["powershell.exe", "-NoProfile", "-NonInteractive", "-Command", check],
            capture_output=True, check=True, encoding="utf-8",
        )  # fmt: skip
        errors = done.stdout.strip().splitlines()
    else:
        from tests.pwsh import bad_nodes

        errors = bad_nodes(text)
    assert errors == [], name


# --- the stamped steps with stub tools: the model, or real cmd.exe ---------------------------


class StepMachine:
    """A build folder with the rendered steps and a stub conda (and python on PATH): in the
    model (here) or on disk under real cmd.exe (Windows). ``conda_rc`` is what conda returns."""

    def __init__(self, tmp_path: Path) -> None:
        from npulab.recipe import DEFAULT_RECIPE, find_recipe, load_recipe

        self.recipe = load_recipe(find_recipe(DEFAULT_RECIPE))
        base = str(tmp_path) if REAL else "C:\\Users\\lab\\AppData\\Local\\Temp\\t 1"
        self.build = base + "\\b (x86)"
        self.scripts = self.build + "\\scripts"
        self.conda = base + "\\mini conda"
        self.stack = self.build + "\\tree\\" + self.recipe.upstream.subdir.replace("/", "\\")
        self.log = base + "\\conda.log"
        self.conda_rc = 0
        self.model: Cmd | None = None
        if REAL:
            for d in (self.scripts, self.conda + "\\condabin", self.stack + "\\models\\llama2"):
                Path(d).mkdir(parents=True, exist_ok=True)
            stub = '@echo off\r\n>>"%NPULAB_STUB_LOG%" echo %*\r\nexit /b %NPULAB_STUB_RC%\r\n'
            Path(self.conda, "condabin", "conda.bat").write_bytes(stub.encode())
            for mod in ("qlinear", "RyzenAI"):
                Path(self.stack, "models", "llama2", f"{mod}.py").write_text("")
        else:
            self.model = Cmd(
                env={"USERPROFILE": "C:\\Users\\lab", "NPULAB_CONDA_ROOT": self.conda},
                dirs={self.scripts, self.conda + "\\condabin", self.stack + "\\models\\llama2"},
                files={self.stack + "\\models\\llama2\\qlinear.py": ""},
                programs={
                    "conda.bat": self._conda,
                    "python.exe": self._python,
                    # import-check.cmd's NPU check: none here, as on the hosted runner.
                    "powershell.exe": lambda cmd, argv: 1,
                },
            )
            self.model.files[self.model.norm(self.log)] = ""

    def _conda(self, cmd: Cmd, argv: list[str]) -> int:
        line = quote_argv(argv[1:]) + "\r\n"
        cmd.files[cmd.norm(self.log)] += line
        return self.conda_rc

    def _python(self, cmd: Cmd, argv: list[str]) -> int:
        first = cmd.env["PYTHONPATH"].split(";")[0]
        if not cmd.exists(first + "\\qlinear.py"):
            return 1
        cmd.out(f"{cmd.env['DEVICE']} <module 'RyzenAI'>")
        return 0

    def write(self, env_yaml: str) -> None:
        from npulab.windows import steps as winsteps
        from npulab.windows.steps import TreeFacts

        facts = TreeFacts(conda_env_sha256=env_yaml * 64, lock_sha256="1" * 64)
        self.texts = winsteps.render_scripts(self.recipe, facts)
        for name, text in self.texts.items():
            if name.endswith(".cmd"):
                if self.model is not None:
                    self.model.files[self.model.norm(f"{self.scripts}\\{name}")] = text
                else:
                    Path(self.scripts, name).write_bytes(text.encode("utf-8"))

    def run(self, name: str) -> tuple[int, str, str]:
        """(exit code, stdout, the console code page after the step)."""
        path = f"{self.scripts}\\{name}"
        if self.model is not None:
            self.model.events.clear()
            rc = self.model.run_batch(path)
            out = "\n".join(t for k, t in self.model.events if k == "stdout")
            return rc, out, self.model.codepage
        comspec = os.environ.get("COMSPEC", "cmd.exe")
        env = {**os.environ, "NPULAB_CONDA_ROOT": self.conda, "NPULAB_STUB_LOG": self.log}
        env["NPULAB_STUB_RC"] = str(self.conda_rc)
        line = f'"{comspec}" /d /v:off /s /c ""{path}" & call echo rc=%^ERRORLEVEL% & chcp"'
        done = subprocess.run(
            line, capture_output=True, encoding="utf-8", errors="replace", env=env
        )
        lines = done.stdout.strip().splitlines()
        rc = int(next(x for x in reversed(lines) if x.startswith("rc="))[3:])
        return rc, done.stdout, lines[-1].split()[-1].rstrip(".")

    def console_page(self) -> str:
        if self.model is not None:
            return self.model._console_cp()
        done = subprocess.run("chcp", shell=True, capture_output=True, text=True)
        return done.stdout.split()[-1].rstrip(".")

    def conda_calls(self) -> list[list[str]]:
        text = self.model.files[self.model.norm(self.log)] if self.model else _read(self.log)
        return [split_argv(line) for line in text.splitlines() if line.strip()]

    def stamp(self, name: str) -> str | None:
        path = f"{self.build}\\.npulab-win\\{name}.stamp"
        if self.model is not None:
            return self.model.stamp(path)
        return _read(path) if Path(path).exists() else None


def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8") if Path(path).exists() else ""


def test_stamped_steps_with_stub_tools(tmp_path: Path) -> None:
    """Skip when up to date, rerun and invalidate on a change, no stamp after a failure, exit
    codes propagated, the console's code page given back; the import check with npulab-env."""
    from npulab.windows import steps as winsteps

    m = StepMachine(tmp_path)
    page = m.console_page()
    m.write("a")
    rc, _, after = m.run("conda-env.cmd")
    assert (rc, after) == (0, page)
    calls = m.conda_calls()
    assert [c[:4] for c in calls] == [["env", "create", "-n", m.recipe.env.name]]
    assert calls[0][-1].endswith("\\env-conda.yaml")  # the conda part, beside the scripts
    assert (m.stamp("conda-env") or "").strip() == winsteps.stamp_digest(m.texts["conda-env.cmd"])
    rc, out, after = m.run("conda-env.cmd")
    assert (rc, after) == (0, page)
    assert "conda-env: up to date" in out
    assert len(m.conda_calls()) == 1, "skipped: conda not run again"
    m.write("b")  # env.yaml changed, and conda now fails
    m.conda_rc = 2
    rc, _, after = m.run("conda-env.cmd")
    assert (rc, after) == (2, page)
    assert m.stamp("conda-env") == ""
    assert m.stamp("pip-lock") == ""
    assert m.stamp("ops-cpp") == ""
    m.conda_rc = 0
    rc, out, after = m.run("import-check.cmd")
    # No XDNA1 NPU (the model, and the hosted runner's real Get-PnpDevice): the documented exit
    # 6, after the import was tried and worked.
    assert (rc, after) == (6, page), out
    assert "phx <module 'RyzenAI'" in out
    assert "the build imports; running it needs the NPU" in out


# --- upload-expand and stamp reads: Windows PowerShell 5.1, or the build-protocol double -----


def _powershell_file(
    text: str, tmp_path: Path, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run a script the way npulab does on this machine: LocalTransport.run_script
    (powershell.exe -File on a temporary .ps1)."""
    from npulab.transport.local import LocalTransport

    saved = dict(os.environ)
    os.environ.update(env or {})
    try:
        done = LocalTransport().run_script(text, shell="powershell", check=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return done.returncode, done.stdout + done.stderr


def _build_host():  # type: ignore[no-untyped-def]
    from npulab.testing.fakehost import FakeHost
    from tests.winhost import BuildHost

    return BuildHost(FakeHost("npu-01"))


@pytest.mark.parametrize("present", [True, False])
def test_stamp_read(present: bool, tmp_path: Path) -> None:
    from npulab.windows.steps import stamp_read_ps1

    root = str(tmp_path / "构建 Zoë (1)") if REAL else "C:\\npulab\\构建 Zoë (1)"
    script = stamp_read_ps1(root, "ops-cpp.stamp")
    if REAL:
        if present:
            Path(root, ".npulab-win").mkdir(parents=True)
            Path(root, ".npulab-win", "ops-cpp.stamp").write_bytes(b"0123abcd\r\n")
        rc, out = _powershell_file(script, tmp_path)
    else:
        host = _build_host()
        if present:
            host.files[(root + "\\.npulab-win\\ops-cpp.stamp").lower()] = b"0123abcd\r\n"
        answer = host._stamp_read([], script)
        rc, out = answer.rc, str(answer.stdout)
    assert rc == 0
    assert out.strip() == ("0123abcd" if present else "")


@pytest.mark.parametrize("damaged", [False, True])
def test_upload_expand_swaps_tree_and_scripts_in(damaged: bool, tmp_path: Path) -> None:
    from npulab.windows import upload as winupload

    out = tmp_path / "stage"
    (out / "tree" / "example").mkdir(parents=True)
    (out / "tree" / "example" / "env.yaml").write_text("name: x\n")
    (out / "scripts").mkdir()
    (out / "scripts" / "conda-env.cmd").write_bytes(b"@echo off\r\n")
    archive = winupload.build_archive(out, tmp_path / "parts")
    root = str(tmp_path / "主机 root") if REAL else "C:\\npulab\\主机 root"
    parts = {name: (tmp_path / "parts" / name).read_bytes() for name, _ in archive.parts}
    if damaged:
        first = next(iter(parts))
        parts[first] = parts[first][:-1] + bytes([parts[first][-1] ^ 1])
    script = winupload.expand_ps1(root, archive)
    if REAL:
        Path(root, "upload").mkdir(parents=True)
        Path(root, "tree").mkdir()
        Path(root, "tree", "stale.txt").write_text("old")
        for name, data in parts.items():
            Path(root, "upload", name).write_bytes(data)
        rc, text = _powershell_file(script, tmp_path)

        def read(rel: str) -> bytes | None:
            p = Path(root, rel)
            return p.read_bytes() if p.is_file() else None

        left = sorted(p.name for p in Path(root, "upload").iterdir())
    else:
        host = _build_host()
        host.files[(root + "\\tree\\stale.txt").lower()] = b"old"
        for name, data in parts.items():
            host.files[(root + "\\upload\\" + name).lower()] = data
        answer = host._expand([], script)
        rc, text = answer.rc, str(answer.stdout)

        def read(rel: str) -> bytes | None:
            return host.files.get((root + "\\" + rel).lower())

        up = (root + "\\upload\\").lower()
        left = sorted(k[len(up) :] for k in host.files if k.startswith(up))
    if damaged:
        assert rc == winupload.EXIT_DAMAGED, text
        assert read("tree\\stale.txt") == b"old"  # nothing swapped in
        return
    assert rc == 0, text
    assert read("tree\\example\\env.yaml") == b"name: x\n"
    assert read("scripts\\conda-env.cmd") == b"@echo off\r\n"
    assert read("tree\\stale.txt") is None
    assert (read(".npulab-win\\upload.sha256") or b"").strip() == archive.sha256.encode()
    assert left == []


# --- lfs.ps1: real git-lfs against the local LFS test server ------------------------------


@pytest.mark.skipif(
    not REAL and shutil.which("git-lfs") is None,
    reason="git-lfs is not installed (apt install git-lfs)",
)
def test_lfs_step_fetches_by_oid_from_the_lfs_server(tmp_path: Path) -> None:
    """Windows: the whole lfs.ps1 under PowerShell 5.1. Here: no PowerShell, so the same
    smudge by oid (winlfs.SMUDGE_ARGS) with the same git-lfs; both against LfsServer."""
    import dataclasses
    import hashlib

    from npulab.recipe import DEFAULT_RECIPE, find_recipe, load_recipe
    from npulab.testing.lfs_server import LfsServer
    from npulab.windows import lfs as winlfs
    from npulab.windows.lfs import LfsObject

    data = os.urandom(100_000)
    rel = "example/transformers/third_party/lib/tvm_ipu.dll"
    obj = LfsObject(path=rel, oid=hashlib.sha256(data).hexdigest(), size=len(data), required=True)
    with LfsServer({"dll": data}) as server:
        url = server.repo_url("amd/RyzenAI-SW")
        if REAL:
            recipe = load_recipe(find_recipe(DEFAULT_RECIPE))
            recipe = dataclasses.replace(
                recipe, upstream=dataclasses.replace(recipe.upstream, repo_url=url)
            )
            build = tmp_path / "b"
            (build / "tree" / rel).parent.mkdir(parents=True)
            (build / "tree" / rel).write_text(obj.pointer_text(), encoding="utf-8")
            (build / "scripts").mkdir()
            script = build / "scripts" / "lfs.ps1"
            script.write_bytes(winlfs.lfs_ps1(recipe, [obj]).encode("utf-8"))
            run = ["powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy",
                   "Bypass", "-File", str(script)]  # fmt: skip
            first = subprocess.run(run, capture_output=True, encoding="utf-8", errors="replace")
            assert first.returncode == 0, first.stdout + first.stderr
            got = (build / "tree" / rel).read_bytes()
            again = subprocess.run(run, capture_output=True, encoding="utf-8", errors="replace")
            assert again.returncode == 0
            assert "present and verified" in again.stdout
        else:
            repo = tmp_path / "lfs-repo"
            subprocess.run(["git", "init", "-q", str(repo)], check=True)
            subprocess.run(["git", "-C", str(repo), "config", "remote.origin.url", url], check=True)
            done = subprocess.run(
                ["git", "-C", str(repo), *winlfs.SMUDGE_ARGS],
                input=obj.pointer_text().encode(), capture_output=True, check=True,
            )  # fmt: skip
            got = done.stdout
        assert got == data
        assert server.downloads == 1


@pytest.mark.parametrize("arg", TABLE)
def test_argv_through_the_long_command_powershell_script(arg: str, tmp_path: Path) -> None:
    """WinRM's fallback for a command line over 8000 characters (psscripts.argv_script): the
    program gets exactly its argv under Windows PowerShell 5.1, whose ``& 'prog' 'arg'`` would
    drop the quotes of ``say "hi"`` and an empty argument (legacy native argument passing)."""
    from npulab.transport.psscripts import argv_script

    script = argv_script([_py(), "-c", ECHO, arg, ""], cwd=str(tmp_path) if REAL else "C:\\w")
    if REAL:
        rc, out = _powershell_file(script, tmp_path, env=_utf8_env())
        assert rc == 0, out
        got = json.loads(out.strip().splitlines()[-1])
    else:
        from tests.pwsh import bad_nodes, string_values

        assert bad_nodes(script) == []
        values = string_values(script)
        assert values[0] == _py()
        got = split_argv(values[1])[2:]  # ProcessStartInfo.Arguments goes to CreateProcess as is
    assert got == [arg, ""]
