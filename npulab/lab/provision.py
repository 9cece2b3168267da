"""Fleet provisioning: run the Ansible playbook (``ansible/site.yml``) over the lab inventory.

``plan()`` is pure: inventory + options -> the ansible-playbook command (argv, environment names,
forks). ``run()`` resolves WinRM credentials into the child's environment (never argv, never the
log), runs the playbook through :mod:`npulab.cmd` and prints a per-host summary from the recap the
``npulab_summary`` callback writes (``ansible/callback_plugins``).
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from npulab import cmd, log
from npulab.errors import CommandError, ConfigError
from npulab.hosts import credentials, inventory
from npulab.paths import project_root

#: Hosts provisioned at once at most (each WinRM connection is one Ansible worker process).
DEFAULT_FORKS_CAP = 16
RECAP_KEYS = ("ok", "changed", "unreachable", "failures", "skipped", "rescued", "ignored")
ROLES = (
    "npulab_host",
    "npu_driver",
    "git_lfs",
    "miniconda",
    "controller_python",
    "vs2019_buildtools",
    "gha_runner",
    "npulab_stack",
)


@dataclass(frozen=True)
class Options:
    hosts: tuple[str, ...] = ()  # host or group names; empty: the whole npu_lab group
    check: bool = False
    tags: tuple[str, ...] = ()
    forks_cap: int = DEFAULT_FORKS_CAP
    extra_vars: Mapping[str, str] = field(default_factory=dict)  # never secrets
    verbose: int = 0


@dataclass(frozen=True)
class Plan:
    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]  # non-secret environment for the child
    hosts: tuple[str, ...]
    forks: int


def ansible_dir() -> Path:
    return project_root() / "ansible"


def ansible_playbook() -> str:
    """ansible-playbook beside this interpreter (an unactivated venv), else from PATH."""
    beside = Path(sys.executable).parent / "ansible-playbook"
    return str(beside) if beside.exists() else "ansible-playbook"


def forks_for(n_hosts: int, cap: int) -> int:
    if cap < 1:
        msg = f"forks cap must be at least 1 (got {cap})"
        raise ConfigError(msg, hint="invoke lab.provision --forks 16")
    return max(1, min(n_hosts, cap))


def plan(inv: inventory.Inventory, options: Options) -> Plan:
    """The ansible-playbook invocation for ``options`` (pure apart from reading the inventory)."""
    selected = inv.select(list(options.hosts) or None)
    if not selected:
        msg = f"{inv.path}: no hosts to provision"
        raise ConfigError(msg, hint="add hosts to the inventory (docs/provisioning.md)")
    for tag in options.tags:
        if tag not in ROLES:
            msg = f"unknown role tag {tag!r}; roles: {', '.join(ROLES)}"
            raise ConfigError(msg, hint=f"invoke lab.provision --tags {ROLES[0]}")
    names = tuple(h.name for h in selected)
    forks = forks_for(len(names), options.forks_cap)
    root = ansible_dir()
    argv: list[str] = [
        ansible_playbook(),
        "-i",
        str(inv.path.resolve()),
        str(root / "site.yml"),
        "--forks",
        str(forks),
    ]
    if options.hosts:
        argv += ["--limit", ",".join(names)]
    if options.check:
        argv.append("--check")
    if options.tags:
        argv += ["--tags", ",".join(options.tags)]
    for key, value in sorted(options.extra_vars.items()):
        argv += ["-e", json.dumps({key: value})]
    if options.verbose:
        argv.append("-" + "v" * min(options.verbose, 4))
    env = {"ANSIBLE_CONFIG": str(root / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    return Plan(argv=tuple(argv), cwd=root, env=env, hosts=names, forks=forks)


def credential_env(inv: inventory.Inventory, hosts: Sequence[str]) -> dict[str, str]:
    """NPULAB_WINRM_USER/PASSWORD for the child (group_vars/all/winrm.yml reads them).

    Ansible reads one user/password pair for the run, so the selected hosts must share it."""
    found: dict[tuple[str, str], list[str]] = {}
    for name in hosts:
        host = inv.get(name)
        creds = credentials.resolve(name, inventory_user=host.vars.ansible_user)
        found.setdefault((creds.user, creds.password.reveal()), []).append(name)
    if len(found) > 1:
        groups = " | ".join(",".join(v) for v in found.values())
        msg = f"the selected hosts use different WinRM credentials ({groups})"
        raise ConfigError(msg, hint="provision each credential set on its own: --hosts <those>")
    (user, password), _ = next(iter(found.items()))
    return {"NPULAB_WINRM_USER": user, "NPULAB_WINRM_PASSWORD": password}


def format_summary(recap: Mapping[str, Mapping[str, int]], hosts: Sequence[str]) -> str:
    """A per-host table; hosts that never ran (e.g. a failed pre-check) are listed as such."""
    width = max([len("host"), *(len(h) for h in hosts)])
    lines = [f"{'host':<{width}}  result        " + "  ".join(f"{k:>11}" for k in RECAP_KEYS)]
    for host in hosts:
        counts = recap.get(host)
        if counts is None:
            lines.append(f"{host:<{width}}  not run")
            continue
        if counts.get("unreachable"):
            verdict = "UNREACHABLE"
        elif counts.get("failures"):
            verdict = "FAILED"
        elif counts.get("changed"):
            verdict = "changed"
        else:
            verdict = "unchanged"
        cells = "  ".join(f"{int(counts.get(k, 0)):>11}" for k in RECAP_KEYS)
        lines.append(f"{host:<{width}}  {verdict:<12}  {cells}")
    return "\n".join(lines)


def _done(counts: Mapping[str, int] | None) -> bool:
    return counts is not None and not counts.get("failures") and not counts.get("unreachable")


def read_recap(path: Path) -> dict[str, dict[str, int]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    hosts = data.get("hosts") if isinstance(data, dict) else None
    return hosts if isinstance(hosts, dict) else {}


_RECAP_LINE = re.compile(r"(?P<host>[^\s|]+)\s*:\s*(?P<counts>ok=\d+(?:\s+\w+=\d+)*)\s*$")


def parse_recap_text(text: str) -> dict[str, dict[str, int]]:
    """Per-host counts from the last ``PLAY RECAP`` in ansible-playbook output or its log file.

    The fallback when the ``npulab_summary`` callback wrote nothing (another ansible.cfg, a
    crash): log lines carry a ``... | `` prefix, ``failed=`` is named ``failures`` like the
    callback's stats."""
    start = text.rfind("PLAY RECAP")
    if start < 0:
        return {}
    recap: dict[str, dict[str, int]] = {}
    for line in text[start:].splitlines()[1:]:
        found = _RECAP_LINE.search(line)
        if found is None:
            continue
        counts = dict(pair.split("=") for pair in found["counts"].split())
        recap[found["host"]] = {
            ("failures" if k == "failed" else k): int(v) for k, v in counts.items()
        }
    return recap


def run(
    options: Options,
    *,
    inventory_path: Path | str | None = None,
    dry_run: bool = False,
    env: Mapping[str, str] | None = None,
) -> int:
    """Provision; returns ansible-playbook's exit code after printing the per-host summary."""
    inv = inventory.load(inventory_path)
    p = plan(inv, options)
    mode = " (check mode)" if options.check else ""
    log.info(f"provision: {len(p.hosts)} host(s), forks {p.forks}{mode}")
    if dry_run:
        cmd.run(*p.argv, cwd=p.cwd, dry_run=True)
        return 0
    child_env = {**p.env, **(env or {}), **credential_env(inv, p.hosts)}
    with tempfile.TemporaryDirectory(prefix="npulab-provision-") as tmp:
        summary = Path(tmp) / "recap.json"
        child_env["NPULAB_PROVISION_SUMMARY"] = str(summary)
        ansible_log = Path(tmp) / "ansible.log"
        child_env.setdefault("ANSIBLE_LOG_PATH", str(ansible_log))
        done = cmd.run(*p.argv, cwd=p.cwd, env=child_env, capture=False, check=False)
        recap = read_recap(summary)
        if not recap and ansible_log.exists():
            recap = parse_recap_text(ansible_log.read_text(encoding="utf-8", errors="replace"))
    print(format_summary(recap, p.hosts))
    if done.returncode != 0:
        failed = [h for h in p.hosts if not _done(recap.get(h))]
        retry = ",".join(failed or p.hosts)
        msg = (
            f"ansible-playbook exited {done.returncode}; hosts not done: {', '.join(failed) or '-'}"
        )
        raise CommandError(
            msg,
            command=p.argv,
            returncode=done.returncode,
            hint=f"fix the reported task, then: invoke lab.provision --hosts {retry}",
        )
    return 0
