"""The Windows build steps (pure): planner for :data:`npulab.windows.plan.PLANNERS`, and scripts.

Each step is one script in ``build/<recipe>/scripts/`` (``NN-<step>.cmd`` or ``.ps1``). Steps
that change the machine write a stamp holding the digest of their own script text into
``build/<recipe>/.npulab-win/`` and skip themselves when the stamp matches (idempotent); the
prerequisite and import checks are read-only and always run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from npulab import paths
from npulab.build.plan import Options, Step
from npulab.quoting import quote_pwsh
from npulab.recipe import Recipe
from npulab.windows.lfs import LfsObject, lfs_ps1, pointer_objects
from npulab.windows.script import CRLF, CmdScript, env_lines_cmd, env_lines_ps1, safe_name

VSWHERE = "%ProgramFiles(x86)%\\Microsoft Visual Studio\\Installer\\vswhere.exe"
VC_COMPONENT = "Microsoft.VisualStudio.Component.VC.Tools.x86.x64"
VS_RANGE = "[16,17)"
#: The same range inside a FOR /F set: an unescaped ) would end the set and an unescaped , would
#: split the argument (for /?; vswhere's "Versions" page says to escape both in batch for loops).
VS_RANGE_IN_FOR = VS_RANGE.replace(",", "^,").replace(")", "^)")
ENV_CMD = "npulab-env.cmd"
ENV_PS1 = "npulab-env.ps1"
CHECK_LOCK = "check-lock.py"
#: The mutating steps in order: running one invalidates the host stamps of those after it.
STAMPED = ("conda-env", "pip-lock", "ops-cpp")


@dataclass(frozen=True, kw_only=True)
class TreeFacts:
    """What the scripts depend on beyond the recipe, read from the staged tree and the lock.

    Rendered into the scripts (``rem input:`` lines, the LFS table), so a changed env.yaml, lock,
    ops\\cpp source or LFS object changes exactly the scripts that use it: their digests drive
    both the manifest's resume and the host's stamps."""

    lfs_objects: tuple[LfsObject, ...] = ()
    env_file_sha256: str = "not-staged"
    lock_sha256: str = "missing"
    ops_cpp_sha256: str = "not-staged"

    @classmethod
    def read(cls, recipe: Recipe, tree: Path) -> TreeFacts:
        stack = tree / recipe.upstream.subdir
        ops = [stack / "setup.bat", *sorted((stack / "ops" / "cpp").rglob("*"))]
        h = hashlib.sha256()
        for path in ops:
            if path.is_file():
                h.update(path.relative_to(tree).as_posix().encode() + b"\0")
                h.update(_sha(path).encode())
        return cls(
            lfs_objects=tuple(pointer_objects(tree, recipe)) if tree.is_dir() else (),
            env_file_sha256=_sha(tree / recipe.env.env_file),
            lock_sha256=_sha(paths.project_root() / recipe.env.lock, "missing"),
            ops_cpp_sha256=h.hexdigest() if stack.is_dir() else "not-staged",
        )


def _sha(path: Path, absent: str = "not-staged") -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return absent


def _win(path: str) -> str:
    return path.replace("/", "\\")


def _stamped(name: str, build: Callable[[CmdScript], None], inputs: Sequence[str] = ()) -> str:
    """A mutating step: skipped when its stamp holds this script's digest.

    ``inputs`` become ``rem input:`` lines (digests of what the step reads), so they are part of
    the digest. Running the step first removes its own stamp and those of the later steps in
    :data:`STAMPED` (they built on what this step is about to change)."""
    body = CmdScript(lines=[f"rem input: {line}" for line in inputs])
    build(body)
    digest = hashlib.sha256("\r\n".join(body.lines).encode()).hexdigest()[:32]
    s = CmdScript()
    stamp = f"%NPULAB_STATE%\\{safe_name(name)}.stamp"
    s.cmd('if not exist "%NPULAB_STATE%" mkdir "%NPULAB_STATE%"')
    s.raw(
        f'findstr /x /c:{digest} "{stamp}" >nul 2>nul',
        "if not errorlevel 1 goto :uptodate",
    )
    # findstr left errorlevel 1; VER clears it (TYPE below would too, but only on success).
    s.cmd("ver >nul")
    later = STAMPED[STAMPED.index(name) :] if name in STAMPED else (name,)
    for other in later:
        # An empty stamp never matches a digest: this step and the later ones will run.
        s.cmd(f'type nul >"%NPULAB_STATE%\\{other}.stamp"')
    s.lines += body.lines
    s.cmd(f'>"{stamp}" echo {digest}')
    s.raw("exit /b 0", ":uptodate", f"echo {name}: up to date (stamp {digest})", "exit /b 0")
    return s.text()


def _activate(s: CmdScript, env_name: str) -> None:
    s.cmd(f'call "%NPULAB_CONDA_ROOT%\\condabin\\conda.bat" activate {safe_name(env_name)}')


def prereqs_ps1(recipe: Recipe, facts: TreeFacts) -> str:
    """Read-only: conda, git + git lfs, VS 2019 C++ v142 (vswhere), cmake, long paths."""
    lines = [
        "$ErrorActionPreference = 'Stop'",
        "$missing = @()",
        "$condaRoot = if ($env:NPULAB_CONDA_ROOT) { $env:NPULAB_CONDA_ROOT } "
        "else { Join-Path $env:USERPROFILE 'miniconda3' }",
        "if (-not (Test-Path (Join-Path $condaRoot 'condabin\\conda.bat'))) "
        '{ $missing += "conda (Miniconda at $condaRoot; set NPULAB_CONDA_ROOT)" }',
        "if (-not (Get-Command git -ErrorAction SilentlyContinue)) { $missing += 'git' }",
        # Windows PowerShell 5.1 turns a native program's redirected stderr into a terminating
        # error under 'Stop': relax it around the one probe that writes to stderr when absent.
        "else { $ErrorActionPreference = 'Continue'; & git lfs version *> $null; "
        "$lfsOk = $LASTEXITCODE -eq 0; $ErrorActionPreference = 'Stop'; "
        "if (-not $lfsOk) { $missing += 'git lfs' } }",
        "$vswhere = Join-Path ${env:ProgramFiles(x86)} "
        "'Microsoft Visual Studio\\Installer\\vswhere.exe'",
        "$vs = $null",
        "if (Test-Path $vswhere) { $vs = & $vswhere -products '*' -version "
        f"{quote_pwsh(VS_RANGE)} -requires {quote_pwsh(VC_COMPONENT)} -property installationPath "
        "| Select-Object -First 1 }",
        "if (-not $vs) { $missing += 'Visual Studio 2019 with the C++ v142 x64 tools' }",
        "if (-not (Get-Command cmake -ErrorAction SilentlyContinue) -and -not ($vs -and "
        "(Test-Path (Join-Path $vs 'Common7\\IDE\\CommonExtensions\\Microsoft\\CMake'))))"
        " { $missing += 'cmake' }",
        "$lp = Get-ItemProperty -Path 'HKLM:\\SYSTEM\\CurrentControlSet\\Control\\FileSystem' "
        "-Name LongPathsEnabled -ErrorAction SilentlyContinue",
        "if (-not $lp -or $lp.LongPathsEnabled -ne 1) { $missing += 'LongPathsEnabled=1' }",
        "if ($missing.Count -gt 0) {",
        "  Write-Output ('missing prerequisites: ' + ($missing -join ', '))",
        "  Write-Output 'fix: install them (docs/windows-build.md, invoke lab.provision)'",
        "  exit 1",
        "}",
        'Write-Output "prerequisites present (VS 2019 at $vs)"',
        "exit 0",
    ]
    return CRLF.join(lines) + CRLF


def lfs_step_ps1(recipe: Recipe, facts: TreeFacts) -> str:
    """Fetch every LFS object the staged tree lacks by oid (:mod:`npulab.windows.lfs`)."""
    return lfs_ps1(recipe, facts.lfs_objects)


def conda_env_cmd(recipe: Recipe, facts: TreeFacts) -> str:
    name = safe_name(recipe.env.name)

    def body(s: CmdScript) -> None:
        s.set("NPULAB_ENV_FILE", _win(recipe.env.env_file))
        s.raw('set "NPULAB_ENV_FILE=%NPULAB_TREE%\\%NPULAB_ENV_FILE%"')
        s.raw(
            f'if exist "%NPULAB_CONDA_ROOT%\\envs\\{name}\\python.exe" goto :update',
        )
        s.cmd(
            'call "%NPULAB_CONDA_ROOT%\\condabin\\conda.bat" env create -n '
            f'{name} -f "%NPULAB_ENV_FILE%"'
        )
        s.raw("goto :done", ":update")
        s.cmd(
            'call "%NPULAB_CONDA_ROOT%\\condabin\\conda.bat" env update -n '
            f'{name} -f "%NPULAB_ENV_FILE%"'
        )
        s.raw(":done")

    return _stamped("conda-env", body, [f"env.yaml sha256 {facts.env_file_sha256}"])


def pip_lock_cmd(recipe: Recipe, facts: TreeFacts) -> str:
    """Install the hash-locked requirements, then refuse drift (exit 5 naming the packages)."""
    lock = _win(recipe.env.lock).rsplit("\\", 1)[-1]

    def body(s: CmdScript) -> None:
        _activate(s, recipe.env.name)
        s.set("NPULAB_LOCK", lock)
        s.cmd(
            'python -m pip install --require-hashes --no-deps -r "%~dp0%NPULAB_LOCK%"',
        )
        s.cmd(f'python "%~dp0{CHECK_LOCK}" "%~dp0%NPULAB_LOCK%"')

    return _stamped("pip-lock", body, [f"{lock} sha256 {facts.lock_sha256}"])


def ops_cpp_cmd(recipe: Recipe, facts: TreeFacts) -> str:
    """VS 2019 dev env, conda env, ``call setup.bat``, ``pip install ops\\cpp`` in ONE session."""

    def body(s: CmdScript) -> None:
        s.raw(f'set "NPULAB_VSWHERE={VSWHERE}"', 'set "NPULAB_VS="')
        s.cmd(
            'for /f "usebackq delims=" %%i in (`"%NPULAB_VSWHERE%" -products * -version '
            f"{VS_RANGE_IN_FOR} -requires {VC_COMPONENT} -property installationPath`) "
            'do set "NPULAB_VS=%%i"'
        )
        s.raw("if not defined NPULAB_VS exit /b 3")
        s.cmd('call "%NPULAB_VS%\\VC\\Auxiliary\\Build\\vcvars64.bat"')
        _activate(s, recipe.env.name)
        s.set("NPULAB_STACK", _win(recipe.upstream.subdir))
        s.cmd('cd /d "%NPULAB_TREE%\\%NPULAB_STACK%"')
        s.cmd("call setup.bat")
        s.cmd("python -m pip install ops\\cpp --force-reinstall")

    return _stamped("ops-cpp", body, [f"ops\\cpp and setup.bat sha256 {facts.ops_cpp_sha256}"])


def import_check_cmd(recipe: Recipe, facts: TreeFacts) -> str:
    s = CmdScript()
    _activate(s, recipe.env.name)
    s.cmd(f'call "%~dp0{ENV_CMD}"')
    s.cmd("python -c \"import os, qlinear, RyzenAI; print(os.environ['DEVICE'], RyzenAI)\"")
    s.raw("exit /b 0")
    return s.text()


Renderer = Callable[[Recipe, TreeFacts], str]

#: (step name, script suffix, renderer, what it runs) in build order.
WIN_STEPS: tuple[tuple[str, str, Renderer, str], ...] = (
    (
        "win-prereqs",
        "ps1",
        prereqs_ps1,
        "check conda, git + git lfs, VS 2019 C++ v142 (vswhere -version [16,17) -requires "
        f"{VC_COMPONENT}), cmake, LongPathsEnabled",
    ),
    (
        "win-lfs",
        "ps1",
        lfs_step_ps1,
        "fetch the LFS objects under <upstream.lfs.include> by oid (git lfs smudge against "
        "<upstream.repo_url>), verify sha256 + size, replace the pointers",
    ),
    (
        "win-conda-env",
        "cmd",
        conda_env_cmd,
        "conda env create (or update) -n <env.name> -f <patched env.yaml>",
    ),
    (
        "win-pip-lock",
        "cmd",
        pip_lock_cmd,
        "pip install --require-hashes --no-deps -r <env.lock>, then check-lock.py (no drift)",
    ),
    (
        "win-ops-cpp",
        "cmd",
        ops_cpp_cmd,
        "one cmd session: vcvars64.bat (VS 2019 via vswhere), conda activate, call setup.bat, "
        "pip install ops\\cpp --force-reinstall",
    ),
    (
        "win-import-check",
        "cmd",
        import_check_cmd,
        "call npulab-env.cmd (DEVICE, PYTORCH_AIE_PATH, PATH, PYTHONPATH), "
        'python -c "import qlinear, RyzenAI"',
    ),
)


#: Seconds a step may run before it is stopped (its partial log is kept): generous bounds for
#: a conda solve or the ops\\cpp compile on a laptop, there so a hung step cannot hang a build.
STEP_TIMEOUTS = {
    "win-prereqs": 300.0,
    "win-lfs": 3600.0,
    "win-conda-env": 3600.0,
    "win-pip-lock": 3600.0,
    "win-ops-cpp": 3600.0,
    "win-import-check": 600.0,
}


def script_name(index: int, step: str, suffix: str) -> str:
    return f"{index:02d}-{step.removeprefix('win-')}.{suffix}"


def render_scripts(recipe: Recipe, facts: TreeFacts | None = None) -> dict[str, str]:
    """File name -> text for every Windows step, the lock checker and the runtime env files.

    ``facts`` come from the staged tree (:meth:`TreeFacts.read`); without them (plans, docs)
    the scripts name their tree inputs as not staged."""
    facts = facts or TreeFacts()
    out = {
        script_name(i, name, suffix): render(recipe, facts)
        for i, (name, suffix, render, _) in enumerate(WIN_STEPS, 1)
    }
    env = runtime_env(recipe)
    out[ENV_CMD] = env_lines_cmd(env)
    out[ENV_PS1] = env_lines_ps1(env)
    out[CHECK_LOCK] = (Path(__file__).parent / "check_lock.py").read_text(encoding="utf-8")
    return out


def runtime_env(recipe: Recipe) -> list[tuple[str, str]]:
    """Exactly what the 1.1 runtime needs (as setup.bat sets it), relative to the env file."""
    device = {d.device for d in recipe.devices}
    if len(device) != 1:
        msg = f"devices: expected one DEVICE value for all chips, got {sorted(device)}"
        raise ValueError(msg)
    dev = safe_name(device.pop())
    stack = "%~dp0..\\tree\\" + safe_name_path(_win(recipe.upstream.subdir))
    tp = "%THIRD_PARTY%"
    return [
        ("DEVICE", dev),
        ("PYTORCH_AIE_PATH", stack),
        ("THIRD_PARTY", stack + "\\third_party"),
        ("TVM_LIBRARY_PATH", f"{tp}\\lib;{tp}\\bin"),
        ("XRT_PATH", f"{tp}\\xrt-ipu"),
        (
            "PATH",
            f"{tp}\\xrt-ipu\\xrt;%TVM_LIBRARY_PATH%;%PYTORCH_AIE_PATH%\\ops\\cpp;{tp};%PATH%",
        ),
        (
            "PYTHONPATH",
            ";".join(
                [
                    "%PYTORCH_AIE_PATH%\\models\\llama2",
                    "%TVM_LIBRARY_PATH%",
                    "%PYTORCH_AIE_PATH%\\ops\\python",
                    tp,
                    "%PYTORCH_AIE_PATH%\\tools",
                    "%PYTORCH_AIE_PATH%\\ext\\llm-awq",
                    "%PYTORCH_AIE_PATH%\\ext\\llm-awq\\awq\\quantize",
                    "%PYTORCH_AIE_PATH%\\ext\\llm-awq\\awq\\utils",
                    "%PYTORCH_AIE_PATH%\\ext\\llm-awq\\awq\\kernels",
                    "%PYTHONPATH%",
                ]
            ),
        ),
    ]


def safe_name_path(path: str) -> str:
    for part in path.split("\\"):
        safe_name(part)
    return path


DEFAULT_REMOTE_ROOT = "C:\\npulab\\build"
#: Step kinds: read-only checks run every build; stamped steps are skipped when up to date.
KINDS = {"win-prereqs": "wincheck", "win-lfs": "wincheck", "win-import-check": "wincheck"}


def remote_root(recipe: Recipe, extra: dict[str, str]) -> str | None:
    """The build dir on the host: ``remote_root``, else ``C:\\npulab\\build\\<recipe>`` for
    a remote host; None (run in place) for this machine."""
    if "remote_root" in extra:
        return extra["remote_root"]
    if extra.get("host", "local") in ("local", "localhost"):
        return None
    return DEFAULT_REMOTE_ROOT + "\\" + recipe.name


def stamp_digest(script: str) -> str | None:
    """The digest a stamped step writes to its stamp (None for unstamped scripts)."""
    for line in script.splitlines():
        if line.startswith("findstr /x /c:"):
            return line.split()[2].removeprefix("/c:")
    return None


def stamp_read_ps1(root: str, name: str) -> str:
    """Prints ``<root>\\.npulab-win\\<name>`` (nothing when it is absent)."""
    lines = [
        "# npulab-script: stamp-read v1",
        "$ErrorActionPreference = 'Stop'",
        f"$p = Join-Path {quote_pwsh(root)} {quote_pwsh('.npulab-win' + chr(92) + name)}",
        "if (Test-Path -LiteralPath $p) { (Get-Content -LiteralPath $p -Raw).Trim() }",
        "exit 0",
    ]
    return CRLF.join(lines) + CRLF


def planner(recipe: Recipe, options: Options) -> list[Step]:
    """The Windows steps, each depending on its own rendered script (``winscript:<file>``); for
    a remote host, ``win-upload`` first puts ``tree\\`` and ``scripts\\`` there."""
    steps = []
    root = remote_root(recipe, options.extra)
    if root is not None:
        host = options.extra.get("host", "local")
        steps.append(
            Step(
                name="win-upload",
                kind="winupload",
                description=f"upload tree\\ and scripts\\ to {host}:{root} (zip in 8 MiB "
                "parts, sha256-checked, resumable; swapped in whole)",
                inputs=("winupload:content",),
                where="windows",
            )
        )
    for i, (name, suffix, _, what) in enumerate(WIN_STEPS, 1):
        script = script_name(i, name, suffix)
        steps.append(
            Step(
                name=name,
                kind=KINDS.get(name, "winscript"),
                description=f"scripts\\{script}: {what}",
                inputs=(f"winscript:{script}",),
                where="windows",
            )
        )
    return steps
