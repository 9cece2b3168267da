"""Pinned model download from the Hugging Face hub, verified before anything becomes visible.

``fetch`` downloads only the files the recipe lists, at the recipe's pinned revision, with
huggingface_hub's own HTTP code (``get_hf_file_metadata`` + ``http_get``: progress bar, Range
resume). Each file lands in ``<dir>/.npulab/partial/<path>.incomplete`` first; only after its
size and sha256 match the recipe is it renamed to ``<dir>/<path>``. A short partial stays for the
next run to resume; a complete file with the wrong hash is moved to ``.npulab/rejected/`` (kept,
never resumed) and the error names the file and both hashes. A file already in place is trusted
when its size and mtime match the sidecar record ``.npulab/verified.json``; ``verify=True``
hashes everything again.

The default directory is the hub cache's snapshot of the pinned revision
(``$HF_HUB_CACHE`` or ``$HF_HOME/hub``, read when called); ``HF_ENDPOINT`` and
``HF_HUB_OFFLINE`` are read when called too.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from npulab import log
from npulab.errors import ConfigError, SourceError, VerificationError
from npulab.hashing import load_records, record_for, save_records, sha256_file
from npulab.recipe import Model, ModelFile
from npulab.source.dirlock import locked

Action = Literal["trusted", "hash", "download", "resume", "missing"]
STATE_DIR = ".npulab"
#: Download attempts per file within one fetch (each resumes where the last one stopped).
ATTEMPTS = 3


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def offline() -> bool:
    return _truthy(os.environ.get("HF_HUB_OFFLINE"))


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or str(Path.home() / ".cache" / "huggingface")
    return Path(home) / "hub"


def require_pinned(model: Model) -> str:
    """The pinned revision, or a ConfigError saying how to pin."""
    if model.pinned and model.revision is not None:
        return model.revision
    missing = [] if model.revision else ["revision"]
    missing += [f.path for f in model.files if f.sha256 is None or f.size is None]
    msg = (
        f"model {model.repo_id} is not pinned (no revision/sha256/size for: "
        f"{', '.join(missing)}); model.fetch downloads only pinned, verifiable files"
    )
    raise ConfigError(
        msg,
        hint="run `invoke model.pin` on a machine that reaches the hub, review and commit the "
        "recipe change",
    )


def model_dir(model: Model, dest: Path | None = None) -> Path:
    """``dest`` or the hub cache snapshot directory of the pinned revision."""
    if dest is not None:
        return dest
    revision = require_pinned(model)
    return hub_cache() / f"models--{model.repo_id.replace('/', '--')}" / "snapshots" / revision


@dataclass(frozen=True, kw_only=True)
class Step:
    file: ModelFile
    action: Action
    target: Path
    partial: Path
    #: Bytes already in the partial file (``resume``).
    have: int = 0

    def describe(self) -> str:
        what = {
            "trusted": "present, size+mtime match the verified record",
            "hash": "present, full sha256 check",
            "download": f"download {self.file.size} bytes",
            "resume": f"resume at byte {self.have} of {self.file.size}",
            "missing": "missing (offline)",
        }[self.action]
        return f"{self.file.path}: {what}"


def plan(model: Model, directory: Path, *, verify: bool, is_offline: bool) -> list[Step]:
    """What fetch will do per file (stat only: no network, no hashing)."""
    require_pinned(model)
    records = load_records(directory / STATE_DIR / "verified.json")
    steps = []
    for f in model.files:
        target = directory / f.path
        partial = directory / STATE_DIR / "partial" / f"{f.path}.incomplete"
        record = records.get(f.path)
        if target.is_file():
            trusted = not verify and record is not None and record.matches(target, str(f.sha256))
            steps.append(
                Step(
                    file=f, action="trusted" if trusted else "hash", target=target, partial=partial
                )
            )
        elif is_offline:
            steps.append(Step(file=f, action="missing", target=target, partial=partial))
        elif partial.is_file():
            steps.append(
                Step(
                    file=f,
                    action="resume",
                    target=target,
                    partial=partial,
                    have=partial.stat().st_size,
                )
            )
        else:
            steps.append(Step(file=f, action="download", target=target, partial=partial))
    return steps


def fetch(
    model: Model, *, dest: Path | None = None, verify: bool = False, dry_run: bool = False
) -> Path:
    """Make ``dest`` (default: the hub cache snapshot) hold every recipe file, verified."""
    directory = model_dir(model, dest)
    is_offline = offline()
    steps = plan(model, directory, verify=verify, is_offline=is_offline)
    where = "offline" if is_offline else endpoint()
    log.info(f"model {model.repo_id}@{model.revision} -> {directory} ({where})")
    for step in steps:
        log.info(f"  {'(dry run) ' if dry_run else ''}{step.describe()}")
    if dry_run:
        return directory
    missing = [s for s in steps if s.action == "missing"]
    if missing:
        names = ", ".join(s.file.path for s in missing)
        msg = f"HF_HUB_OFFLINE is set and {directory} lacks: {names}"
        raise SourceError(
            msg,
            hint="run `invoke model.fetch` without HF_HUB_OFFLINE where the hub (or HF_ENDPOINT) "
            f"is reachable, or copy the files into {directory} and re-run",
        )
    if any(s.action != "trusted" for s in steps):
        with locked(directory, "fetch"):
            # Plan again under the lock: another fetch may have finished meanwhile.
            steps = plan(model, directory, verify=verify, is_offline=is_offline)
            _execute(model, directory, steps)
    log.info(f"model verified: {len(steps)} files in {directory}")
    return directory


def _execute(model: Model, directory: Path, steps: list[Step]) -> None:
    records_path = directory / STATE_DIR / "verified.json"
    records = load_records(records_path)
    for step in steps:
        if step.action == "trusted":
            continue
        if step.action == "hash":
            _verify_in_place(model, step, directory)
        else:
            _download(model, step)
        records[step.file.path] = record_for(step.target, str(step.file.sha256))
        save_records(records_path, records)


def _mismatch(path: str, expected: str, actual: str, where: Path) -> VerificationError:
    msg = f"{path}: sha256 mismatch: expected {expected}, got {actual} ({where})"
    return VerificationError(
        msg,
        hint="re-run `invoke model.fetch` (a bad download is set aside, not resumed); if it "
        "repeats, the hub content changed: `invoke model.pin` and review",
    )


def _set_aside(path: Path, directory: Path, name: str, actual: str) -> Path:
    rejected = directory / STATE_DIR / "rejected" / f"{name}.{actual[:16]}"
    rejected.parent.mkdir(parents=True, exist_ok=True)
    path.replace(rejected)
    return rejected


def _verify_in_place(model: Model, step: Step, directory: Path) -> None:
    expected = str(step.file.sha256)
    log.info(f"hashing {step.target}")
    size = step.target.stat().st_size
    actual = sha256_file(step.target) if size == step.file.size else f"(size {size})"
    if actual == expected:
        return
    # Never delete: a file that is not the pinned one may be someone else's; set it aside.
    aside = _set_aside(step.target, directory, step.file.path, actual.strip("()"))
    err = _mismatch(step.file.path, expected, actual, aside)
    if offline():
        raise err
    log.warning(f"{err.message}; moved aside, downloading the pinned file")
    _download(model, step)


def _download(model: Model, step: Step) -> None:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]
    from requests import RequestException

    f = step.file
    url = hf_hub_url(model.repo_id, f.path, revision=model.revision, endpoint=endpoint())
    step.partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        meta = get_hf_file_metadata(url)
    except (HfHubHTTPError, RequestException) as exc:
        msg = f"{f.path}: cannot resolve {url}: {exc}"
        raise SourceError(msg, hint=_hint_for(exc)) from None
    if meta.commit_hash and meta.commit_hash != model.revision:
        msg = f"{f.path}: hub answered commit {meta.commit_hash} for pinned {model.revision}"
        raise VerificationError(msg, hint="check HF_ENDPOINT; `invoke model.pin` to re-pin")
    if meta.size is not None and meta.size != f.size:
        msg = f"{f.path}: hub size {meta.size} differs from the pinned size {f.size}"
        raise VerificationError(msg, hint="`invoke model.pin` to re-pin, then review the diff")
    headers = build_hf_headers()
    if meta.location != url:  # an LFS blob on the CDN: the hub token stays with the hub
        headers.pop("authorization", None)
    last: Exception | None = None
    for _attempt in range(ATTEMPTS):
        have = step.partial.stat().st_size if step.partial.exists() else 0
        if have > int(f.size or 0):
            os.truncate(step.partial, 0)  # longer than the file: cannot be a prefix of it
            have = 0
        try:
            with open(step.partial, "ab") as out:
                http_get(
                    meta.location,
                    out,
                    resume_size=have,
                    headers=headers,
                    expected_size=f.size,
                    displayed_filename=f.path,
                )
            last = None
            break
        except (RequestException, OSError) as exc:
            last = exc
            log.warning(
                f"{f.path}: download interrupted at "
                f"{step.partial.stat().st_size} bytes ({exc}); resuming"
            )
    if last is not None:
        got = step.partial.stat().st_size
        msg = f"{f.path}: download failed after {ATTEMPTS} attempts at {got}/{f.size} bytes: {last}"
        raise SourceError(
            msg,
            hint=f"re-run `invoke model.fetch`: it resumes from the partial file {step.partial}",
        )
    actual = sha256_file(step.partial)
    if actual != f.sha256:
        directory = step.partial.parents[
            len(Path(f.path).parts) + 1
        ]  # <dir>/.npulab/partial/<path>
        aside = _set_aside(step.partial, directory, f.path, actual)
        raise _mismatch(f.path, str(f.sha256), actual, aside)
    step.target.parent.mkdir(parents=True, exist_ok=True)
    step.partial.replace(step.target)


def _hint_for(exc: Exception) -> str:
    name = type(exc).__name__
    if name == "RevisionNotFoundError":
        return "the pinned revision is gone from the hub: `invoke model.pin` to re-pin and review"
    if name in {"RepositoryNotFoundError", "GatedRepoError"}:
        return "check the repo id and access (HF_TOKEN) and HF_ENDPOINT"
    return "check the network and HF_ENDPOINT, then re-run `invoke model.fetch` (it resumes)"
