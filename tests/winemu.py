"""A model of how cmd.exe and the C runtime read a line, for quoting tests without Windows.

It models what our quoting relies on and is strict where cmd is lenient: phase 1 (percent
expansion: batch files turn ``%%`` into ``%`` and expand ``%NAME%``/``%*``; command lines leave an
undefined ``%NAME%`` alone), phase 2 (``"`` toggles the quoted state, ``^`` escapes the next
character outside quotes, an unescaped ``& | < > ( )`` outside quotes is syntax: we raise), and
the UCRT argv split (backslash/quote rules, ``""`` inside quotes is a literal quote).
"""

from __future__ import annotations

import re


class CmdSyntax(Exception):
    """The line would not reach the program as one command (cmd treats a character as syntax)."""


_VAR = re.compile(r"%([^%\s]+)%")


def phase1(line: str, *, env: dict[str, str], batch: bool, tail: str = "") -> str:
    out: list[str] = []
    i = 0
    while i < len(line):
        ch = line[i]
        if ch != "%":
            out.append(ch)
            i += 1
            continue
        if batch and line.startswith("%%", i):
            out.append("%")
            i += 2
            continue
        if batch and line.startswith("%*", i):
            out.append(tail)
            i += 2
            continue
        m = _VAR.match(line, i)
        if m and m.group(1) in env:
            out.append(env[m.group(1)])
            i = m.end()
            continue
        if batch:
            # In a batch file an undefined %NAME% expands to nothing; a lone % is dropped.
            if m:
                i = m.end()
                continue
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def phase2(line: str) -> str:
    out: list[str] = []
    quoted = False
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == '"':
            quoted = not quoted
            out.append(ch)
        elif quoted:
            out.append(ch)
        elif ch == "^":
            if i + 1 >= len(line):
                msg = f"trailing caret (line continuation) in {line!r}"
                raise CmdSyntax(msg)
            out.append(line[i + 1])
            i += 1
        elif ch in "&|<>()":
            msg = f"unquoted {ch!r} at {i} in {line!r}"
            raise CmdSyntax(msg)
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def split_argv(cmdline: str) -> list[str]:
    args: list[str] = []
    i, n = 0, len(cmdline)
    while True:
        while i < n and cmdline[i] in " \t":
            i += 1
        if i >= n:
            return args
        cur: list[str] = []
        quoted = False
        while i < n:
            ch = cmdline[i]
            if ch == "\\":
                j = i
                while j < n and cmdline[j] == "\\":
                    j += 1
                count = j - i
                if j < n and cmdline[j] == '"':
                    cur.append("\\" * (count // 2))
                    if count % 2:
                        cur.append('"')
                        i = j + 1
                    else:
                        i = j
                else:
                    cur.append("\\" * count)
                    i = j
                continue
            if ch == '"':
                if quoted and i + 1 < n and cmdline[i + 1] == '"':
                    cur.append('"')
                    i += 2
                    continue
                quoted = not quoted
                i += 1
                continue
            if ch in " \t" and not quoted:
                break
            cur.append(ch)
            i += 1
        args.append("".join(cur))
