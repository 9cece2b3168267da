"""Pinned model download from the Hugging Face hub, verified before anything becomes visible.

``fetch`` downloads only the files the recipe lists, at the recipe's pinned revision, with
huggingface_hub's own HTTP code (``get_hf_file_metadata`` + ``http_get``: progress bar, Range
resume). Each file lands in ``<dir>/.npulab/partial/<path>.incomplete`` first; only after its
size and sha256 match the recipe is it renamed to ``<dir>/<path>``. A file the recipe pins only
by revision (the hub publishes no sha256 for small git files) is checked instead against the git
blob id the hub lists for it at the pinned commit, computed locally; its sha256 then goes into
the model lock (:mod:`npulab.model.lock`), so every later fetch checks it by sha256.

A short partial stays for the next run to resume; a complete file with the wrong hash (or blob
id) is moved to ``.npulab/rejected/`` (kept, never resumed) and the error names the file and both
ids. A file already in place is trusted when its size and mtime match the sidecar record
``.npulab/verified.json``; ``verify=True`` hashes everything again.

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
from npulab.hashing import git_blob_id, load_records, record_for, save_records, sha256_file
from npulab.model import lock as model_lock
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


def require_revision(model: Model) -> str:
    """The pinned revision, or a ConfigError saying how to pin it."""
    if model.revision is not None:
        return model.revision
    msg = f"model {model.repo_id} has no pinned revision; model.fetch downloads only pinned files"
    raise ConfigError(
        msg,
        hint="set model.revision to the full hub commit in the recipe (or run `invoke model.pin` "
        "on a machine that reaches the hub), review and commit the change",
    )


def require_pinned(model: Model) -> str:
    """The revision when every file also has its sha256 and size (from the recipe or the model
    lock), or a ConfigError saying how to get them."""
    revision = require_revision(model)
    missing = [f.path for f in model.files if f.sha256 is None or f.size is None]
    if not missing:
        return revision
    msg = (
        f"model {model.repo_id}@{revision}: no sha256 recorded yet for {', '.join(missing)} "
        "(pinned by revision only: the first fetch verifies them by git blob id and locks them)"
    )
    raise ConfigError(msg, hint="run `invoke model.fetch`, then commit the model lock it writes")


def model_dir(model: Model, dest: Path | None = None) -> Path:
    """``dest`` or the hub cache snapshot directory of the pinned revision."""
    if dest is not None:
        return dest
    revision = require_revision(model)
    return hub_cache() / f"models--{model.repo_id.replace('/', '--')}" / "snapshots" / revision


@dataclass(frozen=True, kw_only=True)
class Step:
    file: ModelFile
    action: Action
    target: Path
    partial: Path
    #: Bytes already in the partial file (``resume``).
    have: int = 0

    @property
    def by_blob_id(self) -> bool:
        """No sha256 pinned or locked: verified against the hub's git blob id at the revision."""
        return self.file.sha256 is None

    def describe(self) -> str:
        size = f"{self.file.size} bytes" if self.file.size is not None else "size from the hub"
        check = "git blob id check" if self.by_blob_id else "full sha256 check"
        what = {
            "trusted": "present, size+mtime match the verified record",
            "hash": f"present, {check}",
            "download": f"download {size}" + (", git blob id check" if self.by_blob_id else ""),
            "resume": f"resume at byte {self.have} of {size}",
            "missing": "missing (offline)",
        }[self.action]
        return f"{self.file.path}: {what}"


def plan(model: Model, directory: Path, *, verify: bool, is_offline: bool) -> list[Step]:
    """What fetch will do per file (stat only: no network, no hashing)."""
    require_revision(model)
    records = load_records(directory / STATE_DIR / "verified.json")
    steps = []
    for f in model.files:
        target = directory / f.path
        partial = directory / STATE_DIR / "partial" / f"{f.path}.incomplete"
        record = records.get(f.path)
        if target.is_file():
            trusted = (
                not verify
                and f.sha256 is not None
                and record is not None
                and record.matches(target, f.sha256)
            )
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
    model: Model,
    *,
    dest: Path | None = None,
    verify: bool = False,
    dry_run: bool = False,
    lock: Path | None = None,
) -> Path:
    """Make ``dest`` (default: the hub cache snapshot) hold every recipe file, verified.

    ``lock``: the model lock file (:func:`npulab.model.lock.lock_path`); files the recipe pins
    only by revision are checked against it, or, when it has no entry yet, against the hub's git
    blob id and then recorded in it."""
    locked_model = model_lock.apply(model, model_lock.load(lock)) if lock is not None else model
    directory = model_dir(locked_model, dest)
    is_offline = offline()
    steps = plan(locked_model, directory, verify=verify, is_offline=is_offline)
    where = "offline" if is_offline else endpoint()
    log.info(f"model {model.repo_id}@{model.revision} -> {directory} ({where})")
    for step in steps:
        log.info(f"  {'(dry run) ' if dry_run else ''}{step.describe()}")
    if dry_run:
        return directory
    missing = [s.file.path for s in steps if s.action == "missing"]
    if missing:
        msg = f"HF_HUB_OFFLINE is set and {directory} lacks: {', '.join(missing)}"
        raise SourceError(
            msg,
            hint="run `invoke model.fetch` without HF_HUB_OFFLINE where the hub (or HF_ENDPOINT) "
            f"is reachable, or copy the files into {directory} and re-run",
        )
    unlocked = [s.file.path for s in steps if s.by_blob_id]
    if unlocked and is_offline:
        msg = (
            f"HF_HUB_OFFLINE is set and no sha256 is pinned or locked for {', '.join(unlocked)}: "
            "they can only be checked against the hub's git blob ids"
        )
        raise SourceError(msg, hint="run `invoke model.fetch` once where the hub is reachable")
    if any(s.action != "trusted" for s in steps):
        with locked(directory, "fetch"):
            # Plan again under the lock: another fetch may have finished meanwhile.
            steps = plan(locked_model, directory, verify=verify, is_offline=is_offline)
            learned = _execute(locked_model, directory, steps)
        if learned and lock is not None:
            _record(lock, model, learned)
    log.info(f"model verified: {len(steps)} files in {directory}")
    return directory


@dataclass(frozen=True)
class Expected:
    """What a file must be: its size, and its sha256 or (files without one) its git blob id."""

    size: int | None
    sha256: str | None
    blob_id: str | None = None


def _expected(model: Model, steps: list[Step]) -> dict[str, Expected]:
    """Per file: the recipe's (or lock's) pin, else what the hub lists at the pinned revision."""
    wanted = [s.file.path for s in steps if s.action != "trusted" and s.by_blob_id]
    listed = _listing(model, wanted) if wanted else {}
    out = {}
    for step in steps:
        f = step.file
        out[f.path] = listed[f.path] if step.by_blob_id else Expected(size=f.size, sha256=f.sha256)
    return out


def _listing(model: Model, wanted: list[str]) -> dict[str, Expected]:
    """The hub's own listing of ``wanted`` at the pinned commit: LFS files by their sha256, the
    others by git blob id (one paths-info request)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    from requests import RequestException

    try:
        entries = HfApi(endpoint=endpoint()).get_paths_info(
            model.repo_id, wanted, revision=model.revision
        )
    except (HfHubHTTPError, RequestException) as exc:
        msg = f"cannot list {', '.join(wanted)} of {model.repo_id}@{model.revision}: {exc}"
        raise SourceError(msg, hint=_hint_for(exc)) from None
    found: dict[str, Expected] = {}
    for entry in entries:
        lfs = getattr(entry, "lfs", None)
        blob_id = getattr(entry, "blob_id", None)
        if lfs is not None:
            found[entry.path] = Expected(size=lfs.size, sha256=lfs.sha256)
        elif blob_id:
            found[entry.path] = Expected(size=getattr(entry, "size", None), sha256=None,
                                         blob_id=blob_id)  # fmt: skip
    absent = [p for p in wanted if p not in found]
    if absent:
        msg = f"{model.repo_id}@{model.revision} lists no file {', '.join(absent)}"
        raise SourceError(msg, hint="fix model.files in the recipe (names at that revision)")
    return found


def _execute(model: Model, directory: Path, steps: list[Step]) -> dict[str, model_lock.Entry]:
    """Carry out the plan; returns lock entries of the files verified by git blob id."""
    records_path = directory / STATE_DIR / "verified.json"
    records = load_records(records_path)
    expected = _expected(model, steps)
    learned: dict[str, model_lock.Entry] = {}
    for step in steps:
        if step.action == "trusted":
            continue
        want = expected[step.file.path]
        if step.action == "hash":
            sha256 = _verify_in_place(model, step, directory, want)
        else:
            sha256 = _download(model, step, want)
        records[step.file.path] = record_for(step.target, sha256)
        save_records(records_path, records)
        if want.blob_id is not None:
            size = step.target.stat().st_size
            learned[step.file.path] = model_lock.Entry(sha256, size, want.blob_id)
    return learned


def _record(path: Path, model: Model, learned: dict[str, model_lock.Entry]) -> None:
    revision = require_revision(model)
    old = model_lock.load(path)
    files = dict(old.files) if old is not None and old.applies_to(model) else {}
    files.update(learned)
    model_lock.save(path, model_lock.ModelLock(model.repo_id, revision, files))
    log.info(
        f"model lock {path}: sha256 of {', '.join(sorted(learned))} recorded (verified by git "
        "blob id); commit it so every later fetch and smoke run checks them by sha256"
    )


def _check(path: str, want: Expected, file: Path) -> tuple[str, str]:
    """(sha256, '') when ``file`` is what ``want`` says, else (sha256, what is wrong)."""
    size = file.stat().st_size
    sha256 = sha256_file(file)
    if want.size is not None and size != want.size:
        return sha256, f"{path}: size {size}, expected {want.size}"
    if want.blob_id is not None:
        actual = git_blob_id(file)
        if actual != want.blob_id:
            return sha256, (
                f"{path}: git blob id mismatch: the hub lists {want.blob_id}, the file is "
                f"{actual} (sha256 {sha256})"
            )
    elif sha256 != want.sha256:
        return sha256, f"{path}: sha256 mismatch: expected {want.sha256}, got {sha256}"
    return sha256, ""


def _mismatch(problem: str, where: Path) -> VerificationError:
    return VerificationError(
        f"{problem} ({where})",
        hint="re-run `invoke model.fetch` (a bad download is set aside, not resumed); if it "
        "repeats, the hub content changed: `invoke model.pin` and review",
    )


def _set_aside(path: Path, directory: Path, name: str, actual: str) -> Path:
    rejected = directory / STATE_DIR / "rejected" / f"{name}.{actual[:16]}"
    rejected.parent.mkdir(parents=True, exist_ok=True)
    path.replace(rejected)
    return rejected


def _verify_in_place(model: Model, step: Step, directory: Path, want: Expected) -> str:
    log.info(f"hashing {step.target}")
    sha256, problem = _check(step.file.path, want, step.target)
    if not problem:
        return sha256
    # Never delete: a file that is not the pinned one may be someone else's; set it aside.
    aside = _set_aside(step.target, directory, step.file.path, sha256)
    err = _mismatch(problem, aside)
    if offline():
        raise err
    log.warning(f"{err.message}; moved aside, downloading the pinned file")
    return _download(model, step, want)


def _download(model: Model, step: Step, want: Expected) -> str:
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
    if meta.size is not None and want.size is not None and meta.size != want.size:
        msg = f"{f.path}: hub size {meta.size} differs from the pinned size {want.size}"
        raise VerificationError(msg, hint="`invoke model.pin` to re-pin, then review the diff")
    size = want.size if want.size is not None else meta.size
    headers = build_hf_headers()
    if meta.location != url:  # an LFS blob on the CDN: the hub token stays with the hub
        headers.pop("authorization", None)
    last: Exception | None = None
    for _attempt in range(ATTEMPTS):
        have = step.partial.stat().st_size if step.partial.exists() else 0
        if size is not None and have > size:
            os.truncate(step.partial, 0)  # longer than the file: cannot be a prefix of it
            have = 0
        try:
            with open(step.partial, "ab") as out:
                http_get(
                    meta.location,
                    out,
                    resume_size=have,
                    headers=headers,
                    expected_size=size,
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
        msg = f"{f.path}: download failed after {ATTEMPTS} attempts at {got}/{size} bytes: {last}"
        raise SourceError(
            msg,
            hint=f"re-run `invoke model.fetch`: it resumes from the partial file {step.partial}",
        )
    sha256, problem = _check(f.path, want, step.partial)
    if problem:
        directory = step.partial.parents[
            len(Path(f.path).parts) + 1
        ]  # <dir>/.npulab/partial/<path>
        raise _mismatch(problem, _set_aside(step.partial, directory, f.path, sha256))
    step.target.parent.mkdir(parents=True, exist_ok=True)
    step.partial.replace(step.target)
    return sha256


def _hint_for(exc: Exception) -> str:
    name = type(exc).__name__
    if name == "RevisionNotFoundError":
        return "the pinned revision is gone from the hub: `invoke model.pin` to re-pin and review"
    if name in {"RepositoryNotFoundError", "GatedRepoError"}:
        return "check the repo id and access (HF_TOKEN) and HF_ENDPOINT"
    return "check the network and HF_ENDPOINT, then re-run `invoke model.fetch` (it resumes)"
