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
