"""Cold vs warm `invoke build` staging of the same recipe against a local mirror, side by side.

    python bench/build_cache.py            # NPULAB_UPSTREAM if set, else a synthetic upstream
    python bench/build_cache.py --synthetic --files 800 --kib 64

Cold: empty source cache and build dir (copy the pinned commit's objects from the mirror, check
out, apply the series, render, manifest). Warm: the same call again (verification only). Both are
timed in this process with the same code path; the ratio is printed. Also times `invoke --list`.
Targets: warm >= 20x faster than cold and < 1 s; `invoke --list` well under 0.5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def synthetic_upstream(where: Path, files: int, kib: int) -> tuple[Path, str, str]:
    """A git repo shaped like example/transformers: ``files`` files of ~``kib`` KiB."""
    repo = where / "upstream"
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@example.invalid",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@example.invalid",
    }
    rng = random.Random(0)
    for i in range(files):
        path = repo / "example/transformers" / f"d{i % 20}" / f"f{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(kib * 512).hex().encode())
    model = repo / "example/transformers/models/llama2/modeling_llama_amd.py"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_text("".join(f"line {i}\n" for i in range(100)))
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "u"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    subprocess.run(["git", "tag", "v1.1"], cwd=repo, env=env, check=True)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = subprocess.run(
        ["git", "rev-parse", "HEAD^{tree}"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    return repo, commit, tree


def synthetic_recipe(where: Path, commit: str, tree: str) -> Path:
    import yaml

    data = yaml.safe_load((ROOT / "recipes/ryzenai-sw-1.1-llama3.1.yaml").read_text())
    data["upstream"].update(commit=commit, tree=tree)
    data["upstream"]["lfs"] = {"required": [], "include": []}
    data["patches"] = {"component": "bench", "version": "1"}
    series = where / "root/patches/bench/1"
    series.mkdir(parents=True)
    (series / "series").write_text("")
    path = where / "root/recipes/bench.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(data))
    return path


def timed_build(recipe_path: Path, mirror: Path, patch_only: bool) -> tuple[float, dict[str, str]]:
    from npulab.build import executor as build
    from npulab.build import plan
    from npulab.recipe import load_recipe
    from npulab.source import sources

    recipe = load_recipe(recipe_path)
    origin = sources.resolve_origin(recipe.upstream.repo_url, source=mirror)
    start = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        result = build.run(recipe, plan.Options(patch_only=patch_only), origin)
    return time.perf_counter() - start, result.steps


def invoke_list_seconds(runs: int = 5) -> float:
    invoke = Path(sys.executable).parent / "invoke"
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([str(invoke), "--list"], cwd=ROOT, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", action="store_true", help="ignore NPULAB_UPSTREAM")
    parser.add_argument("--files", type=int, default=800, help="synthetic upstream file count")
    parser.add_argument("--kib", type=int, default=64, help="synthetic file size in KiB")
    parser.add_argument("--patch-only", action="store_true", help="bench --patch-only staging")
    parser.add_argument("--repeat", type=int, default=3, help="cold/warm pairs to run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="npulab-bench-") as tmp_s:
        tmp = Path(tmp_s)
        mirror_env = os.environ.get("NPULAB_UPSTREAM")
        if mirror_env and not args.synthetic:
            mirror = Path(mirror_env)
            recipe = ROOT / "recipes/ryzenai-sw-1.1-llama3.1.yaml"
            label = f"real upstream mirror {mirror}"
        else:
            mirror, commit, tree = synthetic_upstream(tmp, args.files, args.kib)
            recipe = synthetic_recipe(tmp, commit, tree)
            os.environ["NPULAB_ROOT"] = str(tmp / "root")
            label = f"synthetic upstream ({args.files} files x {args.kib} KiB)"
        colds, warms = [], []
        for i in range(args.repeat):
            os.environ["NPULAB_CACHE"] = str(tmp / f"cache{i}")
            os.environ["NPULAB_BUILD_DIR"] = str(tmp / f"build{i}")
            cold, cold_steps = timed_build(recipe, mirror, args.patch_only)
            warm, warm_steps = timed_build(recipe, mirror, args.patch_only)
            assert cold_steps["patch"] == "done", cold_steps
            assert warm_steps["patch"] == "up-to-date", warm_steps
            colds.append(cold)
            warms.append(warm)
        cold_m, warm_m = statistics.median(colds), statistics.median(warms)
        list_s = invoke_list_seconds()
    mode = "patch-only" if args.patch_only else "full"
    print(f"build cache bench: {label}, {mode} staging, median of {args.repeat}")
    print(f"{'':24}{'cold':>10}{'warm':>10}{'ratio':>10}")
    print(f"{'staging (s)':24}{cold_m:>10.3f}{warm_m:>10.3f}{cold_m / warm_m:>9.1f}x")
    print(f"{'invoke --list (s)':24}{list_s:>10.3f}")
    ok = cold_m / warm_m >= 20 and warm_m < 1.0 and list_s < 0.5
    print(f"targets (warm >= 20x faster, warm < 1 s, --list < 0.5 s): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
