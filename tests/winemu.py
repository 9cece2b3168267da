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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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


def cmd_c_string(after_c: str, *, s_flag: bool, is_program: Callable[[str], bool]) -> str:
    """What ``cmd /c <after_c>`` runs, by the two rules ``cmd /?`` documents for quotes.

    Rule 1 keeps the quotes when all hold: no ``/S``, exactly two quote characters, no special
    character (``&<>()@^|``) between them, whitespace between them, and the quoted text names an
    executable file. Otherwise (rule 2), a leading quote is removed together with the last quote
    on the line, keeping the text after it.
    """
    text = after_c.lstrip(" ")
    if not s_flag and text.count('"') == 2 and text.startswith('"'):
        inner = text[1 : text.index('"', 1)]
        plain = not set(inner) & set("&<>()@^|")
        if plain and (" " in inner or "\t" in inner) and is_program(inner):
            return text
    if text.startswith('"'):
        last = text.rindex('"')
        return text[1:last] + text[last + 1 :] if last > 0 else text[1:]
    return text


# --- the interpreter -------------------------------------------------------------------------
#
# Built from ``cmd /?``, ``for /?``, ``if /?``, ``call /?`` and ``setlocal /?``: phase 1 expands
# a line when it is read (a parenthesised block is read whole, all its lines expanded at once,
# before any of it runs); phase 2 splits it into commands at unquoted, unescaped ``&``, ``&&``,
# ``||`` and (inside a block) ``)``; ``(`` opens a block where a command starts. FOR's set runs
# from its ``(`` to the first unquoted, unescaped ``)``; in a FOR /F command set, unquoted and
# unescaped ``, ; =`` are separators, read as spaces. FOR variables are substituted after
# phase 2 (their values are never parsed again). Anything the model does not know raises.


class Env(dict[str, str]):
    """cmd.exe's environment: names are case-insensitive (stored upper-case)."""

    def __init__(self, values: dict[str, str] | None = None) -> None:
        super().__init__()
        for k, v in (values or {}).items():
            self[k] = v

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key.upper(), value)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.upper())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.upper())

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(key.upper(), default)

    def pop(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().pop(key.upper(), default)

    def copy(self) -> Env:
        return Env(dict(self))


@dataclass
class Simple:
    text: str  # carets consumed, quotes kept, redirections taken out
    redirs: list[tuple[str, str]] = field(default_factory=list)  # (">", "nul"), ("2>", ...)


@dataclass
class Seq:
    parts: list[tuple[str, Node]]  # (operator before it: "", "&", "&&", "||", node)


@dataclass
class Block:
    body: list[Node]
    redirs: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class If:
    negate: bool
    kind: str  # errorlevel | exist | defined | cmp
    args: list[str]
    ignore_case: bool
    then: Node
    orelse: Node | None


@dataclass
class For:
    f: bool
    options: str
    var: str
    items: str  # the set after phase 2 (carets consumed); separators already spaces for /f
    kind: str  # files | string | command (from the set's first character and usebackq)
    body: Node


@dataclass
class Nop:
    pass


Node = Simple | Seq | Block | If | For | Nop


class Parser:
    """Phase 2 over one logical line; ``more()`` supplies the next (expanded) line of a block."""

    def __init__(self, text: str, more: Callable[[], str | None]) -> None:
        self.s = text
        self.i = 0
        self.depth = 0
        self.more = more

    # helpers
    def _peek(self, n: int = 1) -> str:
        return self.s[self.i : self.i + n]

    def _eol(self) -> bool:
        return self.i >= len(self.s)

    def _skip_ws(self, newlines: bool = False) -> None:
        while not self._eol() and (
            self.s[self.i] in " \t" or (newlines and self.s[self.i] == "\n")
        ):
            self.i += 1

    def _pull(self) -> bool:
        line = self.more()
        if line is None:
            return False
        self.s += "\n" + line
        return True

    def _word(self) -> str:
        m = re.match(r"[^\s&|<>()\"^]+", self.s[self.i :])
        return m.group(0) if m else ""

    def parse(self) -> Node:
        node = self.seq()
        self._skip_ws()
        if not self._eol():
            msg = f"{self.s[self.i :]!r} was unexpected at this time (in {self.s!r})"
            raise CmdSyntax(msg)
        return node

    def seq(self) -> Node:
        parts: list[tuple[str, Node]] = [("", self.command())]
        while True:
            self._skip_ws()
            if self._peek(2) in ("&&", "||"):
                op = self._peek(2)
                self.i += 2
            elif self._peek() == "&":
                op = "&"
                self.i += 1
            elif self._peek() == "|":
                msg = f"pipes are not modelled: {self.s!r}"
                raise CmdSyntax(msg)
            else:
                return parts[0][1] if len(parts) == 1 else Seq(parts)
            parts.append((op, self.command()))

    def command(self) -> Node:
        self._skip_ws(newlines=self.depth > 0)
        while self._peek() == "@":
            self.i += 1
        if self._peek() == "(":
            return self.block()
        word = self._word().lower()
        if word == "rem":  # the rest of the line is not parsed
            end = self.s.find("\n", self.i)
            self.i = len(self.s) if end < 0 else end
            return Nop()
        if word.startswith(":") and self.depth == 0:
            self.i = len(self.s)
            return Nop()
        if word == "if":
            self.i += 2
            return self.if_()
        if word == "for":
            self.i += 3
            return self.for_()
        return self.simple()

    def block(self) -> Block:
        self.i += 1
        self.depth += 1
        body: list[Node] = []
        while True:
            self._skip_ws(newlines=True)
            if self._eol():
                if not self._pull():
                    msg = f"a ( block is never closed: {self.s!r}"
                    raise CmdSyntax(msg)
                continue
            if self._peek() == ")":
                self.i += 1
                self.depth -= 1
                break
            body.append(self.seq())
        return Block(body, self.redirections())

    def redirections(self) -> list[tuple[str, str]]:
        out = []
        while True:
            self._skip_ws()
            m = re.match(r"([12]?>>?)(&[12])?", self.s[self.i :])
            if not m:
                return out
            self.i += m.end()
            if m.group(2):
                out.append((m.group(1), m.group(2)))
                continue
            self._skip_ws()
            out.append((m.group(1), self.token()))

    def token(self) -> str:
        """One word: quotes kept, carets consumed, ending at an unquoted space or operator."""
        out: list[str] = []
        quoted = False
        while not self._eol():
            ch = self.s[self.i]
            if ch == "\n":
                break
            if ch == '"':
                quoted = not quoted
            elif not quoted and (ch in " \t&|<>" or (ch == ")" and self.depth > 0)):
                break
            elif not quoted and ch == "^":
                self.i += 1
                if self._eol():
                    msg = f"trailing caret (line continuation) in {self.s!r}"
                    raise CmdSyntax(msg)
                ch = self.s[self.i]
            out.append(ch)
            self.i += 1
        return "".join(out)

    def simple(self) -> Node:
        out: list[str] = []
        redirs: list[tuple[str, str]] = []
        quoted = False
        while not self._eol():
            ch = self.s[self.i]
            if ch == "\n":
                if self.depth == 0:
                    msg = f"bare line feed in {self.s!r}"
                    raise CmdSyntax(msg)
                break
            if ch == '"':
                quoted = not quoted
            elif quoted:
                pass
            elif ch == "^":
                self.i += 1
                if self._eol():
                    msg = f"trailing caret (line continuation) in {self.s!r}"
                    raise CmdSyntax(msg)
                out.append(self.s[self.i])
                self.i += 1
                continue
            elif ch in "&|" or (ch == ")" and self.depth > 0):
                break
            elif ch in "<>" or (ch in "12" and self._peek(2)[1:] == ">" and _after_space(out)):
                if ch == "<":
                    msg = f"input redirection is not modelled: {self.s!r}"
                    raise CmdSyntax(msg)
                redirs += self.redirections()
                continue
            out.append(ch)
            self.i += 1
        text = "".join(out).strip(" \t")
        if not text and not redirs:
            return Nop()
        return Simple(text, redirs)

    def if_(self) -> If:
        self._skip_ws()
        ignore_case = negate = False
        if self._word().lower() == "/i":
            ignore_case = True
            self.i += 2
            self._skip_ws()
        if self._word().lower() == "not":
            negate = True
            self.i += 3
            self._skip_ws()
        word = self._word().lower()
        if word in ("errorlevel", "exist", "defined"):
            self.i += len(word)
            self._skip_ws()
            args = [self.token()]
            kind = word
        else:
            left = self._cmp_operand()
            if self._peek(2) != "==":
                msg = f"the model knows only == comparisons: {self.s!r}"
                raise CmdSyntax(msg)
            self.i += 2
            self._skip_ws()
            args = [left, self.token()]
            kind = "cmp"
        then = self.command()
        orelse = None
        save = self.i
        self._skip_ws()
        if self._word().lower() == "else" and isinstance(then, Block):
            self.i += 4
            orelse = self.command()
        else:
            self.i = save
        return If(negate, kind, args, ignore_case, then, orelse)

    def _cmp_operand(self) -> str:
        out: list[str] = []
        quoted = False
        while not self._eol():
            ch = self.s[self.i]
            if ch == '"':
                quoted = not quoted
            elif not quoted and (ch in " \t" or self._peek(2) == "=="):
                break
            out.append(ch)
            self.i += 1
        self._skip_ws()
        return "".join(out)

    def for_(self) -> For:
        self._skip_ws()
        f = False
        options = ""
        if self._word().lower() == "/f":
            f = True
            self.i += 2
            self._skip_ws()
            if self._peek() == '"':
                end = self.s.index('"', self.i + 1)
                options = self.s[self.i + 1 : end]
                self.i = end + 1
                self._skip_ws()
        m = re.match(r"%(\w)\s+in\s*\(", self.s[self.i :], re.IGNORECASE)
        if not m:
            msg = f"FOR without %v in (set): {self.s!r}"
            raise CmdSyntax(msg)
        self.i += m.end()
        items, kind = self._set(f, "usebackq" in options.lower())
        self._skip_ws()
        if self._word().lower() != "do":
            rest = self.s[self.i :].split()
            msg = f"{rest[0] if rest else 'end of line'!r} was unexpected at this time: {self.s!r}"
            raise CmdSyntax(msg)
        self.i += 2
        return For(f, options, m.group(1), items, kind, self.command())

    def _set(self, f: bool, usebackq: bool) -> tuple[str, str]:
        """From after ``(`` to the first unquoted, unescaped ``)``."""
        out: list[str] = []
        quoted = False
        while True:
            if self._eol():
                msg = f"a FOR set is never closed: {self.s!r}"
                raise CmdSyntax(msg)
            ch = self.s[self.i]
            self.i += 1
            if ch == '"':
                quoted = not quoted
            elif not quoted and ch == "^":
                out.append(self.s[self.i])
                self.i += 1
                continue
            elif not quoted and ch == ")":
                break
            elif not quoted and f and ch in ",;=":
                ch = " "
            out.append(ch)
        items = "".join(out).strip()
        if not f:
            return items, "files"
        quote = items[:1]
        if (quote == "`" and usebackq) or (quote == "'" and not usebackq):
            if not items.endswith(quote):
                msg = f"FOR /F command set without its closing {quote}: {items!r}"
                raise CmdSyntax(msg)
            return items[1:-1], "command"
        if quote == '"' and not usebackq:
            return items[1:-1], "string"
        return items, "files"


def _after_space(out: list[str]) -> bool:
    return not out or out[-1] in " \t"


_FOR_MODS = re.compile(r"%~([fdpnx]*)")


def subst_for(node: Node, var: str, value: str) -> Node:
    """Replace ``%v`` / ``%~[fdpnx]v`` in every text of ``node`` (after phase 2, as cmd does)."""

    def sub(text: str) -> str:
        pattern = re.compile(r"%(~[fdpnx]*)?" + re.escape(var))

        def one(m: re.Match[str]) -> str:
            mods = (m.group(1) or "")[1:]
            v = value
            if m.group(1) is not None:
                v = v.strip('"')
            if not mods:
                return v
            name = ntpath.basename(v)
            stem, ext = ntpath.splitext(name)
            parts = {"d": ntpath.splitdrive(v)[0], "p": ntpath.dirname(v)[2:] + "\\"}
            parts.update({"n": stem, "x": ext, "f": v})
            return "".join(parts[c] for c in mods)

        return pattern.sub(one, text)

    if isinstance(node, Simple):
        return Simple(sub(node.text), [(op, sub(t)) for op, t in node.redirs])
    if isinstance(node, Seq):
        return Seq([(op, subst_for(n, var, value)) for op, n in node.parts])
    if isinstance(node, Block):
        return Block([subst_for(n, var, value) for n in node.body], node.redirs)
    if isinstance(node, If):
        then = subst_for(node.then, var, value)
        orelse = subst_for(node.orelse, var, value) if node.orelse else None
        args = [sub(a) for a in node.args]
        return If(node.negate, node.kind, args, node.ignore_case, then, orelse)
    if isinstance(node, For):
        return For(
            node.f, node.options, node.var, sub(node.items), node.kind,
            subst_for(node.body, var, value),
        )  # fmt: skip
    return node


Handler = Callable[["Cmd", list[str]], int]


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


class _Goto(Exception):
    def __init__(self, label: str) -> None:
        self.label = label


_CODECS = {"65001": "utf-8", "936": "gbk", "850": "cp850", "437": "cp437", "1252": "cp1252"}


class Cmd:
    """One Windows machine as cmd.exe sees it, running batch files and command lines.

    ``files``: path -> text (``.cmd``/``.bat`` files there run through this model when called);
    ``dirs``: directories; ``programs``: lower-case file name (``conda.bat``, ``python.exe``,
    ``vswhere.exe``) -> handler ``(cmd, argv) -> exit code`` standing for a program or a batch
    file the test does not render; a handler prints with :meth:`out`. Paths compare
    case-insensitively. ``events`` records, in order, ``("run", argv)``, ``("call", [cwd,
    *argv])``, ``("chcp", page)``, ``("stdout"/"stderr", line)`` and ``("notfound", name)``.
    """

    def __init__(
        self,
        *,
        env: dict[str, str] | None = None,
        files: dict[str, str] | None = None,
        dirs: set[str] | None = None,
        programs: dict[str, Handler] | None = None,
        console_chcp: str = "Active code page: 936",
        cwd: str = "C:\\",
    ) -> None:
        self.env = Env({"ComSpec": "C:\\Windows\\system32\\cmd.exe", **(env or {})})
        self.files = {self.norm(k): v for k, v in (files or {}).items()}
        self.dirs = {self.norm(d) for d in (dirs or set())} | {self.norm(cwd)}
        self.programs = {k.lower(): v for k, v in (programs or {}).items()}
        self.console_chcp = console_chcp
        self.codepage = console_chcp.split()[-1].rstrip(".")
        self.cwd = cwd
        self.cwd_stack: list[str] = []
        self.events: list[tuple[str, Any]] = []
        self.errorlevel = 0
        self._sink: list[list[tuple[str, str]]] = []
        self._batch: list[str] = []  # extensions of the batch files running (innermost last)
        self._batch_path: list[str] = []
        self._locals: list[tuple[int, Env]] = []  # (batch depth of its SETLOCAL, saved env)

    # -- the machine ------------------------------------------------------------------------
    @staticmethod
    def norm(path: str) -> str:
        return ntpath.normpath(path).lower()

    def exists(self, path: str) -> bool:
        p = self.norm(path)
        return p in self.files or p in self.dirs

    def abspath(self, path: str) -> str:
        return path if ntpath.isabs(path) else ntpath.join(self.cwd, path)

    def out(self, text: str, stream: str = "stdout") -> None:
        """Output of a command (programs call this): one entry per line."""
        for line in text.splitlines() or [""]:
            if self._sink:
                self._sink[-1].append((stream, line))
            else:
                self.events.append((stream, line))

    def stamp(self, path: str) -> str | None:
        return self.files.get(self.norm(path))

    # -- entry points -----------------------------------------------------------------------
    def run_batch(self, path: str, tail: str = "", text: str | None = None) -> int:
        """Run the batch file at ``path`` (its text from ``files`` unless given) with ``tail``
        as ``%*``, the way ``cmd /c <path> <tail>`` would; returns the exit code."""
        if text is not None:
            self.files[self.norm(path)] = text
        self._batch_path.append(path)
        try:
            self._run_file(path, tail)
        finally:
            self._batch_path.pop()
        return self.errorlevel

    def run_cmd_c(self, line: str) -> int:
        """``cmd /d /v:off /c <line>``: phase 1 for a command line, then the commands."""
        expanded = phase1(line, env={"ERRORLEVEL": str(self.errorlevel), **self.env}, batch=False)
        self._execute(Parser(expanded, lambda: None).parse())
        return self.errorlevel

    # -- batch files --------------------------------------------------------------------------
    def _decode(self, data: bytes) -> str:
        return data.decode(_CODECS.get(self.codepage, "cp437"), errors="replace")

    def _run_file(self, path: str, tail: str, start_label: str | None = None) -> None:
        text = self.files[self.norm(path)]
        assert "\n" not in text.replace("\r\n", ""), f"{path}: bare LF in a batch file"
        raw_lines = text.encode("utf-8").split(b"\r\n")
        labels = {}
        for n, raw in enumerate(raw_lines):
            stripped = raw.strip()
            if stripped.startswith(b":"):
                labels[stripped[1:].split()[0].decode("ascii", "replace").lower()] = n + 1
        depth = len(self._locals)
        self._batch.append(ntpath.splitext(path)[1].lower())
        pc = labels[start_label] if start_label else 0
        dp0 = ntpath.dirname(self.abspath(path)) + "\\"
        try:
            while pc < len(raw_lines):
                # cmd decodes each line with the code page current when it reads it.
                line = self._decode(raw_lines[pc])
                pc += 1

                def more() -> str | None:
                    nonlocal pc
                    if pc >= len(raw_lines):
                        return None
                    nxt = self._decode(raw_lines[pc])
                    pc += 1
                    return self._expand(nxt, dp0, tail)

                if not line.strip() or line.lstrip().startswith(":"):
                    continue
                node = Parser(self._expand(line, dp0, tail), more).parse()
                try:
                    self._execute(node)
                except _Goto as jump:
                    if jump.label == "eof":
                        break
                    if jump.label not in labels:
                        msg = f"{path}: goto {jump.label}: no such label"
                        raise CmdSyntax(msg) from None
                    pc = labels[jump.label]
        except _Exit as done:
            self.errorlevel = done.code
        finally:
            self._batch.pop()
            self._unwind_locals(depth)

    def _expand(self, line: str, dp0: str, tail: str) -> str:
        dynamic = {"ERRORLEVEL": str(self.errorlevel), "CD": self.cwd, **self.env, "~dp0": dp0}
        return phase1(line, env=_Caseless(dynamic), batch=True, tail=tail)

    def _unwind_locals(self, depth: int) -> None:
        while len(self._locals) > depth:
            self.env = self._locals.pop()[1]

    # -- commands -------------------------------------------------------------------------------
    def _execute(self, node: Node) -> None:
        if isinstance(node, Nop):
            return
        if isinstance(node, Seq):
            for op, part in node.parts:
                if (op == "&&" and self.errorlevel != 0) or (op == "||" and self.errorlevel == 0):
                    continue
                self._execute(part)
            return
        if isinstance(node, Block):
            self._redirected(node.redirs, lambda: [self._execute(n) for n in node.body])
            return
        if isinstance(node, If):
            self._if(node)
            return
        if isinstance(node, For):
            self._for(node)
            return
        self._redirected(node.redirs, lambda: self._simple(node.text))

    def _redirected(self, redirs: list[tuple[str, str]], run: Callable[[], object]) -> None:
        if not redirs:
            run()
            return
        self._sink.append([])
        try:
            run()
        finally:
            produced = self._sink.pop()
        route = {"stdout": "stdout", "stderr": "stderr"}
        files: dict[str, list[str]] = {}
        for op, target in redirs:
            stream = "stderr" if op.startswith("2") else "stdout"
            if target in ("&1", "&2"):
                route[stream] = "stdout" if target == "&1" else "stderr"
                continue
            name = target.strip('"')
            if name.lower() == "nul":
                route[stream] = "nul"
                continue
            path = self.abspath(name)
            if self.norm(ntpath.dirname(path)) not in self.dirs:
                self.out("The system cannot find the path specified.", "stderr")
                self.errorlevel = 1
                return
            if op.endswith(">>"):
                files[path] = [self.files.get(self.norm(path), "")]
            else:
                files[path] = [""]
            route[stream] = path
        for stream, line in produced:
            where = route[stream]
            if where == "nul":
                continue
            if where in ("stdout", "stderr"):
                self.out(line, where)
            else:
                files[where].append(line + "\r\n")
        for path, parts in files.items():
            self.files[self.norm(path)] = "".join(parts)

    def _simple(self, text: str) -> None:
        words = text.split()
        head = words[0].lower() if words else ""
        rest = text[len(words[0]) :].lstrip(" \t") if words else ""
        builtin = getattr(self, "_b_" + head, None) if head.isalpha() else None
        if builtin is not None:
            builtin(rest)
            return
        if head.startswith("echo.") or head == "echo":
            self._b_echo(text[5:])
            return
        self._program(text)

    def _program(self, text: str) -> None:
        argv = split_argv(text)
        name = ntpath.basename(argv[0]).lower()
        if name.endswith((".cmd", ".bat")) and self.exists(self.abspath(argv[0])):
            if not self._batch:  # cmd /c <script>: the batch runs, then cmd ends
                self.events.append(("run", argv))
                tail = text[len(_first_token(text)) :].lstrip(" ")
                self.run_batch(self.abspath(argv[0]), tail)
                return
            msg = f"{argv[0]} started without CALL: control would never come back ({text!r})"
            raise CmdSyntax(msg)
        handler = self._handler(name)
        if handler is None:
            self.events.append(("notfound", argv[0]))
            self.out(f"'{argv[0]}' is not recognized as an internal or external command,", "stderr")
            self.errorlevel = 9009
            return
        self.events.append(("run", argv))
        self.errorlevel = handler(self, argv)

    def _handler(self, name: str) -> Handler | None:
        """A program by file name, found with or without a PATHEXT extension."""
        for candidate in (name, name + ".exe", name + ".cmd", name + ".bat"):
            if candidate in self.programs:
                return self.programs[candidate]
        return self.programs.get(ntpath.splitext(name)[0])

    # builtins: each follows the ERRORLEVEL rule cmd has for it
    def _b_echo(self, rest: str) -> None:
        if rest.lower() in ("on", "off"):
            return  # the echo state: not output
        self.out(rest)

    def _b_set(self, rest: str) -> None:
        body = rest
        if body.startswith('"'):
            body = body[1 : body.rindex('"')] if body.count('"') >= 2 else body[1:]
        if "=" not in body or body.startswith("/"):
            msg = f"the model knows only set NAME=value: {rest!r}"
            raise CmdSyntax(msg)
        name, value = body.split("=", 1)
        if value:
            self.env[name] = value
        else:
            self.env.pop(name)
        if self._batch and self._batch[-1] == ".cmd":
            self.errorlevel = 0  # SET clears ERRORLEVEL in a .cmd (not a .bat) file

    def _b_setlocal(self, rest: str) -> None:
        for word in rest.split():
            if word.lower() not in ("enableextensions", "disabledelayedexpansion"):
                msg = f"setlocal {word} is not modelled"
                raise CmdSyntax(msg)
        self._locals.append((len(self._batch), self.env.copy()))
        self.errorlevel = 0

    def _b_endlocal(self, rest: str) -> None:
        if self._locals and self._locals[-1][0] == len(self._batch):
            self.env = self._locals.pop()[1]

    def _b_chcp(self, rest: str) -> None:
        if not rest:
            self.out(f"Active code page: {self.codepage}" if self.codepage != self._console_cp()
                     else self.console_chcp)  # fmt: skip
            return
        self.codepage = rest.split()[0]
        self.events.append(("chcp", self.codepage))
        self.errorlevel = 0

    def _console_cp(self) -> str:
        return self.console_chcp.split()[-1].rstrip(".")

    def _b_ver(self, rest: str) -> None:
        self.out("Microsoft Windows [Version 10.0.20348.0]")
        self.errorlevel = 0

    def _b_type(self, rest: str) -> None:
        name = split_argv(rest)[0]
        if name.lower() == "nul":
            self.errorlevel = 0
            return
        text = self.files.get(self.norm(self.abspath(name)))
        if text is None:
            self.out("The system cannot find the file specified.", "stderr")
            self.errorlevel = 1
            return
        self.out(text.rstrip("\r\n"))
        self.errorlevel = 0

    def _b_mkdir(self, rest: str) -> None:
        path = self.abspath(split_argv(rest)[0])
        if self.exists(path):
            self.out(f"A subdirectory or file {path} already exists.", "stderr")
            self.errorlevel = 1
            return
        while self.norm(path) not in self.dirs:  # extensions: makes the parents too
            self.dirs.add(self.norm(path))
            path = ntpath.dirname(path)
        self.errorlevel = 0

    _b_md = _b_mkdir

    def _b_findstr(self, rest: str) -> None:
        m = re.fullmatch(r'/x /c:(\S+) "([^"]*)"', rest)
        if not m:
            msg = f'findstr {rest!r}: the model knows /x /c:STRING "file"'
            raise CmdSyntax(msg)
        text = self.files.get(self.norm(self.abspath(m.group(2))))
        if text is None:
            self.out(f"FINDSTR: Cannot open {m.group(2)}", "stderr")
        found = text is not None and m.group(1) in text.splitlines()
        if found:
            self.out(m.group(1))
        self.errorlevel = 0 if found else 1

    def _b_goto(self, rest: str) -> None:
        raise _Goto(rest.split()[0].lstrip(":").lower())

    def _b_exit(self, rest: str) -> None:
        words = rest.split()
        if not words or words[0].lower() != "/b":
            msg = f"exit without /b would close the caller's cmd.exe: exit {rest}"
            raise CmdSyntax(msg)
        raise _Exit(int(words[1]) if len(words) > 1 else self.errorlevel)

    def _b_pushd(self, rest: str) -> None:
        path = self.abspath(split_argv(rest)[0])
        if self.norm(path) not in self.dirs:
            self.out("The system cannot find the path specified.", "stderr")
            self.errorlevel = 1
            return
        self.cwd_stack.append(self.cwd)
        self.cwd = ntpath.normpath(path)
        self.errorlevel = 0

    def _b_popd(self, rest: str) -> None:
        if self.cwd_stack:
            self.cwd = self.cwd_stack.pop()

    def _b_cd(self, rest: str) -> None:
        args = split_argv(rest)
        if args and args[0].lower() == "/d":
            args = args[1:]
        path = self.abspath(args[0])
        if self.norm(path) not in self.dirs:
            self.out("The system cannot find the path specified.", "stderr")
            self.errorlevel = 1
            return
        self.cwd = ntpath.normpath(path)
        self.errorlevel = 0

    def _b_call(self, rest: str) -> None:
        # CALL expands %...% once more and doubles quoted carets: our scripts call no caret.
        assert "^" not in rest, rest
        again = phase1(rest, env=_Caseless({**self.env}), batch=False)
        if again.startswith(":"):
            label, _, tail = again[1:].partition(" ")
            self._call_label(self._batch_path[-1], label.lower(), tail)
            return
        argv = split_argv(again)
        target = self.abspath(argv[0])
        name = ntpath.basename(argv[0]).lower()
        self.events.append(("call", [self.cwd, *argv]))
        handler = self._handler(name)
        if handler is None and self.norm(target) in self.files and name.endswith((".cmd", ".bat")):
            tail = again[len(_first_token(again)) :].lstrip(" ")
            self._batch_path.append(target)
            try:
                self._run_file(target, tail)
            finally:
                self._batch_path.pop()
            return
        if handler is None:
            self.events.append(("notfound", argv[0]))
            self.errorlevel = 9009 if not name.endswith((".cmd", ".bat")) else 1
            return
        self.errorlevel = handler(self, argv)

    def _call_label(self, path: str, label: str, tail: str) -> None:
        self._batch_path.append(path)
        try:
            self._run_file(path, tail, start_label=label)
        finally:
            self._batch_path.pop()

    def _if(self, node: If) -> None:
        if node.kind == "errorlevel":
            result = self.errorlevel >= int(node.args[0])
        elif node.kind == "exist":
            result = self.exists(self.abspath(node.args[0].strip('"')))
        elif node.kind == "defined":
            result = node.args[0] in self.env
        else:
            a, b = node.args
            result = a.lower() == b.lower() if node.ignore_case else a == b
        if result != node.negate:
            self._execute(node.then)
        elif node.orelse is not None:
            self._execute(node.orelse)

    def _for(self, node: For) -> None:
        if not node.f:
            items = re.findall(r'"[^"]*"|[^\s,;=]+', node.items)
            if any(ch in item for item in items for ch in "*?"):
                msg = f"FOR over wildcards is not modelled: {node.items!r}"
                raise CmdSyntax(msg)
            for item in items:
                self._execute(subst_for(node.body, node.var, item))
            return
        opts = _for_options(node.options)
        if node.kind == "command":
            lines = self._capture(node.items)
        elif node.kind == "string":
            lines = [node.items]
        else:
            msg = f"FOR /F over files is not modelled: {node.items!r}"
            raise CmdSyntax(msg)
        for line in lines:
            if not line or line.startswith(opts["eol"]):
                continue
            value = _tokens(line, opts)
            if value is None:
                continue
            self._execute(subst_for(node.body, node.var, value))

    def _capture(self, command: str) -> list[str]:
        """FOR /F 'command': run by a child ``cmd /c``, its stdout read line by line."""
        child = Cmd(env=dict(self.env), programs=self.programs, console_chcp=self.console_chcp)
        child.files, child.dirs, child.cwd = self.files, self.dirs, self.cwd
        child.codepage = self.codepage
        child.run_cmd_c(command)
        self.events += [e for e in child.events if e[0] != "stdout"]
        return [line for kind, line in child.events if kind == "stdout"]


class _Caseless(dict[str, str]):
    """phase1's view of the environment: names looked up without regard to case."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__({k.upper(): v for k, v in values.items()})

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.upper())

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.upper())


def _first_token(text: str) -> str:
    if text.startswith('"'):
        end = text.find('"', 1)
        return text[: end + 1] if end > 0 else text
    return text.split(" ", 1)[0]


def _for_options(options: str) -> dict[str, Any]:
    opts: dict[str, Any] = {"eol": ";", "delims": " \t", "tokens": "1"}
    rest = options
    while rest:
        rest = rest.lstrip(" ")
        m = re.match(r"(usebackq|eol=.|tokens=\S+|skip=\d+)", rest, re.IGNORECASE)
        if m:
            key, _, value = m.group(0).partition("=")
            opts[key.lower()] = value
            rest = rest[m.end() :]
            continue
        if rest.lower().startswith("delims="):
            opts["delims"] = rest[len("delims=") :]  # runs to the end: may hold a space
            break
        msg = f"FOR /F option {rest!r} is not modelled"
        raise CmdSyntax(msg)
    return opts


def _tokens(line: str, opts: dict[str, Any]) -> str | None:
    delims = opts["delims"]
    tokens = opts["tokens"]
    if tokens == "*":
        value = line.lstrip(delims) if delims else line
        return value or None
    if not tokens.isdigit():
        msg = f"FOR /F tokens={tokens} is not modelled"
        raise CmdSyntax(msg)
    parts = [p for p in re.split("[" + re.escape(delims) + "]", line)] if delims else [line]
    parts = [p for p in parts if p] if delims else parts
    n = int(tokens)
    return parts[n - 1] if len(parts) >= n else None
