"""Temporary upstream repositories for source/patch/build tests (real git, no network)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

#: The real content behind the upstream's LFS pointer file (what a Windows host fetches).
LFS_CONTENT = b"MZ" + bytes(range(256)) * 48
LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    f"oid sha256:{hashlib.sha256(LFS_CONTENT).hexdigest()}\n"
    f"size {len(LFS_CONTENT)}\n"
)

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
    "GIT_AUTHOR_DATE": "2024-06-14T00:00:00Z",
    "GIT_COMMITTER_DATE": "2024-06-14T00:00:00Z",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str, stdin: str | None = None) -> str:
    out = subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**os.environ, **GIT_ENV},
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


UPSTREAM_FILES = {
    "README.md": "upstream readme\n",
    "example/transformers/setup.bat": "set PWD=%~dp0\r\nset DEVICE=phx\r\n",
    "example/transformers/models/llama2/modeling_llama_amd.py": "".join(
        f"line {i}\n" for i in range(1, 41)
    ),
    "example/transformers/third_party/lib/tvm_ipu.dll": LFS_POINTER,
    "example/transformers/ops/cpp/big.lib": "x" * 5000,
    "demo/other.txt": "not part of the stack\n",
}


def make_upstream(root: Path, files: dict[str, str] | None = None, tag: str = "v1.1") -> str:
    """A work tree repo at ``root`` with one commit tagged ``tag``; returns the commit sha."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    for rel, content in (files or UPSTREAM_FILES).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode())
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "upstream")
    git(root, "tag", "-a", tag, "-m", tag)
    return git(root, "rev-parse", "HEAD")


def drop_blob(repo: Path, path: str) -> str:
    """Make ``repo`` partial: delete the loose object of ``path``'s blob (like the lab mirror)."""
    sha = git(repo, "rev-parse", f"HEAD:{path}")
    obj = repo / ".git" / "objects" / sha[:2] / sha[2:]
    obj.chmod(0o644)
    obj.unlink()
    return sha


DIFF = ("diff", "--no-color", "--no-ext-diff", "--no-renames", "--full-index", "-U3")


def make_patch(
    root: Path,
    commit: str,
    rel: str,
    old: str,
    new: str,
    subject: str = "Fix a thing",
) -> str:
    """Edit ``rel`` in the work tree of ``root``, return a patch text in series format, revert."""
    path = root / rel
    original = path.read_bytes()
    assert old.encode() in original
    path.write_bytes(original.replace(old.encode(), new.encode(), 1))
    diff = subprocess.run(
        ["git", *DIFF, commit, "--", rel],
        cwd=root,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        check=True,
    ).stdout.decode()
    path.write_bytes(original)
    return (
        f"Subject: {subject}\n"
        "Upstream-Status: Inappropriate [test]\n"
        "Fixes: \"KeyError: 'type'\" in a test\n"
        "\n"
        "A description.\n"
        "---\n"
        f"{diff}"
    )


def write_series(directory: Path, patches: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in patches.items():
        (directory / name).write_bytes(text.encode())
    (directory / "series").write_text("# test series\n" + "".join(f"{n}\n" for n in patches))
    return directory
