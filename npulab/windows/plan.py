"""Windows build steps, pluggable into :func:`npulab.build.plan.plan`.

Each planner is a pure function ``(recipe, options) -> sequence of Step``; append it to
``PLANNERS``. Steps run after ``render`` and before ``manifest`` when the target is ``windows``.
Their executors are registered in :data:`npulab.build.executor.RUNNERS` under the step's ``kind``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from npulab.build.plan import Options, Step
    from npulab.recipe import Recipe

Planner = Callable[["Recipe", "Options"], Sequence["Step"]]

PLANNERS: list[Planner] = []


def steps(recipe: Recipe, options: Options) -> list[Step]:
    out: list[Step] = []
    for planner in PLANNERS:
        out.extend(planner(recipe, options))
    return out


def _register_default() -> None:
    from npulab.windows.steps import planner

    if not any(getattr(p, "__module__", "") == planner.__module__ for p in PLANNERS):
        PLANNERS.append(planner)


_register_default()
