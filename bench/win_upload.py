"""win-upload over WinRM, side by side: first upload, unchanged rerun, and resume after a failed
unpack, through the real pywinrm client against our WS-Man server on loopback.

    NPULAB_UPSTREAM=<mirror> python bench/win_upload.py   # the real staged example/transformers
    python bench/win_upload.py --mib 20                     # synthetic tree of ~20 MiB

Prints the archive size and parts, the seconds and parts sent for each run, and the ratios
(cold / unchanged, cold / resumed). The machine is shared: read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from npulab.build import executor as build  # noqa: E402
from npulab.build import manifest, plan  # noqa: E402
from npulab.errors import BuildStepError  # noqa: E402
from npulab.hosts.credentials import Credentials, Secret  # noqa: E402
from npulab.recipe import DEFAULT_RECIPE, find_recipe, load_recipe  # noqa: E402
from npulab.source import sources  # noqa: E402
from npulab.source.patches import Series  # noqa: E402
from npulab.testing.fakehost import FakeHost, preset  # noqa: E402
from npulab.testing.wsman_server import WSManServer  # noqa: E402
from npulab.transport.settings import WinRMSettings  # noqa: E402
from npulab.transport.winrm import WinRMTransport  # noqa: E402
from npulab.windows import run as winrun  # noqa: E402
from tests.winhost import BuildHost  # noqa: E402

PASSWORD = "bench-only-password"


def staged_out(work: Path, mib: int) -> Path:
    """A build dir with tree/ and scripts/: staged from NPULAB_UPSTREAM, else synthetic."""
    recipe = load_recipe(find_recipe(DEFAULT_RECIPE))
    mirror = os.environ.get(sources.ENV_VAR)
    if mirror:
        os.environ["NPULAB_BUILD_DIR"] = str(work / "build")
        os.environ["NPULAB_CACHE"] = str(work / "cache")
        origin = sources.resolve_origin(recipe.upstream.repo_url, source=mirror)
        with contextlib.redirect_stderr(io.StringIO()):
            return build.run(recipe, plan.Options(), origin).out
    out = work / "build"
    for i in range(mib * 4):
        path = out / "tree" / f"d{i % 16}" / f"f{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        # Half random, half repetitive: compresses like a source tree with binaries.
        path.write_bytes(os.urandom(128 * 1024) + bytes(128 * 1024))
    (out / "scripts").mkdir(parents=True)
    (out / "scripts" / "prereqs.ps1").write_text("exit 0\r\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=20, help="synthetic tree size (no mirror)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = staged_out(Path(tmp), args.mib)
        recipe = load_recipe(find_recipe(DEFAULT_RECIPE))
        host = FakeHost("bench-01", preset("phx"), password=PASSWORD)
        lab = BuildHost(host)
        with WSManServer(host, operation_timeout=5) as server:
            settings = WinRMSettings(endpoint=server.endpoint, read_timeout_sec=120)
            creds = Credentials("labadmin", Secret(PASSWORD), "bench")
            transport = WinRMTransport("bench-01", settings, creds)
            options = plan.Options(target="windows", extra={"host": "bench-01"})
            step = next(s for s in plan.plan(recipe, options) if s.name == "win-upload")

            def upload() -> tuple[float, dict[str, object]]:
                ctx = build.Context(
                    recipe=recipe,
                    options=options,
                    origin=sources.Origin(location="bench", chosen_by="bench"),
                    out=out,
                    series=Series(directory=out, patches=()),
                    previous=manifest.load(out),
                    data={"steps": {}},
                    transport=transport,
                )
                t0 = time.perf_counter()
                with contextlib.redirect_stderr(io.StringIO()):
                    detail = winrun.upload(ctx, step).detail
                return time.perf_counter() - t0, detail

            cold, first = upload()
            warm, _ = upload()
            # Resume: every part is on the host but the unpack failed; the rerun sends none.
            key = f"c:\\npulab\\build\\{recipe.name}\\.npulab-win\\upload.sha256"
            del host.files[key]
            lab.host.handlers.pop("script:upload-expand")
            with contextlib.suppress(BuildStepError), contextlib.redirect_stderr(io.StringIO()):
                upload()
            lab.host.on("script:upload-expand", lab._expand)
            resumed, again = upload()
    mib = int(first["bytes"]) / 2**20  # type: ignore[call-overload]
    print(f"archive: {mib:.1f} MiB in {first['parts']} part(s) (tree {out / 'tree'})")
    print(f"cold upload:      {cold:7.2f} s, parts sent {first['parts_sent']}")
    print(f"unchanged rerun:  {warm:7.2f} s, parts sent 0   -> {cold / warm:6.1f}x faster")
    print(
        f"resumed (unpack): {resumed:7.2f} s, parts sent {again['parts_sent']}   -> "
        f"{cold / resumed:6.1f}x faster"
    )
    print(f"throughput: {mib / cold:.1f} MiB/s through pywinrm + NTLM encryption on loopback")


if __name__ == "__main__":
    main()
