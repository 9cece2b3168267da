"""``chcp 65001`` wrappers: one ``.cmd`` per Python entry point of the RyzenAI-SW 1.1 stack.

Each wrapper, in one cmd.exe session: remembers the console code page, switches it to 65001
(UTF-8), sets ``PYTHONUTF8=1`` and ``PYTHONIOENCODING=utf-8``, activates the conda env, ``call``s
the stack's ``setup.bat`` (only ``set`` lines, so it must run in this same session; the order
is the one upstream's README gives), puts the patched ``models\\llama2`` (``modeling_llama_amd``)
in front of PYTHONPATH, runs the program with its fixed arguments and every argument the wrapper
got (``%*``), restores the code page and exits with the program's exit code.

The text is CRLF, UTF-8 without BOM; every line before ``chcp 65001`` is ASCII (cmd.exe decodes
each batch line with the code page current when it reads it, so non-ASCII paths after the switch
are read as UTF-8). Values are stored with ``set "NAME=value"`` and used as ``"%NAME%"``, which
keeps ``& ( ) ^ %`` and spaces literal; fixed arguments go through :func:`quote_cmd_arg`. Callers
that start a wrapper through ``cmd /c`` quote its arguments with
``quote_cmd_arg(arg, batch=False, passes=2)``: cmd parses them once, and the wrapper's ``%*`` line
once more.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from npulab import log, paths
from npulab.hosts import layout
from npulab.quoting import cmd_set, quote_cmd_arg
from npulab.recipe import Recipe

SMOKE_RUNNER = Path(__file__).resolve().parent.parent / "smoke" / "runner.py"

CRLF = "\r\n"
#: Characters upstream setup.bat (unquoted ``set X=%PWD%...``) cannot take in its own path.
SETUP_BAT_BREAKERS = "&|<>^"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_PROGRAM_RE = re.compile(r"[A-Za-z0-9_.\\-]+\.exe")


class Raw(str):
    """A cmd expression written as is inside ``set "NAME=..."`` or double quotes: it may use
    ``%~dp0`` (the wrapper's folder) or ``%VAR%``, expanded on the Windows machine at run time."""


def _set(name: str, value: str) -> str:
    if isinstance(value, Raw):
        if any(ch in value for ch in '"\r\n\0'):
            msg = f"Raw value {value!r} for {name}: no quotes or line breaks"
            raise ValueError(msg)
        return f'set "{name}={value}"'
    return cmd_set(name, value)


def _arg(value: str) -> str:
    if isinstance(value, Raw):
        if any(ch in value for ch in '"\r\n\0') or value.endswith("\\"):
            msg = f"Raw argument {value!r}: no quotes, line breaks or trailing backslash"
            raise ValueError(msg)
        return f'"{value}"'
    return quote_cmd_arg(value)


@dataclass(frozen=True, kw_only=True)
class EntryPoint:
    """A program of the env: ``program`` is relative to the env prefix (``%CONDA_PREFIX%``)."""

    name: str
    program: str = "python.exe"
    args: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True, kw_only=True)
class RuntimeEnv:
    """Where the stack lives on the Windows machine (absolute Windows paths)."""

    #: ``<tree>\\example\\transformers`` of the patched upstream tree.
    transformers_dir: str
    #: Miniconda/Anaconda root (holds ``condabin\\conda.bat``).
    conda_root: str
    env_name: str
    #: Prepended to PYTHONPATH after setup.bat (default: the patched models\\llama2).
    pythonpath: tuple[str, ...] | None = None
    #: Extra variables set before the program runs (name -> value), e.g. NPULAB_SMOKE_DIR.
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Variables given a value only when the caller has not set them (name -> value).
    defaults: dict[str, str] = field(default_factory=dict)

    @property
    def setup_bat(self) -> str:
        return win_join(self.transformers_dir, "setup.bat")

    @property
    def python_path(self) -> tuple[str, ...]:
        if self.pythonpath is not None:
            return self.pythonpath
        joined = win_join(self.transformers_dir, "models", "llama2")
        return (Raw(joined) if isinstance(self.transformers_dir, Raw) else joined,)


def win_join(*parts: str) -> str:
    joined = "\\".join(p.rstrip("\\/") if i == 0 else p.strip("\\/") for i, p in enumerate(parts))
    return Raw(joined) if isinstance(parts[0], Raw) else joined


def default_entry_points(smoke_runner: str | None = None) -> list[EntryPoint]:
    """python, pip (``python -m pip``: no launcher .exe that breaks when the env moves), smoke."""
    points = [
        EntryPoint(name="python", description="python of the stack env"),
        EntryPoint(name="pip", args=("-m", "pip"), description="pip of the stack env"),
    ]
    if smoke_runner:
        points.append(
            EntryPoint(name="smoke", args=(smoke_runner,), description="npulab smoke runner")
        )
    return points


def _check(entry: EntryPoint) -> None:
    if not _NAME_RE.fullmatch(entry.name):
        msg = f"wrapper name {entry.name!r}: use letters, digits, '.', '_' or '-'"
        raise ValueError(msg)
    if not _PROGRAM_RE.fullmatch(entry.program):
        msg = f"program {entry.program!r}: a plain path relative to the env prefix"
        raise ValueError(msg)


def _check_env(env: RuntimeEnv) -> None:
    if not _NAME_RE.fullmatch(env.env_name):
        msg = f"conda env name {env.env_name!r}: use letters, digits, '.', '_' or '-'"
        raise ValueError(msg)
    # setup.bat itself stores %~dp0 with unquoted `set X=...` lines: these break it.
    literal = "" if isinstance(env.transformers_dir, Raw) else env.transformers_dir
    bad = sorted(set(literal) & set(SETUP_BAT_BREAKERS))
    if bad:
        msg = (
            f"{env.transformers_dir!r}: upstream setup.bat cannot live under a path holding "
            f"{' '.join(bad)} (its unquoted set lines would split there); build elsewhere"
        )
        raise ValueError(msg)


def render(entry: EntryPoint, env: RuntimeEnv) -> str:
    """The ``.cmd`` text (CRLF) for one entry point."""
    _check(entry)
    _check_env(env)
    fixed = "".join(f" {_arg(a)}" for a in entry.args)
    what = entry.description or entry.name
    head = [
        "@echo off",
        f"rem {entry.name}.cmd: {ascii(what)[1:-1]} on a UTF-8 console. Generated by npulab",
        "rem (npulab/windows/wrappers.py); do not edit. Exit code = the program's.",
        "setlocal EnableExtensions DisableDelayedExpansion",
        'set "NPULAB_CP="',
        # The last word of chcp's (localized) answer; %%~nb drops a trailing "." (de-DE: "850.").
        'for /f "tokens=*" %%a in (\'chcp\') do for %%b in (%%a) do set "NPULAB_CP=%%~nb"',
        "chcp 65001 >nul",
    ]
    body = [
        'set "PYTHONUTF8=1"',
        'set "PYTHONIOENCODING=utf-8"',
        *(f"if not defined {k} {_set(k, v)}" for k, v in sorted(env.defaults.items())),
        _set("NPULAB_CONDABIN", win_join(env.conda_root, "condabin")),
        cmd_set("NPULAB_ENV", env.env_name),
        _set("NPULAB_TRANSFORMERS", env.transformers_dir),
        *(_set(f"NPULAB_PYTHONPATH{i}", part) for i, part in enumerate(env.python_path)),
        'set "NPULAB_PYTHONPATH=%NPULAB_PYTHONPATH0%"',
        *(
            f'set "NPULAB_PYTHONPATH=%NPULAB_PYTHONPATH%;%NPULAB_PYTHONPATH{i}%"'
            for i in range(1, len(env.python_path))
        ),
        *(_set(k, v) for k, v in sorted(env.extra_env.items())),
        'set "NPULAB_RC=9009"',
        # `call` expands %...% a second time and doubles quoted carets, so it never sees a path:
        # pushd into the folder (no call), call the script by its plain name (%~dp0 inside the
        # script is still its full path), popd. No parenthesised blocks either: cmd expands a
        # block at once, so a ")" in a path or a stale %ERRORLEVEL% would break it.
        'if not exist "%NPULAB_TRANSFORMERS%\\setup.bat" goto npulab_no_setup',
        'pushd "%NPULAB_CONDABIN%" || goto npulab_no_conda',
        'call conda.bat activate "%NPULAB_ENV%"',
        'set "NPULAB_RC=%ERRORLEVEL%"',
        "popd",
        'if not "%NPULAB_RC%"=="0" goto npulab_no_conda',
        'pushd "%NPULAB_TRANSFORMERS%" || goto npulab_no_setup',
        "call setup.bat",
        "popd",
        'set "PYTHONPATH=%NPULAB_PYTHONPATH%;%PYTHONPATH%"',
        f'"%CONDA_PREFIX%\\{entry.program}"{fixed} %*',
        'set "NPULAB_RC=%ERRORLEVEL%"',
        "goto npulab_end",
        ":npulab_no_setup",
        'set "NPULAB_RC=9009"',
        '>&2 echo npulab: no setup.bat in "%NPULAB_TRANSFORMERS%" - fix: invoke build',
        "goto npulab_end",
        ":npulab_no_conda",
        'if "%NPULAB_RC%"=="0" set "NPULAB_RC=1"',
        '>&2 echo npulab: conda activate "%NPULAB_ENV%" failed in "%NPULAB_CONDABIN%"',
        ":npulab_end",
        "if defined NPULAB_CP chcp %NPULAB_CP% >nul",
        "endlocal & exit /b %NPULAB_RC%",
    ]
    return CRLF.join([*head, *body]) + CRLF


#: Where a staged build keeps things, relative to the wrappers in ``build/<recipe>/scripts``.
STAGED_TREE = "%~dp0..\\tree"
#: The host layout's conda root (npulab/data/host-layout.yaml), where the miniconda role installs.
STAGED_CONDA_DEFAULT = layout.load().conda_root


def staged_env(recipe: Recipe) -> RuntimeEnv:
    """Paths of a staged build, resolved on the Windows machine: the tree next to the scripts,
    conda from NPULAB_CONDA_ROOT (default: the host layout's conda_root)."""
    subdir = recipe.upstream.subdir.replace("/", "\\")
    return RuntimeEnv(
        transformers_dir=Raw(win_join(STAGED_TREE, subdir)),
        conda_root=Raw("%NPULAB_CONDA_ROOT%"),
        env_name=recipe.env.name,
        defaults={"NPULAB_CONDA_ROOT": Raw(STAGED_CONDA_DEFAULT)},
    )


def render_staged(recipe: Recipe, tree: Path, scripts: Path) -> list[Path]:
    """The render step's wrappers (``npulab.build.stage.render``): python.cmd, pip.cmd, smoke.cmd
    into ``scripts``, with the smoke runner next to smoke.cmd and the hash-locked requirements
    (``pip.cmd install --require-hashes --no-deps -r %~dp0<lock name>``)."""
    entries = default_entry_points(Raw("%~dp0runner.py"))
    written = write_all(render_all(entries, staged_env(recipe)), scripts)
    copies = [(SMOKE_RUNNER, scripts / "runner.py")]
    lock = paths.project_root() / recipe.env.lock
    if lock.is_file():
        copies.append((lock, scripts / lock.name))
    else:
        log.warning(f"{lock} is missing: the scripts carry no pip lock (fix: invoke lock)")
    for src, dest in copies:
        dest.write_bytes(src.read_bytes())
    return [*written, *(dest for _, dest in copies)]


def render_all(entries: Sequence[EntryPoint], env: RuntimeEnv) -> dict[str, str]:
    """File name -> text, for every entry point (names must be unique)."""
    out: dict[str, str] = {}
    for entry in entries:
        name = f"{entry.name}.cmd"
        if name in out:
            msg = f"two wrappers named {name}"
            raise ValueError(msg)
        out[name] = render(entry, env)
    return out


def write_all(files: dict[str, str], dest: Path) -> list[Path]:
    """Write scripts as UTF-8 (no BOM) bytes, CRLF kept; each via a temp file and rename."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in sorted(files.items()):
        path = dest / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_bytes(text.encode("utf-8"))
        tmp.replace(path)
        written.append(path)
    return written
