"""``invoke lab.probe``: what each lab machine is, and whether it is what the inventory says.

Every host gets one PowerShell script (:data:`npulab.lab.probe_script.PROBE_SCRIPT`) that answers
with JSON; hosts are probed in parallel (a bounded thread pool), and a host that cannot be
reached or answers nonsense is reported with the reason while the others complete.

Verdicts: ``ok`` (expected chip, XDNA1 NPU with a driver, and everything the build's own
prerequisite check, ``win-prereqs``, requires: conda where the build looks, git, git lfs,
VS 2019 v142, LongPathsEnabled=1), ``unprovisioned`` (right hardware, missing driver or build
prerequisites: run the provisioning),
``mismatch`` (another CPU, no NPU, or a Strix NPU), ``unreachable``, ``auth-failed``, ``error``.
The runner service is not a build prerequisite: it is reported beside the verdict (``ok, no
runner`` for a host that can build but serves no nightly yet).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from npulab.errors import CommandError, ConfigError, NpulabError, TransportError
from npulab.hosts.inventory import Host
from npulab.lab.probe_script import PROBE_SCRIPT
from npulab.schema import build
from npulab.transport import Transport

Verdict = Literal["ok", "unprovisioned", "mismatch", "unreachable", "auth-failed", "error"]
#: What ``win-prereqs`` (scripts\\prereqs.ps1) requires, besides LongPathsEnabled=1.
PREREQS = ("conda", "git", "git_lfs", "vs2019_v142")
LONG_PATHS = "LongPathsEnabled=1"
# cmd.exe treats & as a separator, so the ID is matched here, on the decoded JSON string.
_NPU_ID = re.compile(r"VEN_1022&DEV_(1502|17F0)(?![0-9A-F])", re.IGNORECASE)
NPU_KINDS = {"1502": "XDNA1 (PHX/HPT)", "17F0": "XDNA2 (Strix)"}


@dataclass(frozen=True)
class WindowsInfo:
    caption: str
    build: str
    ubr: int = 0
    display_version: str = ""


@dataclass(frozen=True)
class Disk:
    drive: str
    free_bytes: int
    size_bytes: int


@dataclass(frozen=True)
class PciDevice:
    device_id: str
    name: str | None = None
    driver_version: str | None = None
    driver_provider: str | None = None


@dataclass(frozen=True)
class Prereqs:
    conda: str | None = None
    git: str | None = None
    git_lfs: str | None = None
    vs2019_v142: str | None = None
    runner_service: str | None = None


@dataclass(frozen=True)
class HostFacts:
    schema: int
    computer_name: str
    cpu: str
    windows: WindowsInfo
    last_boot: str
    oem_codepage: int
    disk: Disk
    pci: tuple[PciDevice, ...]
    prereqs: Prereqs
    long_paths: bool = False


@dataclass(frozen=True)
class ProbeResult:
    host: str
    expected_chip: str
    verdict: Verdict
    reason: str
    seconds: float
    cpu: str | None = None
    npu: str | None = None  # "XDNA1 (PHX/HPT)" / "XDNA2 (Strix)" / None
    npu_device_id: str | None = None
    npu_driver: str | None = None
    windows_build: str | None = None
    free_disk_gb: float | None = None
    prereqs: dict[str, str | None] = field(default_factory=dict)
    #: The actions runner service ("name (status)"), or None: reported, never part of the verdict.
    runner: str | None = None

    @property
    def label(self) -> str:
        """The verdict as shown: ``ok, no runner`` for a host that builds but runs no nightly."""
        if self.verdict == "ok" and not self.runner:
            return "ok, no runner"
        return self.verdict

    def passed(self, *, hardware_only: bool = False) -> bool:
        return self.verdict == "ok" or (hardware_only and self.verdict == "unprovisioned")


def parse_facts(stdout: str, host: str) -> HostFacts:
    text = stdout.strip().lstrip("\ufeff")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        msg = f"{host}: the probe did not answer with JSON ({exc.msg} at {exc.pos})"
        raise ConfigError(msg) from None
    if isinstance(data, dict) and isinstance(data.get("pci"), dict):
        data["pci"] = [data["pci"]]  # PowerShell unrolls one-element arrays
    return build(HostFacts, data, source=f"probe answer from {host}")


def find_npu(pci: Sequence[PciDevice]) -> tuple[PciDevice, str] | None:
    for device in pci:
        match = _NPU_ID.search(device.device_id)
        if match:
            return device, NPU_KINDS[match.group(1).upper()]
    return None


def judge(host: Host, facts: HostFacts, seconds: float) -> ProbeResult:
    chip = host.vars.npulab_chip
    npu = find_npu(facts.pci)
    prereqs = asdict(facts.prereqs)
    result = ProbeResult(
        host=host.name,
        expected_chip=chip,
        verdict="ok",
        reason="",
        seconds=seconds,
        cpu=facts.cpu,
        npu=npu[1] if npu else None,
        npu_device_id=npu[0].device_id if npu else None,
        npu_driver=npu[0].driver_version if npu else None,
        windows_build=f"{facts.windows.build}.{facts.windows.ubr}",
        free_disk_gb=round(facts.disk.free_bytes / 2**30, 1),
        prereqs=prereqs,
        runner=facts.prereqs.runner_service,
    )
    problems: list[str] = []
    if chip.lower() not in facts.cpu.lower():
        problems.append(f"expected a Ryzen {chip}, found {facts.cpu!r}")
    if npu is None:
        problems.append("no NPU (no PCI VEN_1022&DEV_1502)")
    elif not npu[1].startswith("XDNA1"):
        problems.append(f"found a {npu[1]} NPU; the legacy 1.1 flow needs XDNA1 (DEV_1502)")
    if problems:
        return _with(result, "mismatch", "; ".join(problems))
    missing = [name for name in PREREQS if not prereqs.get(name)]
    if not facts.long_paths:
        missing.append(LONG_PATHS)
    if npu is not None and not npu[0].driver_version:
        missing.insert(0, "npu_driver")
    if missing:
        return _with(result, "unprovisioned", "missing: " + ", ".join(missing))
    return result


def _with(result: ProbeResult, verdict: Verdict, reason: str) -> ProbeResult:
    return ProbeResult(**{**asdict(result), "verdict": verdict, "reason": reason})


#: Seconds a host has to answer the probe (the script takes 2-10 s on a healthy machine).
DEFAULT_TIMEOUT_S = 120.0
#: The lines of PowerShell's error view after the message (position, source, trailer).
_VIEW_TAIL = re.compile(r"^(At line:\d+|At [^\n]*:\d+ char:\d+|\+ |\s+\+ )")


def powershell_message(stderr: str) -> str:
    """The message of the first error record in PowerShell's error view (``Get-CimInstance :
    Access denied``), its wrapped lines joined: never the ``+ FullyQualifiedErrorId`` trailer."""
    lines = [ln.rstrip() for ln in stderr.splitlines()]
    start = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if start is None:
        return ""
    message = [lines[start].strip()]
    for ln in lines[start + 1 :]:
        if not ln.strip() or _VIEW_TAIL.match(ln):
            break
        message.append(ln.strip())
    return " ".join(message)


def probe_host(
    host: Host, connect: Callable[[Host], Transport], *, timeout: float = DEFAULT_TIMEOUT_S
) -> ProbeResult:
    """Probe one host; every failure becomes a verdict with the reason, never an exception.
    A host that has not answered within ``timeout`` seconds is ``error`` ("no answer in N s");
    the transport has then signalled its command and deleted its shell."""
    start = time.perf_counter()
    chip = host.vars.npulab_chip

    def failed(verdict: Verdict, reason: str) -> ProbeResult:
        return ProbeResult(host.name, chip, verdict, reason, time.perf_counter() - start)

    transport: Transport | None = None
    try:
        transport = connect(host)
        result = transport.run_script(
            PROBE_SCRIPT, shell="powershell", idempotent=True, timeout=timeout
        )
        facts = parse_facts(result.stdout, host.name)
        return judge(host, facts, time.perf_counter() - start)
    except TransportError as exc:
        auth = "credentials were rejected" in exc.message
        verdict: Verdict = "auth-failed" if auth else "unreachable"
        return failed(verdict, exc.message)
    except CommandError as exc:
        if exc.returncode is None:
            return failed("error", f"no answer in {timeout:g} s (probe stopped)")
        said = powershell_message(exc.stderr or exc.stdout)
        return failed("error", f"probe script failed (exit {exc.returncode}): {said[:200]}")
    except NpulabError as exc:
        return failed("error", exc.message)
    finally:
        close = getattr(transport, "close", None)
        if close is not None:
            close()


def probe_fleet(
    hosts: Sequence[Host],
    connect: Callable[[Host], Transport],
    *,
    concurrency: int = 32,
    timeout: float = DEFAULT_TIMEOUT_S,
    on_result: Callable[[ProbeResult], None] | None = None,
) -> list[ProbeResult]:
    """Probe ``hosts`` in parallel (at most ``concurrency`` at once), results in host order;
    ``on_result`` sees each result as its host finishes (from this thread)."""
    if not hosts:
        return []
    workers = max(1, min(concurrency, len(hosts)))
    results: dict[int, ProbeResult] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="probe") as pool:
        futures = {
            pool.submit(probe_host, h, connect, timeout=timeout): i for i, h in enumerate(hosts)
        }
        for future in as_completed(futures):
            result = future.result()
            results[futures[future]] = result
            if on_result is not None:
                on_result(result)
    return [results[i] for i in range(len(hosts))]


def to_json(results: Sequence[ProbeResult], *, hardware_only: bool = False) -> dict[str, Any]:
    return {
        "passed": all(r.passed(hardware_only=hardware_only) for r in results),
        "hosts": [asdict(r) | {"passed": r.passed(hardware_only=hardware_only)} for r in results],
    }


HEADER = ("HOST", "CHIP", "VERDICT", "CPU", "NPU", "DRIVER", "BUILD", "FREE GB", "DETAIL")
#: Widths of the columns before DETAIL when rows are printed as hosts finish (HOST: longest name).
STREAM_WIDTHS = (0, 6, 13, 30, 15, 13, 10, 7)


def _cells(r: ProbeResult) -> tuple[str, ...]:
    return (
        r.host,
        r.expected_chip,
        r.label,
        (r.cpu or "-").replace("AMD ", "").split(" w/")[0][:30],
        r.npu or "-",
        r.npu_driver or "-",
        r.windows_build or "-",
        f"{r.free_disk_gb:.0f}" if r.free_disk_gb is not None else "-",
        r.reason or "",
    )


def _line(row: Sequence[str], widths: Sequence[int]) -> str:
    head = "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True))
    return (head + "  " + row[-1]).rstrip()


def stream_widths(host_names: Sequence[str]) -> tuple[int, ...]:
    """Fixed column widths for rows printed one by one (known before any host answers)."""
    host = max([len(HEADER[0]), *(len(n) for n in host_names)])
    return (host, *(max(w, len(h)) for w, h in zip(STREAM_WIDTHS[1:], HEADER[1:-1], strict=True)))


def render_header(widths: Sequence[int]) -> str:
    return _line(HEADER, widths)


def render_row(result: ProbeResult, widths: Sequence[int]) -> str:
    return _line(_cells(result), widths)


def render_table(results: Sequence[ProbeResult]) -> str:
    rows = [HEADER, *(_cells(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER) - 1)]
    return "\n".join(_line(row, widths) for row in rows)
