"""The lab inventory: the Ansible YAML inventory, read directly with pyyaml.

``ansible/inventories/lab/hosts.yml`` describes the lab once; Ansible uses it unchanged and npulab
reads it here for its own tasks (probe, run, remote build). Variables merge like Ansible's
(``hash_behaviour=replace``), lowest first:

1. group ``vars:`` in the inventory file, groups ordered by depth then name (``all`` first);
2. ``group_vars/all`` (``all.yml`` or every file in ``all/``, sorted);
3. ``group_vars/<group>`` for the host's other groups, same order;
4. the host's own variables in the inventory file;
5. ``host_vars/<host>``.

The variables npulab uses are validated into :class:`HostVars` (typed, with key paths and "did
you mean"); other variables (Ansible roles' own) are kept untyped in :attr:`Host.extra`. A literal
password anywhere in the inventory is refused: credentials come from
:mod:`npulab.hosts.credentials`.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from npulab.errors import ConfigError
from npulab.paths import project_root
from npulab.schema import build, check_positive, load_yaml

DEFAULT_INVENTORY = Path("ansible/inventories/lab/hosts.yml")
Chip = Literal["7940HS", "8845HS"]
_SECRET_KEYS = ("ansible_password", "ansible_winrm_password", "ansible_become_password")


@dataclass(frozen=True)
class HostVars:
    """The variables of one host that npulab reads (Ansible's names where Ansible has one)."""

    ansible_host: str
    npulab_chip: Chip
    npulab_runner_labels: tuple[str, ...] = ()
    ansible_connection: Literal["winrm", "local"] = "winrm"
    ansible_port: int | None = None
    ansible_winrm_transport: Literal["ntlm", "basic", "ssl", "plaintext"] = "ntlm"
    ansible_winrm_scheme: Literal["http", "https"] | None = None
    ansible_winrm_server_cert_validation: Literal["validate", "ignore"] = "validate"
    ansible_winrm_ca_trust_path: str | None = None
    ansible_winrm_message_encryption: Literal["auto", "always", "never"] = "auto"
    ansible_winrm_operation_timeout_sec: int = field(default=20, metadata={"check": check_positive})
    ansible_winrm_read_timeout_sec: int = field(default=30, metadata={"check": check_positive})
    ansible_user: str | None = None
    #: Basic auth over plain HTTP sends the password in clear text: refused unless this is true.
    npulab_allow_basic_over_http: bool = False
    #: The host's OEM code page (936 on Chinese Windows); asked from the host when unset.
    npulab_oem_codepage: int | None = None
    npulab_winrm_retries: int = 4
    npulab_winrm_connect_timeout_sec: float = field(
        default=10.0, metadata={"check": check_positive}
    )
    npulab_winrm_backoff_sec: float = 0.5

    def __post_init__(self) -> None:
        if self.ansible_winrm_read_timeout_sec <= self.ansible_winrm_operation_timeout_sec:
            msg = (
                "ansible_winrm_read_timeout_sec must exceed ansible_winrm_operation_timeout_sec "
                f"(got {self.ansible_winrm_read_timeout_sec} <= "
                f"{self.ansible_winrm_operation_timeout_sec})"
            )
            raise ValueError(msg)

    @property
    def scheme(self) -> str:
        if self.ansible_winrm_scheme:
            return self.ansible_winrm_scheme
        return "http" if self.port == 5985 else "https"

    @property
    def port(self) -> int:
        if self.ansible_port is not None:
            return self.ansible_port
        return 5986 if self.ansible_winrm_scheme == "https" else 5985

    @property
    def endpoint(self) -> str:
        host = self.ansible_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{self.scheme}://{host}:{self.port}/wsman"


@dataclass(frozen=True)
class Host:
    name: str
    groups: tuple[str, ...]
    vars: HostVars
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Inventory:
    path: Path
    hosts: dict[str, Host]
    groups: dict[str, tuple[str, ...]]  # group -> host names (direct and through children)

    def get(self, name: str) -> Host:
        if name in self.hosts:
            return self.hosts[name]
        close = difflib.get_close_matches(name, list(self.hosts), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        msg = f"{self.path}: no host {name!r}{hint}; hosts: {', '.join(self.hosts) or '(none)'}"
        raise ConfigError(msg, hint="invoke lab.probe lists every host of the inventory")

    def select(self, names: str | list[str] | None) -> list[Host]:
        """Hosts by name or group (``"phx,hpt-01"``); every host when empty."""
        if not names:
            return list(self.hosts.values())
        wanted = [n.strip() for n in names.split(",")] if isinstance(names, str) else names
        out: dict[str, Host] = {}
        for name in filter(None, wanted):
            if name in self.groups and name not in self.hosts:
                out.update((h, self.hosts[h]) for h in self.groups[name])
            else:
                out[name] = self.get(name)
        return list(out.values())


def default_path() -> Path:
    raw = os.environ.get("NPULAB_INVENTORY")
    return Path(raw) if raw else project_root() / DEFAULT_INVENTORY


def load(path: Path | str | None = None) -> Inventory:
    path = Path(path) if path is not None else default_path()
    data = load_yaml(path)
    if not isinstance(data, dict) or "all" not in data or len(data) != 1:
        msg = f"{path}: expected an Ansible YAML inventory with one top-level 'all:' group"
        raise ConfigError(msg)
    walker = _Walker(path)
    walker.group("all", data["all"], depth=0, parents=())
    base = path.parent
    hosts: dict[str, Host] = {}
    for name, (file_vars, groups) in walker.hosts.items():
        ordered = sorted(groups, key=lambda g: (walker.depth[g], g))
        merged: dict[str, Any] = {}
        sources: dict[str, str] = {}

        def add(
            values: dict[str, Any],
            source: str,
            merged: dict[str, Any] = merged,
            sources: dict[str, str] = sources,
        ) -> None:
            merged.update(values)
            sources.update(dict.fromkeys(values, source))

        for group in ordered:
            add(walker.group_vars[group], f"{path} ({group} vars)")
        add(*_vars_dir(base / "group_vars", "all"))
        for group in ordered:
            if group != "all":
                add(*_vars_dir(base / "group_vars", group))
        add(file_vars, f"{path} (hosts.{name})")
        add(*_vars_dir(base / "host_vars", name))
        hosts[name] = _typed_host(name, tuple(ordered), merged, sources)
    members = {g: tuple(h for h, (_, gs) in walker.hosts.items() if g in gs) for g in walker.depth}
    return Inventory(path=path, hosts=hosts, groups=members)


class _Walker:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.hosts: dict[str, tuple[dict[str, Any], set[str]]] = {}
        self.group_vars: dict[str, dict[str, Any]] = {}
        self.depth: dict[str, int] = {}

    def _fail(self, where: str, expected: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where}: {expected}")

    def group(self, name: str, node: Any, *, depth: int, parents: tuple[str, ...]) -> None:
        where = ".children.".join((*parents, name))
        node = node or {}
        if not isinstance(node, dict):
            raise self._fail(where, "expected a mapping with hosts/vars/children")
        unknown = set(node) - {"hosts", "vars", "children"}
        if unknown:
            raise self._fail(where, f"unknown keys {sorted(unknown)}; known: hosts, vars, children")
        self.depth[name] = max(self.depth.get(name, 0), depth)
        group_vars = node.get("vars") or {}
        if not isinstance(group_vars, dict):
            vars_where = f"{where}.vars"
            raise self._fail(vars_where, "expected a mapping")
        self.group_vars.setdefault(name, {}).update(group_vars)
        chain = {*parents, name}
        for host, host_vars in (node.get("hosts") or {}).items():
            host_vars = host_vars or {}
            if not isinstance(host_vars, dict):
                host_where = f"{where}.hosts.{host}"
                raise self._fail(host_where, "expected a mapping of variables")
            known_vars, groups = self.hosts.setdefault(str(host), ({}, {"all"}))
            known_vars.update(host_vars)
            groups.update(chain)
        for child, child_node in (node.get("children") or {}).items():
            self.group(str(child), child_node, depth=depth + 1, parents=(*parents, name))


def _vars_dir(directory: Path, name: str) -> tuple[dict[str, Any], str]:
    """Variables from ``<dir>/<name>.yml|.yaml`` or every YAML file under ``<dir>/<name>/``."""
    files: list[Path] = []
    for suffix in ("", ".yml", ".yaml"):
        candidate = directory / f"{name}{suffix}"
        if candidate.is_file() and suffix:
            files.append(candidate)
        elif candidate.is_dir() and not suffix:
            files.extend(sorted(p for p in candidate.rglob("*") if p.suffix in (".yml", ".yaml")))
    merged: dict[str, Any] = {}
    for file in files:
        data = load_yaml(file) or {}
        if not isinstance(data, dict):
            msg = f"{file}: expected a mapping of variables"
            raise ConfigError(msg)
        merged.update(data)
    return merged, f"{directory / name}"


def _pywinrm_kwargs() -> set[str]:
    from winrm.protocol import Protocol

    return set(inspect.signature(Protocol.__init__).parameters) - {"self"}


def _typed_host(
    name: str, groups: tuple[str, ...], merged: dict[str, Any], sources: dict[str, str]
) -> Host:
    known = {f.name for f in dataclasses.fields(HostVars)}
    typed: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in merged.items():
        if key in _SECRET_KEYS and not (isinstance(value, str) and "{{" in value):
            msg = f"{sources[key]}: {key}: a literal password in the inventory is refused"
            raise ConfigError(
                msg,
                hint="remove it; export NPULAB_WINRM_PASSWORD or use ~/.config/npulab/"
                "secrets.yaml (docs/lab.md#credentials)",
            )
        if key in (*_SECRET_KEYS, "ansible_user") and isinstance(value, str) and "{{" in value:
            continue  # a template (env lookup) is Ansible's business; npulab reads the env itself
        if key in known:
            typed[key] = value
        elif key.startswith("ansible_winrm_") and key not in _SECRET_KEYS:
            kwarg = key.removeprefix("ansible_winrm_")
            if kwarg not in _pywinrm_kwargs():
                close = difflib.get_close_matches(key, sorted(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                msg = f"{sources[key]}: {key}: not a pywinrm option{hint}"
                raise ConfigError(msg)
            extra[key] = value
        elif key.startswith("npulab_") and (close := difflib.get_close_matches(key, known, 1, 0.9)):
            msg = f"{sources[key]}: {key}: unknown variable (did you mean {close[0]!r}?)"
            raise ConfigError(msg)
        else:
            extra[key] = value
    typed.setdefault("ansible_host", name)  # Ansible's default: the inventory name
    source = f"host {name!r} (merged from {', '.join(sorted(set(sources.values())))})"
    return Host(name=name, groups=groups, vars=build(HostVars, typed, source=source), extra=extra)
