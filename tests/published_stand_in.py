"""A stand-in of the published checkpoint, built the way it was built (used by upstream tests and
bench/checkpoint_load.py).

The published ``llama3.1_8b_w_bit_4_awq_amd.pt`` is ``torch.save(model)`` of a model built by the
UNPATCHED 1.1 ``modeling_llama_amd.py``: that code cannot read a llama3 ``rope_scaling`` (KeyError
'type'), so the config had it unset, every layer got default RoPE frequencies and a cos/sin cache
of all ``max_position_embeddings`` = 131072 positions, and all of it was pickled. This module
builds the same shape at tiny size: the unpatched file read from the upstream mirror at run time
(never copied into this repository), a qlinear stand-in, a Llama-3.1-shaped config.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import transformers

MODELING = "example/transformers/models/llama2/modeling_llama_amd.py"

#: The stand-in of ops/python/qlinear.py: the same class name and the two members the load path
#: uses (``device``, ``quantize_weights()``); forward is a plain linear (no NPU here).
QLINEAR = """
import torch
CALLS = []

class QLinearPerGrp(torch.nn.Module):
    def __init__(self, in_features=1, out_features=1, bias=True, device=None, w_bit=4,
                 group_size=128):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.device = device
        self.w_bit, self.group_size = w_bit, group_size
        self.weight = torch.nn.Parameter(torch.empty(out_features, in_features))
        self.bias = torch.nn.Parameter(torch.empty(out_features)) if bias else None

    def quantize_weights(self):
        CALLS.append((self.device, self.weight.dtype))

    def forward(self, x):
        return torch.nn.functional.linear(x, self.weight, self.bias)
"""

LLAMA31_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
#: The recipe's model.rope settings as the runner gets them.
RECIPE_ROPE = {"rope_theta": 500000.0, **LLAMA31_ROPE, "on_load": "repair", "cache_positions": 8192}
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def config(vocab_size: int, *, rope_scaling: dict[str, Any] | None = None, **over: Any) -> Any:
    """Llama 3.1's shape at tiny size (head_dim 8: its four frequencies hit all three llama3
    branches); rope_scaling unset like the published pickle's config."""
    fields: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "max_position_embeddings": 131072,
        "rope_theta": 500000.0,
        "rope_scaling": rope_scaling,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "initializer_range": 0.5,
        "tie_word_embeddings": False,
        "attn_implementation": "eager",
    }
    fields.update(over)
    return transformers.LlamaConfig(**fields)


def write_module_dir(directory: Path, modeling: Path) -> Path:
    """``directory`` holding ``modeling_llama_amd.py`` (a copy of ``modeling``) and the qlinear
    stand-in: what the pickle imports by name."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "modeling_llama_amd.py").write_bytes(modeling.read_bytes())
    (directory / "qlinear.py").write_text(QLINEAR)
    return directory


@contextlib.contextmanager
def modules_from(directory: Path) -> Iterator[tuple[ModuleType, ModuleType]]:
    """Import ``modeling_llama_amd`` and ``qlinear`` from ``directory`` for the duration (what
    torch.load resolves the pickle's classes against); the previous ones are restored."""
    names = ("modeling_llama_amd", "qlinear")
    saved = {n: sys.modules.pop(n) for n in names if n in sys.modules}
    sys.path.insert(0, str(directory))
    try:
        yield (importlib.import_module(names[0]), importlib.import_module(names[1]))
    finally:
        sys.path.remove(str(directory))
        for n in names:
            sys.modules.pop(n, None)
        sys.modules.update(saved)


def build(pristine_dir: Path, vocab_size: int, path: Path, *, seed: int = 0, **over: Any) -> Any:
    """Build the stand-in with the unpatched module in ``pristine_dir`` and ``torch.save`` the
    whole model to ``path``; returns the model."""
    with modules_from(pristine_dir) as (amd, qlinear):
        torch.manual_seed(seed)
        model = amd.LlamaForCausalLM(config(vocab_size, **over)).eval()
        for layer in model.model.layers:
            for block in (layer.self_attn, layer.mlp):
                for name in LINEARS:
                    old = getattr(block, name, None)
                    if old is None:
                        continue
                    new = qlinear.QLinearPerGrp(old.in_features, old.out_features, bias=False)
                    new.weight = old.weight
                    setattr(block, name, new)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model, path)
    return model


def reference(model: Any) -> Any:
    """transformers 4.43.3's own LlamaForCausalLM with Llama 3.1 RoPE on ``model``'s weights."""
    cfg = config(model.config.vocab_size, rope_scaling=dict(LLAMA31_ROPE))
    ref = transformers.LlamaForCausalLM(cfg).eval()
    missing, unexpected = ref.load_state_dict(model.state_dict(), strict=False)
    assert not missing, missing
    assert all("rotary_emb" in k for k in unexpected), unexpected
    return ref


def logits_at(model: Any, position: int, *, seed: int = 5, tokens: int = 12) -> Any:
    """Logits of ``tokens`` new tokens at positions ``position``.. after a random KV cache of
    ``position`` entries (the same one for every model: RoPE of the new queries and keys at
    positions past 8192, without an 8192-long prefill)."""
    gen = torch.Generator().manual_seed(seed)
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    shape = (1, cfg.num_key_value_heads, position, head_dim)
    dtype = next(model.parameters()).dtype
    past = tuple(
        (torch.randn(shape, generator=gen).to(dtype), torch.randn(shape, generator=gen).to(dtype))
        for _ in range(cfg.num_hidden_layers)
    )
    ids = torch.randint(2, cfg.vocab_size, (1, tokens), generator=gen)
    with torch.no_grad():
        out = model(
            input_ids=ids,
            attention_mask=torch.ones(1, position + tokens, dtype=torch.long),
            position_ids=torch.arange(position, position + tokens)[None],
            past_key_values=_cache_for(model, past),
            use_cache=True,
        )
    return out.logits.float()


def _cache_for(model: Any, past: tuple[tuple[Any, Any], ...]) -> Any:
    """The legacy tuple for modeling_llama_amd; a DynamicCache for transformers' own Llama."""
    if isinstance(model, transformers.LlamaForCausalLM):
        return transformers.DynamicCache.from_legacy_cache(past)
    return past
