"""``invoke ci.e2e-pins``: the hosted Windows job's installer pins and its inventory.

For each installer of ``ci/windows-e2e.yaml`` (version, file and URL from the lab's pins in
``group_vars/all/provisioning.yml``) it downloads the file, hashes it, checks the hash against
the public checksum where one is published (a mismatch stops the job), prints it for the lab
owner and writes ``<out>/installers.json``. Then it writes the job's own inventory
``<out>/inventory/``: the runner on 127.0.0.1 with the lab's WinRM settings, and those hashes as
the pins of this run, so ``site.yml`` starts and the roles download and verify for real.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import requests
import yaml

from npulab import log, paths
from npulab.ci.e2e import E2E, Installer
from npulab.errors import ConfigError, TransportError, VerificationError
from npulab.schema import load_yaml

LAB_GROUP_VARS = Path("ansible/inventories/lab/group_vars/all")
CHUNK = 1 << 20
_HEX64 = re.compile(r"\b[0-9a-fA-F]{64}\b")
Source = Literal["public", "index", "recorded"]


@dataclass(frozen=True)
class Pin:
    key: str
    version: str
    file: str
    url: str
    sha256: str
    size: int
    #: public: matched the checksum in ci/windows-e2e.yaml; index: matched the one the public
    #: index lists; recorded: none is published, this is what the job downloaded.
    source: Source


def lab_installers(root: Path | None = None) -> dict[str, dict[str, Any]]:
    path = (root or paths.project_root()) / LAB_GROUP_VARS / "provisioning.yml"
    data = load_yaml(path) or {}
    installers = data.get("npulab_installers")
    if not isinstance(installers, dict):
        msg = f"{path}: npulab_installers: expected a mapping of installer pins"
        raise ConfigError(msg)
    return installers


def sha256_from_index(page: str, file: str) -> str | None:
    """The first sha256 after ``file``'s link in an index page (repo.anaconda.com's table has
    name, size, date, sha256 per row)."""
    start = page.find(f'"{file}"')
    if start < 0:
        return None
    row_end = page.find("<tr", start)
    found = _HEX64.search(page, start, row_end if row_end > 0 else len(page))
    return found.group(0).lower() if found else None


def _get(session: requests.Session, url: str, **kwargs: Any) -> requests.Response:
    try:
        response = session.get(url, timeout=60, **kwargs)
        response.raise_for_status()
    except requests.RequestException as exc:
        msg = f"download of {url} failed: {exc}"
        raise TransportError(msg, hint="invoke ci.e2e-pins again (network)") from exc
    return response


def download_sha256(session: requests.Session, url: str, dest: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with _get(session, url, stream=True) as response, dest.open("wb") as fh:
        for chunk in response.iter_content(CHUNK):
            h.update(chunk)
            fh.write(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def pin_one(session: requests.Session, installer: Installer, lab: dict[str, Any], tmp: Path) -> Pin:
    url = installer.url or str(lab.get("url") or "")
    if not url.startswith("https://"):
        msg = (
            f"installer {installer.key}: the lab pin's url {url!r} is not https and "
            "ci/windows-e2e.yaml gives none"
        )
        raise ConfigError(msg, hint=f"set url: under installers[{installer.key}]")
    file = str(lab.get("file") or url.rsplit("/", 1)[-1])
    sha, size = download_sha256(session, url, tmp / file)
    source: Source = "recorded"
    public = installer.sha256
    if installer.sha256_index:
        public = sha256_from_index(_get(session, installer.sha256_index).text, file)
        if public is None:
            msg = f"{installer.sha256_index} lists no sha256 for {file}"
            raise VerificationError(msg, hint="check the pin's file name in provisioning.yml")
        source = "index"
    elif public:
        source = "public"
    if public and public != sha:
        msg = f"{file} from {url}: sha256 {sha}, the published checksum is {public}"
        raise VerificationError(msg, hint="do not pin it: the download is not the release")
    return Pin(installer.key, str(lab.get("version", "")), file, url, sha, size, source)


def inventory_files(e2e: E2E, pins: list[Pin], root: Path | None = None) -> dict[str, str]:
    """Relative path -> text of the job's inventory (the lab's WinRM settings, these pins)."""
    base = root or paths.project_root()
    lab = load_yaml(base / LAB_GROUP_VARS / "provisioning.yml") or {}
    hosts = {
        "all": {
            "children": {
                "npu_lab": {
                    "hosts": {
                        e2e.host: {
                            "ansible_host": "127.0.0.1",
                            "ansible_port": 5985,
                            "npulab_chip": e2e.chip,
                        }
                    }
                }
            }
        }
    }
    provisioning: dict[str, Any] = {
        k: lab[k] for k in ("npulab_installer_dir",) if k in lab
    }  # the lab's own settings beside the pins (the layout's defaults otherwise)
    provisioning |= {
        "npulab_provision_installers": [p.key for p in pins],
        "npulab_installers": {
            p.key: {"version": p.version, "file": p.file, "url": p.url, "sha256": p.sha256}
            for p in pins
        },
    }
    head = "# Written by `invoke ci.e2e-pins` for the hosted Windows job: not a lab inventory.\n"
    return {
        "hosts.yml": head + yaml.safe_dump(hosts, sort_keys=False),
        "group_vars/all/winrm.yml": (base / LAB_GROUP_VARS / "winrm.yml").read_text("utf-8"),
        "group_vars/all/provisioning.yml": head + yaml.safe_dump(provisioning, sort_keys=False),
    }


def format_pins(pins: list[Pin]) -> str:
    width = max([len("installer"), *(len(p.key) for p in pins)])
    lines = [f"{'installer':<{width}}  {'sha256':<64}  {'checked':<9}  file"]
    for p in pins:
        checked = {"public": "public", "index": "index", "recorded": "none"}[p.source]
        lines.append(f"{p.key:<{width}}  {p.sha256}  {checked:<9}  {p.file} ({p.size} bytes)")
    return "\n".join(lines)


def run_pins(e2e: E2E, out: Path, *, session: requests.Session | None = None) -> list[Pin]:
    """Download, hash, check, print; write ``installers.json`` and the inventory under ``out``."""
    lab = lab_installers()
    session = session or requests.Session()
    pins = []
    with tempfile.TemporaryDirectory(prefix="npulab-e2e-pins-") as tmp:
        for installer in e2e.installers:
            if installer.key not in lab:
                known = ", ".join(lab)
                msg = f"installer {installer.key}: no such lab pin (known: {known})"
                raise ConfigError(msg)
            pins.append(pin_one(session, installer, lab[installer.key], Path(tmp)))
    print(format_pins(pins))
    unpublished = [p.key for p in pins if p.source == "recorded"]
    if unpublished:
        log.warning(
            f"no published checksum for {', '.join(unpublished)}: the hash above is what this "
            "run downloaded; a lab owner pins it only after checking the file"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "installers.json").write_text(
        json.dumps([asdict(p) for p in pins], indent=2) + "\n", encoding="utf-8"
    )
    for rel, text in inventory_files(e2e, pins).items():
        path = out / "inventory" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    log.info(f"inventory for {e2e.host}: {out / 'inventory' / 'hosts.yml'}")
    return pins
