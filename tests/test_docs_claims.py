"""What the docs name exists in the code: environment variables, task options, exit codes.

Read from the shipped text, not from a copy: a doc that names an option a task does not take, a
variable nothing reads or an exit code an error class does not have fails here, and so does a
variable npulab reads that no doc explains."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from npulab import errors

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "recipes" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE = [
    *ROOT.glob("npulab/**/*.py"),
    *ROOT.glob("invoke_tasks/*.py"),
    ROOT / "tasks.py",
    ROOT / "noxfile.py",
]
#: Where else a documented variable may be defined or read (rendered scripts, roles, tests).
ELSEWHERE = [
    *CODE,
    *ROOT.glob("npulab/templates/**/*"),
    *ROOT.glob("npulab/data/*"),
    *ROOT.glob("ansible/**/*.yml"),
    *ROOT.glob("tests/*.py"),
    ROOT / ".ci" / "run",
]
_VAR = re.compile(r"\bNPULAB_[A-Z0-9_]*[A-Z0-9]\b")
_READ = re.compile(r"""(?:environ(?:\.get)?\(|environ\[|getenv\()\s*["'](NPULAB_[A-Z0-9_]+)["']""")
#: Per-host credential variables: the docs show them with an example host suffix.
_PER_HOST = re.compile(r"^(NPULAB_WINRM_(?:USER|PASSWORD))_[A-Z0-9_]+$")


def _text(paths: list[Path]) -> str:
    return "\n".join(p.read_text(encoding="utf-8", errors="replace") for p in paths if p.is_file())


def test_every_variable_npulab_reads_is_documented() -> None:
    read = set(_READ.findall(_text(CODE)))
    assert {"NPULAB_DEBUG", "NPULAB_BUILD_DIR", "NPULAB_UV"} <= read  # the finding's three
    documented = set(_VAR.findall(_text(DOCS)))
    assert sorted(read - documented) == []


def test_every_documented_variable_exists() -> None:
    code = _text([p for p in ELSEWHERE if p.is_file()])
    missing = []
    for name in sorted(set(_VAR.findall(_text(DOCS)))):
        per_host = _PER_HOST.match(name)
        probe = per_host.group(1) + "_" if per_host else name
        if probe not in code:
            missing.append(name)
    assert missing == []


def _invocations() -> list[tuple[str, str, list[str]]]:
    """(doc, task, --options) for every ``invoke TASK ...`` in a code span or block line."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        spans = re.findall(r"`([^`\n]*invoke [^`\n]*)`", text)
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
        lines = spans + [ln for b in blocks for ln in b.splitlines() if "invoke " in ln]
        for line in lines:
            for match in re.finditer(r"(?:^|[\s(])invoke ([a-z][\w.-]*)((?: [^#|;&]*)?)", line):
                options = re.findall(r"(?<![\w-])(--[a-z][\w-]*)", match.group(2))
                found.append((str(doc.relative_to(ROOT)), match.group(1), options))
    return found


def test_every_documented_task_option_exists() -> None:
    import tasks

    names = set(tasks.ns.task_names)
    seen = 0
    problems = []
    for doc, task, options in _invocations():
        if task not in names:
            problems.append(f"{doc}: invoke {task}: no such task")
            continue
        flags = {"--help", "--dry-run"}
        for arg in tasks.ns[task].get_arguments():
            long = "--" + arg.names[0].replace("_", "-")
            flags |= {long, "--no-" + long[2:]} if arg.kind is bool else {long}
        for option in options:
            seen += 1
            if option not in flags:
                problems.append(f"{doc}: invoke {task} {option}: not an option of {task}")
    assert seen > 40
    assert problems == []


def test_every_option_shows_its_value() -> None:
    """`invoke --help TASK` prints --name=KIND for an option that takes a value; a float default
    printed none (lab.run --timeout, lab.sim --latency), and a bool named no_* printed `--`."""
    import tasks

    for name in tasks.ns.task_names:
        for arg in tasks.ns[name].get_arguments():
            assert arg.kind in (str, int, bool, list), f"{name} {arg.names[0]}: {arg.kind}"
            assert not arg.names[0].startswith("no_"), f"{name} {arg.names[0]}"


def test_documented_exit_codes_are_the_error_classes() -> None:
    classes = {
        cls.__name__: cls.exit_code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.NpulabError)
    }
    pattern = re.compile(r"`?(\w+(?:Error|Failure))`?\s*\((?:exit(?: code)? )?(\d+)\)")
    claims = [
        (str(d.relative_to(ROOT)), n, int(c))
        for d in DOCS
        for n, c in pattern.findall(d.read_text())
    ]
    assert len(claims) >= 3
    wrong = [c for c in claims if c[1] in classes and classes[c[1]] != c[2]]
    unknown = [c for c in claims if c[1] not in classes]
    assert wrong == []
    assert unknown == []


@pytest.mark.parametrize(
    ("doc", "claim"),
    [
        # item 7 of issue 14, each a sentence that contradicted the code
        ("docs/provisioning.md", "use Kerberos delegation or CredSSP"),
        ("docs/lab.md", "phx-7940hs"),
        ("docs/lab.md", "(issue 6)"),
        ("docs/llama3-port.md", "`pip.cmd install --require-hashes"),
        ("recipes/README.md", "a Windows build refuses them"),
        ("docs/nightly.md", "an offline runner otherwise queues 24 h"),
        ("docs/build.md", "(or `~/.invoke.yaml`)"),
    ],
)
def test_contradicted_claims_are_gone(doc: str, claim: str) -> None:
    assert claim not in (ROOT / doc).read_text(encoding="utf-8")
