"""Reboot a Windows host and wait for it, the way Ansible's win_reboot does.

Record ``LastBootUpTime``, run ``shutdown /r`` (exit 1190, "already scheduled", is fine; the
connection may drop before the answer arrives), then poll, bounded by ``timeout``, until the boot
time differs and WinRM answers again. Each poll makes one attempt (no retry ladder), so a host
that refuses connections while it restarts costs one refused connect per poll.
"""

from __future__ import annotations

import time

from npulab import log
from npulab.errors import CommandError, TransportError
from npulab.quoting import quote_argv
from npulab.transport import psscripts
from npulab.transport.decode import clixml_to_text
from npulab.transport.faults import MaybeStarted
from npulab.transport.winrm import WinRMTransport


def last_boot_time(t: WinRMTransport, *, retries: int | None = None) -> str:
    """``LastBootUpTime`` in UTC; an idempotent read (re-run after a lost answer)."""
    argv = tuple(psscripts.encoded_command(psscripts.script_bootstrap(psscripts.BOOT_TIME_SCRIPT)))
    lines = psscripts.b64_lines(psscripts.BOOT_TIME_SCRIPT.encode())
    rc, out, err = t._with_rerun(
        "boot time", True, lambda: t._execute(quote_argv(argv), stdin=lines, retries=retries)
    )
    text = t._decode(out).strip()
    if rc != 0 or not text:
        why = clixml_to_text(t._decode(err)).strip()
        msg = f"{t._name}: could not read the last boot time: {why}"
        raise TransportError(msg)
    return text


def reboot(t: WinRMTransport, *, timeout: float = 600.0, poll: float = 5.0, delay: int = 2) -> str:
    """Reboot and wait (bounded) until the boot time changes and WinRM answers again."""
    before = last_boot_time(t)
    log.info(f"[{t._name}] rebooting (last boot {before}); waiting up to {timeout:.0f}s")
    try:
        result = t.run(
            ["shutdown.exe", "/r", "/t", str(delay), "/c", "npulab reboot"],
            check=False,
            idempotent=True,  # a second shutdown request is refused with 1190, not run twice
        )
    except TransportError as exc:  # the host went down before we read the answer
        log.info(f"[{t._name}] connection lost while shutting down: {exc.message}")
        result = None
    if result is not None and result.returncode not in (0, 1190):
        msg = f"{t._name}: shutdown.exe /r failed with exit code {result.returncode}"
        raise CommandError(
            msg, command=result.argv, returncode=result.returncode, stderr=result.stderr
        )
    deadline = time.monotonic() + timeout
    last_reason = "no answer yet"
    while time.monotonic() < deadline:
        t._sleep(poll)
        try:
            now = last_boot_time(t, retries=0)
        except (TransportError, MaybeStarted, CommandError) as exc:
            last_reason = str(exc).splitlines()[0]
            continue
        if now != before:
            log.info(f"[{t._name}] back up (boot {now})")
            return now
    msg = (
        f"{t._name}: did not come back from the reboot within {timeout:.0f}s (last: {last_reason})"
    )
    raise TransportError(
        msg, hint=f"look at the machine's console; then invoke lab.probe --hosts {t._name}"
    )
