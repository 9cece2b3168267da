"""The hardware matrix (``ci/matrix.yaml``): which machine kinds the nightly run covers.

Each machine kind names its chip, the ``DEVICE`` its runtime uses, the self-hosted runner labels
that select it, and the thresholds the report judges its history by. Loaded through
:mod:`npulab.schema`, so a typo is a one-line ConfigError with the key path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from npulab import paths
from npulab.schema import check_nonempty, check_positive, load_file

Chip = Literal["7940HS", "8845HS"]
Family = Literal["PHX", "HPT"]

_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_CRON = re.compile(r"^\S+ \S+ \S+ \S+ \S+$")
REQUIRED_LABELS = ("self-hosted", "Windows", "X64")


def _check_id(value: str) -> None:
    if not _ID.fullmatch(value):
        msg = f"a lowercase id of letters, digits and '-', got {value!r}"
        raise ValueError(msg)


def check_cron(value: str) -> None:
    if not _CRON.fullmatch(value):
        msg = f"a five-field cron expression, got {value!r}"
        raise ValueError(msg)


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """When the report flags a night of one machine kind as a regression."""

    tokens_per_s_drop_pct: float = field(default=15.0, metadata={"check": check_positive})
    load_time_rise_pct: float = field(default=25.0, metadata={"check": check_positive})
    #: The fixed passage's perplexity (recipe smoke.passage) rising more than this is flagged.
    perplexity_rise_pct: float = field(default=10.0, metadata={"check": check_positive})
    #: The baseline is the median of this many previous passing nights.
    baseline_nights: int = field(default=7, metadata={"check": check_positive})


@dataclass(frozen=True, kw_only=True)
class Machine:
    id: str = field(metadata={"check": _check_id})
    chip: Chip
    family: Family
    device: Literal["phx"]
    runner_labels: tuple[str, ...] = field(metadata={"check": check_nonempty})
    thresholds: Thresholds = field(default_factory=Thresholds)

    def __post_init__(self) -> None:
        missing = [label for label in REQUIRED_LABELS if label not in self.runner_labels]
        if missing:
            msg = f"runner_labels: missing the default runner labels {missing}"
            raise ValueError(msg)
        if len(set(self.runner_labels)) != len(self.runner_labels):
            msg = "runner_labels: a label is listed twice"
            raise ValueError(msg)

    @property
    def custom_labels(self) -> tuple[str, ...]:
        """Labels beyond the runner's defaults (what ``config.cmd --labels`` is given)."""
        return tuple(label for label in self.runner_labels if label not in REQUIRED_LABELS)

    def served_by(self, labels: set[str]) -> bool:
        """True when a runner with ``labels`` would pick up this kind's job."""
        wanted = {label.lower() for label in self.runner_labels}
        return wanted <= {label.lower() for label in labels}


@dataclass(frozen=True, kw_only=True)
class Matrix:
    recipe: str = field(metadata={"check": check_nonempty})
    cron: str = field(metadata={"check": check_cron})
    job_timeout_minutes: int = field(default=240, metadata={"check": check_positive})
    history_nights: int = field(default=30, metadata={"check": check_positive})
    machines: tuple[Machine, ...] = field(metadata={"check": check_nonempty})

    def __post_init__(self) -> None:
        ids = [m.id for m in self.machines]
        if len(set(ids)) != len(ids):
            msg = f"machines: an id is listed twice ({ids})"
            raise ValueError(msg)
        label_sets = [frozenset(m.runner_labels) for m in self.machines]
        if len(set(label_sets)) != len(label_sets):
            msg = "machines: two machine kinds have the same runner labels"
            raise ValueError(msg)

    def machine(self, machine_id: str) -> Machine:
        for machine in self.machines:
            if machine.id == machine_id:
                return machine
        from npulab.errors import ConfigError

        known = ", ".join(m.id for m in self.machines)
        msg = f"ci/matrix.yaml: no machine {machine_id!r} (known: {known})"
        raise ConfigError(msg)

    def for_chip(self, chip: str) -> Machine | None:
        return next((m for m in self.machines if m.chip == chip), None)

    def include(self) -> list[dict[str, Any]]:
        """The ``strategy.matrix.include`` rows of the nightly workflow."""
        return [
            {
                "machine": m.id,
                "chip": m.chip,
                "device": m.device,
                "labels": list(m.runner_labels),
            }
            for m in self.machines
        ]

    def all_labels(self) -> list[str]:
        """Every custom runner label (for actionlint's allow-list)."""
        seen: dict[str, None] = {}
        for machine in self.machines:
            for label in machine.custom_labels:
                seen.setdefault(label, None)
        return list(seen)


def default_path() -> Path:
    return paths.project_root() / "ci" / "matrix.yaml"


def load_matrix(path: Path | None = None) -> Matrix:
    return load_file(Matrix, path or default_path())
