"""npulab: rebuild, provision and verify the legacy RyzenAI-SW 1.1 LLM stack on XDNA1 NPUs.

Core logic only. The package never imports invoke or nox: `tasks.py` / `invoke_tasks/` and
`noxfile.py` are thin adapters over it.
"""

from __future__ import annotations

__version__ = "0.1.0"
