"""Windows script text: step templates, ``.cmd`` builder, runtime env files and the ``.cmd``
rule checker.

Every piece of data goes through :mod:`npulab.quoting` (``quote_cmd_arg``, ``cmd_set``,
``quote_pwsh``) before it reaches a template; the templates only add fixed text. A rendered
``.cmd`` has CRLF endings, ``@echo off``, ``chcp 65001 >nul`` (the caller's code page given back
on exit) and an ``if errorlevel 1`` check after every command.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources

from npulab.hosts import layout
from npulab.quoting import cmd_set, quote_cmd_arg, quote_pwsh

CRLF = "\r\n"
FAIL = "if errorlevel 1 exit /b %errorlevel%"
#: Names only (env names, step names): no quoting needed, nothing cmd.exe interprets.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: Template prelude: where the build lives on the Windows machine, relative to the script.
#: The caller's console code page is read first (the last word of chcp's localized answer; %%~nb
#: drops the "." of de-DE's "850.") and given back on every way out: the body runs as the
#: subroutine :npulab_main, so each of its ``exit /b`` returns here first.
PRELUDE = (
    "@echo off",
    'set "NPULAB_CP="',
    'for /f "tokens=*" %%a in (\'chcp\') do for %%b in (%%a) do set "NPULAB_CP=%%~nb"',
    FAIL,
    "chcp 65001 >nul",
    FAIL,
    "call :npulab_main",
    'set "NPULAB_RC=%ERRORLEVEL%"',
    "if defined NPULAB_CP chcp %NPULAB_CP% >nul",
    "exit /b %NPULAB_RC%",
    ":npulab_main",
    'set "PYTHONUTF8=1"',
    'set "PYTHONIOENCODING=utf-8"',
    'set "NPULAB_BUILD=%~dp0.."',
    'set "NPULAB_TREE=%NPULAB_BUILD%\\tree"',
    'set "NPULAB_STATE=%NPULAB_BUILD%\\.npulab-win"',
    # The host layout's conda root (the miniconda role installs there and sets the variable
    # machine-wide); NPULAB_CONDA_ROOT from the environment wins.
    "if not defined NPULAB_CONDA_ROOT " + cmd_set("NPULAB_CONDA_ROOT", layout.load().conda_root),
)


#: What ``cmd /d /v:off /c <path>`` (how a step starts; list2cmdline/quote_argv quote it only
#: for spaces) cannot carry in the path: with ``& < > ( ) @ ^ |`` in it, ``cmd /?``'s rule 2
#: strips the quotes and the path splits; phase 1 expands ``%``; ``, ; =`` separate cmd's words.
CMD_C_BREAKERS = '&<>()@^|%,;="'


def cmd_c_path_problem(path: str) -> str | None:
    """Why ``cmd /c`` cannot start the script at ``path`` (None when it can)."""
    bad = sorted({ch for ch in path if ch in CMD_C_BREAKERS or ord(ch) < 32})
    if not bad:
        return None
    return (
        f"{path!r} holds {' '.join(repr(ch) for ch in bad)}: cmd /c would split it (cmd /? strips"
        " the quotes of a path with special characters) or expand it"
    )


class ScriptTemplate(string.Template):
    """A step script under ``npulab/templates/windows/`` with ``{{name}}`` placeholders.

    ``$`` (PowerShell) and ``%`` (cmd.exe) are the scripts' own syntax, so the placeholders use
    braces, which neither shell doubles. A ``{{`` that is not a placeholder is an error, and so is
    a placeholder without a value (:meth:`substitute`): a template cannot half-render."""

    pattern = r"""
    \{\{(?:
      (?P<escaped>(?!))
      |(?P<named>(?!))
      |(?P<braced>[a-z][a-z0-9_]*)\}\}
      |(?P<invalid>)
    )
    """  # type: ignore[assignment]


def template(name: str) -> ScriptTemplate:
    """The template file ``npulab/templates/windows/<name>`` (line endings normalized to LF)."""
    path = resources.files("npulab").joinpath("templates", "windows", name)
    return ScriptTemplate(path.read_text(encoding="utf-8").replace("\r\n", "\n"))


def fill(name: str, values: Mapping[str, str]) -> list[str]:
    """The lines of template ``name`` with ``values`` (already quoted for the script's shell)
    substituted."""
    text = template(name).substitute(values)
    return text.removesuffix("\n").split("\n")


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
    for name, value in variables:
        head = _appends_to_itself(name, value)
        if head is None:
            body.append(f'set "{name}={value}"')
        else:
            # NAME=...;%NAME%: an unset NAME would leave an empty last entry (for PYTHONPATH,
            # the current directory on sys.path); append it only when it is defined.
            body += [
                f'if defined {name} set "{name}={head};%{name}%"',
                f'if not defined {name} set "{name}={head}"',
            ]
    return CRLF.join(body) + CRLF


def _appends_to_itself(name: str, value: str) -> str | None:
    """The head of a ``head;%NAME%`` list value for variable ``name`` (None otherwise)."""
    tail = f";%{name}%"
    return value[: -len(tail)] if value.upper().endswith(tail.upper()) else None


def env_lines_ps1(variables: Sequence[tuple[str, str]]) -> str:
    """``npulab-env.ps1``: ``%VAR%`` references become ``$env:VAR`` concatenations."""
    out = ["$ErrorActionPreference = 'Stop'"]
    for name, value in variables:
        head = _appends_to_itself(name, value)
        if head is not None:
            out.append(f"$npulabHead = {_ps1_terms(head)}")
            out.append(
                f"$env:{name} = if ($env:{name}) {{ $npulabHead + ';' + $env:{name} }} "
                "else { $npulabHead }"
            )
            continue
        out.append(f"$env:{name} = " + _ps1_terms(value))
    return CRLF.join(out) + CRLF


def _ps1_terms(value: str) -> str:
    """A PowerShell expression for a value: ``%VAR%`` -> ``$env:VAR``, ``%~dp0`` -> the folder."""
    parts = re.split(r"%(~dp0|[A-Za-z_][A-Za-z0-9_]*)%?", value)
    terms = []
    for i, part in enumerate(parts):
        if i % 2:
            terms.append("$PSScriptRoot + '\\'" if part == "~dp0" else f"$env:{part}")
        elif part:
            terms.append(quote_pwsh(part))
    return " + ".join(terms) if terms else "''"


# --- the checker -----------------------------------------------------------------------------

#: Lines that are not commands (no errorlevel check needed after them).
_NOT_COMMAND = re.compile(
    r"(@echo off|rem( .*)?|set \".*\"|if (not )?defined \w+ set \".*\"|if (not )?errorlevel 1 .*"
    r"|if (not )?exist \"[^\"&]*\" goto :\w+|if not defined \w+ exit /b \d+"
    r"|:[A-Za-z_]\w*|goto :?[A-Za-z_]\w*|exit /b( \d+| %errorlevel%| %NPULAB_RC%)?|echo [^&|<>]*"
    r"|call :npulab_main|if defined NPULAB_CP chcp %NPULAB_CP% >nul|)",
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
    opened: list[int] = []  # lines of the ( blocks still open
    for i, line in enumerate(lines):
        where = f"{name}:{i + 1}"
        problems += _check_line(line, where)
        problems += _check_for_set(line, where)
        for ch in _outside_for_sets(_unquoted(line)):
            if ch == "(":
                opened.append(i + 1)
            elif ch == ")" and opened:
                opened.pop()
        if _NOT_COMMAND.fullmatch(line) or line.lower() == "@echo off":
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if not _ERRORLEVEL.match(nxt):
            problems.append(f"{where}: no errorlevel check after command {line!r}")
    problems += [f"{name}:{n}: a ( block opened here is never closed" for n in opened]
    return problems


def _unquoted(line: str) -> str:
    """The line as phase 2 sees its syntax: quoted text and caret-escaped characters blanked."""
    out = []
    quoted = False
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == '"':
            quoted = not quoted
            out.append(" ")
        elif quoted:
            out.append(" ")
        elif ch == "^" and i + 1 < len(line):
            out.append("  ")
            i += 1
        else:
            out.append(ch)
        i += 1
    return "".join(out)


_FOR_IN = re.compile(r"(?i)(?:^|[\s(&])for\b[^\n]*?\sin\s*\(")


def _for_sets(plain: str) -> list[tuple[int, int]]:
    """(start, end) of each FOR set in a blanked line: from its ( to the first ) after it."""
    spans = []
    for m in _FOR_IN.finditer(plain):
        close = plain.find(")", m.end())
        spans.append((m.end(), close if close >= 0 else len(plain)))
    return spans


def _outside_for_sets(plain: str) -> str:
    for start, end in reversed(_for_sets(plain)):
        plain = plain[: start - 1] + " " * (end - start + 2) + plain[end + 1 :]
    return plain


def _check_for_set(line: str, where: str) -> list[str]:
    """A FOR set ends at its first unescaped ``)`` outside quotes, and a FOR /F command set
    reads unescaped ``, ; =`` as separators: both must be escaped (``^)``, ``^,``) inside it, as
    ``for /?`` and vswhere's "Versions" page say for a version range."""
    plain = _unquoted(line)
    problems = []
    for start, end in _for_sets(plain):
        after = plain[end + 1 :].lstrip()
        if end < len(plain) and not after.lower().startswith("do "):
            problems.append(
                f"{where}: unescaped ) inside a FOR set (the set ends there): {line!r}; "
                "escape it as ^)"
            )
        body = plain[start:end]
        if body.strip()[:1] in ("'", "`") and "," in body:
            problems.append(f"{where}: unescaped , inside a FOR /F command set: {line!r}; ^,")
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
