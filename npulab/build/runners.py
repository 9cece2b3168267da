"""The executor's wiring, in one place: which function runs each step kind, and which function
gives the value of each step input owned outside the executor (by key prefix).

Built once at import from plain imports; nothing registers itself at import or run time, so a
reader goes from a step's ``kind`` in :mod:`npulab.build.plan` straight to its code here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from npulab.build import stage
from npulab.build.context import Context, Runner
from npulab.windows import run as winrun

RUNNERS: Final[Mapping[str, Runner]] = MappingProxyType(
    {
        "fetch": Runner(run=stage.fetch),
        "verify": Runner(run=stage.verify),
        "patch": Runner(run=stage.patch, intact=stage.patch_intact),
        "render": Runner(run=stage.render, intact=stage.render_intact),
        "wincheck": Runner(run=winrun.run_script_step),
        "winscript": Runner(run=winrun.run_script_step, intact=winrun.stamp_intact),
        "winupload": Runner(run=winrun.upload, intact=winrun.upload_intact),
        "manifest": Runner(run=stage.write_manifest),
    }
)

#: Step input keys by prefix (``winscript:<file>``) -> their value.
INPUTS: Final[Mapping[str, Callable[[Context, str], Any]]] = MappingProxyType(
    {
        "winscript:": winrun.script_digest,
        "winupload:": winrun.upload_content,
    }
)
