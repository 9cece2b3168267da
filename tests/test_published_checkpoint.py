"""The runner's load path on a stand-in of the published checkpoint (upstream tests).

The stand-in is built the way the published file was (tests/published_stand_in.py): the
UNPATCHED 1.1 modeling_llama_amd.py from the pinned upstream, a qlinear stand-in, a tiny
Llama-3.1-shaped config with rope_scaling unset and 131072 positions, ``torch.save(model)``. The
runner loads it under the PATCHED module (what the 1.1 env runs), reports what the rotary modules
carried, repairs them, and must then agree with transformers 4.43.3's own Llama 3.1 at positions
past 8192; with ``as-saved`` it must be the unpatched module's output exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from npulab.smoke import runner
from tests import published_stand_in as psi
from tests import tiny_llama
from tests.upstream_tree import UpstreamTrees

pytestmark = pytest.mark.upstream

POSITION = 9000  # past Llama 3.1's original 8192 positions
TOL = 1e-4


@pytest.fixture(scope="module")
def stand_in(
    upstream_trees: UpstreamTrees, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("published")
    pristine = psi.write_module_dir(base / "pristine", upstream_trees.pristine / psi.MODELING)
    patched = psi.write_module_dir(base / "patched", upstream_trees.patched / psi.MODELING)
    model_dir = base / "model"
    tokenizer = tiny_llama.build_tokenizer(model_dir)
    built = psi.build(pristine, len(tokenizer), model_dir / "model.pt")
    with psi.modules_from(pristine):
        unpatched = psi.logits_at(built, POSITION)
    reference = psi.reference(built)
    return {
        "pristine": pristine,
        "patched": patched,
        "model_dir": model_dir,
        "pins": tiny_llama.pins(model_dir),
        "unpatched": unpatched,
        "reference": psi.logits_at(reference, POSITION),
        "reference_bf16": psi.logits_at(reference.to(torch.bfloat16), POSITION),
    }


def cfg(stand_in: dict[str, Any], *, backend: str, on_load: str) -> dict[str, Any]:
    return {
        "backend": backend,
        "model_dir": str(stand_in["model_dir"]),
        "checkpoint": "model.pt",
        "files": stand_in["pins"],
        "rope": dict(psi.RECIPE_ROPE, on_load=on_load),
        "cpu_threads": 2,
    }


def test_the_stand_in_has_the_published_shape(stand_in: dict[str, Any]) -> None:
    """What the finding says of the published file, true of the stand-in: default frequencies
    and a 131072-position cache pickled per layer; the llama3 fix of the patched class is inert
    on it (as loaded, the patched module gives the unpatched module's logits exactly)."""
    with psi.modules_from(stand_in["patched"]) as (amd, _):
        model = torch.load(stand_in["model_dir"] / "model.pt", weights_only=False)
        rotary = model.model.layers[0].self_attn.rotary_emb
        assert rotary.max_seq_len_cached == 131072
        assert model.config.rope_scaling is None
        assert torch.equal(psi.logits_at(model, POSITION), stand_in["unpatched"])
        # The patched check alone sees only the cache: the pickled config says "default".
        problems = amd.check_rotary_embeddings(model)
        assert problems
        assert all("131072 positions" in p for p in problems), problems
    assert (stand_in["unpatched"] - stand_in["reference"]).abs().max().item() > 1.0


@pytest.mark.parametrize("backend", ["cpu", "npu"])
def test_repaired_on_load_it_matches_transformers_llama31_past_8192(
    stand_in: dict[str, Any], backend: str
) -> None:
    with psi.modules_from(stand_in["patched"]) as (_, qlinear):
        qlinear.CALLS.clear()
        model, _, facts = runner.load(cfg(stand_in, backend=backend, on_load="repair"))
        got = psi.logits_at(model, POSITION)
        calls = list(qlinear.CALLS)
    rotary = facts["rotary"]
    assert facts["mmap"] is True
    assert rotary["checkpoint"]["rope_type"] == "default"
    assert rotary["checkpoint"]["max_position_embeddings"] == 131072
    assert rotary["as_loaded"]["modules"] == 2
    assert rotary["as_loaded"]["cached_positions"] == 131072
    assert rotary["as_loaded"]["worst_inv_freq_rel_error"] == pytest.approx(7.0)  # 1/factor
    assert rotary["as_loaded"]["cache_bytes"] == 2 * 2 * 131072 * 8 * 4  # layers*(cos,sin)*fp32
    assert not rotary["as_loaded"]["matches"]
    assert rotary["repaired_by"] == "modeling_llama_amd.repair_rotary_embeddings"
    assert rotary["after"]["matches"]
    assert rotary["after"]["cached_positions"] == 8192
    assert rotary["bytes_freed"] == 2 * 2 * (131072 - 8192) * 8 * 4
    assert facts["peak_memory_bytes"] > 0
    if backend == "cpu":
        assert (got - stand_in["reference"]).abs().max().item() < TOL
    else:
        # bf16 all through, like the NPU path (to(bfloat16) after the repair, then every
        # QLinearPerGrp to "aie" and quantized): the reference runs in bf16 too.
        assert len(calls) == 2 * len(psi.LINEARS)
        assert set(calls) == {("aie", torch.bfloat16)}
        assert (got - stand_in["reference_bf16"]).abs().max().item() < TOL


@pytest.mark.parametrize("backend", ["cpu", "npu"])
def test_as_saved_runs_the_pickled_state_untouched(stand_in: dict[str, Any], backend: str) -> None:
    with psi.modules_from(stand_in["patched"]):
        model, _, facts = runner.load(cfg(stand_in, backend=backend, on_load="as-saved"))
        got = psi.logits_at(model, POSITION)
    assert facts["rotary"]["repaired"] is False
    assert "after" not in facts["rotary"]
    if backend == "cpu":
        assert torch.equal(got, stand_in["unpatched"])
    else:
        with psi.modules_from(stand_in["pristine"]):
            saved = torch.load(stand_in["model_dir"] / "model.pt", weights_only=False)
            want = psi.logits_at(saved.to(torch.bfloat16), POSITION)
        assert torch.equal(got, want)


def test_the_smoke_report_states_what_the_checkpoint_carried(
    stand_in: dict[str, Any], tmp_path: Path
) -> None:
    settings = cfg(stand_in, backend="cpu", on_load="repair")
    settings.update(
        prompts=[{"text": "hello paris"}],
        max_new_tokens=4,
        do_sample=False,
        require_stop_token=False,
    )
    (tmp_path / "smoke.json").write_text(json.dumps(settings))
    with psi.modules_from(stand_in["patched"]):
        code = runner.main(
            ["--config", str(tmp_path / "smoke.json"), "--report", str(tmp_path / "r.json")]
        )
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == runner.EXIT_PASS, report.get("error")
    rotary = report["load"]["rotary"]
    assert rotary["checkpoint"]["rope_type"] == "default"
    assert rotary["as_loaded"]["cached_positions"] == 131072
    assert rotary["after"]["cached_positions"] == 8192
    assert rotary["bytes_freed"] > 0
