"""The installed versions must equal the hash lock's pins: exit 5 naming every drifted package.

Copied verbatim into ``scripts\\check-lock.py`` and run by ``pip-lock.cmd`` in the activated
env (Python 3.9, no npulab there: standard library only). ``pip install --no-deps`` installs
exactly the lock, but conda may have put other versions beside it, and a later manual
``pip install`` drifts silently.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

EXIT_DRIFT = 5
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock_text: str) -> dict[str, str]:
    """``name==version`` lines of a pip requirements lock (names normalized)."""
    out = {}
    for line in lock_text.splitlines():
        m = PIN.match(line.strip())
        if m:
            out[norm(m.group(1))] = m.group(2)
    return out


def drift(locked: dict[str, str], installed: dict[str, str]) -> list[str]:
    return [
        f"{name}: locked {want}, installed {installed.get(name) or 'nothing'}"
        for name, want in sorted(locked.items())
        if installed.get(name) != want
    ]


def installed_versions() -> dict[str, str]:
    return {norm(d.metadata["Name"] or ""): d.version for d in metadata.distributions()}


def main(argv: list[str]) -> int:
    with open(argv[1], encoding="utf-8") as fh:
        locked = pins(fh.read())
    problems = drift(locked, installed_versions())
    if problems:
        print(f"lock drift in {len(problems)} package(s):")
        for line in problems:
            print(f"  {line}")
        print("fix: invoke build again (re-installs the lock), or invoke lock if it is stale")
        return EXIT_DRIFT
    print(f"lock check: {len(locked)} package(s) installed exactly as locked")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
