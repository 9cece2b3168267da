"""Idempotence by construction: every state-changing task of the roles is guarded.

A task passes when its module converges by itself (:data:`ansible_check.SELF_IDEMPOTENT`) or, for
modules that run programs (:data:`ansible_check.COMMANDS`), when it has ``creates``/``removes``
(``creates_path`` ... for win_package), a ``when`` that reads a registered check or a fact set
from one, ``changed_when: false`` (a read-only probe), or the tag ``self-idempotent`` with a
``changed_when`` (a program that is incremental itself, e.g. ``invoke build``). Installer tasks
(win_package, or tagged ``installer``) must accept 3010 (reboot required) and be followed by an
``ansible.windows.win_reboot`` whose ``when`` reads their result, unless tagged ``never-reboots``
(an installer that cannot return 3010: then it must not accept it, and no dead reboot follows).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from npulab.lab.ansible_check import (
    COMMANDS,
    GUARD_ARGS,
    NEEDS_CREATES,
    SELF_IDEMPOTENT,
    Finding,
    _whens,
    check_options,
    iter_tasks,
    task_files,
    task_module,
)

REBOOT = "ansible.windows.win_reboot"


def _args(task: dict[str, Any], module: str) -> dict[str, Any]:
    args = dict(task.get("args") or {})
    if isinstance(task.get(module), dict):
        args.update(task[module])
    return args


def _tags(task: dict[str, Any]) -> set[str]:
    tags = task.get("tags") or []
    return {tags} if isinstance(tags, str) else set(tags)


def _names_read(expressions: tuple[str, ...], names: set[str]) -> set[str]:
    text = " ".join(expressions)
    return {n for n in names if re.search(rf"\b{re.escape(n)}\b", text)}


def _checks(tasks: list[dict[str, Any]]) -> set[str]:
    """Variables that hold the result of a check: registers and facts set in this file."""
    names = {str(t["register"]) for t in tasks if t.get("register")}
    for t in tasks:
        if task_module(t) == "ansible.builtin.set_fact" and isinstance(
            t.get(task_module(t) or ""), dict
        ):
            names |= set(t["ansible.builtin.set_fact"])
    return names


def _accepts_reboot_code(task: dict[str, Any], module: str) -> bool:
    if task.get("failed_when") is False:  # every exit code, 3010 included; decided later
        return True
    codes = _args(task, module).get("expected_return_code")
    if isinstance(codes, list) and 3010 in codes:
        return True
    return "3010" in str(task.get("failed_when", ""))


def check_tasks(
    path: str, tasks: list[dict[str, Any]], checks: set[str] | None = None
) -> list[Finding]:
    """Findings for one task list; ``checks``: check variables set elsewhere in the role."""
    findings = []
    checks = _checks(tasks) | (checks or set())
    for index, task in enumerate(tasks):
        module = task_module(task) or "?"
        name = str(task.get("name", "?"))
        whens = _whens(task) + tuple(task.get("__inherited_when", ()))

        def fail(message: str, name: str = name) -> None:
            findings.append(Finding(path, name, message))

        if module == REBOOT:
            if not whens:
                fail("win_reboot without a when: it would reboot on every run")
            continue
        if module in SELF_IDEMPOTENT:
            continue
        if module in NEEDS_CREATES:
            if not _args(task, module).get("creates"):
                fail(f"{module} needs creates: to be idempotent")
            continue
        if module not in COMMANDS:
            fail(f"{module} is not on the idempotent allow-list: guard it or add it there")
            continue
        args = _args(task, module)
        guarded = (
            any(args.get(k) for k in GUARD_ARGS)
            or bool(_names_read(whens, checks))
            or task.get("changed_when") is False
            or ("self-idempotent" in _tags(task) and "changed_when" in task)
        )
        if not guarded:
            fail(
                "changes state without a guard (creates/removes, a registered check in when, "
                "changed_when: false, or tag self-idempotent with changed_when)"
            )
        if module == "ansible.windows.win_package" or "installer" in _tags(task):
            if module == "ansible.windows.win_package" and "installer" not in _tags(task):
                fail("installer task without the 'installer' tag")
            if "never-reboots" in _tags(task):
                # Inno Setup /NORESTART, NSIS: no 3010 to accept, no reboot to follow.
                if _accepts_reboot_code(task, module):
                    fail("tagged never-reboots but accepts 3010: drop one of them")
                continue
            if not _accepts_reboot_code(task, module):
                fail("installer does not accept 3010 (expected_return_code or failed_when)")
            register = task.get("register")
            rebooted = register and any(
                task_module(t) == REBOOT and _names_read(_whens(t), {str(register)})
                for t in tasks[index + 1 :]
            )
            if not rebooted:
                fail("installer is not followed by a win_reboot whose when reads its result")
    return findings


def check_idempotence(root: Path) -> list[Finding]:
    files = [(path, list(iter_tasks(items))) for path, items in task_files(root)]
    per_dir: dict[Path, set[str]] = {}
    for path, tasks in files:
        per_dir.setdefault(path.parent, set()).update(_checks(tasks))
    findings = []
    for path, tasks in files:
        findings += check_tasks(str(path), tasks, per_dir[path.parent])
    return findings


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path("ansible")
    findings = check_options(root) + check_idempotence(root)
    for finding in findings:
        print(finding, file=sys.stderr)
    print(f"ansible checks: {len(findings)} problem(s) under {root}", file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
