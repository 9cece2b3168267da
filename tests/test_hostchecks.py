"""The integrity checks that run on the Windows host, run: the rendered scripts go through the
PowerShell model (npulab.testing.psmodel) over an in-memory host disk, so what the script checks,
or fails to check, decides. The host's programs (git) are doubles that only serve content."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from npulab.recipe import DEFAULT_RECIPE, Recipe, load_recipe
from npulab.testing import psmodel
from npulab.testing.psmodel import Call, Exited, WinFS
from npulab.transport import psscripts
from npulab.windows import lfs as winlfs
from npulab.windows import steps as winsteps
from npulab.windows import upload as winupload

ROOT = "C:\\npulab\\build\\r"


@pytest.fixture
def recipe(project_root: Path) -> Recipe:
    return load_recipe(project_root / "recipes" / f"{DEFAULT_RECIPE}.yaml")


# -- the stdin upload receiver -------------------------------------------------------------------
def test_receiver_keeps_a_file_only_when_its_sha256_matches() -> None:
    disk = WinFS()
    dest = "C:\\npulab\\it's here\\payload.bin"
    old, new = b"previous version\r\n", bytes(range(256)) * 700  # several stdin lines
    disk.mkdir("C:\\npulab\\it's here")
    disk.write(dest, old)
    script = psscripts.upload_receiver(dest, hashlib.sha256(new).hexdigest())
    damaged = bytearray(new)
    damaged[1000] ^= 0x20
    bad = psmodel.run(script, disk, stdin=b"".join(psscripts.b64_lines(bytes(damaged))))
    assert bad.rc == psscripts.EXIT_UPLOAD_HASH
    assert "upload hash mismatch for C:\\npulab\\it's here\\payload.bin" in bad.stderr
    assert disk.read(dest) == old  # the old file is unchanged
    assert sorted(disk.files) == [dest.lower()]  # and no .npulab-part is left
    good = psmodel.run(script, disk, stdin=b"".join(psscripts.b64_lines(new)))
    assert (good.rc, good.stdout) == (0, hashlib.sha256(new).hexdigest() + "\r\n")
    assert disk.read(dest) == new
    assert sorted(disk.files) == [dest.lower()]


# -- the stdin bootstrap ---------------------------------------------------------------------------
def test_bootstrap_runs_the_script_only_when_its_sha256_matches() -> None:
    script = "# npulab-script: build-step v1\nWrite-Output 'x'\n"
    ran: list[str] = []

    def run_payload(text: str) -> tuple[str, str, int]:
        ran.append(text)
        return "x\r\n", "", 3

    boot = psscripts.script_bootstrap(script)
    sent = b"".join(psscripts.b64_lines(script.replace("'x'", "'y'").encode()))
    bad = psmodel.run(boot, WinFS(), stdin=sent, on_scriptblock=run_payload)
    assert bad.rc == psscripts.EXIT_SCRIPT_HASH
    assert "npulab: script hash mismatch" in bad.stderr
    assert ran == []
    good = psmodel.run(
        boot,
        WinFS(),
        stdin=b"".join(psscripts.b64_lines(script.encode())),
        on_scriptblock=run_payload,
    )
    assert ran == [script]
    assert (good.rc, good.stdout) == (3, "x\r\n")  # the script's own exit code is passed on


# -- upload-expand ---------------------------------------------------------------------------------
def _staged(tmp_path: Path, marker: str) -> winupload.Archive:
    out = tmp_path / marker
    (out / "tree" / "pkg").mkdir(parents=True)
    (out / "tree" / "pkg" / "mod.py").write_text(f"VERSION = {marker!r}\n")
    (out / "scripts").mkdir()
    (out / "scripts" / "01-prereqs.ps1").write_text(f"# {marker}\r\n")
    return winupload.build_archive(out, tmp_path / f"{marker}-parts")


def _send(disk: WinFS, archive: winupload.Archive, damage: bool = False) -> None:
    disk.mkdir(ROOT + "\\upload")
    for i, (name, _) in enumerate(archive.parts):
        data = (archive.path.parent / name).read_bytes()
        if damage and i == len(archive.parts) - 1:
            data = data[:-1] + bytes([data[-1] ^ 1])
        disk.write(ROOT + "\\upload\\" + name, data)


def test_expand_refuses_a_damaged_archive_and_leaves_the_live_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(winupload, "PART_SIZE", 200)  # several parts
    disk = WinFS()
    first = _staged(tmp_path, "one")
    _send(disk, first)
    done = psmodel.run(winupload.expand_ps1(ROOT, first), disk)
    assert done.rc == 0, done
    assert disk.read(ROOT + "\\tree\\pkg\\mod.py") == b"VERSION = 'one'\n"
    assert disk.read(ROOT + "\\.npulab-win\\upload.sha256").decode().strip() == first.sha256
    assert disk.children(ROOT + "\\upload") == []

    second = _staged(tmp_path, "two")
    assert len(second.parts) > 1
    _send(disk, second, damage=True)
    bad = psmodel.run(winupload.expand_ps1(ROOT, second), disk)
    assert bad.rc == winupload.EXIT_DAMAGED
    assert f"expected {second.sha256}; parts removed" in bad.stdout
    assert disk.read(ROOT + "\\tree\\pkg\\mod.py") == b"VERSION = 'one'\n"
    assert disk.read(ROOT + "\\.npulab-win\\upload.sha256").decode().strip() == first.sha256
    assert disk.children(ROOT + "\\upload") == []  # damaged parts are not resumed from

    _send(disk, second)
    assert psmodel.run(winupload.expand_ps1(ROOT, second), disk).rc == 0
    assert disk.read(ROOT + "\\scripts\\01-prereqs.ps1") == b"# two\r\n"
    assert disk.read(ROOT + "\\.npulab-win\\upload.sha256").decode().strip() == second.sha256


def test_state_reports_the_stamp_and_the_parts_by_their_content(tmp_path: Path) -> None:
    disk = WinFS()
    archive = _staged(tmp_path, "one")
    _send(disk, archive)
    disk.write(ROOT + "\\upload\\" + archive.parts[0][0], b"half a part")
    stamp, parts = winupload.parse_state(psmodel.run(winupload.state_ps1(ROOT), disk).stdout)
    assert stamp is None
    assert parts == {archive.parts[0][0]: hashlib.sha256(b"half a part").hexdigest()}


# -- 02-lfs.ps1 ----------------------------------------------------------------------------------
GOOD = b"MZ\x90\x00 tvm_ipu.dll " * 700
OID = hashlib.sha256(GOOD).hexdigest()
DLL = "example\\transformers\\third_party\\lib\\tvm_ipu.dll"


class HostGit:
    """git on the host: ``init``/``config`` in the scratch repository, ``lfs smudge`` answers a
    pointer on stdin with whatever content the LFS endpoint serves for its oid (unchecked)."""

    def __init__(self, serves: dict[str, bytes]) -> None:
        self.serves = serves
        self.smudged: list[str] = []

    def __call__(self, call: Call) -> Exited:
        args = call.argv[1:]
        if args[:1] == ["-C"]:
            repo, args = args[1], args[2:]
            if args[:1] == ["init"]:
                call.fs.mkdir(repo + "\\.git")
            return Exited(0)
        if args == list(winlfs.SMUDGE_ARGS):
            oid = call.stdin.decode().split("oid sha256:", 1)[1].split()[0]
            self.smudged.append(oid)
            if oid not in self.serves:
                return Exited(2, b"", b"Error downloading object: 404\n")
            return Exited(0, self.serves[oid])
        return Exited(1, b"", f"git: unexpected {call.argv}".encode())


def _lfs_ps1(recipe: Recipe) -> str:
    """lfs.ps1 as the render step writes it for a tree holding the one pointer."""
    obj = winlfs.LfsObject(path=DLL.replace("\\", "/"), oid=OID, size=len(GOOD), required=True)
    facts = winsteps.TreeFacts(lfs_objects=(obj,))
    return winsteps.render_step(winsteps.STEPS_BY_NAME["win-lfs"], recipe, facts)


def _lfs_run(recipe: Recipe, disk: WinFS, git: HostGit) -> psmodel.Result:
    script = _lfs_ps1(recipe)
    return psmodel.run(script, disk, script_root=ROOT + "\\scripts", programs={"git": git})


def _pointer_tree(disk: WinFS) -> None:
    obj = winlfs.LfsObject(path=DLL, oid=OID, size=len(GOOD), required=True)
    disk.mkdir(ROOT + "\\scripts")
    disk.mkdir(ROOT + "\\tree\\" + DLL.rsplit("\\", 1)[0])
    disk.write(ROOT + "\\tree\\" + DLL, obj.pointer_text().encode())


def test_lfs_step_refuses_content_of_the_right_size_with_another_sha256(recipe: Recipe) -> None:
    disk = WinFS()
    _pointer_tree(disk)
    pointer = disk.read(ROOT + "\\tree\\" + DLL)
    wrong = GOOD[:-1] + b"!"  # same size, other bytes
    git = HostGit({OID: wrong})
    bad = _lfs_run(recipe, disk, git)
    assert bad.rc == winlfs.EXIT_NOT_FETCHED
    assert f"content does not match sha256 {OID} size {len(GOOD)}" in bad.stdout
    assert "1 object(s) not fetched: " + DLL + " (required)" in bad.stdout
    assert disk.read(ROOT + "\\tree\\" + DLL) == pointer  # the pointer stays
    leftovers = [k for k in disk.files if ".npulab-" in k and "lfs-repo" not in k]
    assert leftovers == []
    git.serves[OID] = GOOD
    good = _lfs_run(recipe, disk, git)
    assert good.rc == 0, good
    assert "fetched 1 of 1 object(s), all verified" in good.stdout
    assert disk.read(ROOT + "\\tree\\" + DLL) == GOOD


def test_lfs_step_refetches_a_placed_file_whose_content_is_wrong(recipe: Recipe) -> None:
    disk = WinFS()
    _pointer_tree(disk)
    git = HostGit({OID: GOOD})
    assert _lfs_run(recipe, disk, git).rc == 0
    again = _lfs_run(recipe, disk, git)
    assert "all 1 object(s) present and verified" in again.stdout
    assert git.smudged == [OID]  # nothing fetched twice
    disk.write(ROOT + "\\tree\\" + DLL, b"\0" * len(GOOD))  # right size, wrong bytes
    repaired = _lfs_run(recipe, disk, git)
    assert repaired.rc == 0
    assert git.smudged == [OID, OID]
    assert disk.read(ROOT + "\\tree\\" + DLL) == GOOD


def test_lfs_step_without_git_names_the_fix(recipe: Recipe) -> None:
    disk = WinFS()
    _pointer_tree(disk)
    ran = psmodel.run(_lfs_ps1(recipe), disk, script_root=ROOT + "\\scripts")
    assert ran.rc == winlfs.EXIT_NO_GIT
    assert "install Git for Windows with Git LFS" in ran.stdout


# -- the model itself ------------------------------------------------------------------------------
def test_the_model_refuses_what_it_does_not_know() -> None:
    with pytest.raises(psmodel.Unsupported, match="command Invoke-WebRequest"):
        psmodel.run("Invoke-WebRequest -Uri 'http://127.0.0.1/'", WinFS())
    with pytest.raises(psmodel.Unsupported, match="does not parse"):
        psmodel.run("if ($x -eq {", WinFS())


def test_the_model_follows_powershell_rules_the_scripts_rely_on() -> None:
    disk = WinFS()
    script = "\n".join(
        [
            "$ErrorActionPreference = 'Stop'",
            "$a = @()",
            "$a += 'x'",
            "$i = 0",
            "$i++",
            "if ('ABC' -eq 'abc') { Write-Output 'case-insensitive' }",
            "Write-Output ('{0}/{1} {2:N1}' -f $i, $a.Count, (123456 / 100))",
            'Write-Output "sub $($a.Count + 1) `$literal"',
            "Remove-Item -LiteralPath 'C:\\none' -Force -ErrorAction SilentlyContinue",
            "try { Remove-Item -LiteralPath 'C:\\none' } catch { Write-Output 'caught' }",
            "try { exit 7 } finally { Write-Output 'finally runs' }",
        ]
    )
    ran = psmodel.run(script, disk)
    assert ran.stdout.splitlines() == [
        "case-insensitive",
        "1/1 1,234.6",
        "sub 2 $literal",
        "caught",
        "finally runs",
    ]
    assert ran.rc == 7


# -- what the host answers, as the controller reads it ----------------------------------------
def test_upload_state_lines_that_are_not_the_protocol_are_ignored() -> None:
    text = "stamp ABC\r\npart n1 AA\r\nstamp a b\r\npart only\r\nnoise x\r\npart n2 bb extra\r\n"
    assert winupload.parse_state(text) == ("abc", {"n1": "aa"})


def test_a_local_part_damaged_since_the_last_run_is_cut_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(winupload, "PART_SIZE", 100)
    first = _staged(tmp_path, "one")
    parts = first.path.parent
    for name, _sha in first.parts[:2]:
        data = (parts / name).read_bytes()
        broken = data[:-1] if name == first.parts[0][0] else bytes([data[0] ^ 1]) + data[1:]
        (parts / name).write_bytes(broken)  # truncated, and same size with other bytes
    again = winupload.build_archive(tmp_path / "one", parts)
    assert again == first
    for name, sha in again.parts:
        assert hashlib.sha256((parts / name).read_bytes()).hexdigest() == sha


def test_the_documented_exit_codes_are_the_ones_the_scripts_return(project_root: Path) -> None:
    lab = (project_root / "docs" / "lab.md").read_text()
    build = (project_root / "docs" / "windows-build.md").read_text()
    assert f"before it runs (exit {psscripts.EXIT_SCRIPT_HASH})" in lab
    assert f"renamed into place (exit {psscripts.EXIT_UPLOAD_HASH})" in " ".join(lab.split())
    assert f"| upload | {winupload.EXIT_DAMAGED} | the joined archive does not match |" in build
    assert f"(mismatch: parts removed, exit {winupload.EXIT_DAMAGED})" in build


def test_upload_progress_and_summary_in_mib(capsys: pytest.CaptureFixture[str]) -> None:
    archive = winupload.Archive(
        path=Path("x.zip"), sha256="abcdef0123456789" * 4, size=3 * 2**20, parts=(("a", "b"),) * 2
    )
    assert winupload.describe(archive) == "3.0 MiB in 2 part(s), sha256 abcdef012345"
    winupload.progress(1, 2, "abcdef0123456789.000", 2**21)
    assert capsys.readouterr().err == "    upload: part 1/2 abcdef0123456789.000 (2.0 MiB)\n"
