"""A model of how cmd.exe and the C runtime read a line, for quoting tests without Windows.

It models what our quoting relies on and is strict where cmd is lenient: phase 1 (percent
expansion: batch files turn ``%%`` into ``%`` and expand ``%NAME%``/``%*``; command lines leave an
undefined ``%NAME%`` alone), phase 2 (``"`` toggles the quoted state, ``^`` escapes the next
character outside quotes, an unescaped ``& | < > ( )`` outside quotes is syntax: we raise), and
the UCRT argv split (backslash/quote rules, ``""`` inside quotes is a literal quote).
"""

from __future__ import annotations

import ntpath
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
        if batch and line.startswith("%~dp0", i):
            out.append(env["~dp0"])
            i += 5
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


def split_commands(line: str) -> list[tuple[str, str]]:
    """Phase 2 for a line with ``&``/``&&``/``||`` between commands: [(command, operator before)].

    Carets are consumed outside quotes; an unquoted ``( ) < |`` (other than ``||``) raises, since
    our scripts have no blocks or pipes. A leading ``>&2`` redirection is kept with its command.
    """
    parts: list[tuple[str, str]] = []
    cur: list[str] = []
    op = ""
    quoted = False
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif quoted:
            cur.append(ch)
        elif ch == "^":
            if i + 1 >= len(line):
                msg = f"trailing caret in {line!r}"
                raise CmdSyntax(msg)
            cur.append(line[i + 1])
            i += 1
        elif line.startswith(">&2", i):
            cur.append(">&2")
            i += 2
        elif line.startswith(("||", "&&"), i):
            parts.append(("".join(cur).strip(), op))
            op, cur = line[i : i + 2], []
            i += 1
        elif ch == "&":
            parts.append(("".join(cur).strip(), op))
            op, cur = "&", []
        elif ch in "()<|":
            msg = f"unquoted {ch!r} at {i} in {line!r}"
            raise CmdSyntax(msg)
        else:
            cur.append(ch)
        i += 1
    parts.append(("".join(cur).strip(), op))
    return parts


class BatchRun:
    """Runs one of our generated .cmd files the way cmd.exe would, line by line.

    ``dirs``: directories that exist; ``scripts``: handlers for ``call <name>`` taking
    (run, args) and returning an exit code; ``program``: handler for the program line taking
    (run, argv). ``events`` records what happened in order.
    """

    def __init__(
        self,
        *,
        env: dict[str, str],
        dirs: set[str],
        scripts: dict[str, object],
        program: object,
        console_chcp: str = "Active code page: 936",
        script_dir: str = "C:\\scripts\\",
    ) -> None:
        self.env = dict(env)
        self.script_dir = script_dir
        self.dirs = dirs
        self.scripts = scripts
        self.program = program
        self.console_chcp = console_chcp
        self.codepage = console_chcp.split()[-1].rstrip(".")
        self.cwd_stack: list[str] = []
        self.events: list[tuple[str, object]] = []
        self.errorlevel = 0

    def run(self, text: str, tail: str) -> int:
        assert "\n" not in text.replace("\r\n", ""), "bare LF in a .cmd file"
        lines = text.split("\r\n")
        labels = {ln[1:]: n for n, ln in enumerate(lines) if ln.startswith(":")}
        saved: dict[str, str] | None = None
        pc = 0
        while pc < len(lines):
            raw = lines[pc]
            pc += 1
            if not raw or raw.startswith((":", "rem ", "@echo off")):
                continue
            if raw.startswith("for /f") and "('chcp')" in raw:
                word = self.console_chcp.split()[-1]
                self.env["NPULAB_CP"] = word.rsplit(".", 1)[0] if "." in word else word
                continue
            dynamic = {"ERRORLEVEL": str(self.errorlevel), "~dp0": self.script_dir, **self.env}
            expanded = phase1(raw, env=dynamic, batch=True, tail=tail)
            ok = True
            for command, op in split_commands(expanded):
                if (op == "||" and ok) or (op == "&&" and not ok):
                    continue
                result = self._one(command, labels)
                if isinstance(result, tuple):
                    kind, value = result
                    if kind == "goto":
                        pc = value
                        break
                    if kind == "exit":
                        if saved is not None:
                            self.env = saved
                        return value
                    if kind == "setlocal":
                        saved = dict(self.env)
                    if kind == "endlocal" and saved is not None:
                        self.env, saved = saved, None
                    continue
                ok = result == 0
        return self.errorlevel

    def _one(self, command: str, labels: dict[str, int]) -> object:
        words = command.split()
        head = words[0].lower() if words else ""
        if command.startswith(">&2 echo "):
            self.events.append(("stderr", command[len(">&2 echo ") :]))
            return 0
        if head == "setlocal":
            return ("setlocal", 0)
        if head == "endlocal":
            return ("endlocal", 0)
        if head == "set":
            body = command[4:]
            assert body.startswith('"'), command
            assert body.endswith('"'), command
            name, value = body[1:-1].split("=", 1)
            self.env[name] = value
            return 0
        if head == "chcp":
            self.codepage = words[1]
            self.events.append(("chcp", words[1]))
            return 0
        if head == "goto":
            return ("goto", labels[words[1]])
        if head == "exit":
            return ("exit", int(words[2]))
        if head == "pushd":
            path = ntpath.normpath(split_argv(command[6:])[0])
            if path not in self.dirs:
                self.errorlevel = 1
                return 1
            self.cwd_stack.append(path)
            return 0
        if head == "popd":
            self.cwd_stack.pop()
            return 0
        if head == "call":
            # CALL expands %...% once more (and doubles quoted carets: we never call with any).
            assert "^" not in command, command
            command = phase1(command, env=self.env, batch=True)
            argv = split_argv(command[5:])
            handler = self.scripts[argv[0]]
            self.events.append(("call", [self.cwd_stack[-1], *argv]))
            self.errorlevel = handler(self, argv[1:])  # type: ignore[operator]
            return self.errorlevel
        if head == "if":
            return self._if(command, labels)
        argv = split_argv(command)
        self.events.append(("run", argv))
        self.errorlevel = self.program(self, argv)  # type: ignore[operator]
        return self.errorlevel

    def _if(self, command: str, labels: dict[str, int]) -> object:
        m = re.match(r'if not exist "([^"]*)" (.*)$', command)
        if m:
            found = ntpath.normpath(m.group(1)) in self.dirs
            return 0 if found else self._one(m.group(2), labels)
        m = re.match(r'if (not )?"([^"]*)"=="([^"]*)" (.*)$', command)
        if m:
            equal = m.group(2) == m.group(3)
            return self._one(m.group(4), labels) if equal != bool(m.group(1)) else 0
        m = re.match(r"if (not )?defined (\S+) (.*)$", command)
        if m:
            defined = m.group(2) in self.env
            return self._one(m.group(3), labels) if defined != bool(m.group(1)) else 0
        msg = f"the model does not know {command!r}"
        raise CmdSyntax(msg)
