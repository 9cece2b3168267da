"""A model of Windows PowerShell 5.1 for the statements npulab's host-side scripts use.

The scripts that check integrity *on the host* (the stdin bootstrap's sha256, the upload
receiver's, ``upload-expand``'s archive check, ``02-lfs.ps1``'s object check) cannot run here,
so tests run them through this model instead of re-implementing their checks: the script text
is parsed with tree-sitter-powershell and each statement is evaluated the way PowerShell would,
against an in-memory Windows file system (:class:`WinFS`). Whatever the script checks, or fails
to check, the model does too.

It covers exactly the language those scripts use: assignments (``=``, ``+=``, ``++``), ``if``/
``elseif``/``else``, ``foreach``, ``try``/``catch``/``finally``, ``exit``/``return``/``throw``/
``continue``, functions with typed parameters, pipelines with ``$_`` script blocks, expandable
strings (``$var``, ``${var}``, ``$(...)``, backtick escapes), ``-eq -ne -gt -lt -ge -le -not
-and -or -replace -join -f``, casts, hashtables and arrays, the cmdlets and .NET members listed
in :data:`CMDLETS` and :meth:`PowerShell._static`. Anything else raises
:class:`Unsupported`, naming the construct: the model never guesses.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import tree_sitter
import tree_sitter_powershell

_PARSER = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))


class Unsupported(Exception):
    """The script uses something the model does not know (never silently ignored)."""


class _Flow(Exception):
    """Leaves statements early; ``partial`` carries what they had written to the pipeline."""

    partial: list[Any]

    def carry(self, before: list[Any]) -> _Flow:
        self.partial = [*before, *getattr(self, "partial", [])]
        return self


class _Exit(_Flow):
    def __init__(self, code: int) -> None:
        self.code = code


class _Return(_Flow):
    def __init__(self, value: Any) -> None:
        self.value = value


class _Continue(_Flow):
    pass


class PsError(_Flow):
    """A terminating error (``throw``, a .NET exception, a cmdlet error under ``Stop``)."""


# -- the host's file system ---------------------------------------------------------------------
def _key(path: str) -> str:
    return path.replace("/", "\\").rstrip("\\").lower()


def _parent(key: str) -> str:
    return key.rsplit("\\", 1)[0] if "\\" in key else ""


class WinFS:
    """Files by case-insensitive Windows path (``files``: lower-case path -> bytes, the same
    shape as :attr:`npulab.testing.fakehost.FakeHost.files`) and explicit directories."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files = files if files is not None else {}
        self.dirs: set[str] = set()
        #: A fault to inject: the error message for a path that cannot be written (disk full,
        #: access denied), or None.
        self.refuse: Callable[[str], str | None] | None = None

    def is_file(self, path: str) -> bool:
        return _key(path) in self.files

    def is_dir(self, path: str) -> bool:
        key = _key(path)
        if len(key) == 2 and key[1] == ":":
            return True
        return key in self.dirs or any(k.startswith(key + "\\") for k in self.files)

    def exists(self, path: str) -> bool:
        return self.is_file(path) or self.is_dir(path)

    def read(self, path: str) -> bytes:
        if not self.is_file(path):
            msg = f"Could not find file '{path}'."
            raise PsError(msg)
        return self.files[_key(path)]

    def write(self, path: str, data: bytes) -> None:
        refused = self.refuse(path) if self.refuse is not None else None
        if refused:
            raise PsError(refused)
        parent = _parent(_key(path))
        if parent and not self.is_dir(parent):
            msg = f"Could not find a part of the path '{path}'."
            raise PsError(msg)
        if self.is_dir(path):
            msg = f"Access to the path '{path}' is denied."
            raise PsError(msg)
        self.files[_key(path)] = bytes(data)

    def mkdir(self, path: str) -> None:
        key = _key(path)
        if key in self.files:
            msg = f"An item with the specified name {path} already exists."
            raise PsError(msg)
        while key and not (len(key) == 2 and key[1] == ":"):
            self.dirs.add(key)
            key = _parent(key)

    def children(self, path: str) -> list[str]:
        key = _key(path)
        return sorted(k for k in self.files if _parent(k) == key)

    def remove(self, path: str, *, recurse: bool) -> None:
        key = _key(path)
        if key in self.files:
            del self.files[key]
            return
        if not self.is_dir(path):
            msg = f"Cannot find path '{path}' because it does not exist."
            raise PsError(msg)
        inside = [k for k in self.files if k.startswith(key + "\\")]
        inside_dirs = [d for d in self.dirs if d.startswith(key + "\\")]
        if (inside or inside_dirs) and not recurse:
            msg = f"The item at {path} has children and the Recurse parameter was not specified."
            raise PsError(msg)
        for k in inside:
            del self.files[k]
        self.dirs -= {key, *inside_dirs}

    def move(self, src: str, dest: str, *, force: bool) -> None:
        s, d = _key(src), _key(dest)
        if s in self.files:
            if d in self.files and not force:
                msg = "Cannot create a file when that file already exists."
                raise PsError(msg)
            if self.is_dir(dest):
                d = d + "\\" + s.rsplit("\\", 1)[-1]
            self.write(d, self.files.pop(s))
            return
        if not self.is_dir(src):
            msg = f"Cannot find path '{src}' because it does not exist."
            raise PsError(msg)
        if self.exists(dest):
            msg = "Cannot create a file when that file already exists."
            raise PsError(msg)
        for k in [k for k in self.files if k.startswith(s + "\\")]:
            self.files[d + k[len(s) :]] = self.files.pop(k)
        for k in [k for k in self.dirs if k == s or k.startswith(s + "\\")]:
            self.dirs.discard(k)
            self.dirs.add(d + k[len(s) :])
        self.mkdir(_parent(d)) if _parent(d) else None


# -- .NET objects the scripts touch --------------------------------------------------------------
@dataclass
class _Stream:
    fs: WinFS
    path: str
    data: bytearray
    writable: bool
    pos: int = 0

    def call(self, name: str, args: list[Any]) -> Any:
        if name == "Write":
            buf, off, n = args
            self.data += bytes(buf)[int(off) : int(off) + int(n)]
            return None
        if name == "CopyTo":
            other = args[0]
            other.data += self.data[self.pos :]
            self.pos = len(self.data)
            return None
        if name in ("Dispose", "Close"):
            if self.writable:
                self.fs.write(self.path, bytes(self.data))
            return None
        msg = f"FileStream.{name}"
        raise Unsupported(msg)


@dataclass
class _Sha256:
    digest: Any = field(default_factory=hashlib.sha256)
    hash: bytes | None = None

    def call(self, name: str, args: list[Any]) -> Any:
        if name == "ComputeHash":
            return hashlib.sha256(bytes(args[0])).digest()
        if name == "TransformBlock":
            buf, off, n = args[0], int(args[1]), int(args[2])
            self.digest.update(bytes(buf)[off : off + n])
            return n
        if name == "TransformFinalBlock":
            self.hash = self.digest.digest()
            return b""
        msg = f"SHA256.{name}"
        raise Unsupported(msg)

    def get(self, name: str) -> Any:
        if name == "Hash":
            return self.hash
        msg = f"SHA256.{name}"
        raise Unsupported(msg)


@dataclass(frozen=True)
class ScriptBlock:
    text: str
    node: Any = None


@dataclass
class Process:
    exit_code: int


@dataclass
class Result:
    stdout: str
    stderr: str
    rc: int


@dataclass(frozen=True)
class Call:
    """One start of a host program (``& $git.Source ...`` or ``Start-Process``)."""

    argv: list[str]
    cwd: str | None
    stdin: bytes
    fs: WinFS


@dataclass(frozen=True)
class Exited:
    rc: int
    stdout: bytes = b""
    stderr: bytes = b""


#: A host program's double: what it prints and returns for a :class:`Call`.
Program = Callable[[Call], Exited]
NO_VALUE: Any = object()


def _ps_str(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, list):
        return " ".join(_ps_str(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _truthy(value: Any) -> bool:
    if isinstance(value, list):
        return len(value) > 1 or (len(value) == 1 and _truthy(value[0]))
    return bool(value) and value is not NO_VALUE


def _unwrap(items: list[Any]) -> Any:
    return None if not items else items[0] if len(items) == 1 else items


def _compare(op: str, left: Any, right: Any) -> Any:
    if isinstance(left, list) and op in ("-eq", "-ne"):
        return [x for x in left if _compare(op, x, right)]
    if isinstance(left, str) and not isinstance(right, str):
        right = _ps_str(right)
    elif isinstance(left, bool):
        right = _truthy(right)
    elif isinstance(left, int) and isinstance(right, str):
        right = int(right)
    if isinstance(left, str):
        left, right = left.lower(), right.lower()
    if op == "-eq":
        return left == right
    if op == "-ne":
        return left != right
    if op == "-gt":
        return left > right
    if op == "-lt":
        return left < right
    if op == "-ge":
        return left >= right
    if op == "-le":
        return left <= right
    msg = f"operator {op}"
    raise Unsupported(msg)


def _format(template: str, args: list[Any]) -> str:
    def one(m: re.Match[str]) -> str:
        value = args[int(m.group(1))]
        spec = m.group(2)
        if spec and spec.upper().startswith("N"):
            return f"{float(value):,.{int(spec[1:] or 2)}f}"
        if spec:
            msg = f"format {spec}"
            raise Unsupported(msg)
        return _ps_str(value)

    return re.sub(r"\{(\d+)(?::([^}]*))?\}", one, template)


@dataclass
class _Frame:
    vars: dict[str, Any]


SWITCHES = {"force", "recurse", "file", "raw", "nonewwindow", "wait", "passthru", "parent"}


class PowerShell:
    """One ``powershell.exe`` process: run a script over a :class:`WinFS` with stdin lines."""

    def __init__(
        self,
        fs: WinFS,
        *,
        stdin: bytes = b"",
        env: dict[str, str] | None = None,
        script_root: str = "C:\\",
        programs: dict[str, Program] | None = None,
        on_scriptblock: Callable[[str], tuple[str, str, int]] | None = None,
    ) -> None:
        self.fs = fs
        self.env = dict(env or {})
        self.programs = {k.lower(): v for k, v in (programs or {}).items()}
        self.on_scriptblock = on_scriptblock
        text = stdin.decode("utf-8", errors="replace")
        self.input = [line for line in text.replace("\r\n", "\n").split("\n")]
        if self.input and self.input[-1] == "":
            self.input.pop()
        self.out: list[str] = []
        self.err: list[str] = []
        self.globals: dict[str, Any] = {
            "true": True,
            "false": False,
            "null": None,
            "erroractionpreference": "Continue",
            "lastexitcode": 0,
            "psscriptroot": script_root,
        }
        self.functions: dict[str, Any] = {}
        self.frames: list[_Frame] = []
        self.started: list[list[str]] = []

    # -- entry --------------------------------------------------------------------------------
    def run(self, script: str) -> Result:
        tree = _PARSER.parse(script.encode("utf-8"))
        if tree.root_node.has_error:
            msg = "the script does not parse"
            raise Unsupported(msg)
        rc = 0
        try:
            for value in self._block(tree.root_node):
                self.out.append(_ps_str(value))
        except _Exit as done:
            self.out.extend(_ps_str(v) for v in getattr(done, "partial", []))
            rc = done.code
        except PsError as exc:
            self.out.extend(_ps_str(v) for v in getattr(exc, "partial", []))
            self.err.append(str(exc))
            rc = 1
        out = "".join(line + "\r\n" for line in self.out)
        return Result(stdout=out, stderr="".join(e + "\r\n" for e in self.err), rc=rc)

    # -- variables ----------------------------------------------------------------------------
    def _get(self, raw: str) -> Any:
        name = raw.lstrip("$").strip("{}")
        low = name.lower()
        if low.startswith("env:"):
            return self.env.get(name[4:])
        low = low.removeprefix("global:").removeprefix("script:")
        if low == "input":
            return list(self.input)
        for frame in reversed(self.frames):
            if low in frame.vars:
                return frame.vars[low]
        return self.globals.get(low)

    def _set(self, raw: str, value: Any) -> None:
        name = raw.lstrip("$").strip("{}").lower()
        if name.startswith("global:"):
            self.globals[name[7:]] = value
        elif self.frames:
            self.frames[-1].vars[name] = value
        else:
            self.globals[name] = value

    # -- statements ---------------------------------------------------------------------------
    def _block(self, node: Any) -> list[Any]:
        """Run the statements under ``node``; what they output, in order."""
        out: list[Any] = []
        previous = None
        for child in node.named_children:
            if child.type == "comment":
                continue
            if child.type == "statement_list":
                out.extend(self._block(child))
                continue
            if (
                previous is not None
                and previous.type == "if_statement"
                and child.type == "command"
                and self._text(child.named_children[0]).lower() == "else"
            ):
                # `} <newline> else {`: PowerShell reads an else on the next line as the if's
                # (tree-sitter-powershell parses it as a command named "else").
                if not self._if_taken:
                    body = child.named_children[1].named_children[0]
                    out.extend(self._script_block_body(body))
                previous = None
                continue
            try:
                out.extend(self._statement(child))
            except _Flow as flow:
                raise flow.carry(out) from None
            previous = child
        return out

    _if_taken = False

    def _statement(self, node: Any) -> list[Any]:
        node = self._leaf(node)
        kind = node.type
        if kind in ("statement_list", "script_block", "script_block_body"):
            return self._block(node)
        if kind == "if_statement":
            return self._if(node)
        if kind == "foreach_statement":
            return self._foreach(node)
        if kind == "try_statement":
            return self._try(node)
        if kind == "function_statement":
            self.functions[
                self._text(node.child_by_field_name("name") or node.named_children[0]).lower()
            ] = node
            return []
        if kind == "flow_control_statement":
            return self._flow(node)
        if kind == "assignment_expression":
            self._assign(node)
            return []
        if kind == "post_increment_expression":
            var = node.named_children[0]
            self._set(self._text(var), (self._get(self._text(var)) or 0) + 1)
            return []
        if kind in ("pipeline", "pipeline_chain", "command", "command_name"):
            return self._pipeline(node)
        if kind == "cast_expression" and self._text(node.named_children[0]).lower() == "[void]":
            self._expr(node.named_children[1])
            return []
        value = self._expr(node)
        if value is NO_VALUE or value is None:
            return []
        return value if isinstance(value, list) else [value]

    def _if(self, node: Any) -> list[Any]:
        named = node.named_children
        self._if_taken = True
        if _truthy(self._expr(named[0])):
            return self._block(named[1])
        for clause in named[2:]:
            if clause.type == "elseif_clauses":
                for ec in clause.named_children:
                    if _truthy(self._expr(ec.named_children[0])):
                        return self._block(ec.named_children[1])
            elif clause.type == "elseif_clause":
                if _truthy(self._expr(clause.named_children[0])):
                    return self._block(clause.named_children[1])
            elif clause.type == "else_clause":
                return self._block(clause.named_children[0])
        self._if_taken = False
        return []

    def _foreach(self, node: Any) -> list[Any]:
        var, source, body = node.named_children[0], node.named_children[1], node.named_children[2]
        items = self._expr(source)
        items = items if isinstance(items, list) else ([] if items is None else [items])
        out: list[Any] = []
        for item in items:
            self._set(self._text(var), item)
            try:
                out.extend(self._block(body))
            except _Continue as skip:
                out.extend(getattr(skip, "partial", []))
            except _Flow as flow:
                raise flow.carry(out) from None
        return out

    def _try(self, node: Any) -> list[Any]:
        body = node.named_children[0]
        catches = [
            c for c in node.named_children[1:] if c.type in ("catch_clause", "catch_clauses")
        ]
        final = [c for c in node.named_children[1:] if c.type == "finally_clause"]
        out: list[Any] = []
        try:
            try:
                out.extend(self._block(body))
            except PsError as exc:
                if not catches:
                    raise
                out.extend(getattr(exc, "partial", []))
                exc.partial = []
                clause = catches[0]
                if clause.type == "catch_clauses":
                    clause = clause.named_children[0]
                self._set("$_", str(exc))
                self._rethrow = exc
                out.extend(self._block(clause.named_children[-1]))
        except _Flow as flow:
            after = [v for f in final for v in self._block(f.named_children[-1])]
            flow.partial = [*out, *getattr(flow, "partial", []), *after]
            raise
        for f in final:
            out.extend(self._block(f.named_children[-1]))
        return out

    _rethrow: PsError | None = None

    def _flow(self, node: Any) -> list[Any]:
        word = node.children[0].type
        value = self._expr(node.named_children[0]) if node.named_children else None
        if word == "exit":
            raise _Exit(int(value or 0))
        if word == "return":
            raise _Return(value)
        if word == "continue":
            raise _Continue
        if word == "throw":
            if value is None and self._rethrow is not None:
                raise self._rethrow
            raise PsError(_ps_str(value) or "ScriptHalted")
        msg = f"flow control {word}"
        raise Unsupported(msg)

    def _assign(self, node: Any) -> None:
        left, op, right = node.named_children[0], node.named_children[1], node.named_children[2]
        value = self._value(right)
        target = self._leaf(left)
        if self._text(op) == "+=":
            old = self._get(self._text(target))
            if isinstance(old, list):
                value = [*old, *(value if isinstance(value, list) else [value])]
            else:
                value = (old or 0) + value if not isinstance(old, str) else old + _ps_str(value)
        if target.type == "variable":
            self._set(self._text(target), value)
        elif target.type == "member_access":
            pass  # [Console]::OutputEncoding = ...: a console setting, no effect on the model
        else:
            msg = f"assignment to {target.type}"
            raise Unsupported(msg)

    def _value(self, node: Any) -> Any:
        """An expression or a pipeline as an assignment's right side."""
        node = self._leaf(node)
        if node.type in ("pipeline", "pipeline_chain", "command", "command_name"):
            return _unwrap(self._pipeline(node))
        return self._expr(node)

    # -- pipelines and commands ---------------------------------------------------------------
    def _pipeline(self, node: Any) -> list[Any]:
        node = self._leaf(node)
        if node.type not in ("pipeline", "pipeline_chain"):
            if node.type in ("command", "command_name"):
                return self._command(node, None)
            value = self._expr(node)
            return (
                []
                if value is None or value is NO_VALUE
                else value
                if isinstance(value, list)
                else [value]
            )
        stages = [c for c in node.named_children if c.type != "comment"]
        items: list[Any] | None = None
        for stage in stages:
            stage = self._leaf(stage)
            if stage.type in ("command", "command_name"):
                items = self._command(stage, items)
            else:
                value = self._expr(stage)
                items = value if isinstance(value, list) else ([] if value is None else [value])
        return items or []

    def _command(self, node: Any, piped: list[Any] | None) -> list[Any]:
        if node.type == "command_name":
            name_node, elements = node, None
        else:
            name_node = node.child_by_field_name("command_name") or node.named_children[0]
            elements = next((c for c in node.named_children if c.type == "command_elements"), None)
        invoke = any(c.type == "command_invokation_operator" for c in node.children)
        if invoke:
            target = next(c for c in node.named_children if c.type != "command_invokation_operator")
            target = self._leaf(target)
            argv_tail, redirected = self._native_argv(elements)
            if target.type == "path_command_name":
                base = self._expr(target.named_children[0])
                prop = self._text(target.named_children[1]).lstrip(".")
                program = _ps_str(self._member(base, prop))
            else:
                program = self._expr(target)
            if isinstance(program, ScriptBlock):
                return self._call_scriptblock(program)
            return self._native([_ps_str(program), *argv_tail], quiet=redirected)
        name = self._text(name_node)
        args, params, _ = self._arguments(elements)
        low = name.lower()
        if low in self.functions:
            return self._call_function(self.functions[low], args)
        handler = CMDLETS.get(low)
        if handler is None:
            msg = f"command {name}"
            raise Unsupported(msg)
        return handler(self, args, params, piped)

    def _native_argv(self, elements: Any) -> tuple[list[str], bool]:
        """A native program's arguments: in order, as text (no parameter binding)."""
        argv: list[str] = []
        redirected = False
        for el in elements.named_children if elements is not None else []:
            if el.type == "command_argument_sep":
                continue
            if el.type == "redirection":
                redirected = True
            elif el.type in ("command_parameter", "generic_token"):
                argv.append(self._text(el))
            else:
                value = self._expr(el)
                argv.extend(_ps_str(v) for v in (value if isinstance(value, list) else [value]))
        return argv, redirected

    def _arguments(self, elements: Any) -> tuple[list[Any], dict[str, Any], bool]:
        args: list[Any] = []
        params: dict[str, Any] = {}
        redirected = False
        pending: str | None = None
        for el in elements.named_children if elements is not None else []:
            if el.type == "command_argument_sep":
                continue
            if el.type == "redirection":
                redirected = True
                continue
            if el.type == "command_parameter":
                if pending is not None:
                    params[pending] = True
                word = self._text(el)
                if word.lstrip("-").lower() in SWITCHES:
                    params[word] = True
                    pending = None
                else:
                    pending = word
                continue
            value = self._text(el) if el.type == "generic_token" else self._expr(el)
            if pending is not None:
                params[pending] = value
                pending = None
            else:
                args.append(value)
        if pending is not None:
            params[pending] = True
        return args, {k: v for k, v in params.items()}, redirected

    def start(self, argv: list[str], *, cwd: str | None = None, stdin: bytes = b"") -> Exited:
        self.started.append(argv)
        base = argv[0].replace("/", "\\").rsplit("\\", 1)[-1].lower()
        program = self.programs.get(base.removesuffix(".exe"))
        if program is None:
            msg = f"The term '{argv[0]}' is not recognized as the name of a cmdlet"
            raise PsError(msg)
        return program(Call(argv=argv, cwd=cwd, stdin=stdin, fs=self.fs))

    def _native(self, argv: list[str], *, quiet: bool) -> list[Any]:
        done = self.start(argv)
        self.globals["lastexitcode"] = done.rc
        if not quiet:
            self.err.extend(done.stderr.decode("utf-8", errors="replace").splitlines())
            return done.stdout.decode("utf-8", errors="replace").splitlines()
        return []

    def _call_function(self, node: Any, args: list[Any]) -> list[Any]:
        params = []
        decl = next(
            (c for c in node.named_children if c.type == "function_parameter_declaration"), None
        )
        if decl is not None:
            for p in decl.named_children[0].named_children:
                if p.type == "script_parameter":
                    typ = (
                        p.named_children[0] if p.named_children[0].type == "type_literal" else None
                    )
                    var = p.named_children[-1]
                    params.append((self._text(typ) if typ else None, self._text(var)))
        frame = _Frame({})
        for i, (typ, var) in enumerate(params):
            value = args[i] if i < len(args) else None
            frame.vars[var.lstrip("$").lower()] = self._cast(typ, value) if typ else value
        body = next(c for c in node.named_children if c.type in ("statement_list", "script_block"))
        self.frames.append(frame)
        try:
            return self._block(body)
        except _Return as r:
            return [*getattr(r, "partial", []), *([] if r.value is None else [r.value])]
        finally:
            self.frames.pop()

    def _script_block_body(self, node: Any) -> list[Any]:
        body = [c for c in node.named_children if c.type not in ("{", "}")]
        out: list[Any] = []
        for child in body:
            if child.type in ("script_block_body", "statement_list"):
                out.extend(self._block(child))
            else:
                out.extend(self._statement(child))
        return out

    def _with_item(self, block: ScriptBlock, item: Any) -> list[Any]:
        self.frames.append(_Frame({"_": item}))
        try:
            return self._script_block_body(block.node)
        finally:
            self.frames.pop()

    def _call_scriptblock(self, block: ScriptBlock) -> list[Any]:
        if block.node is not None:
            return self._script_block_body(block.node)
        if self.on_scriptblock is None:
            msg = "running a script block made from text"
            raise Unsupported(msg)
        out, err, rc = self.on_scriptblock(block.text)
        self.out.extend(out.replace("\r\n", "\n").splitlines())
        self.err.extend(err.replace("\r\n", "\n").splitlines())
        self.globals["lastexitcode"] = rc
        return []

    # -- expressions --------------------------------------------------------------------------
    def _leaf(self, node: Any) -> Any:
        while (
            node.named_child_count == 1
            and node.child_count == 1
            and node.type not in ("expandable_string_literal", "variable")
        ):
            node = node.named_children[0]
        return node

    @staticmethod
    def _text(node: Any) -> str:
        return str(node.text.decode("utf-8"))

    def _expr(self, node: Any) -> Any:
        node = self._leaf(node)
        kind = node.type
        if kind == "variable":
            return self._get(self._text(node))
        if kind == "braced_variable":
            return self._get(self._text(node))
        if kind == "verbatim_string_characters":
            return self._text(node)[1:-1].replace("''", "'")
        if kind == "expandable_string_literal":
            return self._expand(self._text(node)[1:-1])
        if kind in ("decimal_integer_literal", "integer_literal"):
            return int(self._text(node))
        if kind == "parenthesized_expression":
            return self._value(node.named_children[0])
        if kind == "sub_expression":
            inner = [c for c in node.named_children]
            out: list[Any] = []
            for c in inner:
                out.extend(self._statement(c) if c.type != "statement_list" else self._block(c))
            return _unwrap(out)
        if kind == "array_expression":
            out = []
            for c in node.named_children:
                out.extend(self._block(c) if c.type == "statement_list" else self._statement(c))
            return out
        if kind == "array_literal_expression":
            values = []
            for c in node.named_children:
                v = self._expr(c)
                values.append(v)
            return values
        if kind == "hash_literal_expression":
            table: dict[str, Any] = {}
            body = node.named_children[0] if node.named_children else None
            for entry in body.named_children if body is not None else []:
                key = self._text(entry.named_children[0])
                table[key.lower()] = self._value(entry.named_children[1])
            return table
        if kind == "script_block_expression":
            return ScriptBlock(self._text(node), node)
        if kind == "expression_with_unary_operator":
            op = self._text(node.children[0]).lower()
            value = self._expr(node.named_children[-1])
            if op in ("-not", "!"):
                return not _truthy(value)
            if op == "-":
                return -value
            msg = f"unary {op}"
            raise Unsupported(msg)
        if kind in ("comparison_expression", "comparison_argument_expression"):
            left, op, right = node.named_children
            opname = self._text(op).lower()
            lv = self._expr(left)
            if opname == "-replace":
                pattern = self._expr(right)
                pat, rep = [*pattern, ""][:2] if isinstance(pattern, list) else (pattern, "")
                return re.sub(_ps_str(pat), _ps_str(rep), _ps_str(lv), flags=re.I)
            if opname == "-join":
                items = lv if isinstance(lv, list) else [lv]
                return _ps_str(self._expr(right)).join(_ps_str(i) for i in items)
            return _compare(opname, lv, self._expr(right))
        if kind in ("logical_expression", "logical_argument_expression"):
            left, op, right = node.named_children
            opname = self._text(op).lower()
            if opname == "-and":
                return _truthy(self._expr(left)) and _truthy(self._expr(right))
            if opname == "-or":
                return _truthy(self._expr(left)) or _truthy(self._expr(right))
            msg = f"operator {opname}"
            raise Unsupported(msg)
        if kind in ("additive_expression", "additive_argument_expression"):
            left, right = node.named_children[0], node.named_children[-1]
            op = self._text(node.children[1])
            lv, rv = self._expr(left), self._expr(right)
            if op == "+":
                if isinstance(lv, str):
                    return lv + _ps_str(rv)
                if isinstance(lv, list):
                    return [*lv, *(rv if isinstance(rv, list) else [rv])]
                return lv + rv
            return lv - rv
        if kind in ("multiplicative_expression", "multiplicative_argument_expression"):
            lv, rv = self._expr(node.named_children[0]), self._expr(node.named_children[-1])
            op = self._text(node.children[1])
            if op == "/":
                return lv / rv
            if op == "*":
                return lv * rv
            msg = f"operator {op}"
            raise Unsupported(msg)
        if kind in ("format_expression", "format_argument_expression"):
            template = self._expr(node.named_children[0])
            args = self._expr(node.named_children[-1])
            return _format(_ps_str(template), args if isinstance(args, list) else [args])
        if kind == "cast_expression":
            typ = self._text(node.named_children[0])
            value = self._expr(node.named_children[1])
            return self._cast(typ, value)
        if kind == "type_literal":
            return _TypeRef(self._text(node)[1:-1])
        if kind == "member_access":
            return self._access(node)
        if kind == "invokation_expression":
            return self._invoke(node)
        if kind in ("command", "pipeline", "pipeline_chain", "command_name"):
            return _unwrap(self._pipeline(node))
        msg = f"{kind}: {self._text(node)[:60]!r}"
        raise Unsupported(msg)

    def _cast(self, typ: str | None, value: Any) -> Any:
        name = (typ or "").strip().lower()
        name = name[1:-1] if name.startswith("[") and name.endswith("]") else name
        if name == "void":
            return NO_VALUE
        if name in ("long", "int"):
            return int(value or 0)
        if name == "string":
            return _ps_str(value)
        if name == "byte[]":
            return bytes(value or [])
        if name == "bool":
            return _truthy(value)
        msg = f"cast to [{name}]"
        raise Unsupported(msg)

    def _expand(self, text: str) -> str:
        out = []
        i = 0
        escapes = {"n": "\n", "r": "\r", "t": "\t", "0": "\0", "`": "`", '"': '"', "$": "$"}
        while i < len(text):
            ch = text[i]
            if ch == "`" and i + 1 < len(text):
                out.append(escapes.get(text[i + 1], text[i + 1]))
                i += 2
            elif ch == "$" and text.startswith("$(", i):
                depth, j = 0, i + 1
                while j < len(text):
                    depth += {"(": 1, ")": -1}.get(text[j], 0)
                    if depth == 0:
                        break
                    j += 1
                inner = text[i + 2 : j]
                tree = _PARSER.parse(inner.encode("utf-8"))
                out.append(_ps_str(_unwrap(self._block(tree.root_node))))
                i = j + 1
            elif ch == "$" and text.startswith("${", i):
                j = text.index("}", i)
                out.append(_ps_str(self._get(text[i + 2 : j])))
                i = j + 1
            elif ch == "$" and i + 1 < len(text) and re.match(r"[A-Za-z_]", text[i + 1]):
                m = re.match(r"\$((?:global:|env:|script:)?[A-Za-z_][A-Za-z0-9_]*)", text[i:])
                assert m is not None
                out.append(_ps_str(self._get(m.group(1))))
                i += m.end()
            else:
                out.append(ch)
                i += 1
        return "".join(out)

    def _args(self, node: Any) -> list[Any]:
        args = next((c for c in node.named_children if c.type == "argument_list"), None)
        if args is None or not args.named_children:
            return []
        inner = args.named_children[0]
        if inner.type == "argument_expression_list":
            return [self._expr(c) for c in inner.named_children]
        return [self._expr(inner)]

    def _access(self, node: Any) -> Any:
        target, name = node.named_children[0], self._text(node.named_children[-1])
        base = self._expr(target)
        if isinstance(base, _TypeRef):
            return self._static(base.name, name, None)
        return self._member(base, name)

    def _member(self, base: Any, name: str) -> Any:
        low = name.lower()
        if isinstance(base, dict):
            return base.get(low)
        if isinstance(base, list) and low in ("count", "length"):
            return len(base)
        if isinstance(base, (bytes, bytearray)) and low == "length":
            return len(base)
        if isinstance(base, str) and low == "length":
            return len(base)
        if isinstance(base, _Sha256):
            return base.get(name)
        if isinstance(base, FileInfo) and low in ("name", "fullname", "length"):
            return {"name": base.name, "fullname": base.full_name, "length": base.length}[low]
        if isinstance(base, Process) and low == "exitcode":
            return base.exit_code
        if isinstance(base, list):
            return [self._member(b, name) for b in base]
        msg = f"property {name} of {type(base).__name__}"
        raise Unsupported(msg)

    def _invoke(self, node: Any) -> Any:
        target = node.named_children[0]
        name = self._text(
            next(c for c in node.named_children if c.type in ("member_name", "simple_name"))
        )
        args = self._args(node)
        base = self._expr(target)
        if isinstance(base, _TypeRef):
            return self._static(base.name, name, args)
        if isinstance(base, (_Stream, _Sha256)):
            return base.call(name, args)
        if isinstance(base, str):
            low = name.lower()
            if low == "tolowerinvariant":
                return base.lower()
            if low == "trim":
                return base.strip()
        if isinstance(base, _Encoding) and name.lower() == "getstring":
            return bytes(args[0]).decode("utf-8")
        if isinstance(base, _Writer) and name.lower() == "writeline":
            (self.err if base.stream == "err" else self.out).append(_ps_str(args[0]))
            return NO_VALUE
        msg = f"method {name} of {type(base).__name__}"
        raise Unsupported(msg)

    def _static(self, type_name: str, member: str, args: list[Any] | None) -> Any:
        t, m = type_name.lower(), member.lower()
        call = (t, m)
        if args is None:
            if call == ("console", "error"):
                return _Writer("err")
            if call == ("console", "out"):
                return _Writer("out")
            if call == ("text.encoding", "utf8"):
                return _Encoding()
            msg = f"[{type_name}]::{member}"
            raise Unsupported(msg)
        if call == ("convert", "frombase64string"):
            text = _ps_str(args[0])
            try:
                import base64

                return base64.b64decode(text, validate=True)
            except ValueError:
                msg = "The input is not a valid Base-64 string"
                raise PsError(msg) from None
        if call == ("security.cryptography.sha256", "create"):
            return _Sha256()
        if call == ("bitconverter", "tostring"):
            return "-".join(f"{b:02X}" for b in bytes(args[0]))
        if call == ("io.file", "create"):
            self.fs.write(_ps_str(args[0]), b"")
            return _Stream(self.fs, _ps_str(args[0]), bytearray(), writable=True)
        if call == ("io.file", "openread"):
            data = self.fs.read(_ps_str(args[0]))
            return _Stream(self.fs, _ps_str(args[0]), bytearray(data), writable=False)
        if call == ("io.file", "writealltext"):
            self.fs.write(_ps_str(args[0]), _ps_str(args[1]).encode("utf-8"))
            return NO_VALUE
        if call == ("io.compression.zipfile", "extracttodirectory"):
            zip_path, dest = _ps_str(args[0]), _ps_str(args[1])
            with zipfile.ZipFile(io.BytesIO(self.fs.read(zip_path))) as zf:
                self.fs.mkdir(dest)
                for info in zf.infolist():
                    path = dest + "\\" + info.filename.replace("/", "\\")
                    if info.is_dir():
                        self.fs.mkdir(path)
                        continue
                    self.fs.mkdir(path.rsplit("\\", 1)[0])
                    self.fs.write(path, zf.read(info))
            return NO_VALUE
        if call == ("scriptblock", "create"):
            return ScriptBlock(_ps_str(args[0]))
        msg = f"[{type_name}]::{member}()"
        raise Unsupported(msg)

    # -- cmdlet errors ------------------------------------------------------------------------
    def fail(self, message: str, params: dict[str, Any]) -> None:
        """A non-terminating cmdlet error: ``-ErrorAction``/``$ErrorActionPreference`` decide."""
        action = _ps_str(params.get("-ErrorAction") or self._get("$ErrorActionPreference"))
        if action.lower() == "silentlycontinue":
            return
        if action.lower() == "stop":
            raise PsError(message)
        self.err.append(message)


@dataclass(frozen=True)
class _TypeRef:
    name: str


@dataclass(frozen=True)
class _Writer:
    stream: str


@dataclass(frozen=True)
class _Encoding:
    pass


@dataclass(frozen=True)
class FileInfo:
    full_name: str
    name: str
    length: int


def _param(params: dict[str, Any], *names: str) -> Any:
    for key, value in params.items():
        if key.lstrip("-").lower() in names:
            return value
    return None


def _path(ps: PowerShell, args: list[Any], params: dict[str, Any]) -> str:
    value = _param(params, "literalpath", "path")
    if value is None and args:
        value = args[0]
    return _ps_str(value)


Cmdlet = Callable[[PowerShell, list[Any], dict[str, Any], "list[Any] | None"], list[Any]]


def _write_output(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    items = list(piped or [])
    for a in args:
        items.extend(a if isinstance(a, list) else [a])
    return items


def _out_null(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    return []


def _out_string(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    return ["".join(_ps_str(i) + "\r\n" for i in piped or [])]


def _split_path(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    path = _path(ps, args, params).rstrip("\\")
    return [path.rsplit("\\", 1)[0] if "\\" in path else ""]


def _join_path(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    a = _ps_str(_param(params, "path") or args[0])
    b = _ps_str(_param(params, "childpath") or args[-1])
    return [a.rstrip("\\") + "\\" + b.lstrip("\\")]


def _test_path(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    path = _path(ps, args, params)
    kind = _ps_str(_param(params, "pathtype")).lower()
    if kind == "leaf":
        return [ps.fs.is_file(path)]
    if kind == "container":
        return [ps.fs.is_dir(path)]
    return [ps.fs.exists(path)]


def _new_item(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    if _ps_str(_param(params, "itemtype")).lower() != "directory":
        msg = "New-Item other than -ItemType Directory"
        raise Unsupported(msg)
    path = _path(ps, args, params)
    if ps.fs.is_dir(path) and not _param(params, "force"):
        ps.fail(f"An item with the specified name {path} already exists.", params)
        return []
    ps.fs.mkdir(path)
    return [FileInfo(path, path.rsplit("\\", 1)[-1], 0)]


def _remove_item(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    value = _param(params, "literalpath", "path")
    targets = value if isinstance(value, list) else [value] if value is not None else list(args)
    targets += [p.full_name if isinstance(p, FileInfo) else p for p in piped or []]
    for target in targets:
        try:
            ps.fs.remove(_ps_str(target), recurse=bool(_param(params, "recurse")))
        except PsError as exc:
            ps.fail(str(exc), params)
    return []


def _move_item(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    src = _path(ps, args, params)
    dest = _ps_str(_param(params, "destination") or (args[1] if len(args) > 1 else None))
    try:
        ps.fs.move(src, dest, force=bool(_param(params, "force")))
    except PsError as exc:
        ps.fail(str(exc), params)
    return []


def _get_child_item(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    path = _path(ps, args, params)
    if not ps.fs.is_dir(path):
        ps.fail(f"Cannot find path '{path}' because it does not exist.", params)
        return []
    if not _param(params, "file"):
        msg = "Get-ChildItem without -File"
        raise Unsupported(msg)
    out = []
    for key in ps.fs.children(path):
        name = key.rsplit("\\", 1)[-1]
        out.append(FileInfo(path.rstrip("\\") + "\\" + name, name, len(ps.fs.files[key])))
    return out


def _get_file_hash(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    if _ps_str(_param(params, "algorithm")).upper() != "SHA256":
        msg = "Get-FileHash other than SHA256"
        raise Unsupported(msg)
    path = _path(ps, args, params)
    try:
        data = ps.fs.read(path)
    except PsError as exc:
        ps.fail(str(exc), params)
        return []
    return [{"hash": hashlib.sha256(data).hexdigest().upper(), "path": path, "algorithm": "SHA256"}]


def _get_item(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    path = _path(ps, args, params)
    if ps.fs.is_file(path):
        return [
            {"length": len(ps.fs.read(path)), "fullname": path, "name": path.rsplit("\\", 1)[-1]}
        ]
    ps.fail(f"Cannot find path '{path}' because it does not exist.", params)
    return []


def _get_content(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    path = _path(ps, args, params)
    try:
        text = ps.fs.read(path).decode("utf-8", errors="replace").lstrip("\ufeff")
    except PsError as exc:
        ps.fail(str(exc), params)
        return []
    if _param(params, "raw"):
        return [text]
    if not text:
        return []
    return text.replace("\r\n", "\n").split("\n")[: -1 if text.endswith("\n") else None]


def _set_content(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    path = _path(ps, args, params)
    value = _param(params, "value")
    encoding = _ps_str(_param(params, "encoding")).lower() or "ascii"
    if encoding != "ascii":
        msg = f"Set-Content -Encoding {encoding}"
        raise Unsupported(msg)
    lines = value if isinstance(value, list) else [value]
    data = "".join(_ps_str(v) + "\r\n" for v in lines).encode("ascii", errors="replace")
    try:
        ps.fs.write(path, data)
    except PsError as exc:
        ps.fail(str(exc), params)
    return []


def _add_type(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    return []


def _new_object(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    if args and _ps_str(args[0]) == "System.Text.UTF8Encoding":
        return [_Encoding()]
    msg = f"New-Object {args[:1]}"
    raise Unsupported(msg)


def _where_object(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    block = args[0]
    return [item for item in piped or [] if _truthy(_unwrap(ps._with_item(block, item)))]


def _foreach_object(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    block = args[0]
    out: list[Any] = []
    for item in piped or []:
        out.extend(ps._with_item(block, item))
    return out


def _select_object(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    items = list(piped or [])
    first, last = _param(params, "first"), _param(params, "last")
    if first is not None:
        return items[: int(first)]
    if last is not None:
        return items[-int(last) :] if int(last) else []
    msg = "Select-Object without -First/-Last"
    raise Unsupported(msg)


def _get_command(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    name = _ps_str(args[0]).lower()
    if name in ps.programs:
        return [{"source": f"C:\\Program Files\\{name}\\{name}.exe", "name": f"{name}.exe"}]
    ps.fail(f"The term '{name}' is not recognized", params)
    return []


def _start_process(
    ps: PowerShell, args: list[Any], params: dict[str, Any], piped: list[Any] | None
) -> list[Any]:
    program = _ps_str(_param(params, "filepath"))
    arglist = _param(params, "argumentlist") or []
    argv = [program, *[_ps_str(a) for a in (arglist if isinstance(arglist, list) else [arglist])]]
    stdin_path = _param(params, "redirectstandardinput")
    stdin = ps.fs.read(_ps_str(stdin_path)) if stdin_path is not None else b""
    cwd = _param(params, "workingdirectory")
    done = ps.start(argv, cwd=None if cwd is None else _ps_str(cwd), stdin=stdin)
    for name, data in (
        ("redirectstandardoutput", done.stdout),
        ("redirectstandarderror", done.stderr),
    ):
        target = _param(params, name)
        if target is not None:
            ps.fs.write(_ps_str(target), data)
    return [Process(done.rc)] if _param(params, "passthru") else []


CMDLETS: dict[str, Cmdlet] = {
    "write-output": _write_output,
    "out-null": _out_null,
    "out-string": _out_string,
    "split-path": _split_path,
    "join-path": _join_path,
    "test-path": _test_path,
    "new-item": _new_item,
    "remove-item": _remove_item,
    "move-item": _move_item,
    "get-childitem": _get_child_item,
    "get-filehash": _get_file_hash,
    "get-item": _get_item,
    "get-content": _get_content,
    "set-content": _set_content,
    "add-type": _add_type,
    "new-object": _new_object,
    "where-object": _where_object,
    "foreach-object": _foreach_object,
    "select-object": _select_object,
    "get-command": _get_command,
    "start-process": _start_process,
}


def run(
    script: str,
    fs: WinFS,
    *,
    stdin: bytes = b"",
    env: dict[str, str] | None = None,
    script_root: str = "C:\\",
    programs: dict[str, Program] | None = None,
    on_scriptblock: Callable[[str], tuple[str, str, int]] | None = None,
) -> Result:
    """Run ``script`` the way ``powershell.exe -EncodedCommand`` would, over ``fs``."""
    shell = PowerShell(
        fs,
        stdin=stdin,
        env=env,
        script_root=script_root,
        programs=programs,
        on_scriptblock=on_scriptblock,
    )
    return shell.run(script)


def lines_of(values: Iterable[Any]) -> list[str]:
    return [_ps_str(v) for v in values]
