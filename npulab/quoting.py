"""Quoting for Windows command lines: Win32 argv, cmd.exe and PowerShell.

Three parsers stand between our text and the program on a Windows machine:

* **Win32 argv** (``CommandLineToArgvW`` / the MSVC and UCRT start-up code, which python.exe uses):
  one command line string is split into argv. :func:`quote_win_arg` / :func:`quote_argv` produce
  the string that splits back into exactly the given list.
* **cmd.exe** parses a line before it builds that command line: phase 1 expands ``%VAR%`` (in a
  batch file ``%%`` is a literal ``%``), phase 2 treats ``& | < > ( )`` as syntax outside double
  quotes and consumes ``^`` escapes; with delayed expansion on, ``!VAR!`` expands too (our scripts
  run with it off: ``setlocal DisableDelayedExpansion``, ``cmd /d /v:off``).
  :func:`quote_cmd_arg` first Win32-quotes the argument, then escapes *every* cmd special
  character, including the double quotes, with ``^``. cmd then never enters a quoted region, so
  the result is the same whatever stood before it on the line, and after phase 2 the program
  receives the Win32-quoted text. ``passes=2`` escapes for a line whose tail cmd parses twice (a
  ``.cmd`` wrapper that forwards ``%*``).
  A WinRM ``cmd`` shell runs its command line through cmd.exe too: quote it with
  :func:`quote_cmd_line` (``batch=False``), or :func:`quote_wrapper_call` for a ``.cmd`` wrapper;
  :func:`quote_argv` alone lets ``&`` or ``(`` through to cmd.
* **PowerShell**: :func:`quote_pwsh` makes a single-quoted literal (no expansion at all).

Line breaks and NUL cannot be carried through cmd.exe: those raise ValueError, as does anything
a variable assignment cannot hold (:func:`cmd_set`).
"""

from __future__ import annotations

from collections.abc import Iterable

#: Characters cmd.exe gives meaning to in phase 2 (outside quotes), plus ``!`` for delayed
#: expansion and ``"`` which toggles the quoted state.
CMD_SPECIAL = frozenset('^&|<>()"!')
_WIN_NEEDS_QUOTES = frozenset(' \t\n\v"')
#: PowerShell accepts the typographic single quotes as quote characters too.
_PWSH_SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"


def _refuse_unrepresentable(arg: str, what: str) -> None:
    for bad, name in (("\0", "NUL"), ("\r", "carriage return"), ("\n", "line feed")):
        if bad in arg:
            msg = f"{what}: {arg!r} contains a {name}, which a cmd.exe line cannot carry"
            raise ValueError(msg)


def quote_win_arg(arg: str) -> str:
    """Quote one argument so CommandLineToArgvW / the C runtime yields exactly ``arg``."""
    if arg and not any(ch in _WIN_NEEDS_QUOTES for ch in arg):
        return arg
    out = ['"']
    backslashes = 0
    for ch in arg:
        if ch == "\\":
            backslashes += 1
            continue
        if ch == '"':
            # 2n backslashes + \" : n literal backslashes then a literal quote.
            out.append("\\" * (2 * backslashes + 1) + '"')
        else:
            out.append("\\" * backslashes + ch)
        backslashes = 0
    # Trailing backslashes precede the closing quote: double them.
    out.append("\\" * (2 * backslashes) + '"')
    return "".join(out)


def quote_argv(argv: Iterable[str]) -> str:
    """A Win32 command line that splits back into ``argv`` (for CreateProcess, not cmd.exe)."""
    return " ".join(quote_win_arg(a) for a in argv)


def _caret_escape(text: str) -> str:
    return "".join("^" + ch if ch in CMD_SPECIAL else ch for ch in text)


def quote_cmd_arg(arg: str, *, batch: bool = True, passes: int = 1) -> str:
    """Text to place on a cmd.exe line so the program started there receives ``arg``.

    ``batch``: the line is in a ``.cmd``/``.bat`` file (``%`` becomes ``%%``); otherwise it is a
    command line (``cmd /c ...``) where ``%`` becomes ``^%`` (which stops ``%NAME%`` matching a
    variable, then loses its caret). ``passes``: how many times cmd's phase 2 will parse the text
    (2 for arguments handed to a ``.cmd`` wrapper that runs ``program %*``).
    """
    _refuse_unrepresentable(arg, "quote_cmd_arg")
    if passes < 1:
        msg = f"passes must be >= 1, got {passes}"
        raise ValueError(msg)
    text = quote_win_arg(arg)
    for _ in range(passes):
        text = _caret_escape(text)
    if batch:
        return text.replace("%", "%%")
    return text.replace("%", "^%")


def quote_cmd_line(argv: Iterable[str], *, batch: bool = True, passes: int = 1) -> str:
    """:func:`quote_cmd_arg` for every element, joined by spaces."""
    return " ".join(quote_cmd_arg(a, batch=batch, passes=passes) for a in argv)


def quote_wrapper_call(wrapper: str, args: Iterable[str]) -> str:
    """A cmd.exe command line (``cmd /d /v:off /c <line>``, or a WinRM cmd shell command) that
    starts the ``.cmd`` ``wrapper`` so that the program it runs with ``%*`` receives ``args``.

    The wrapper path is parsed by cmd once; the arguments twice (the line, then the wrapper's
    ``%*`` line), hence ``passes=2`` for them only.
    """
    head = quote_cmd_arg(wrapper, batch=False)
    tail = quote_cmd_line(args, batch=False, passes=2)
    return f"{head} {tail}" if tail else head


def cmd_set(name: str, value: str) -> str:
    """A batch line ``set "NAME=value"`` that stores ``value`` verbatim (delayed expansion off).

    Inside the quotes cmd treats ``& ( ) ^ < > |`` literally; ``%`` is doubled for phase 1. A value
    holding ``"`` cannot be stored this way (no Windows path contains one): ValueError.
    """
    if not name or not all(ch.isalnum() or ch == "_" for ch in name) or name[0].isdigit():
        msg = f"cmd_set: {name!r} is not a plain variable name (letters, digits, _)"
        raise ValueError(msg)
    return f'set "{name}={cmd_set_value(value)}"'


def cmd_set_value(value: str) -> str:
    """``value`` as the text after ``=`` in a batch line ``set "NAME=..."`` (see :func:`cmd_set`;
    the Windows step templates write the ``set "NAME=`` part themselves)."""
    _refuse_unrepresentable(value, "cmd_set")
    if '"' in value:
        msg = f'cmd_set: {value!r} contains a double quote; set "NAME=..." cannot hold it'
        raise ValueError(msg)
    return value.replace("%", "%%")


def quote_pwsh(arg: str) -> str:
    """A PowerShell single-quoted string literal of ``arg`` (no ``$`` or backtick expansion)."""
    if "\0" in arg:
        msg = f"quote_pwsh: {arg!r} contains NUL"
        raise ValueError(msg)
    out = ["'"]
    for ch in arg:
        out.append(ch + ch if ch in _PWSH_SINGLE_QUOTES else ch)
    out.append("'")
    return "".join(out)
