"""`invoke build --host` end to end: the real pywinrm client against our WS-Man server, a fake
Windows host that keeps files and runs the build protocol, and a real staged upstream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from npulab.build import executor as build
from npulab.build import plan
from npulab.errors import BuildStepError
from npulab.recipe import Recipe
from npulab.source import sources
from npulab.testing.fakehost import FakeHost, preset
from npulab.testing.wsman_server import WSManServer
from npulab.windows import upload as winupload
from tests.gitrepo import LFS_POINTER
from tests.test_build import DLL, MODELING, staged  # noqa: F401 - the staged upstream fixture
from tests.test_winrm_transport import PASSWORD, _transport
from tests.test_winrun import ALL
from tests.winhost import BuildHost

pytestmark = pytest.mark.integration
ROOT = "C:\\npulab\\build\\t"


@pytest.fixture
def lab() -> Iterator[BuildHost]:
    host = FakeHost("phx-01", preset("phx"), password=PASSWORD)
    with WSManServer(host, operation_timeout=0.5) as server:
        yield BuildHost(host, server)


def _build(recipe: Recipe, origin: sources.Origin, lab: BuildHost) -> build.Result:
    options = plan.Options(target="windows", extra={"host": "phx-01", "remote_root": ROOT})
    assert lab.server is not None
    return build.run(recipe, options, origin, transport=_transport(lab.server))


def test_host_build_uploads_runs_and_resumes(
    staged: tuple[Path, Recipe, sources.Origin],  # noqa: F811
    lab: BuildHost,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(winupload, "PART_SIZE", 4096)  # several parts over WinRM
    _up, recipe, origin = staged
    lab.codes["ops-cpp.cmd"] = 1
    with pytest.raises(BuildStepError, match="win-ops-cpp failed on phx-01 with exit code 1"):
        _build(recipe, origin, lab)
    assert lab.ran == ALL[:5]
    step_log = (build.output_dir(recipe) / "logs" / "ops-cpp.log").read_text()
    assert step_log.startswith(f"$ cmd.exe /d /v:off /c {ROOT}\\scripts\\ops-cpp.cmd\n")
    assert step_log.endswith("ran ops-cpp.cmd\n[stderr] failed\n--- exit code 1\n")
    files = lab.files
    # The patched tree and the scripts arrived whole; the LFS pointer is there for lfs.ps1.
    assert b"line five" in files[(ROOT + "\\tree\\" + MODELING.replace("/", "\\")).lower()]
    assert files[(ROOT + "\\tree\\" + DLL.replace("/", "\\")).lower()] == LFS_POINTER.encode()
    local = (build.output_dir(recipe) / "scripts" / "ops-cpp.cmd").read_bytes()
    assert files[(ROOT + "\\scripts\\ops-cpp.cmd").lower()] == local
    receiver_runs = lab.host.count("receiver")
    assert receiver_runs > 1, "the archive went in several parts"

    lab.ran.clear()
    lab.codes.clear()
    result = _build(recipe, origin, lab)
    assert lab.ran == ["prereqs.ps1", "lfs.ps1", "ops-cpp.cmd", "import-check.cmd"]
    assert result.steps["win-upload"] == "up-to-date"
    assert result.steps["win-conda-env"] == result.steps["win-pip-lock"] == "up-to-date"
    assert lab.host.count("receiver") == receiver_runs, "nothing uploaded again"

    # A reinstalled host under the same name: its stamps are gone, so everything is redone.
    for key in [k for k in files if "\\.npulab-win\\" in k]:
        del files[key]
    lab.ran.clear()
    again = _build(recipe, origin, lab)
    assert again.steps["win-upload"] == "done"
    assert lab.ran == ALL
