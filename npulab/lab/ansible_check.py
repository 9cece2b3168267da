"""Static checks of the Ansible tree that ansible-lint and --syntax-check do not make.

Windows modules are PowerShell: Ansible validates their options only on the target, so a typo
(``expected_return_codez``) or a wrong choice (``state: installed``) passes every offline tool.
:func:`check_options` reads each module's DOCUMENTATION from the installed collections (with its
doc fragments) and checks every task's options, aliases and choice values against it.
:func:`check_idempotence` checks that every state-changing task is guarded and every installer
handles its reboot codes. ``python -m npulab.lab.ansible_check [ansible/]`` runs both (nox -s lint).
"""

from __future__ import annotations

import ast
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

#: Modules that converge to a declared state (or only read), so they need no extra guard.
SELF_IDEMPOTENT = frozenset(
    f"ansible.{name}"
    for name in (
        "builtin.assert", "builtin.set_fact", "builtin.debug", "builtin.fail", "builtin.meta",
        "builtin.include_tasks", "builtin.import_tasks", "builtin.include_role",
        "builtin.import_role", "windows.win_stat", "windows.win_find", "windows.win_file",
        "windows.win_regedit", "windows.win_service", "windows.win_copy", "windows.win_get_url",
        "windows.win_environment", "windows.win_path", "windows.win_service_info",
    )
)  # fmt: skip
#: Modules that run arbitrary programs: they need creates/removes, a registered check in
#: ``when``, ``changed_when: false`` (read-only), or the tag ``self-idempotent`` + changed_when.
COMMANDS = frozenset(
    {
        "ansible.windows.win_command", "ansible.windows.win_shell",
        "ansible.windows.win_powershell", "ansible.windows.win_package",
        "ansible.builtin.raw", "ansible.builtin.script",
        "ansible.builtin.command", "ansible.builtin.shell",
    }
)  # fmt: skip
NEEDS_CREATES = frozenset({"community.windows.win_unzip"})
GUARD_ARGS = ("creates", "removes", "creates_path", "creates_service", "creates_version")
REBOOT_CODES = (3010, 1641)


@dataclass(frozen=True)
class Finding:
    path: str
    task: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: task {self.task!r}: {self.message}"


@dataclass(frozen=True)
class Option:
    type: str = "str"
    choices: tuple[Any, ...] = ()
    elements: str | None = None


@dataclass(frozen=True)
class ModuleDoc:
    name: str
    options: dict[str, Option] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def canonical(self, key: str) -> str | None:
        if key in self.options:
            return key
        return self.aliases.get(key)


def _site_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        msg = f"{package} is not installed (pip install '.[ansible]')"
        raise ModuleNotFoundError(msg)
    return Path(next(iter(spec.submodule_search_locations)))


def _docs_from_python(path: Path, attr: str = "DOCUMENTATION", cls: str | None = None) -> Any:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    body: list[ast.stmt] = tree.body
    if cls:
        found = [n for n in body if isinstance(n, ast.ClassDef) and n.name == cls]
        body = found[0].body if found else []
    for stmt in body:
        if isinstance(stmt, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == attr for t in stmt.targets
        ):
            return yaml.safe_load(ast.literal_eval(stmt.value))
    return None


def _plugin_path(fqcn: str, kind: str) -> Path:
    namespace, collection, name = fqcn.split(".", 2)
    if (namespace, collection) == ("ansible", "builtin"):
        base = _site_dir("ansible") / ("modules" if kind == "modules" else "plugins/doc_fragments")
    else:
        base = _site_dir("ansible_collections") / namespace / collection / "plugins" / kind
    return base / f"{name}.py"


def _fragment_options(ref: str) -> dict[str, Any]:
    if ref.count(".") < 2:
        ref = f"ansible.builtin.{ref}"
    parts = ref.split(".")
    attr = parts[3].upper() if len(parts) > 3 else "DOCUMENTATION"
    path = _plugin_path(".".join(parts[:3]), "doc_fragments")
    if not path.exists():
        return {}
    doc = _docs_from_python(path, attr, cls="ModuleDocFragment") or {}
    return dict(doc.get("options") or {})


@cache
def module_doc(fqcn: str) -> ModuleDoc:
    """Options of module ``fqcn`` from its DOCUMENTATION and doc fragments (KeyError if absent)."""
    if fqcn.count(".") < 2:
        fqcn = f"ansible.builtin.{fqcn}"
    path = _plugin_path(fqcn, "modules")
    doc: Any = None
    if path.exists():
        doc = _docs_from_python(path)
    elif path.with_suffix(".yml").exists():
        doc = yaml.safe_load(path.with_suffix(".yml").read_text(encoding="utf-8"))
        doc = doc.get("DOCUMENTATION") if isinstance(doc, dict) else None
    if not isinstance(doc, dict):
        raise KeyError(fqcn)
    raw: dict[str, Any] = {}
    for ref in doc.get("extends_documentation_fragment") or []:
        raw.update(_fragment_options(ref))
    raw.update(doc.get("options") or {})
    options: dict[str, Option] = {}
    aliases: dict[str, str] = {}
    for name, spec in raw.items():
        spec = spec or {}
        choices = spec.get("choices") or ()
        if isinstance(choices, dict):  # documented as {value: description}
            choices = tuple(choices)
        options[name] = Option(
            type=str(spec.get("type", "str")), choices=tuple(choices), elements=spec.get("elements")
        )
        aliases.update(dict.fromkeys(spec.get("aliases") or (), name))
    return ModuleDoc(fqcn, options, aliases)


@cache
def task_keywords() -> frozenset[str]:
    data = yaml.safe_load((_site_dir("ansible") / "keyword_desc.yml").read_text(encoding="utf-8"))
    return frozenset(data) | {"block", "rescue", "always", "loop", "loop_control", "local_action"}


def task_module(task: dict[str, Any]) -> str | None:
    keys = [k for k in task if k not in task_keywords() and not str(k).startswith(("with_", "__"))]
    return keys[0] if len(keys) == 1 else None


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _check_value(module: str, key: str, opt: Option, value: Any) -> list[str]:
    if _is_template(value):
        return []
    problems = []
    values = value if isinstance(value, list) and opt.type == "list" else [value]
    if opt.choices:
        for v in values:
            if not _is_template(v) and v not in opt.choices:
                choices = ", ".join(map(str, opt.choices))
                problems.append(f"{module}: {key}={v!r} is not one of: {choices}")
    if opt.type == "bool" and not isinstance(value, bool) and value not in ("yes", "no"):
        problems.append(f"{module}: {key} must be a bool, got {value!r}")
    if opt.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        problems.append(f"{module}: {key} must be an int, got {value!r}")
    if opt.type == "list" and opt.elements == "int":
        bad = [v for v in values if not isinstance(v, int) and not _is_template(v)]
        if bad:
            problems.append(f"{module}: {key} must be a list of int, got {value!r}")
    return problems


def _free_form(value: str) -> dict[str, Any]:
    """key=value pairs of a one-line module call (free text of win_shell/win_command excluded)."""
    pairs = {}
    for word in value.split():
        if "=" in word and not word.startswith(("-", "/", '"')):
            key, _, val = word.partition("=")
            if key.isidentifier():
                pairs[key] = val
    return pairs


def check_task(task: dict[str, Any]) -> list[str]:
    """Problems of one task's module options (empty when it matches the module's documentation)."""
    module = task_module(task)
    if module is None:
        return [f"cannot tell the module among keys {sorted(task)}"]
    if module.count(".") < 2:
        return [f"{module}: use the fully qualified name (e.g. ansible.windows.{module})"]
    try:
        doc = module_doc(module)
    except KeyError:
        return [f"{module}: no such module in the installed collections"]
    value = task[module]
    args: dict[str, Any] = dict(task.get("args") or {})
    if isinstance(value, dict):
        args.update(value)
    elif isinstance(value, str) and "free_form" not in doc.options:
        args.update(_free_form(value))
    if module == "ansible.builtin.set_fact":
        return []  # its options are the facts it sets
    problems = []
    for key, val in args.items():
        name = doc.canonical(key)
        if name is None:
            known = sorted(doc.options)
            import difflib

            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{module}: unknown option {key!r}{hint}")
            continue
        problems += _check_value(module, key, doc.options[name], val)
    return problems


def iter_tasks(items: Any, inherited_when: tuple[str, ...] = ()) -> Iterator[dict[str, Any]]:
    """Tasks of a task list, flattening blocks (a block's ``when`` is added to its tasks')."""
    for item in items or []:
        if not isinstance(item, dict):
            continue
        if "block" in item:
            when = inherited_when + _whens(item)
            for section in ("block", "rescue", "always"):
                yield from iter_tasks(item.get(section), when)
            continue
        if inherited_when:
            item = {**item, "__inherited_when": inherited_when}
        yield item


def _whens(task: dict[str, Any]) -> tuple[str, ...]:
    when = task.get("when")
    if when is None:
        return ()
    return tuple(str(w) for w in (when if isinstance(when, list) else [when]))


def task_files(root: Path) -> Iterator[tuple[Path, list[Any]]]:
    """Every task list under ``root``: roles' tasks/ and handlers/, and plays' task sections."""
    for path in sorted(root.glob("roles/*/tasks/*.yml")) + sorted(
        root.glob("roles/*/handlers/*.yml")
    ):
        yield path, yaml.safe_load(path.read_text(encoding="utf-8")) or []
    for path in sorted(root.glob("*.yml")) + sorted(root.glob("playbooks/*.yml")):
        plays = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        for play in plays if isinstance(plays, list) else []:
            for section in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                if isinstance(play, dict) and play.get(section):
                    yield path, play[section]


def check_options(root: Path) -> list[Finding]:
    findings = []
    for path, tasks in task_files(root):
        for task in iter_tasks(tasks):
            clean = {k: v for k, v in task.items() if not k.startswith("__")}
            for problem in check_task(clean):
                findings.append(Finding(str(path), str(task.get("name", "?")), problem))
    return findings
