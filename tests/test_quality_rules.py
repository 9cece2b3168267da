"""The smoke test's quality rules are real: a model that knows the answers passes, the same
weights shuffled fail on content and on perplexity.

A tiny Llama is trained here for a few hundred CPU steps on the recipe's own fixed passage and
on answers that contain the recipe's expected content; the runner then judges it with the
config rendered from the real recipe (greedy prompts, ``expect`` strings, the passage's
perplexity ceiling). Shuffling every weight tensor keeps the architecture, sizes and value
distribution and destroys what was learned.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from npulab.recipe import Model, ModelFile, find_recipe, load_recipe
from npulab.smoke import config as smoke_config
from npulab.smoke import runner
from tests import tiny_llama

STEPS = 300
#: An answer per recipe prompt, holding its expected content (the haiku has none to hold).
ANSWERS = {
    "capital of France": "The capital of France is Paris .",
    "12 times 12": "144",
    "Red Planet": "Mars is known as the Red Planet .",
    "haiku": "A quiet laptop hums , thinking in the dark .",
}


def answer_for(prompt: str) -> str:
    return next(a for key, a in ANSWERS.items() if key in prompt)


def build_tokenizer(texts: list[str], directory: Path) -> PreTrainedTokenizerFast:
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]+", t)})
    vocab = {tok: i for i, tok in enumerate(tiny_llama.SPECIAL + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(tiny_llama.SPECIAL)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        unk_token="[UNK]",
    )
    fast.chat_template = tiny_llama.CHAT_TEMPLATE
    fast.save_pretrained(directory)
    return fast


def train(tokenizer: Any, sequences: list[list[int]]) -> Any:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=500000.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    width = max(len(s) for s in sequences)
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for n, seq in enumerate(sequences):
        ids[n, : len(seq)] = torch.tensor(seq)
        mask[n, : len(seq)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only contend (seconds, not minutes)
    try:
        for _ in range(STEPS):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def shuffled(model: Any) -> Any:
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for param in model.parameters():
            flat = param.view(-1)
            flat.copy_(flat[torch.randperm(flat.numel(), generator=gen)])
    return model


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    recipe = load_recipe(find_recipe("ryzenai-sw-1.1-llama3.1"))
    settings = smoke_config.render(
        dataclasses.replace(recipe, model=_pinned_stand_in(recipe.model)), model_dir="-"
    )
    directory = tmp_path_factory.mktemp("quality")
    passage = settings["passage"]["text"]
    chats = [[{"role": "user", "content": p["text"]}] for p in settings["prompts"]] + [
        [{"role": "user", "content": w}] for w in settings["warmup_prompts"]
    ]
    texts = [passage, *ANSWERS.values(), *(c[0]["content"] for c in chats), "user assistant"]
    tokenizer = build_tokenizer(texts, directory)
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    sequences = [tokenizer(passage).input_ids]
    for chat in chats[: len(settings["prompts"])]:
        prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True)
        sequences.append(prompt + tokenizer(answer_for(chat[0]["content"])).input_ids + [eot])
    return {"settings": settings, "directory": directory, "model": train(tokenizer, sequences)}


def _pinned_stand_in(model: Model) -> Model:
    """The recipe's model block with placeholder pins (render needs them; the test replaces
    the files and pins with the trained model's)."""
    files = tuple(ModelFile(path=f.path, sha256="0" * 64, size=1) for f in model.files)
    return dataclasses.replace(model, files=files)


def judge(trained: dict[str, Any], model: Any, tmp_path: Path) -> dict[str, Any]:
    directory = trained["directory"]
    torch.save(model, directory / "model.pt")
    settings = dict(
        trained["settings"],
        backend="cpu",
        model_dir=str(directory),
        checkpoint="model.pt",
        files=tiny_llama.pins(directory),
        chip=None,
        chips={},
        thresholds=None,
        rope=None,
        cpu_threads=1,
    )
    (tmp_path / "smoke.json").write_text(json.dumps(settings))
    code = runner.main(
        ["--config", str(tmp_path / "smoke.json"), "--report", str(tmp_path / "report.json")]
    )
    report: dict[str, Any] = json.loads((tmp_path / "report.json").read_text())
    report["exit"] = code
    return report


def failed(report: dict[str, Any]) -> set[str]:
    return {c["name"] for c in report["checks"] if not c["ok"]}


def test_a_model_that_knows_the_answers_passes(trained: dict[str, Any], tmp_path: Path) -> None:
    report = judge(trained, trained["model"], tmp_path)
    assert report["exit"] == runner.EXIT_PASS, (failed(report), report.get("error"))
    assert "paris" in report["prompts"][0]["answer"].lower()
    names = {c["name"] for c in report["checks"]}
    assert "prompt 0: answer contains 'Paris'" in names
    assert "passage perplexity <= 20" in names
    assert report["passage"]["tokens"] > 150
    assert report["passage"]["perplexity"] < 2.0
    assert report["passage"]["mean_log_likelihood"] > -0.7


def test_the_same_weights_shuffled_fail_on_content_and_perplexity(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    """The trained weights, each tensor's values shuffled."""
    model = LlamaForCausalLM(trained["model"].config)
    model.load_state_dict(trained["model"].state_dict())
    report = judge(trained, shuffled(model).eval(), tmp_path)
    # Fails on content and on perplexity. Not necessarily on every expected word: with this
    # tiny vocabulary (~150 words) 64 random tokens can contain "Paris" by chance; with Llama's
    # 128256 tokens that chance is negligible.
    assert report["exit"] == runner.EXIT_FAIL
    bad = failed(report)
    content = {c for c in bad if "answer contains" in c}
    assert len(content) >= 2, bad
    assert "passage perplexity <= 20" in bad
    assert report["passage"]["perplexity"] > 20
