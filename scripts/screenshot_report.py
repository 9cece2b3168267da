"""Render the nightly report page from the recorded nights and screenshot it in headless Chromium.

    python scripts/screenshot_report.py [--out bench/out/report.png] [--chromium chromium]

Builds the page exactly as `invoke ci.report` does, from tests/data/ci (recorded history plus a
passing night, a regression and a failed build), into a temporary directory, then runs Chromium
headless with no network, no sandbox and a throwaway profile. The PNG goes to bench/out/ (ignored
by git, like every *.png); look at it before changing the page. Needs `apt-get install chromium`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from npulab import cmd  # noqa: E402
from npulab.ci.nightly import run_report  # noqa: E402

DATA = ROOT / "tests" / "data" / "ci"
NIGHTS = (("pass", "2026-11-27"), ("regression", "2026-11-28"), ("build-failed", "2026-11-29"))


def build_page(work: Path) -> Path:
    history = work / "history.jsonl"
    shutil.copy(DATA / "history-before.jsonl", history)
    page = work / "site" / "index.html"
    for directory, night in NIGHTS:
        page = run_report(DATA / "nights" / directory, history, work / "site", night=night).page
    return page


def screenshot(page: Path, out: Path, chromium: str, profile: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--no-first-run",
        f"--user-data-dir={profile}", "--hide-scrollbars", "--window-size=1000,1250",
        f"--screenshot={out}", page.as_uri(),
    ]  # fmt: skip
    cmd.run(*argv, timeout=120, hint="apt-get install -y chromium")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "report.png")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="npulab-report-") as tmp:
        page = build_page(Path(tmp))
        screenshot(page, args.out.resolve(), args.chromium, Path(tmp) / "profile")
    print(f"screenshot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
