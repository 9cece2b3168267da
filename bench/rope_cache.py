"""RoPE cache of modeling_llama_amd.py for Llama 3.1 8B shapes: pristine 1.1 vs patched.

    NPULAB_UPSTREAM=/path/to/RyzenAI-SW python bench/rope_cache.py [--layers 32]

Builds one rotary module per layer the way each file's _init_rope does for Llama 3.1 8B
(head_dim 128, rope_theta 5e5, max_position_embeddings 131072). The pristine file cannot read the
llama3 rope_scaling (KeyError 'type'), so it is measured as it runs with rope_scaling=None, which is
also what a checkpoint built with it carries. Prints cache bytes and construction time per file and
their ratio, and how many of the 64 frequencies differ from transformers 4.43.3's llama3 RoPE.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODELING = "example/transformers/models/llama2/modeling_llama_amd.py"


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def trees(mirror: str, where: Path) -> tuple[Path, Path]:
    from npulab import paths
    from npulab.recipe import DEFAULT_RECIPE, find_recipe, load_recipe
    from npulab.source import patches, sources

    os.environ["NPULAB_CACHE"] = str(where / "cache")
    recipe = load_recipe(find_recipe(DEFAULT_RECIPE))
    series = patches.load_series(paths.patches_dir() / "ryzenai-sw" / "1.1")
    origin = sources.resolve_origin(recipe.upstream.repo_url, source=mirror)
    up = recipe.upstream
    src = sources.ensure_source(repo_url=up.repo_url, commit=up.commit, tag=up.tag, origin=origin)
    entries = sources.list_tree(src, [MODELING])
    sources.checkout(src, entries, where / "pristine")
    sources.checkout(src, entries, where / "patched")
    patches.apply_series(
        patches.Series(
            directory=series.directory, patches=(series.get("0002-llama3-rope-modeling"),)
        ),
        where / "patched",
        src,
    )
    return where / "pristine" / MODELING, where / "patched" / MODELING


def measure(module: ModuleType, config: object, layers: int) -> tuple[int, float, object]:
    import torch

    start = time.perf_counter()
    mods = []
    for _ in range(layers):
        attn = module.LlamaAttention.__new__(module.LlamaAttention)
        torch.nn.Module.__init__(attn)
        attn.config, attn.head_dim = config, 128
        attn.max_position_embeddings, attn.rope_theta = 131072, 500000.0
        attn._init_rope()
        mods.append(attn.rotary_emb)
    seconds = time.perf_counter() - start
    size = sum(m.cos_cached.nbytes + m.sin_cached.nbytes for m in mods)
    return size, seconds, mods[0].inv_freq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    args = parser.parse_args()
    mirror = os.environ.get("NPULAB_UPSTREAM")
    if not mirror:
        sys.exit("set NPULAB_UPSTREAM to a checkout or mirror of amd/RyzenAI-SW")
    import torch
    import transformers
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    torch.set_grad_enabled(False)
    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    llama31 = transformers.LlamaConfig(
        hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, rope_theta=5e5,
        max_position_embeddings=131072, rope_scaling=scaling,
    )  # fmt: skip
    plain = transformers.LlamaConfig(
        hidden_size=4096, num_attention_heads=32, rope_theta=5e5, max_position_embeddings=131072
    )
    want, _ = ROPE_INIT_FUNCTIONS["llama3"](llama31, None)
    with tempfile.TemporaryDirectory() as tmp:
        pristine_path, patched_path = trees(mirror, Path(tmp))
        pristine = load(pristine_path, "modeling_pristine")
        patched = load(patched_path, "modeling_patched")
        try:
            measure(pristine, llama31, 1)
            refused = "builds"
        except KeyError as exc:
            refused = f"KeyError {exc}"
        p_size, p_s, p_freq = measure(pristine, plain, args.layers)
        n_size, n_s, n_freq = measure(patched, llama31, args.layers)
    mib = 2**20
    print(f"Llama 3.1 8B shapes, {args.layers} layers (pristine with the llama3 config: {refused})")
    print(f"{'':28}{'pristine 1.1':>16}{'patched':>16}{'ratio':>10}")
    print(
        f"{'cos/sin cache (MiB)':28}{p_size / mib:16.0f}{n_size / mib:16.0f}{p_size / n_size:10.1f}"
    )
    print(f"{'construction (s)':28}{p_s:16.3f}{n_s:16.3f}{p_s / n_s:10.1f}")
    print(
        f"{'freqs != HF llama3 (of 64)':28}{int((p_freq != want).sum()):16d}"
        f"{int((n_freq != want).sum()):16d}"
    )


if __name__ == "__main__":
    main()
