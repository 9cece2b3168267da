"""The Windows build steps: one :class:`WinStep` record per step, in build order (the plan,
:func:`npulab.build.plan.plan`, takes them from :data:`WIN_STEPS`), and the scripts rendered
from their templates.

Each step is one script in ``build/<recipe>/scripts/`` named by the step (``ops-cpp.cmd``), its
body the template file of the same name under ``npulab/templates/windows/``. Steps that change
the machine (``stamped``) write a stamp holding the digest of their own script text into
``build/<recipe>/.npulab-win/`` and skip themselves when the stamp matches (idempotent); the
check-only steps (prerequisites, LFS objects, import) are read-only and always run.

Adding a step: one record in :data:`WIN_STEPS` and one template file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from npulab import paths
from npulab.hosts import layout
from npulab.quoting import cmd_set_value, quote_pwsh
from npulab.recipe import Recipe
from npulab.source import envlock
from npulab.windows.lfs import (
    EXIT_NO_GIT,
    EXIT_NOT_FETCHED,
    POINTER_VERSION,
    SMUDGE_ARGS,
    LfsObject,
    objects_table,
    pointer_objects,
)
from npulab.windows.script import CRLF, CmdScript, env_lines_cmd, env_lines_ps1, fill, safe_name
from npulab.windows.wrappers import write_all

VSWHERE = "%ProgramFiles(x86)%\\Microsoft Visual Studio\\Installer\\vswhere.exe"
VC_COMPONENT = "Microsoft.VisualStudio.Component.VC.Tools.x86.x64"
VS_RANGE = "[16,17)"
#: The same range inside a FOR /F set: an unescaped ) would end the set and an unescaped , would
#: split the argument (for /?; vswhere's "Versions" page says to escape both in batch for loops).
VS_RANGE_IN_FOR = VS_RANGE.replace(",", "^,").replace(")", "^)")
ENV_CMD = "npulab-env.cmd"
ENV_PS1 = "npulab-env.ps1"
CHECK_LOCK = "check-lock.py"
#: The conda part of the patched env.yaml (its pip section removed), written beside the scripts:
#: ``conda env create`` reads this, so no pip requirement reaches the env without a hash.
CONDA_ENV = "env-conda.yaml"
Shell = Literal["cmd", "powershell"]


@dataclass(frozen=True, kw_only=True)
class WinStep:
    """One Windows build step: everything about it but its script text (its template)."""

    #: The plan's step name (``win-<template stem>``).
    name: str
    shell: Shell
    #: The template file under ``npulab/templates/windows/``; also the script's name in
    #: ``scripts/``. A ``.cmd`` template is the body after the common prelude.
    template: str
    #: The :class:`TreeFacts` fields the script renders (its ``rem input:`` lines, the LFS
    #: table): a change to one of them changes this script and no other.
    reads: tuple[str, ...] = ()
    #: Seconds it may run before it is stopped (its partial log is kept).
    timeout: float
    #: Changes the machine: skipped while the host's stamp holds this script's digest, and
    #: running it invalidates the stamps of the stamped steps after it. Otherwise check-only:
    #: it reads the host as it is and runs every build.
    stamped: bool
    #: What it does, for the plan (``invoke build --dry-run``) and docs.
    does: str

    @property
    def script(self) -> str:
        return self.template

    @property
    def stem(self) -> str:
        """``ops-cpp`` for ``ops-cpp.cmd``: the name of its stamp and its log."""
        return self.template.rsplit(".", 1)[0]

    @property
    def kind(self) -> str:
        """The executor's runner: ``winscript`` (stamped) or ``wincheck`` (always runs)."""
        return "winscript" if self.stamped else "wincheck"


@dataclass(frozen=True, kw_only=True)
class TreeFacts:
    """What the scripts depend on beyond the recipe, read from the staged tree and the lock.

    Rendered into the scripts (``rem input:`` lines, the LFS table), so a changed env.yaml, lock,
    ops\\cpp source or LFS object changes exactly the scripts that use it: their digests drive
    both the manifest's resume and the host's stamps."""

    lfs_objects: tuple[LfsObject, ...] = ()
    env_file_sha256: str = "not-staged"
    #: The conda part of the patched env.yaml (:func:`envlock.conda_part`), and its sha256.
    conda_env: str = "# not staged: run invoke build with the full upstream tree\n"
    conda_env_sha256: str = "not-staged"
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
        env_file = tree / recipe.env.env_file
        conda = {}
        if env_file.is_file():
            text = envlock.conda_part(env_file.read_text(encoding="utf-8"))
            conda = {
                "conda_env": text,
                "conda_env_sha256": hashlib.sha256(text.encode()).hexdigest(),
            }
        return cls(
            lfs_objects=tuple(pointer_objects(tree, recipe)) if tree.is_dir() else (),
            env_file_sha256=_sha(env_file),
            **conda,
            lock_sha256=_sha(paths.project_root() / recipe.env.lock, "missing"),
            ops_cpp_sha256=h.hexdigest() if stack.is_dir() else "not-staged",
        )


def _sha(path: Path, absent: str = "not-staged") -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return absent


VS_DOES = f"VS 2019 C++ v142 (vswhere -version {VS_RANGE} -requires {VC_COMPONENT})"

#: The Windows steps in build order. Timeouts are generous bounds for a conda solve or the
#: ops\\cpp compile on a laptop, there so a hung step cannot hang a build.
WIN_STEPS: tuple[WinStep, ...] = (
    WinStep(
        name="win-prereqs",
        shell="powershell",
        template="prereqs.ps1",
        timeout=300.0,
        stamped=False,
        # No system cmake: the stack's builds get theirs from pip and the conda env.
        does=f"check conda, git + git lfs, {VS_DOES}, LongPathsEnabled",
    ),
    WinStep(
        name="win-lfs",
        shell="powershell",
        template="lfs.ps1",
        reads=("lfs_objects",),
        timeout=3600.0,
        stamped=False,
        does="fetch the LFS objects under <upstream.lfs.include> by oid (git lfs smudge against "
        "<upstream.repo_url>), verify sha256 + size, replace the pointers",
    ),
    WinStep(
        name="win-conda-env",
        shell="cmd",
        template="conda-env.cmd",
        reads=("conda_env_sha256",),
        timeout=3600.0,
        stamped=True,
        does=f"conda env create (or update) -n <env.name> -f scripts\\{CONDA_ENV} (the patched "
        "env.yaml without its pip section: the pip part comes only from the lock)",
    ),
    WinStep(
        name="win-pip-lock",
        shell="cmd",
        template="pip-lock.cmd",
        reads=("lock_sha256",),
        timeout=3600.0,
        stamped=True,
        does="pip install --require-hashes --no-deps -r <env.lock>, then check-lock.py (no drift)",
    ),
    WinStep(
        name="win-ops-cpp",
        shell="cmd",
        template="ops-cpp.cmd",
        reads=("ops_cpp_sha256",),
        timeout=3600.0,
        stamped=True,
        does="one cmd session: vcvars64.bat (VS 2019 via vswhere), conda activate, call setup.bat, "
        "pip install ops\\cpp --force-reinstall --no-deps",
    ),
    WinStep(
        name="win-import-check",
        shell="cmd",
        template="import-check.cmd",
        timeout=600.0,
        stamped=False,
        does="call npulab-env.cmd (DEVICE, PYTORCH_AIE_PATH, PATH, PYTHONPATH), "
        'python -c "import qlinear, RyzenAI"; exit 6 without a started XDNA1 NPU',
    ),
)
STEPS_BY_NAME = {step.name: step for step in WIN_STEPS}


def _win(path: str) -> str:
    return path.replace("/", "\\")


def _values(recipe: Recipe, shell: Shell) -> dict[str, str]:
    """What the templates of ``shell`` may name, each value quoted for where it stands: in a
    ``.cmd``, plain names (:func:`safe_name`) and ``set "NAME=..."`` values
    (:func:`cmd_set_value`); in a ``.ps1``, PowerShell literals (:func:`quote_pwsh`). Fixed
    template text (``vswhere``, exit codes) is trusted as it is."""
    if shell == "powershell":
        return {
            "repo_url": quote_pwsh(recipe.upstream.repo_url),
            "conda_root": quote_pwsh(layout.load().conda_root),
            "vs_range": quote_pwsh(VS_RANGE),
            "vc_component": quote_pwsh(VC_COMPONENT),
            "smudge_args": ", ".join(quote_pwsh(a) for a in SMUDGE_ARGS),
            "pointer_version": POINTER_VERSION,
            "exit_no_git": str(EXIT_NO_GIT),
            "exit_not_fetched": str(EXIT_NOT_FETCHED),
        }
    return {
        "env_name": safe_name(recipe.env.name),
        "lock_name": cmd_set_value(_win(recipe.env.lock).rsplit("\\", 1)[-1]),
        "stack": cmd_set_value(_win(recipe.upstream.subdir)),
        "vswhere": VSWHERE,
        "vs_range_in_for": VS_RANGE_IN_FOR,
        "vc_component": VC_COMPONENT,
        "check_lock": CHECK_LOCK,
        "conda_env_file": CONDA_ENV,
        "env_cmd": ENV_CMD,
    }


def _facts(facts: TreeFacts, reads: tuple[str, ...]) -> dict[str, str]:
    """Only the facts a step declares it reads: a template naming another one fails to render."""
    out = {}
    for name in reads:
        if name == "lfs_objects":
            out[name] = objects_table(facts.lfs_objects)
        else:
            out[name] = str(getattr(facts, name))
    return out


def render_step(step: WinStep, recipe: Recipe, facts: TreeFacts) -> str:
    """The script text of ``step``: its template filled in; a ``.cmd`` gets the common prelude,
    and a stamped one the stamp check around its body."""
    body = fill(step.template, {**_values(recipe, step.shell), **_facts(facts, step.reads)})
    if step.shell == "powershell":
        return CRLF.join(body) + CRLF
    if step.stamped:
        return _stamped(step, body)
    return CmdScript(lines=[*CmdScript().lines, *body]).text()


def _stamped(step: WinStep, body: list[str]) -> str:
    """A mutating step: skipped when its stamp holds this script's digest.

    The body's ``rem input:`` lines (digests of what the step reads) are part of the digest.
    Running the step first empties its own stamp and those of the stamped steps after it in
    :data:`WIN_STEPS` (they built on what this step is about to change)."""
    digest = hashlib.sha256("\r\n".join(body).encode()).hexdigest()[:32]
    name = safe_name(step.stem)
    s = CmdScript()
    stamp = f"%NPULAB_STATE%\\{name}.stamp"
    s.cmd('if not exist "%NPULAB_STATE%" mkdir "%NPULAB_STATE%"')
    s.raw(
        f'findstr /x /c:{digest} "{stamp}" >nul 2>nul',
        "if not errorlevel 1 goto :uptodate",
    )
    # findstr left errorlevel 1; VER clears it (TYPE below would too, but only on success).
    s.cmd("ver >nul")
    stamped = [w for w in WIN_STEPS if w.stamped]
    for other in stamped[stamped.index(step) :]:
        # An empty stamp never matches a digest: this step and the later ones will run.
        s.cmd(f'type nul >"%NPULAB_STATE%\\{other.stem}.stamp"')
    s.lines += body
    s.cmd(f'>"{stamp}" echo {digest}')
    s.raw("exit /b 0", ":uptodate", f"echo {name}: up to date (stamp {digest})", "exit /b 0")
    return s.text()


def render_scripts(recipe: Recipe, facts: TreeFacts | None = None) -> dict[str, str]:
    """File name -> text for every Windows step, the lock checker and the runtime env files.

    ``facts`` come from the staged tree (:meth:`TreeFacts.read`); without them (plans, docs)
    the scripts name their tree inputs as not staged."""
    facts = facts or TreeFacts()
    out = {step.script: render_step(step, recipe, facts) for step in WIN_STEPS}
    env = runtime_env(recipe)
    out[ENV_CMD] = env_lines_cmd(env)
    out[ENV_PS1] = env_lines_ps1(env)
    out[CHECK_LOCK] = (Path(__file__).parent / "check_lock.py").read_text(encoding="utf-8")
    out[CONDA_ENV] = facts.conda_env
    return out


def render_windows(recipe: Recipe, tree: Path, scripts: Path) -> list[Path]:
    """The render step's Windows part: the step scripts, check-lock.py and npulab-env.cmd/.ps1
    written into ``scripts`` (from the staged ``tree``'s facts)."""
    return write_all(render_scripts(recipe, TreeFacts.read(recipe, tree)), scripts)


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


#: Builds over WinRM: the host layout's build_root (``<build_root>\\<recipe>``).
DEFAULT_REMOTE_ROOT = layout.load().build_root


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
