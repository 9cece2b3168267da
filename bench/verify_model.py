"""Model verification speed: full sha256 (npulab.hashing) vs `sha256sum`, and the cheap re-verify.

    python bench/verify_model.py [--size-mib 2048] [--dir /tmp] [--keep]

Makes a multi-GB random test file, warms the page cache, then times (best of --rounds, the two
alternating so both see the same cache state):
  * npulab.hashing.sha256_file  vs  `sha256sum` on the same file   (target: >= 0.9x throughput)
  * model.fetch's second call on a verified directory: a stat per file against the sidecar
    record, no read                                                    (target: < 50 ms)
Prints side-by-side figures and ratios; never asserts absolute times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from npulab import hashing
from npulab.model import fetch as models
from npulab.recipe import Model, ModelFile

MIB = 1024 * 1024


def make_file(path: Path, size_mib: int) -> None:
    block = bytearray(os.urandom(16 * MIB))
    with open(path, "wb") as f:
        for i in range(0, size_mib, 16):
            block[:8] = i.to_bytes(8, "little")  # no two blocks alike
            f.write(block[: min(16, size_mib - i) * MIB])


def timed(fn: object) -> tuple[float, str]:
    start = time.perf_counter()
    out = fn()  # type: ignore[operator]
    return time.perf_counter() - start, str(out)


def sha256sum(path: Path) -> str:
    done = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True)
    return done.stdout.split()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=2048)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the test file")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="npulab-verify-", dir=args.dir))
    big = work / "model.pt"
    try:
        t0 = time.perf_counter()
        make_file(big, args.size_mib)
        print(f"test file: {big} ({args.size_mib} MiB, written in {time.perf_counter() - t0:.1f}s)")
        sha256sum(big)  # warm the page cache
        ours, theirs = [], []
        for _ in range(args.rounds):
            t, a = timed(lambda: hashing.sha256_file(big))
            ours.append(t)
            t, b = timed(lambda: sha256sum(big))
            theirs.append(t)
            assert a == b, (a, b)
        size = big.stat().st_size / MIB
        best_ours, best_theirs = min(ours), min(theirs)
        print(f"{'':24}{'best s':>9}{'MiB/s':>10}")
        print(f"{'npulab sha256_file':24}{best_ours:9.3f}{size / best_ours:10.0f}")
        print(f"{'sha256sum':24}{best_theirs:9.3f}{size / best_theirs:10.0f}")
        print(f"throughput ratio npulab/sha256sum: {best_theirs / best_ours:.2f}x (target >= 0.9x)")

        small = {"config.json": b"{}", "tokenizer.json": b"{" * 9000}
        for name, data in small.items():
            (work / name).write_bytes(data)
        files = [ModelFile(path="model.pt", sha256=a, size=big.stat().st_size)]
        files += [
            ModelFile(path=n, sha256=hashing.sha256_file(work / n), size=len(d))
            for n, d in small.items()
        ]
        model = Model(repo_id="bench/model", revision="c" * 40, checkpoint="model.pt",
                      files=tuple(files))  # fmt: skip
        records = {f.path: hashing.record_for(work / f.path, str(f.sha256)) for f in files}
        hashing.save_records(work / models.STATE_DIR / "verified.json", records)
        os.environ["HF_HUB_OFFLINE"] = "1"  # the cheap path must not need the network anyway
        import contextlib
        import io

        times = []
        for _ in range(20):
            with contextlib.redirect_stderr(io.StringIO()):
                t, _out = timed(lambda: models.fetch(model, dest=work))
            times.append(t)
        print(
            f"cheap re-verify (model.fetch, {len(files)} files, record hit): median "
            f"{statistics.median(times) * 1000:.2f} ms, max {max(times) * 1000:.2f} ms "
            f"(target < 50 ms); full hash would take {best_ours * 1000:.0f} ms"
        )
    finally:
        if not args.keep:
            for p in sorted(work.rglob("*"), reverse=True):
                p.rmdir() if p.is_dir() else p.unlink()
            work.rmdir()


if __name__ == "__main__":
    main()
