"""Windows script text: ``.cmd`` builder, runtime env files and the ``.cmd`` rule checker.

Every piece of data goes through :mod:`npulab.quoting` (``quote_cmd_arg``, ``cmd_set``,
``quote_pwsh``); the templates here only add fixed text. A rendered ``.cmd`` has CRLF endings,
``@echo off``, ``chcp 65001 >nul`` and an ``if errorlevel 1`` check after every command.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from npulab.quoting import cmd_set, quote_cmd_arg, quote_pwsh

CRLF = "\r\n"
FAIL = "if errorlevel 1 exit /b %errorlevel%"
#: Names only (env names, step names): no quoting needed, nothing cmd.exe interprets.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: Template prelude: where the build lives on the Windows machine, relative to the script.
PRELUDE = (
    "@echo off",
    "chcp 65001 >nul",
    FAIL,
    'set "PYTHONUTF8=1"',
    'set "PYTHONIOENCODING=utf-8"',
    'set "NPULAB_BUILD=%~dp0.."',
    'set "NPULAB_TREE=%NPULAB_BUILD%\\tree"',
    'set "NPULAB_STATE=%NPULAB_BUILD%\\.npulab-win"',
    'if not defined NPULAB_CONDA_ROOT set "NPULAB_CONDA_ROOT=%USERPROFILE%\\miniconda3"',
)


def safe_name(value: str) -> str:
    if not SAFE_NAME.fullmatch(value):
        msg = f"{value!r}: expected a plain name (letters, digits, . _ -)"
        raise ValueError(msg)
    return value


@dataclass
class CmdScript:
    """A ``.cmd`` under construction; :meth:`cmd` adds a command and its errorlevel check."""

    lines: list[str] = field(default_factory=lambda: list(PRELUDE))

    def cmd(self, line: str) -> None:
        self.lines += [line, FAIL]

    def argv(self, *argv: str, prefix: str = "") -> None:
        """A program with data arguments, each quoted by :func:`quote_cmd_arg`."""
        self.cmd(prefix + " ".join(quote_cmd_arg(a) for a in argv))

    def set(self, name: str, value: str) -> None:
        self.lines.append(cmd_set(name, value))

    def raw(self, *lines: str) -> None:
        """Fixed template lines (sets, labels, ``if``/``goto``) that are not commands."""
        self.lines += lines

    def text(self) -> str:
        return CRLF.join(self.lines) + CRLF


def env_lines_cmd(variables: Sequence[tuple[str, str]]) -> str:
    """``npulab-env.cmd``: template values may use ``%VAR%`` (they are trusted template text)."""
    body = ["@echo off", "chcp 65001 >nul", FAIL]
    body += [f'set "{name}={value}"' for name, value in variables]
    return CRLF.join(body) + CRLF


def env_lines_ps1(variables: Sequence[tuple[str, str]]) -> str:
    """``npulab-env.ps1``: ``%VAR%`` references become ``$env:VAR`` concatenations."""
    out = ["$ErrorActionPreference = 'Stop'"]
    for name, value in variables:
        parts = re.split(r"%(~dp0|[A-Za-z_][A-Za-z0-9_]*)%?", value)
        terms = []
        for i, part in enumerate(parts):
            if i % 2:
                terms.append("$PSScriptRoot + '\\'" if part == "~dp0" else f"$env:{part}")
            elif part:
                terms.append(quote_pwsh(part))
        out.append(f"$env:{name} = " + (" + ".join(terms) if terms else "''"))
    return CRLF.join(out) + CRLF


# --- the checker -----------------------------------------------------------------------------

#: Lines that are not commands (no errorlevel check needed after them).
_NOT_COMMAND = re.compile(
    r"(@echo off|rem( .*)?|set \".*\"|if not defined \w+ set \".*\"|if (not )?errorlevel 1 .*"
    r"|if (not )?exist \"[^\"&]*\" goto :\w+|if not defined \w+ exit /b \d+"
    r"|:[A-Za-z_]\w*|goto :?[A-Za-z_]\w*|exit /b( \d+| %errorlevel%)?|echo [^&|<>]*|)",
    re.IGNORECASE,
)
_ERRORLEVEL = re.compile(r"if (not )?errorlevel 1 ", re.IGNORECASE)
_VARREF = re.compile(r"%%|%~dp0|%ProgramFiles\(x86\)%|%[A-Za-z_][A-Za-z0-9_]*%")


def check_cmd(text: str, *, name: str = "script") -> list[str]:
    """Rule violations of a rendered ``.cmd`` (empty when it is fine)."""
    problems: list[str] = []
    if "\n" in text.replace("\r\n", ""):
        problems.append(f"{name}: line ending without CR (expected CRLF throughout)")
    if not text.endswith(CRLF):
        problems.append(f"{name}: does not end with CRLF")
    lines = text.split(CRLF)[:-1] if text.endswith(CRLF) else text.split(CRLF)
    if not lines or lines[0] != "@echo off":
        problems.append(f"{name}: first line is not '@echo off'")
    for i, line in enumerate(lines):
        where = f"{name}:{i + 1}"
        problems += _check_line(line, where)
        if _NOT_COMMAND.fullmatch(line) or line.lower() == "@echo off":
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if not _ERRORLEVEL.match(nxt):
            problems.append(f"{where}: no errorlevel check after command {line!r}")
    return problems


def _check_line(line: str, where: str) -> list[str]:
    """Unquoted ``&`` and stray ``%`` (data that bypassed the quoting helpers)."""
    problems = []
    stripped = re.sub(r"\^.", "", line)  # caret escapes (quote_cmd_arg output)
    quoted = False
    for ch in stripped:
        if ch == '"':
            quoted = not quoted
        elif ch == "&" and not quoted:
            problems.append(f"{where}: unquoted & in {line!r}")
            break
    if "%" in _VARREF.sub("", stripped):
        problems.append(f"{where}: unescaped % in {line!r}")
    return problems


def check_all(scripts: Iterable[tuple[str, str]]) -> list[str]:
    out: list[str] = []
    for name, text in scripts:
        if name.endswith(".cmd"):
            out += check_cmd(text, name=name)
    return out
