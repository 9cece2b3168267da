"""Drift checks: do the pins still hold upstream?

* upstream: the recipe's tag still points at the pinned commit (``git ls-remote``, peeled).
* hub: the pinned model revision still exists and every file keeps its sha256 and size (from the
  recipe or the model lock); for the published checkpoint, the live listing still is the one the
  hub test double serves (:mod:`npulab.model.published`).
* installers: every pinned installer URL in the Ansible vars still answers (HEAD), with the
  recorded size when one is given; a pin below its ``min_version`` (the actions runner: GitHub's
  enforced minimum) is flagged without asking anyone.
* actions: every ``uses: owner/repo@<sha> # <tag>`` in the workflows: the tag still resolves to
  that sha.

Each check returns :class:`Drift` records with the exact difference; :func:`run_drift` raises
one DriftError listing all of them. A remote that cannot be reached is a TransportError, not a
drift (the pins may be fine).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from npulab import log, paths
from npulab.ci import workflow
from npulab.errors import CommandError, ConfigError, DriftError, SourceError, TransportError
from npulab.recipe import Model, Recipe, find_recipe, load_recipe
from npulab.schema import load_yaml
from npulab.source import gitutil

CHECKS = ("upstream", "hub", "installers", "actions")


@dataclass(frozen=True)
class Drift:
    check: str
    subject: str
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"[{self.check}] {self.subject}: pinned {self.expected}, now {self.actual}"


@dataclass(frozen=True)
class DriftOptions:
    #: Where to ask for the upstream tag (a URL or local mirror); default the recipe's repo_url.
    upstream_url: str | None = None
    #: Base URL of action repositories: ``{actions_url}/{owner}/{repo}``.
    actions_url: str = "https://github.com"
    skip: frozenset[str] = field(default_factory=frozenset)
    #: Ansible tree to search for pinned installers; default ``ansible/`` of the project.
    ansible_dir: Path | None = None
    timeout: float = 60.0


def ls_remote_tag(url: str, tag: str, *, timeout: float = 60.0) -> str | None:
    """The commit ``tag`` points at on ``url`` (annotated tags peeled), or None if absent."""
    try:
        done = gitutil.git(
            "ls-remote", "--tags", url, f"refs/tags/{tag}", f"refs/tags/{tag}^{{}}",
            timeout=timeout,
        )  # fmt: skip
    except CommandError as exc:
        msg = f"cannot list tags of {url}: {(exc.stderr or exc.stdout).strip()[-300:]}"
        raise TransportError(msg, hint="check the URL and network, or pass a mirror") from None
    refs: dict[str, str] = {}
    for line in done.stdout.splitlines():
        sha, _, ref = line.partition("\t")
        if ref:
            refs[ref.strip()] = sha.strip()
    return refs.get(f"refs/tags/{tag}^{{}}") or refs.get(f"refs/tags/{tag}")


def check_upstream(recipe: Recipe, url: str | None = None, *, timeout: float = 60.0) -> list[Drift]:
    up = recipe.upstream
    where = url or up.repo_url
    found = ls_remote_tag(where, up.tag, timeout=timeout)
    subject = f"tag {up.tag} of {where}"
    if found is None:
        return [Drift("upstream", subject, up.commit, "the tag is gone")]
    if found != up.commit:
        return [Drift("upstream", subject, up.commit, found)]
    return []


def check_hub(model: Model) -> list[Drift]:
    """Pinned revision and per-file sha256/size against ``HF_ENDPOINT`` (or the hub)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from requests import RequestException

    from npulab.model.fetch import endpoint
    from npulab.model.pin import read_pins

    subject = f"{model.repo_id}@{model.revision}"
    if model.revision is None:
        why = "not pinned yet (set model.revision, or `invoke model.pin` where the hub answers)"
        return [Drift("hub", model.repo_id, "a pinned revision", why)]
    try:
        info = HfApi(endpoint=endpoint()).model_info(
            model.repo_id, revision=model.revision, files_metadata=True
        )
    except RevisionNotFoundError:
        return [Drift("hub", subject, "the revision exists", "revision not found")]
    except RepositoryNotFoundError:
        return [Drift("hub", model.repo_id, "the repository exists", "repository not found")]
    except (HfHubHTTPError, RequestException) as exc:
        msg = f"cannot read {subject} from {endpoint()}: {exc}"
        raise TransportError(msg, hint="check HF_ENDPOINT, HF_TOKEN and the network") from None
    try:
        commit, pins = read_pins(model, model.revision)
    except SourceError as exc:
        return [Drift("hub", subject, "every recipe file present", exc.message)]
    except EntryNotFoundError as exc:  # pragma: no cover - read_pins checks siblings first
        return [Drift("hub", subject, "every recipe file present", str(exc))]
    drifts = check_listing(model, info.siblings or [])
    if commit != model.revision:
        drifts.append(Drift("hub", f"{model.repo_id} revision", model.revision, commit))
    for f in model.files:
        pin = pins[f.path]
        if f.sha256 is None:
            continue  # not locked yet: model.fetch checks it by git blob id
        if (pin.sha256, pin.size) != (f.sha256, f.size):
            drifts.append(
                Drift(
                    "hub",
                    f"{subject} {f.path}",
                    f"sha256 {f.sha256} size {f.size}",
                    f"sha256 {pin.sha256} size {pin.size}",
                )
            )
    return drifts


def check_listing(model: Model, siblings: list[Any]) -> list[Drift]:
    """For the published checkpoint at its pinned commit: the live listing (names, sizes, LFS
    sha256) against the one the hub test double serves. Other models: nothing to compare."""
    from npulab.model import published

    if (model.repo_id, model.revision) != (published.REPO_ID, published.REVISION):
        return []
    subject = f"{model.repo_id}@{model.revision} listing (npulab/model/published.py)"
    live = {s.rfilename: s for s in siblings}
    known = {f.path: f for f in published.FILES}
    drifts = []
    if set(live) != set(known):
        drifts.append(Drift("hub", f"{subject} names", ", ".join(sorted(known)),
                            ", ".join(sorted(live))))  # fmt: skip
    for path in sorted(set(live) & set(known)):
        want, have = known[path], live[path]
        lfs = getattr(have, "lfs", None)
        have_sha = lfs.sha256 if lfs is not None else None
        have_size = getattr(have, "size", None)
        if have_sha != want.lfs_sha256:
            drifts.append(
                Drift("hub", f"{subject} {path}", f"lfs {want.lfs_sha256}", f"lfs {have_sha}")
            )
        if want.size is not None and have_size != want.size:
            drifts.append(
                Drift("hub", f"{subject} {path}", f"size {want.size}", f"size {have_size}")
            )
        elif want.size is None and have_size is not None:
            log.info(f"drift: {path} is {have_size} bytes live; published.py states no size")
    return drifts


# -- installers --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Installer:
    source: str
    key: str
    url: str
    sha256: str | None
    size: int | None
    version: str | None = None
    #: The oldest version the far end still accepts (GitHub's enforced runner minimum).
    min_version: str | None = None


def _walk(data: Any, key: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(data, dict):
        if isinstance(data.get("url"), str) and any(
            k in data for k in ("sha256", "checksum", "size")
        ):
            yield key, data
        for k, v in data.items():
            yield from _walk(v, f"{key}.{k}" if key else str(k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _walk(v, f"{key}[{i}]")


def find_installers(ansible_dir: Path) -> list[Installer]:
    """Mappings with ``url`` plus ``sha256``/``checksum``/``size`` in group_vars and role defaults.

    Read defensively: any YAML under ``group_vars/`` or ``roles/*/defaults/``; Jinja URLs
    (``{{ ... }}``) and lab file shares (not http) are skipped."""
    found: list[Installer] = []
    files = [
        *ansible_dir.glob("**/group_vars/**/*.yml"),
        *ansible_dir.glob("**/group_vars/*.yml"),
        *ansible_dir.glob("roles/*/defaults/*.yml"),
    ]
    for path in sorted(set(files)):
        try:
            data = load_yaml(path)
        except ConfigError as exc:  # another issue's file: say so and go on
            log.warning(f"drift: skipping {path}: {exc}")
            continue
        for key, item in _walk(data, ""):
            url = item["url"]
            if "{{" in url or not url.startswith(("http://", "https://")):
                continue
            sha = item.get("sha256") or item.get("checksum")
            size = item.get("size")
            found.append(
                Installer(
                    str(path),
                    key,
                    url,
                    str(sha) if sha else None,
                    size if isinstance(size, int) else None,
                    str(item["version"]) if item.get("version") is not None else None,
                    str(item["min_version"]) if item.get("min_version") is not None else None,
                )
            )
    return found


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def check_minimums(installers: list[Installer]) -> list[Drift]:
    """A pin below its ``min_version`` (offline): GitHub refuses to register a runner older than
    its enforced minimum, so such a pin cannot provision a new machine."""
    return [
        Drift(
            "installers",
            f"{item.key} ({item.source})",
            f"version {item.version}",
            f"below the enforced minimum {item.min_version}: re-pin a current release",
        )
        for item in installers
        if item.version and item.min_version and _version(item.version) < _version(item.min_version)
    ]


def check_installers(installers: list[Installer], *, timeout: float = 60.0) -> list[Drift]:
    import requests

    drifts = []
    for item in installers:
        subject = f"{item.key} ({item.source})"
        try:
            response = requests.head(item.url, allow_redirects=True, timeout=timeout)
        except requests.RequestException as exc:
            msg = f"cannot reach {item.url}: {exc}"
            raise TransportError(msg, hint="check the network or the lab file share") from None
        if response.status_code in (404, 410):
            drifts.append(Drift("installers", subject, item.url, f"HTTP {response.status_code}"))
            continue
        length = response.headers.get("Content-Length")
        if item.size is not None and length is not None and int(length) != item.size:
            drifts.append(Drift("installers", subject, f"size {item.size}", f"size {length}"))
    return drifts


def check_actions(
    workflow_files: list[Path], base_url: str, *, timeout: float = 60.0
) -> list[Drift]:
    drifts = []
    seen: set[tuple[str, str, str]] = set()
    for path in workflow_files:
        for action in workflow.pinned_actions(path.read_text(encoding="utf-8")):
            key = (action.repo, action.sha, action.tag)
            if key in seen:
                continue
            seen.add(key)
            repo = "/".join(action.repo.split("/")[:2])
            subject = f"{action.repo}@{action.tag} ({path.name})"
            if not action.tag:
                drifts.append(Drift("actions", subject, "a '# vX.Y.Z' comment", "none"))
                continue
            found = ls_remote_tag(f"{base_url.rstrip('/')}/{repo}", action.tag, timeout=timeout)
            if found is None:
                drifts.append(Drift("actions", subject, action.sha, "the tag is gone"))
            elif found != action.sha:
                drifts.append(Drift("actions", subject, action.sha, found))
    return drifts


def run_drift(recipe_name: str, options: DriftOptions | None = None) -> list[Drift]:
    """Run every check not skipped; raise DriftError listing all differences."""
    options = options or DriftOptions()
    unknown = options.skip - set(CHECKS)
    if unknown:
        msg = f"--skip: unknown check(s) {sorted(unknown)} (known: {', '.join(CHECKS)})"
        raise ConfigError(msg)
    recipe = load_recipe(find_recipe(recipe_name))
    drifts: list[Drift] = []
    if "upstream" not in options.skip:
        drifts += check_upstream(recipe, options.upstream_url, timeout=options.timeout)
    if "hub" not in options.skip:
        from npulab.model.lock import locked_model

        drifts += check_hub(locked_model(recipe))
    if "installers" not in options.skip:
        ansible = options.ansible_dir or paths.project_root() / "ansible"
        installers = find_installers(ansible) if ansible.is_dir() else []
        log.info(f"drift: {len(installers)} pinned installer URL(s) under {ansible}")
        drifts += check_minimums(installers)
        drifts += check_installers(installers, timeout=options.timeout)
    if "actions" not in options.skip:
        from npulab.ci.lint import workflow_files

        drifts += check_actions(workflow_files(), options.actions_url, timeout=options.timeout)
    if drifts:
        text = "\n".join(f"  {d}" for d in drifts)
        msg = f"{len(drifts)} pin(s) drifted:\n{text}"
        raise DriftError(msg, hint="re-pin on purpose (recipe, model.pin, group_vars, workflow)")
    log.info(f"drift: all pins hold ({', '.join(c for c in CHECKS if c not in options.skip)})")
    return drifts
