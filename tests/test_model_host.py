"""``model.fetch --host``: the lab host runs npulab's own fetch into the host layout's place.

Through the real WinRM transport (pywinrm, NTLM) against the WS-Man double: the command that
reaches the host, where it runs, what it is given, and a failure that names how to mend it."""

from __future__ import annotations

from pathlib import Path

import pytest

from npulab.errors import CommandError
from npulab.hosts import inventory, layout
from npulab.model import host as model_host
from npulab.recipe import DEFAULT_RECIPE, find_recipe, load_recipe
from npulab.testing.fakehost import FakeHost, Response, preset
from npulab.testing.fleet import FakeFleet, SimHost
from npulab.transport import connect

PASSWORD = "Fetch-Secret-3c1d"
pytestmark = pytest.mark.integration


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    host = FakeHost("phx-01", preset("phx"), password=PASSWORD)
    with FakeFleet([SimHost(host, "7940HS")]) as fleet:
        inv = fleet.write_inventory(tmp_path / "inv")
        monkeypatch.setenv("NPULAB_SECRETS_FILE", str(tmp_path / "absent.yaml"))
        monkeypatch.setenv("NPULAB_WINRM_USER", "labadmin")
        monkeypatch.setenv("NPULAB_WINRM_PASSWORD", PASSWORD)
        yield host, inventory.load(inv)


def test_the_host_fetches_into_the_layout(lab) -> None:  # type: ignore[no-untyped-def]
    host, inv = lab
    seen: list[list[str]] = []

    def invoke_exe(argv: list[str], stdin: str | None) -> Response:
        seen.append(argv)
        return Response(stdout="C:\\npulab-cache\\models\\x\r\n")

    host.on("invoke.exe", invoke_exe)
    recipe = load_recipe(find_recipe(DEFAULT_RECIPE))
    lay = layout.load()
    where = model_host.fetch_on_host(recipe, "phx-01", connect("phx-01", inventory=inv))
    assert recipe.model.revision
    assert where == lay.model_dir(recipe.model.repo_id, recipe.model.revision)
    (argv,) = seen
    assert argv[0].lower().endswith("\\.venv\\scripts\\invoke.exe")
    assert argv[0].lower().startswith(lay.stack_dir.lower())
    assert argv[1:] == ["model.fetch", "--recipe", recipe.name, "--dest", where]


def test_a_host_without_npulab_says_how_to_mend_it(lab) -> None:  # type: ignore[no-untyped-def]
    host, inv = lab
    host.on("invoke.exe", Response(stderr="'invoke.exe' is not recognized", rc=9009))
    recipe = load_recipe(find_recipe(DEFAULT_RECIPE))
    with pytest.raises(CommandError) as err:
        model_host.fetch_on_host(
            recipe, "phx-01", connect("phx-01", inventory=inv), dest="D:\\models\\m", verify=True
        )
    assert err.value.returncode == 9009
    assert "--tags npulab_stack" in (err.value.hint or "")
    assert PASSWORD not in str(err.value)


def test_dest_and_verify_pass_through() -> None:
    recipe = load_recipe(find_recipe(DEFAULT_RECIPE))
    argv = model_host.fetch_argv(recipe, "phx-01", "\\\\labfs\\models\\m", verify=True)
    assert argv[-3:] == ["--verify", "--dest", "\\\\labfs\\models\\m"]
