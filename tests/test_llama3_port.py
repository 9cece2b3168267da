"""The patched modeling_llama_amd.py against transformers 4.43.3's own Llama (upstream tests).

A tiny random Llama-3.1-shaped model: rope_type llama3 (factor 8, low/high freq factors 1/4,
original_max_position_embeddings 8192), rope_theta 5e5, 16 heads over 8 KV heads with head_dim 8
(its four frequencies hit all three llama3 branches: kept, smoothed, divided by the factor),
vocab 128256, 2 layers.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from npulab.source import patches
from tests.upstream_tree import UpstreamTrees

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.upstream

MODELING = "example/transformers/models/llama2/modeling_llama_amd.py"
LONG = 2100
TOL = 1e-4


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _config() -> Any:
    return transformers.LlamaConfig(
        vocab_size=128256,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=16,
        num_key_value_heads=8,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        bos_token_id=128000,
        eos_token_id=128001,
        initializer_range=0.5,
        attn_implementation="eager",
    )


@pytest.fixture(scope="module")
def models(upstream_trees: UpstreamTrees) -> tuple[Any, Any, ModuleType]:
    amd = _load(upstream_trees.patched / MODELING, "modeling_llama_amd_patched")
    torch.manual_seed(0)
    config = _config()
    reference = transformers.LlamaForCausalLM(config).eval()
    ours = amd.LlamaForCausalLM(config).eval()
    missing, unexpected = ours.load_state_dict(reference.state_dict(), strict=False)
    assert not unexpected
    assert all("rotary_emb" in k for k in missing), missing
    return reference, ours, amd


def _max_logit_diff(reference: Any, ours: Any, ids: Any) -> float:
    """max |logit difference| over every position, computed in slices (2100 x 128256 fp32 is
    1 GiB). Both models share one lm_head: where the final hidden states are bitwise equal the
    logits are too, so only the last slice is always projected, every slice otherwise."""
    with torch.no_grad():
        h_ref = reference.model(input_ids=ids).last_hidden_state
        h_ours = ours.model(input_ids=ids).last_hidden_state
        seq = ids.shape[1]
        starts = range(0, seq, 256) if not torch.equal(h_ref, h_ours) else [max(0, seq - 256)]
        worst = 0.0
        for start in starts:
            a = reference.lm_head(h_ref[:, start : start + 256]).float()
            b = ours.lm_head(h_ours[:, start : start + 256]).float()
            worst = max(worst, (a - b).abs().max().item())
    return worst


def test_the_series_applies_and_refresh_reproduces_it(
    upstream_trees: UpstreamTrees, tmp_path: Path
) -> None:
    patches.check_series(upstream_trees.series, upstream_trees.source)
    copy = tmp_path / "series"
    shutil.copytree(upstream_trees.series.directory, copy)
    series = patches.load_series(copy)
    for patch in series.patches:
        changed = patches.refresh_patch(
            series, patch.name, upstream_trees.patched, upstream_trees.source
        )
        assert not changed, f"refresh changed {patch.name}"
        assert (copy / patch.name).read_bytes() == patch.path.read_bytes()


def test_unpatched_file_fails_with_key_error_type(upstream_trees: UpstreamTrees) -> None:
    amd = _load(upstream_trees.pristine / MODELING, "modeling_llama_amd_pristine")
    with pytest.raises(KeyError, match="'type'"):
        amd.LlamaForCausalLM(_config())


def test_llama3_frequencies_match_transformers(models: tuple[Any, Any, ModuleType]) -> None:
    reference, ours, amd = models
    want = reference.model.rotary_emb.inv_freq
    for layer in ours.model.layers:
        rotary = layer.self_attn.rotary_emb
        assert torch.equal(rotary.inv_freq, want)
        assert rotary.max_seq_len_cached == amd.ROPE_CACHE_MAX_POSITIONS == 8192
        assert rotary.cos_cached.dtype == torch.float32
    default = 1.0 / (500000.0 ** (torch.arange(0, 8, 2).float() / 8))
    assert (want != default).sum().item() == 2  # one smoothed, one divided by 8


def test_logits_match_short(models: tuple[Any, Any, ModuleType]) -> None:
    reference, ours, _ = models
    ids = torch.randint(0, 128256, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = reference(input_ids=ids).logits
        b = ours(input_ids=ids).logits
    assert (a - b).abs().max().item() < TOL


def test_logits_match_beyond_2000_tokens(models: tuple[Any, Any, ModuleType]) -> None:
    reference, ours, _ = models
    ids = torch.randint(0, 128256, (1, LONG), generator=torch.Generator().manual_seed(2))
    assert _max_logit_diff(reference, ours, ids) < TOL


def test_greedy_generate_is_identical(models: tuple[Any, Any, ModuleType]) -> None:
    reference, ours, _ = models
    ids = torch.randint(0, 128256, (1, 9), generator=torch.Generator().manual_seed(3))
    kwargs = {
        "attention_mask": torch.ones_like(ids),
        "max_new_tokens": 16,
        "do_sample": False,
        "pad_token_id": 128001,
    }
    with torch.no_grad():
        a = reference.generate(ids, **kwargs)
        b = ours.generate(ids, **kwargs)
    assert a.shape == (1, 9 + 16)
    assert torch.equal(a, b)


def test_cache_position_is_accepted(models: tuple[Any, Any, ModuleType]) -> None:
    _, ours, _ = models
    ids = torch.tensor([[128000, 5, 6]])
    with torch.no_grad():
        out = ours(input_ids=ids, cache_position=torch.arange(3))
    assert out.logits.shape == (1, 3, 128256)


def test_check_and_repair_a_checkpoint_with_default_rope(
    models: tuple[Any, Any, ModuleType],
) -> None:
    """A model whose rotary modules came from unpatched code (default frequencies, full cache)."""
    reference, ours, amd = models
    assert amd.check_rotary_embeddings(ours) == []
    for layer in ours.model.layers:
        layer.self_attn.rotary_emb = amd.LlamaRotaryEmbedding(8, 16384, base=500000.0)
        layer.self_attn.rotary_emb._set_cos_sin_cache(16384, torch.device("cpu"), torch.float32)
    problems = amd.check_rotary_embeddings(ours)
    assert len(problems) == 4, problems  # frequencies and cache size, per layer
    assert any("inv_freq differs" in p for p in problems)
    assert any("16384 positions" in p for p in problems)
    ids = torch.randint(0, 128256, (1, 400), generator=torch.Generator().manual_seed(4))
    assert _max_logit_diff(reference, ours, ids) > 1e-3  # wrong RoPE is visible
    assert amd.repair_rotary_embeddings(ours) == 2
    assert amd.check_rotary_embeddings(ours) == []
    assert _max_logit_diff(reference, ours, ids) < TOL
