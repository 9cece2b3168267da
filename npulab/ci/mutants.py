"""``nox -s mutants``: mutation testing of the modules that guard integrity, credentials, quoting,
verdicts and the build cache/manifest.

cosmic-ray changes one thing at a time in a module (a comparison flipped, a condition negated, a
loop that runs zero times, a constant off by one) and runs only that module's tests
(``ci/mutants.yaml``); a change no test notices *survives*. Per module::

    score = killed / (killed + survived - equivalent)

where *equivalent* mutants (changes that cannot alter behaviour) are listed with their reason in
``ci/mutants-equivalent.yaml``. The session fails when a module scores under the floor in
``ci/mutants-score.json``; ``--ratchet`` raises the floors to the measured scores (never lowers
them), so the score only goes up. Mutations are made in a copy of the work tree, never in it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from npulab import cmd, log, paths
from npulab.errors import ConfigError, NpulabError
from npulab.schema import build, check_nonempty, check_positive, load_yaml

CONFIG = Path("ci/mutants.yaml")
EQUIVALENT = Path("ci/mutants-equivalent.yaml")
FLOORS = Path("ci/mutants-score.json")


def _check_module(value: str) -> None:
    if not (value.startswith("npulab/") and value.endswith(".py")):
        msg = f"a module path under npulab/ ending in .py, got {value!r}"
        raise ValueError(msg)


@dataclass(frozen=True, kw_only=True)
class Target:
    """One module and the tests that exercise it (pytest arguments: files, ``-k`` selections)."""

    module: str = field(metadata={"check": _check_module})
    tests: tuple[str, ...] = field(metadata={"check": check_nonempty})


@dataclass(frozen=True, kw_only=True)
class Config:
    #: cosmic-ray operators to apply (every other one is filtered out before the run).
    operators: tuple[str, ...] = field(metadata={"check": check_nonempty})
    #: The most seconds one mutant's test run may take (a mutant that hangs counts as killed);
    #: below it, ten times the unmutated run (see :func:`mutant_timeout`).
    timeout: float = field(default=300.0, metadata={"check": check_positive})
    modules: tuple[Target, ...] = field(metadata={"check": check_nonempty})

    def select(self, names: Sequence[str]) -> list[Target]:
        if not names:
            return list(self.modules)
        known = {t.module: t for t in self.modules}
        unknown = [n for n in names if n not in known]
        if unknown:
            msg = f"{CONFIG}: no module {unknown[0]!r}; known: {', '.join(known)}"
            raise ConfigError(msg)
        return [known[n] for n in names]


@dataclass(frozen=True, kw_only=True)
class Equivalent:
    """A mutant that cannot change behaviour: the line before and after the mutation, and why."""

    module: str
    before: str
    after: str
    reason: str = field(metadata={"check": check_nonempty})


@dataclass(frozen=True, kw_only=True)
class Mutant:
    module: str
    line: int
    operator: str
    before: str
    after: str
    #: "killed", "survived", "incompetent" (the mutant broke the import: killed too) or
    #: "skipped" (operator not selected).
    outcome: str

    def describe(self) -> str:
        return f"{self.module}:{self.line} {self.operator}: `{self.before}` -> `{self.after}`"


@dataclass(frozen=True, kw_only=True)
class Score:
    module: str
    killed: int
    survivors: tuple[Mutant, ...]
    equivalent: tuple[Mutant, ...]

    @property
    def value(self) -> float:
        counted = self.killed + len(self.survivors)
        return 1.0 if counted == 0 else self.killed / counted

    def describe(self) -> str:
        return (
            f"{self.module}: score {self.value:.1%} (killed {self.killed}, survived "
            f"{len(self.survivors)}, equivalent {len(self.equivalent)})"
        )


def load_config(root: Path) -> tuple[Config, list[Equivalent], dict[str, float]]:
    config = build(Config, load_yaml(root / CONFIG), source=str(CONFIG))
    raw = load_yaml(root / EQUIVALENT) or []
    equivalents = build(list[Equivalent], raw, source=str(EQUIVALENT))
    floors = json.loads((root / FLOORS).read_text(encoding="utf-8"))
    return config, equivalents, {str(k): float(v) for k, v in floors.items()}


def changed_lines(diff: str) -> tuple[str, str]:
    """The removed and the added lines of a unified diff, each stripped and joined by a space."""
    lines = diff.splitlines()
    before = [ln[1:].strip() for ln in lines if ln.startswith("-") and not ln.startswith("---")]
    after = [ln[1:].strip() for ln in lines if ln.startswith("+") and not ln.startswith("+++")]
    return " ".join(before), " ".join(after)


def parse_dump(text: str, module: str) -> list[Mutant]:
    """``cosmic-ray dump`` output (one ``[work_item, result]`` JSON list a line) as mutants."""
    out = []
    for raw in text.splitlines():
        if not raw.strip():
            continue
        item, result = json.loads(raw)
        mutation = item["mutations"][0]
        result = result or {}
        worker = result.get("worker_outcome")
        outcome = "skipped" if worker == "skipped" else (result.get("test_outcome") or "pending")
        before, after = changed_lines(result.get("diff") or "")
        out.append(
            Mutant(
                module=module,
                line=int(mutation["start_pos"][0]),
                operator=mutation["operator_name"],
                before=before,
                after=after,
                outcome=str(outcome),
            )
        )
    return out


def score(module: str, mutants: Iterable[Mutant], equivalents: Sequence[Equivalent]) -> Score:
    def listed(m: Mutant) -> bool:
        return any(
            (e.module, e.before, e.after) == (m.module, m.before, m.after) for e in equivalents
        )

    counted = [m for m in mutants if m.outcome in ("killed", "incompetent", "survived")]
    survived = [m for m in counted if m.outcome == "survived"]
    return Score(
        module=module,
        killed=len(counted) - len(survived),
        survivors=tuple(m for m in survived if not listed(m)),
        equivalent=tuple(m for m in survived if listed(m)),
    )


def stale_equivalents(
    equivalents: Sequence[Equivalent], scores: Sequence[Score]
) -> list[Equivalent]:
    """Allow-list entries of the modules that ran which matched no surviving mutant."""
    ran = {s.module for s in scores}
    used = {(m.module, m.before, m.after) for s in scores for m in s.equivalent}
    return [e for e in equivalents if e.module in ran and (e.module, e.before, e.after) not in used]


def ratchet(floors: dict[str, float], scores: Sequence[Score]) -> dict[str, float]:
    """The floors raised to every measured score that beats them (a floor never goes down)."""
    raised = dict(floors)
    for s in scores:
        measured = int(s.value * 1000) / 1000  # rounded down: the floor is met exactly
        raised[s.module] = max(raised.get(s.module, 0.0), measured)
    return dict(sorted(raised.items()))


def below_floor(floors: dict[str, float], scores: Sequence[Score]) -> list[Score]:
    return [s for s in scores if s.value < floors.get(s.module, 0.0)]


def mutant_timeout(config: Config, baseline_seconds: float) -> float:
    """Seconds one mutant's tests may take: ten times the unmutated run (a mutant that loops
    forever is killed soon, not after the ceiling), at least 30, at most ``config.timeout``."""
    return min(config.timeout, max(30.0, 10 * baseline_seconds))


def cosmic_config(
    target: Target, config: Config, all_operators: Iterable[str], *, timeout: float
) -> str:
    """The cosmic-ray TOML for one module: its tests as the test command, unselected operators
    filtered out."""
    tests = shlex.join(target.tests)
    excluded = sorted(f"^{op}$" for op in set(all_operators) - set(config.operators))
    return "\n".join(
        [
            "[cosmic-ray]",
            f"module-path = {json.dumps(target.module)}",
            f"timeout = {timeout:.1f}",
            "excluded-modules = []",
            "test-command = "
            + json.dumps(f"{sys.executable} -m pytest -x -q -p no:cacheprovider {tests}"),
            "",
            "[cosmic-ray.distributor]",
            'name = "local"',
            "",
            "[cosmic-ray.filters.operators-filter]",
            f"exclude-operators = {json.dumps(excluded)}",
            "",
        ]
    )


def copy_tree(root: Path, dest: Path) -> None:
    """The work tree's tracked and untracked-but-not-ignored files (what a commit would hold)."""
    listing = cmd.run(
        "git", "ls-files", "-co", "--exclude-standard", "-z", cwd=root, quiet=True
    ).stdout
    for rel in filter(None, listing.split("\0")):
        src = root / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _cosmic(*args: str, cwd: Path, env: dict[str, str], nice: int) -> cmd.Completed:
    prefix = ("nice", "-n", str(nice)) if nice and cmd.which("nice") else ()
    return cmd.run(*prefix, sys.executable, *args, cwd=cwd, env=env)


def run_module(target: Target, config: Config, work: Path, *, nice: int) -> list[Mutant]:
    env = {"PYTHONPATH": str(work), "PYTHONDONTWRITEBYTECODE": "1"}
    slug = target.module.replace("/", "-").removesuffix(".py")
    session = work / ".mutants" / f"{slug}.sqlite"
    cfg = work / ".mutants" / f"{slug}.toml"
    session.parent.mkdir(exist_ok=True)
    # The tests must pass unmutated, or every mutant would look killed.
    started = time.monotonic()
    cmd.run(
        sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *target.tests,
        cwd=work, env=env, hint="fix the failing tests first: mutation scores mean nothing on red",
    )  # fmt: skip
    timeout = mutant_timeout(config, time.monotonic() - started)
    ops = cmd.run(sys.executable, "-m", "cosmic_ray.cli", "operators", quiet=True).stdout
    cfg.write_text(cosmic_config(target, config, ops.split(), timeout=timeout), encoding="utf-8")
    _cosmic("-m", "cosmic_ray.cli", "init", str(cfg), str(session), cwd=work, env=env, nice=0)
    _cosmic(
        "-m", "cosmic_ray.tools.filters.operators_filter", str(session), str(cfg),
        cwd=work, env=env, nice=0,
    )  # fmt: skip
    _cosmic("-m", "cosmic_ray.cli", "exec", str(cfg), str(session), cwd=work, env=env, nice=nice)
    dump = cmd.run(sys.executable, "-m", "cosmic_ray.cli", "dump", str(session), quiet=True)
    return parse_dump(dump.stdout, target.module)


def report(scores: Sequence[Score], floors: dict[str, float]) -> str:
    lines = []
    for s in scores:
        floor = floors.get(s.module, 0.0)
        lines.append(f"{s.describe()}; floor {floor:.1%}")
        lines.extend(f"  survived: {m.describe()}" for m in s.survivors)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nox -s mutants --", description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", help="modules from ci/mutants.yaml (default: all)")
    parser.add_argument("--ratchet", action="store_true", help="raise the floors to the scores")
    parser.add_argument("--nice", type=int, default=10, help="niceness of the mutant runs")
    parser.add_argument("--json", type=Path, help="also write the scores and survivors here")
    args = parser.parse_args(argv)
    root = paths.project_root()
    try:
        config, equivalents, floors = load_config(root)
        targets = config.select(args.modules)
        scores = []
        with tempfile.TemporaryDirectory(prefix="npulab-mutants-") as tmp:
            work = Path(tmp)
            copy_tree(root, work)
            for target in targets:
                with log.step(f"mutants: {target.module} ({len(target.tests)} test file(s))"):
                    mutants = run_module(target, config, work, nice=args.nice)
                scores.append(score(target.module, mutants, equivalents))
                print(report(scores[-1:], floors), flush=True)
                if args.json:  # after every module: a long session stopped early keeps its part
                    args.json.write_text(json.dumps([_as_json(s) for s in scores], indent=2))
    except NpulabError as exc:
        log.error(str(exc))
        return exc.exit_code
    for entry in stale_equivalents(equivalents, scores):
        log.warning(f"{EQUIVALENT}: no surviving mutant matches {entry.module}: `{entry.before}`")
    if args.ratchet:
        (root / FLOORS).write_text(json.dumps(ratchet(floors, scores), indent=2) + "\n")
    low = below_floor(floors, scores)
    for s in low:
        log.error(
            f"{s.module}: mutation score {s.value:.1%} is under its floor "
            f"{floors[s.module]:.1%} ({FLOORS}); kill the survivors above with tests, or list "
            f"a true equivalent in {EQUIVALENT} with its reason"
        )
    return 1 if low else 0


def _as_json(s: Score) -> dict[str, Any]:
    return {
        "module": s.module,
        "score": round(s.value, 4),
        "killed": s.killed,
        "survivors": [m.describe() for m in s.survivors],
        "equivalent": [m.describe() for m in s.equivalent],
    }


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
