"""What the steps of one build share (:class:`Context`), what a step returns (:class:`Outcome`)
and how a step kind is executed (:class:`Runner`); the executor and every runner import this."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from npulab import log
from npulab.build.plan import Options, Step, staged_prefixes
from npulab.errors import BuildStepError
from npulab.recipe import Recipe
from npulab.source.patches import Series
from npulab.source.sources import Entry, Origin, Source
from npulab.transport.base import Transport


@dataclass
class Context:
    """Everything steps share during one build."""

    recipe: Recipe
    options: Options
    origin: Origin
    out: Path
    series: Series
    previous: dict[str, Any]
    data: dict[str, Any]
    source: Source | None = None
    entries: list[Entry] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)
    #: The ordered steps of this build (``plan()`` runs once per build).
    plan: tuple[Step, ...] = ()
    #: The Windows build host's transport, shared by every step, stamp read and upload.
    transport: Transport | None = None
    #: Settings of this one run (wait for the build lock, discard hand edits).
    shared: dict[str, Any] = field(default_factory=dict)

    @property
    def tree(self) -> Path:
        return self.out / "tree"

    @property
    def scripts(self) -> Path:
        return self.out / "scripts"

    @property
    def state(self) -> Path:
        return self.out / ".npulab"

    @property
    def prefixes(self) -> tuple[str, ...]:
        return staged_prefixes(self.recipe, self.options, self.series.files)

    def need_source(self) -> Source:
        if self.source is None:
            msg = "internal: a step needs the source before 'fetch' ran"
            raise BuildStepError(msg)
        return self.source

    def warn(self, step: str, message: str) -> None:
        log.warning(message)
        self.data.setdefault("warnings", []).append({"step": step, "message": message})


@dataclass(frozen=True, kw_only=True)
class Outcome:
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Runner:
    run: Callable[[Context, Step], Outcome]
    #: True when the step's previous output is still intact (only asked if inputs are unchanged).
    intact: Callable[[Context, Step], bool] | None = None
