"""A tiny Llama-3.1-shaped model and tokenizer, built locally (no hub), for smoke tests.

The model is wired by hand so that greedy decoding (what the smoke test does) is predictable:
one-hot embeddings, attention and MLP outputs zeroed, so the last hidden state is the current
token's one-hot and the lm_head maps each token to its successor: the chat template's last token
(``<|end_header_id|>``) -> w0 -> w1 -> w2 -> w3 -> ``<|eot_id|>``. The lm_head also carries a
bias: ``eot_bias`` decides the stop (high: ``<|eot_id|>`` at once = empty answer; very low:
never = length cap, the answer cycles through the words; in between: "w0 w1 w2 w3", then the
stop token). Sampling (``invoke chat``) follows the chain with high probability.
"""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
    "[UNK]",
]
WORDS = [f"w{i}" for i in range(24)] + ["user", "assistant", "system", "hello", "paris"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|> {{ m['role'] }} "
    "<|end_header_id|> {{ m['content'] }} <|eot_id|> {% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|> assistant <|end_header_id|> {% endif %}"
)


def build_tokenizer(directory: Path) -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(SPECIAL)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        unk_token="[UNK]",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)
    return fast


HIDDEN = 48
CHAIN = ["<|end_header_id|>", "w0", "w1", "w2", "w3", "<|eot_id|>"]


def build_model(vocab_size: int, *, eot_bias: float, seed: int = 0) -> LlamaForCausalLM:
    assert vocab_size <= HIDDEN, "one-hot embeddings need hidden_size >= vocab_size"
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=HIDDEN,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        rope_theta=500000.0,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        bos_token_id=SPECIAL.index("<|begin_of_text|>"),
        eos_token_id=SPECIAL.index("<|end_of_text|>"),
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    index = {tok: i for i, tok in enumerate(SPECIAL + WORDS)}
    head = torch.nn.Linear(HIDDEN, vocab_size, bias=True)
    with torch.no_grad():
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, :vocab_size] = torch.eye(vocab_size)
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        head.weight.zero_()
        for here, after in itertools.pairwise(CHAIN):
            head.weight[index[after], index[here]] = 1.0  # ~6.9 after the final RMSNorm
        head.bias.fill_(-30.0)  # special tokens never, except:
        head.bias[len(SPECIAL) :] = 0.0  # words uniformly
        head.bias[SPECIAL.index("<|eot_id|>")] = eot_bias
    model.lm_head = head
    return model.eval()


def write_model_dir(directory: Path, *, eot_bias: float = 2.0) -> dict[str, dict[str, object]]:
    """Tokenizer files + ``model.pt`` (the whole model pickled with torch.save) in ``directory``;
    returns {file: {sha256, size}} like the rendered smoke config."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(directory)
    torch.save(build_model(len(tokenizer), eot_bias=eot_bias), directory / "model.pt")
    return pins(directory)


def pins(directory: Path) -> dict[str, dict[str, object]]:
    names = ["model.pt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
    return {
        n: {
            "sha256": hashlib.sha256((directory / n).read_bytes()).hexdigest(),
            "size": (directory / n).stat().st_size,
        }
        for n in names
    }
