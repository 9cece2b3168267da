"""Fleet probe scaling: probe 1, 10 and 50 simulated hosts (100 ms per WS-Man request) in one run.

The simulated fleet runs in its own process (``python -m npulab.testing.fleet``) so that its
CPU time (NTLM, encryption, XML) does not share this process's GIL, as with real machines. Each
probe is the real path: inventory -> credentials -> pywinrm (NTLM + message encryption) ->
one PowerShell script -> JSON -> verdict. Prints wall time per fleet size, the 50/1 ratio
(target < 3x) and peak memory of both processes.

    python bench/fleet_probe.py [--latency 0.1] [--sizes 1,10,50] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from npulab import log
from npulab.hosts import inventory
from npulab.lab import probe
from npulab.transport import connect


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--sizes", default="1,10,50")
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="npulab-bench-"))
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "npulab.testing.fleet",
            "--hosts",
            str(max(sizes)),
            "--latency",
            str(args.latency),
            "--dir",
            str(workdir),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert server.stdout is not None
        ready = json.loads(server.stdout.readline())
        os.environ["NPULAB_SECRETS_FILE"] = ready["secrets_file"]
        inv = inventory.load(ready["inventory"])
        hosts = list(inv.hosts.values())
        quiet = open(os.devnull, "w")  # noqa: SIM115
        saved, sys.stderr = sys.stderr, quiet  # the per-command echo would dominate the output
        try:

            def run(n: int) -> tuple[float, list[probe.ProbeResult]]:
                start = time.perf_counter()
                results = probe.probe_fleet(
                    hosts[:n],
                    lambda h: connect(h.name, inventory=inv),
                    concurrency=args.concurrency,
                )
                return time.perf_counter() - start, results

            run(1)  # warm-up: imports, first TLS/NTLM code paths
            timings: dict[int, float] = {}
            for n in sizes:
                seconds, results = run(n)
                bad = [r for r in results if r.verdict != "ok"]
                if bad:
                    sys.stderr = saved
                    log.error(f"{len(bad)} host(s) failed: {bad[0].reason}")
                    return 1
                timings[n] = seconds
        finally:
            sys.stderr = saved
        client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        server_rss = psutil.Process(server.pid).memory_info().rss / 2**20
    finally:
        if server.stdin:
            server.stdin.close()
        server.wait(timeout=30)
    print(
        f"fleet probe, {args.latency * 1000:.0f} ms per WS-Man request, "
        f"concurrency {args.concurrency}"
    )
    print(f"{'hosts':>6} {'wall s':>8} {'per host ms':>12} {'vs 1 host':>10}")
    for n, seconds in timings.items():
        vs_one = seconds / timings[sizes[0]]
        print(f"{n:>6} {seconds:>8.2f} {seconds / n * 1000:>12.0f} {vs_one:>9.2f}x")
    ratio = timings[sizes[-1]] / timings[sizes[0]]
    verdict = "meets" if ratio < 3 else "misses"
    print(f"ratio {sizes[-1]}/{sizes[0]}: {ratio:.2f}x ({verdict} the < 3x target)")
    print(f"peak RSS: client {client_peak:.0f} MiB, simulated fleet {server_rss:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
