"""Invoke entry point: `invoke --list` shows every task; logic lives in the npulab package.

The task modules live in invoke_tasks/; this file only assembles them into one collection.
"""

from __future__ import annotations

import importlib
import pkgutil

from invoke.collection import Collection

import invoke_tasks

ns = Collection()
for _info in sorted(pkgutil.iter_modules(invoke_tasks.__path__), key=lambda m: m.name):
    if _info.name.startswith("_"):
        continue
    _module = importlib.import_module(f"invoke_tasks.{_info.name}")
    for _task in getattr(_module, "ROOT_TASKS", ()):
        ns.add_task(_task)
    if hasattr(_module, "ns"):
        ns.add_collection(_module.ns)


def _long_flags_only(collection: Collection) -> None:
    """No automatic short flags: invoke would hand ``-h`` to ``--host`` in one task and ``-d`` to
    ``--dest`` in another (so dry run became ``-y`` there). Every option is its long name, the
    same in every task, and ``invoke TASK -h`` is always the task's help."""
    for task in collection.tasks.values():
        task.auto_shortflags = False
    for child in collection.collections.values():
        _long_flags_only(child)


_long_flags_only(ns)

ns.configure(
    {
        "npulab": {
            "recipe": "ryzenai-sw-1.1-llama3.1",
            # A local checkout or mirror of amd/RyzenAI-SW (or set NPULAB_UPSTREAM).
            "source": None,
            "inventory": "ansible/inventories/lab/hosts.yml",
        }
    }
)
