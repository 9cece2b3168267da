"""Run one step of the hosted Windows job and check it against ``ci/windows-e2e.yaml``.

``python -m npulab.ci.e2e_step <id> [--out e2e] -- <command...>`` runs the command (streaming its
output to the console and to ``<out>/logs/<id>.log``), times it, then checks what the step's
``expect`` says: the exit code, texts in the output, the Ansible ``PLAY RECAP`` counts of the
job's host, and the build steps' statuses in this run's manifest. It appends one JSON line to
``<out>/steps.jsonl`` (what ``invoke ci.e2e-summary`` renders) and exits 0 only when everything
was as expected, so a step that must fail (no NPU) passes when it fails exactly as documented.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from npulab import cmd, log, paths
from npulab.build import manifest
from npulab.ci.e2e import E2E, OUT_DIR, Step, load_e2e
from npulab.errors import CommandError, NpulabError
from npulab.lab.provision import parse_recap_text

RECORDS = "steps.jsonl"


@dataclass(frozen=True, kw_only=True)
class Record:
    """One step as it happened on the runner (a line of ``steps.jsonl``)."""

    id: str
    title: str
    command: str
    npu_bound: bool
    started_at: str
    seconds: float
    exit_code: int | None
    expected_exit_code: int
    missing_output: list[str] = field(default_factory=list)
    recap: dict[str, int] | None = None
    build_steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    expected_steps: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def host_recap(output: str, host: str) -> dict[str, int] | None:
    """The job host's counts from the last ``PLAY RECAP`` of ansible-playbook's output."""
    return parse_recap_text(output).get(host)


def run_statuses(data: Mapping[str, Any], since: str) -> dict[str, dict[str, Any]] | None:
    """Each build step's record of the run that started at or after ``since`` (None: no build
    of this step wrote the manifest). A failed run is kept under ``last_failure``."""
    run = data.get("last_failure") if isinstance(data.get("last_failure"), dict) else data
    if not isinstance(run, dict) or str(run.get("started_at", "")) < since:
        return None
    steps = run.get("steps")
    return {str(k): dict(v) for k, v in steps.items()} if isinstance(steps, dict) else {}


def _words(text: str) -> str:
    return " ".join(text.split())


def missing_output(step: Step, output: str) -> list[str]:
    """The expected texts not in ``output``, whitespace runs counted as one space: Ansible's YAML
    result format folds long messages over lines."""
    words = _words(output)
    return [text for text in step.expect.output if _words(text) not in words]


def check(
    step: Step,
    *,
    exit_code: int | None,
    output: str,
    recap: Mapping[str, int] | None,
    build_steps: Mapping[str, Mapping[str, Any]] | None,
) -> list[str]:
    """What differs from the step's ``expect`` (empty: as expected)."""
    expect = step.expect
    problems = []
    if exit_code != expect.exit_code:
        problems.append(f"exit code {exit_code}, expected {expect.exit_code}")
    problems += [f"output lacks {text!r}" for text in missing_output(step, output)]
    for key, wanted in (("changed", expect.recap_changed), ("failures", expect.recap_failures)):
        if wanted is None:
            continue
        if recap is None:
            problems.append(f"no PLAY RECAP line for the host (expected {key}={wanted})")
        elif recap.get(key, 0) != wanted:
            problems.append(f"recap {key}={recap.get(key, 0)}, expected {wanted}")
    if expect.steps:
        if build_steps is None:
            problems.append("this build wrote no manifest (it stopped before any step ran)")
        else:
            for name, wanted_status in expect.steps.items():
                status = build_steps.get(name, {}).get("status", "not run")
                if status != wanted_status:
                    problems.append(f"build step {name}: {status}, expected {wanted_status}")
    return problems


class _Tee:
    """Output sink: to the console as it arrives, to the step log, and kept for the checks."""

    def __init__(self, log_file: TextIO) -> None:
        self.log_file = log_file
        self.stdout: list[str] = []
        self.stderr: list[str] = []

    def __call__(self, stream: str, text: str) -> None:
        (self.stdout if stream == "stdout" else self.stderr).append(text)
        console = sys.stdout if stream == "stdout" else sys.stderr
        console.write(text)
        console.flush()
        self.log_file.write(text)
        self.log_file.flush()


def run_step(
    e2e: E2E, step_id: str, argv: Sequence[str], out: Path, *, build_dir: Path | None = None
) -> Record:
    """Run ``argv`` as step ``step_id``, check it, append its record; returns the record."""
    step = e2e.step(step_id)
    if not argv:
        msg = f"step {step_id}: no command after --"
        raise NpulabError(msg, hint=f"python -m npulab.ci.e2e_step {step_id} -- {step.run}")
    (out / "logs").mkdir(parents=True, exist_ok=True)
    log_path = out / "logs" / f"{step.id}.log"
    started = _now()
    t0 = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as fh:
        fh.write(f"$ {cmd.format_argv(argv)}\n")
        tee = _Tee(fh)
        try:
            done = cmd.run(*argv, check=False, on_output=tee, timeout=step.timeout_minutes * 60.0)
            code: int | None = done.returncode
        except CommandError as exc:  # not found, or the step's timeout
            fh.write(f"--- {exc.message}\n")
            code = None
        fh.write(f"--- exit code {code}\n")
    seconds = round(time.perf_counter() - t0, 3)
    output = "".join(tee.stdout) + "".join(tee.stderr)
    if step.stdout_file:
        (out / step.stdout_file).write_text("".join(tee.stdout), encoding="utf-8")
    recap = host_recap(output, e2e.host)
    build_steps = None
    if step.expect.steps:
        found = manifest.load((build_dir or paths.build_root()) / e2e.recipe)
        build_steps = run_statuses(found, started)
    record = Record(
        id=step.id,
        title=step.title,
        command=cmd.format_argv(argv),
        npu_bound=step.npu_bound,
        started_at=started,
        seconds=seconds,
        exit_code=code,
        expected_exit_code=step.expect.exit_code,
        missing_output=missing_output(step, output),
        recap=recap,
        build_steps=build_steps or {},
        expected_steps=dict(step.expect.steps),
        problems=check(step, exit_code=code, output=output, recap=recap, build_steps=build_steps),
    )
    with (out / RECORDS).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record.to_json(), sort_keys=True) + "\n")
    return record


def read_records(out: Path) -> list[dict[str, Any]]:
    """The records of ``<out>/steps.jsonl`` (a later record of the same id replaces one)."""
    path = out / RECORDS
    if not path.exists():
        return []
    records: dict[str, dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and "id" in data:
            records.pop(str(data["id"]), None)
            records[str(data["id"])] = data
    return list(records.values())


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[args.index("--") + 1 :] if "--" in args else []
    own = args[: args.index("--")] if "--" in args else args
    parser = argparse.ArgumentParser(prog="python -m npulab.ci.e2e_step", description=__doc__)
    parser.add_argument("id", help="step id in ci/windows-e2e.yaml")
    parser.add_argument("--out", type=Path, default=Path(OUT_DIR), help="output directory")
    options = parser.parse_args(own)
    try:
        record = run_step(load_e2e(), options.id, command, options.out)
    except NpulabError as exc:
        log.error(str(exc))
        return exc.exit_code
    if record.ok:
        log.info(f"{record.id}: as expected (exit {record.exit_code}, {record.seconds:.0f} s)")
        return 0
    log.error(f"{record.id}: not as expected: " + "; ".join(record.problems))
    return 1


if __name__ == "__main__":  # pragma: no cover - the workflow's entry point
    raise SystemExit(main())
