"""Typed loading of YAML data files into frozen dataclasses.

Recipes, the lab inventory's host variables, the CI matrix: every data file is validated fully
into typed objects *before* anything acts on it. Errors are one line naming the file, the key
path and what was expected, with a "did you mean" hint for unknown keys; never a traceback.

Supported field types: str, int, float, bool, Literal[...], Enum, X | None, list[X],
tuple[X, ...], dict[str, X] and nested dataclasses. A field may carry ``metadata={"check": fn}``
where ``fn(value)`` raises ValueError with what was expected; ``__post_init__`` may raise
ValueError too (reported at the object's key path).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from npulab.errors import ConfigError

T = TypeVar("T")

HEX40 = re.compile(r"^[0-9a-f]{40}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def check_commit(value: str) -> None:
    if not HEX40.fullmatch(value):
        msg = f"a full 40-hex lowercase commit sha, got {value!r}"
        raise ValueError(msg)


def check_sha256(value: str) -> None:
    if not HEX64.fullmatch(value):
        msg = f"a 64-hex lowercase sha256, got {value!r}"
        raise ValueError(msg)


#: One path component that is also a Windows file name and a cmd.exe token needing no quotes.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {
    f"{d}{n}" for d in ("COM", "LPT") for n in range(1, 10)
}
_UNSAFE_IN_PATHS = set('<>:"|?*\\') | {chr(c) for c in range(32)}
URL_RE = re.compile(r"^(https?|ssh|git|file)://[^\s/]*/\S+$|^[\w.-]+@[\w.-]+:\S+$")


def check_name(value: str) -> None:
    """A name that becomes a directory (``build/<name>``, ``C:\\npulab\\build\\<name>``) or a
    Windows token: never a path, never something Windows rewrites or reserves."""
    why = ""
    if not NAME_RE.fullmatch(value):
        why = "letters, digits, '.', '_' and '-' only, starting with a letter or digit"
    elif value.endswith("."):
        why = "no trailing '.' (Windows drops it)"
    elif value.split(".")[0].upper() in _WINDOWS_RESERVED:
        why = "not a reserved Windows device name"
    if why:
        msg = (
            f"a plain name ({why}; it becomes a directory name here and on Windows), got {value!r}"
        )
        raise ValueError(msg)


def check_relative_path(value: str) -> None:
    """A path inside a tree, '/'-separated: it is joined under a directory we own and must
    stay there (no absolute path, no '..', no drive, no character Windows refuses)."""
    parts = value.split("/")
    bad = sorted({c for c in value if c in _UNSAFE_IN_PATHS}, key=ord)
    if value.startswith("/") or any(part in ("", ".", "..") for part in parts) or bad:
        shown = f"; has {''.join(bad)!r}" if bad else ""
        msg = (
            "a relative path inside the tree ('/' separators, no leading '/', no '.' or '..' "
            f'parts, no empty part, none of <>:"|?*\\ or control characters{shown}), '
            f"got {value!r}"
        )
        raise ValueError(msg)


def check_repo_id(value: str) -> None:
    """A hub id ``org/name`` (or ``name``): each part a plain name."""
    parts = value.split("/")
    if len(parts) > 2:
        msg = f"a hub repo id like 'org/name', got {value!r}"
        raise ValueError(msg)
    for part in parts:
        check_name(part)


def check_url(value: str) -> None:
    if not URL_RE.fullmatch(value):
        msg = (
            "a git URL (https://host/path, ssh://, git://, file:// or user@host:path; a local "
            f"mirror goes in --source or NPULAB_UPSTREAM, not here), got {value!r}"
        )
        raise ValueError(msg)


def check_positive(value: float) -> None:
    if value <= 0:
        msg = f"a number > 0, got {value!r}"
        raise ValueError(msg)


def check_nonempty(value: str | list[Any] | tuple[Any, ...]) -> None:
    if len(value) == 0:
        msg = "a non-empty value"
        raise ValueError(msg)


class VaultValue:
    """An Ansible Vault value (``!vault |``): kept opaque, never decrypted or shown by npulab."""

    def __init__(self, line: int) -> None:
        self.line = line

    def __repr__(self) -> str:
        return "<!vault value>"


class _Loader(yaml.SafeLoader):
    """``safe_load`` that refuses a key given twice in one mapping (YAML says keys are unique;
    PyYAML silently keeps the last) and reads ``!vault`` values as :class:`VaultValue`."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, list | dict) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is given twice (lines {seen[key]} and {line}); keep one",
                    key_node.start_mark,
                )
            if not isinstance(key, list | dict):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _vault(loader: yaml.SafeLoader, node: yaml.Node) -> VaultValue:
    return VaultValue(node.start_mark.line + 1)


_Loader.add_constructor("!vault", _vault)


def load_yaml(path: Path) -> Any:
    """Read a YAML file (safe, duplicate keys refused); a missing, unreadable, non-UTF-8 or
    malformed file is a one-line ConfigError naming the file (and line)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        msg = f"{path}: file not found"
        raise ConfigError(msg) from None
    except OSError as exc:
        msg = f"{path}: cannot read: {exc.strerror}"
        raise ConfigError(msg) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        msg = f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        raise ConfigError(msg, hint=f"save the file as UTF-8 (iconv -t UTF-8 {path})") from None
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        msg = f"{path}{where}: invalid YAML: {problem}"
        raise ConfigError(msg) from None


def load_file(cls: type[T], path: Path) -> T:
    """Load ``path`` and validate it into ``cls`` (a dataclass)."""
    return build(cls, load_yaml(path), source=str(path))


def build(cls: type[T], data: Any, *, source: str, key_path: str = "") -> T:
    """Validate parsed YAML into ``cls``; a ConfigError names ``source`` and the key path."""
    return typing.cast(T, _convert(cls, data, _Where(source, key_path)))


@dataclasses.dataclass(frozen=True)
class _Where:
    source: str
    key_path: str

    def child(self, key: str | int) -> _Where:
        if isinstance(key, int):
            return _Where(self.source, f"{self.key_path}[{key}]")
        return _Where(self.source, f"{self.key_path}.{key}" if self.key_path else key)

    def fail(self, expected: str) -> ConfigError:
        where = self.key_path or "(top level)"
        return ConfigError(f"{self.source}: {where}: {expected}")


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _convert(tp: Any, value: Any, where: _Where) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if isinstance(value, VaultValue):
        msg = (
            f"an Ansible Vault value (!vault, line {value.line}): npulab does not decrypt Vault "
            "(give secrets through NPULAB_WINRM_USER/NPULAB_WINRM_PASSWORD or "
            "~/.config/npulab/secrets.yaml)"
        )
        raise where.fail(msg)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if value is None and len(non_none) < len(args):
            return None
        if len(non_none) == 1:
            return _convert(non_none[0], value, where)
        errors = []
        for option in non_none:
            try:
                return _convert(option, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        msg = f"expected one of {[_type_name(a) for a in non_none]}, got {_describe(value)}"
        raise where.fail(msg)
    if origin is typing.Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            msg = f"expected one of {list(args)}, got {value!r}{hint}"
            raise where.fail(msg)
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _convert_dataclass(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            choices = [m.value for m in tp]
            msg = f"expected one of {choices}, got {value!r}"
            raise where.fail(msg) from None
    if origin in (list, tuple):
        if not isinstance(value, list):
            msg = f"expected a list, got {_describe(value)}"
            raise where.fail(msg)
        item_tp = args[0] if args else Any
        items = [_convert(item_tp, v, where.child(i)) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            msg = f"expected a mapping, got {_describe(value)}"
            raise where.fail(msg)
        key_tp, val_tp = args if args else (Any, Any)
        out = {}
        for k, v in value.items():
            out[_convert(key_tp, k, where.child(str(k)))] = _convert(val_tp, v, where.child(str(k)))
        return out
    if tp is bool:
        if not isinstance(value, bool):
            msg = f"expected true or false, got {_describe(value)}"
            raise where.fail(msg)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            msg = f"expected an integer, got {_describe(value)}"
            raise where.fail(msg)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            msg = f"expected a number, got {_describe(value)}"
            raise where.fail(msg)
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            # YAML turns 3.9 into a float and 0123 into an int: say how to write it as text.
            msg = f"expected a string, got {_describe(value)} (quote it in YAML)"
            raise where.fail(msg)
        return value
    if tp is Path:
        if not isinstance(value, str):
            msg = f"expected a path string, got {_describe(value)}"
            raise where.fail(msg)
        return Path(value)
    msg = f"schema: unsupported field type {tp!r}"
    raise TypeError(msg)


def _convert_dataclass(cls: type[Any], value: Any, where: _Where) -> Any:
    if not isinstance(value, dict):
        msg = f"expected a mapping for {cls.__name__}, got {_describe(value)}"
        raise where.fail(msg)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in value:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(fields)
            msg = f"unknown key{hint}; known keys: {known}"
            raise where.child(str(key)).fail(msg)
    kwargs: dict[str, Any] = {}
    for name, field in fields.items():
        child = where.child(name)
        if name not in value:
            if (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            ):
                msg = f"required key is missing ({_type_name(hints[name])})"
                raise child.fail(msg)
            continue
        converted = _convert(hints[name], value[name], child)
        check: Callable[[Any], None] | None = field.metadata.get("check")
        if check is not None and converted is not None:
            try:
                check(converted)
            except ValueError as exc:
                msg = f"expected {exc}"
                raise child.fail(msg) from None
        kwargs[name] = converted
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise where.fail(str(exc)) from None


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
