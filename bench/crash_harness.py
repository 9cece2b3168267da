"""Kill -9 npulab at many seeded points, rerun, and check that nothing it left behind lies.

    python bench/crash_harness.py --kills 200            # build, model.fetch and smoke
    python bench/crash_harness.py --kills 30 --scenarios build --seed 7

Each scenario is a real ``invoke`` command in a child process (its own session): a cold
``invoke build`` against a local temp mirror, ``invoke model.fetch`` from the hub double (on
loopback, in this process) and ``invoke smoke --backend cpu`` with a tiny model built here. A
trial starts the command cold, kills it with SIGKILL at a seeded moment spread over a clean
run's duration (either the whole process group, the child and its subprocesses, or only the
Python process, OOM-killer style, leaving its git children to run on), then reruns it and checks:

- the rerun succeeds;
- build: ``manifest.json`` names the tree ``tree/`` holds (by a fresh ``git write-tree``, not
  npulab's index) and the series it staged; the source cache vouches for the commit (marker)
  and its trees read; no scratch is left (``.tree.new-*``, ``.scripts.old-*``, partial packs...);
- model.fetch: every file has its pinned sha256 and no partial download is left;
- smoke: every ``report.json`` left anywhere is whole and believable (report_check), the rerun
  wrote its own directory, and ``ci.report``'s reader picks the rerun's report.

Then the same invariants for N commands started at once (builds on one build dir and cache,
smoke runs in one build/). Printed: kills tried, violations (goal 0), and the slowest recovery
(rerun time) relative to a clean cold run of the same scenario (goal < 1.5x).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GIT_ENV = {
    "GIT_AUTHOR_NAME": "h",
    "GIT_AUTHOR_EMAIL": "h@example.invalid",
    "GIT_COMMITTER_NAME": "h",
    "GIT_COMMITTER_EMAIL": "h@example.invalid",
    "GIT_AUTHOR_DATE": "2024-06-14T00:00:00Z",
    "GIT_COMMITTER_DATE": "2024-06-14T00:00:00Z",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}
MODELING = "example/transformers/models/llama2/modeling_llama_amd.py"
RECIPE = ROOT / "recipes" / "ryzenai-sw-1.1-llama3.1.yaml"


def _git(repo: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=repo, env={**os.environ, **GIT_ENV}, input=stdin,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


@dataclass
class Outcome:
    returncode: int
    seconds: float
    stdout: str
    stderr: str


@dataclass
class Scenario:
    """One command to crash: ``fresh(trial_dir)`` gives its env for a cold start; ``check``
    lists the invariants it breaks after a successful rerun."""

    name: str
    argv: list[str]
    base_env: dict[str, str]
    fresh: Callable[[Path], dict[str, str]]
    check: Callable[[dict[str, str], Outcome], list[str]]


@dataclass
class Report:
    kills: int = 0
    violations: list[str] = field(default_factory=list)
    worst: dict[str, float] = field(default_factory=dict)
    clean: dict[str, float] = field(default_factory=dict)
    worst_tag: dict[str, str] = field(default_factory=dict)
    per_scenario: dict[str, int] = field(default_factory=dict)
    recent: dict[str, list[float]] = field(default_factory=dict)
    ratios: dict[str, list[float]] = field(default_factory=dict)
    trials: int = 0


def run(argv: list[str], env: dict[str, str], timeout: float = 600.0) -> Outcome:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip
    return Outcome(done.returncode, time.perf_counter() - start, done.stdout, done.stderr)


def _invoke(*args: str) -> list[str]:
    return [sys.executable, "-m", "invoke", *args]


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NPULAB_", "HF_"))}
    return {**env, **GIT_ENV, "PYTHONPATH": str(ROOT), **extra}


# -- build --------------------------------------------------------------------------------
def _upstream(where: Path, files: int, kib: int) -> tuple[Path, str, str]:
    repo = where / "upstream"
    rng = random.Random(1)
    for i in range(files):
        path = repo / "example" / "transformers" / "ops" / f"d{i % 20}" / f"f{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(kib * 512).hex().encode())
    modeling = repo / MODELING
    modeling.parent.mkdir(parents=True, exist_ok=True)
    modeling.write_text("".join(f"line {n}\n" for n in range(1, 41)))
    (repo / "README.md").write_text("upstream\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "upstream")
    _git(repo, "tag", "v1.1")
    return repo, _git(repo, "rev-parse", "HEAD"), _git(repo, "rev-parse", "HEAD^{tree}")


def _project(where: Path, upstream: Path, commit: str, tree: str) -> tuple[Path, Path]:
    import yaml

    project = where / "project"
    data = yaml.safe_load(RECIPE.read_text())
    data["name"] = "crash"
    data["upstream"].update(commit=commit, tree=tree)
    data["upstream"]["lfs"] = {"required": [], "include": []}
    data["patches"] = {"component": "test", "version": "1"}
    recipe = project / "recipes" / "crash.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(yaml.safe_dump(data))
    modeling = upstream / MODELING
    original = modeling.read_text()
    modeling.write_text(original.replace("line 5\n", "line five\n"))
    diff = _git(upstream, "diff", "--no-color", "--no-ext-diff", "--no-renames", "--full-index",
                "-U3", commit, "--", MODELING)  # fmt: skip
    modeling.write_text(original)
    series = project / "patches" / "test" / "1"
    series.mkdir(parents=True)
    patch = "Subject: five\nUpstream-Status: Inappropriate [test]\nFixes: crash harness\n\n---\n"
    (series / "0001-five.patch").write_text(patch + diff + "\n")
    (series / "series").write_text("0001-five.patch\n")
    return project, recipe


def build_scenario(work: Path, files: int = 300, kib: int = 8) -> Scenario:
    from npulab.build import scratch
    from npulab.source import patches

    upstream, commit, tree = _upstream(work, files, kib)
    project, recipe = _project(work, upstream, commit, tree)
    series = patches.load_series(project / "patches" / "test" / "1")

    def fresh(trial: Path) -> dict[str, str]:
        return _child_env({"NPULAB_ROOT": str(project), "NPULAB_BUILD_DIR": str(trial / "build"),
                           "NPULAB_CACHE": str(trial / "cache")})  # fmt: skip

    def check(env: dict[str, str], rerun: Outcome) -> list[str]:
        out = Path(env["NPULAB_BUILD_DIR"]) / "crash"
        found: list[str] = []
        data = json.loads((out / "manifest.json").read_text())
        cache = Path(data["upstream"]["cache"])
        index = out.parent / "harness.index"
        genv = {**os.environ, "GIT_DIR": str(cache), "GIT_WORK_TREE": str(out / "tree"),
                "GIT_INDEX_FILE": str(index)}  # fmt: skip
        subprocess.run(["git", "add", "-A", "-f", "."], cwd=out / "tree", env=genv, check=True)
        actual = subprocess.run(["git", "write-tree"], cwd=out / "tree", env=genv, check=True,
                                capture_output=True, text=True).stdout.strip()  # fmt: skip
        index.unlink()
        if data["staged"]["tree"] != actual:
            found.append(f"manifest names tree {data['staged']['tree']}, tree/ holds {actual}")
        staged = [[p["name"], p["sha256"]] for p in data.get("patches", [])]
        if staged != [[p.name, p.sha256] for p in series.patches]:
            found.append("manifest names another series than the one staged")
        if data["steps"]["patch"].get("digest") is None:
            found.append("patch step without digest")
        if "line five" not in (out / "tree" / MODELING).read_text():
            found.append("tree/ lacks the patch")
        if not (cache / "npulab-complete" / commit).is_file():
            found.append("source cache has no completion marker for the commit")
        cache_env = {**os.environ, "GIT_DIR": str(cache)}
        listing = subprocess.run(["git", "ls-tree", "-r", commit], env=cache_env,
                                 capture_output=True, check=False)  # fmt: skip
        if listing.returncode != 0:
            found.append("source cache: the commit's trees do not read")
        left = [p.name for p in scratch.leftovers(out)]
        left += [p.name for p in (cache / "objects" / "pack").glob("tmp_*")]
        left += [p.name for p in cache.parent.glob(".init-*")]
        left += [p.name for p in cache.parent.glob(".trash-*")]
        left += [p.name for p in (cache / "objects" / "pack").glob("*.pack")
                 if not p.with_suffix(".idx").exists()]  # fmt: skip
        if left:
            found.append(f"scratch left: {left}")
        return found

    argv = _invoke("build", "--recipe", str(recipe), "--source", str(upstream))
    return Scenario("build", argv, {}, fresh, check)


# -- model.fetch --------------------------------------------------------------------------
def fetch_scenario(work: Path, hub: Any, mib: int = 24) -> Scenario:
    import yaml

    rng = random.Random(2)
    files = {"config.json": b'{"model_type": "llama"}', "model.pt": rng.randbytes(mib << 20)}
    commit = hub.add_repo("crash/model", files, lfs={"model.pt"})
    data = yaml.safe_load(RECIPE.read_text())
    data["model"] = {"repo_id": "crash/model", "revision": commit, "checkpoint": "model.pt",
                     "files": [{"path": p, "sha256": hashlib.sha256(b).hexdigest(), "size": len(b)}
                               for p, b in files.items()]}  # fmt: skip
    recipe = work / "fetch" / "recipes" / "fetchme.yaml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(yaml.safe_dump(data))
    pins = {p: hashlib.sha256(b).hexdigest() for p, b in files.items()}

    def fresh(trial: Path) -> dict[str, str]:
        return _child_env({"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(trial / "hf"),
                           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "NPULAB_MODEL_DEST":
                           str(trial / "model"), "NPULAB_BUILD_DIR": str(trial / "build"),
                           "NPULAB_CACHE": str(trial / "cache")})  # fmt: skip

    def check(env: dict[str, str], rerun: Outcome) -> list[str]:
        dest = Path(env["NPULAB_MODEL_DEST"])
        found = []
        for name, sha in pins.items():
            path = dest / name
            if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha:
                found.append(f"{name}: not the pinned content after the rerun")
        partial = [str(p.relative_to(dest)) for p in dest.rglob("*")
                   if p.is_file() and (p.name.endswith((".incomplete", ".tmp"))
                                       or "partial" in p.parts)]  # fmt: skip
        if partial:
            found.append(f"partial downloads left: {partial}")
        return found

    argv = _invoke("model.fetch", "--recipe", str(recipe), "--dest", "{NPULAB_MODEL_DEST}")
    return Scenario("model.fetch", argv, {}, fresh, check)


# -- smoke --------------------------------------------------------------------------------
def smoke_scenario(work: Path) -> Scenario:
    from npulab.ci.results import find_smoke_report
    from npulab.smoke import report_check
    from tests import tiny_llama

    # The tiny recipe the smoke tests use (issue 12 keeps it in step with the smoke checks).
    from tests.test_smoke_tasks import tiny_recipe

    work.mkdir(parents=True, exist_ok=True)
    recipe = tiny_recipe(ROOT, work)
    model = work / "model"
    del tiny_llama

    def fresh(trial: Path) -> dict[str, str]:
        return _child_env({"NPULAB_BUILD_DIR": str(trial / "build"),
                           "NPULAB_CACHE": str(trial / "cache")})  # fmt: skip

    def check(env: dict[str, str], rerun: Outcome) -> list[str]:
        build = Path(env["NPULAB_BUILD_DIR"])
        found = []
        for report in (build / "smoke").glob("*/report.json"):
            try:
                data = json.loads(report.read_text())
            except ValueError:
                found.append(f"{report}: a partial report was left")
                continue
            if data.get("verdict") == "PASS" and report_check.problems(data):
                found.append(f"{report}: says PASS but is not believable")
        said = rerun.stdout.strip().split()
        if len(said) != 2 or said[0] != "PASS":
            found.append(f"the rerun printed {rerun.stdout.strip()!r}")
            return found
        own = Path(said[1])
        if find_smoke_report(build) != own:
            found.append(f"ci.report would read {find_smoke_report(build)}, not the rerun's {own}")
        return found

    argv = _invoke("smoke", "--recipe", str(recipe), "--backend", "cpu", "--model-dir",
                   str(model))  # fmt: skip
    return Scenario("smoke", argv, {}, fresh, check)


# -- the harness --------------------------------------------------------------------------
def _argv(s: Scenario, env: dict[str, str]) -> list[str]:
    return [a.format(**env) if "{" in a else a for a in s.argv]


def _kill_during(s: Scenario, env: dict[str, str], delay: float, whole_group: bool) -> bool:
    """Start the command, SIGKILL it after ``delay`` s; True if it was still running."""
    proc = subprocess.Popen(_argv(s, env), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        pass
    if whole_group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # Orphaned git children (only the Python process died) run to their end, as they would.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    return True


def clean_run(s: Scenario, base: Path) -> float:
    trial = Path(tempfile.mkdtemp(prefix=f"clean-{s.name}-", dir=base))
    env = s.fresh(trial)
    done = run(_argv(s, env), env)
    if done.returncode != 0:
        msg = f"clean {s.name} failed ({done.returncode}):\n{done.stderr[-3000:]}"
        raise SystemExit(msg)
    problems = s.check(env, done)
    if problems:
        msg = f"clean {s.name} breaks its own invariants: {problems}"
        raise SystemExit(msg)
    shutil.rmtree(trial, ignore_errors=True)
    return done.seconds


def trial(
    s: Scenario, base: Path, rng: random.Random, report: Report, clean: float | None = None
) -> None:
    """A clean cold run and a killed one with its rerun, side by side (the machine's load
    changes over a long harness run; each ratio compares runs made one after the other).
    ``clean``: a known clean run time instead (the test suite's few kills)."""
    report.recent.setdefault(s.name, []).append(clean or clean_run(s, base))
    # The reference: the median of the last three clean cold runs of this scenario (this
    # trial's included): one slow moment of a shared machine does not make a ratio.
    recent = sorted(report.recent[s.name][-3:])
    clean = recent[len(recent) // 2]
    report.clean[s.name] = min(report.recent[s.name])
    where = Path(tempfile.mkdtemp(prefix=f"kill-{s.name}-", dir=base))
    env = s.fresh(where)
    delay = rng.uniform(0.02, 0.95) * clean
    whole = rng.random() < 0.5
    killed = _kill_during(s, env, delay, whole)
    report.kills += killed
    report.trials += 1
    rerun = run(_argv(s, env), env)
    tag = f"{s.name} killed at {delay:.2f} s ({'group' if whole else 'python only'})"
    if rerun.returncode != 0:
        report.violations.append(f"{tag}: rerun failed ({rerun.returncode}): "
                                 f"{rerun.stderr.strip().splitlines()[-3:]}")  # fmt: skip
    else:
        report.violations += [f"{tag}: {p}" for p in s.check(env, rerun)]
    ratio = rerun.seconds / clean
    report.ratios.setdefault(s.name, []).append(ratio)
    if ratio > report.worst.get(s.name, 0.0):
        report.worst[s.name] = ratio
        report.worst_tag[s.name] = f"{tag}: rerun {rerun.seconds:.2f} s, reference {clean:.2f} s"
    shutil.rmtree(where, ignore_errors=True)


def concurrent(s: Scenario, base: Path, n: int, report: Report) -> None:
    """``n`` copies at once on one build dir and cache; every one must succeed."""
    where = Path(tempfile.mkdtemp(prefix=f"many-{s.name}-", dir=base))
    env = s.fresh(where)
    procs = [subprocess.Popen(_argv(s, env), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]  # fmt: skip
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            report.violations.append(f"{n} x {s.name} at once: one failed ({p.returncode}): "
                                     f"{err.strip().splitlines()[-3:]}")  # fmt: skip
    if all(p.returncode == 0 for p in procs):
        last = Outcome(0, 0.0, outs[-1][0], outs[-1][1])
        if s.name == "smoke":
            paths = [o.split()[1] for o, _ in outs]
            if len(set(paths)) != n:
                report.violations.append(f"{n} smoke runs at once shared a report: {paths}")
            newest = sorted(paths)[-1]
            last = Outcome(0, 0.0, f"PASS {newest}", "")
        report.violations += [f"{n} x {s.name} at once: {v}" for v in s.check(env, last)]
    shutil.rmtree(where, ignore_errors=True)


def harness(kills: int, names: list[str], seed: int, concurrency: int) -> Report:
    from npulab.testing.hub_server import HubServer

    rng = random.Random(seed)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="npulab-crash-") as tmp, HubServer() as hub:
        base = Path(tmp)
        hub.set_latency(0.002)
        makers: dict[str, Callable[[], Scenario]] = {
            "build": lambda: build_scenario(base / "b"),
            "fetch": lambda: fetch_scenario(base / "f", hub),
            "smoke": lambda: smoke_scenario(base / "s"),
        }
        scenarios = [makers[n]() for n in names]
        for s in scenarios:
            clean_run(s, base)  # warm the interpreter's file cache once; not counted
        # --kills counts kills made: a trial whose command finished before its kill time (the
        # machine was faster than the clean run beside it) is tried again at another point.
        counts = dict.fromkeys(s.name for s in scenarios)
        share = {s.name: kills // len(scenarios) + (i < kills % len(scenarios))
                 for i, s in enumerate(scenarios)}  # fmt: skip
        for s in scenarios:
            made = report.kills
            for _ in range(3 * share[s.name]):
                if report.kills - made >= share[s.name]:
                    break
                trial(s, base, rng, report)
            counts[s.name] = report.kills - made
        report.per_scenario = {k: v or 0 for k, v in counts.items()}
        if concurrency > 1:
            for s in scenarios:
                if s.name in ("build", "smoke"):
                    concurrent(s, base, concurrency, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200, help="kills (spread over scenarios)")
    parser.add_argument("--scenarios", default="build,fetch,smoke")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--concurrency", type=int, default=4, help="N commands at once (0: skip)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    start = time.perf_counter()
    report = harness(args.kills, names, args.seed, args.concurrency)
    per = ", ".join(f"{k} {v}" for k, v in report.per_scenario.items())
    print(f"kills tried: {report.kills} ({per}; {report.trials} trials, seed {args.seed}; "
          "a trial that finished before its kill time was tried again)")  # fmt: skip
    print(f"invariant violations: {len(report.violations)} (goal 0)")
    for v in report.violations[:30]:
        print(f"  - {v}")
    for name, ratio in report.worst.items():
        ratios = sorted(report.ratios[name])
        print(f"slowest recovery, {name}: {ratio:.2f}x a clean cold run measured beside it "
              f"(median {ratios[len(ratios) // 2]:.2f}x; {report.worst_tag[name]}; fastest "
              f"clean run {report.clean[name]:.2f} s)")  # fmt: skip
    if report.worst:
        print(f"slowest recovery overall: {max(report.worst.values()):.2f}x (goal < 1.5x)")
    print(f"harness time: {time.perf_counter() - start:.0f} s")
    return 1 if report.violations else 0


if __name__ == "__main__":
    sys.exit(main())
