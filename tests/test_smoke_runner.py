"""The smoke runner end to end on CPU with a tiny random Llama-3.1-shaped model."""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from npulab.recipe import Model, ModelFile, Prompt, Thresholds, find_recipe, load_recipe
from npulab.smoke import config as smoke_config
from npulab.smoke import runner
from tests import tiny_llama

RUNNER = Path(runner.__file__)


def settings(model_dir: Path, pins: dict[str, Any], **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "backend": "cpu",
        "model_dir": str(model_dir),
        "checkpoint": "model.pt",
        "files": pins,
        "warmup_prompts": ["hello"],
        "warmup_max_new_tokens": 4,
        "prompts": [{"text": "hello paris"}, {"text": "w1 w2", "max_new_tokens": 8}],
        "max_new_tokens": 16,
        "seed": 1234,
        "do_sample": True,
        "temperature": 0.6,
        "top_p": 0.9,
        "cpu_threads": 1,
        "require_stop_token": True,
        "thresholds": {"min_tokens_per_s": 0.5, "max_time_to_first_token_s": 60.0},
    }
    cfg.update(over)
    return cfg


def run(tmp_path: Path, cfg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    path = tmp_path / "smoke.json"
    path.write_text(json.dumps(cfg))
    report = tmp_path / "out" / "report.json"
    code = runner.main(["--config", str(path), "--report", str(report)])
    return code, json.loads(report.read_text())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    directory = tmp_path_factory.mktemp("tiny")
    return directory, tiny_llama.write_model_dir(directory, eot_bias=1.0)


def test_pass_report_has_plausible_fields(
    tiny: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    directory, pins = tiny
    code, report = run(tmp_path, settings(directory, pins))
    assert code == runner.EXIT_PASS
    assert report["verdict"] == "PASS"
    assert all(c["ok"] for c in report["checks"])
    assert [p["prompt"] for p in report["prompts"]] == ["hello paris", "w1 w2"]
    for p in report["prompts"]:
        assert p["answer"]
        assert p["stop_token_reached"]
        assert 1 < p["new_tokens"] <= p["max_new_tokens"]
        assert 0 <= p["time_to_first_token_s"] <= p["generate_s"]
        assert p["tokens_per_s"] > 0
    assert report["prompts"][1]["max_new_tokens"] == 8
    assert [w["prompt"] for w in report["warmup"]] == ["hello"]
    assert report["warmup"][0]["new_tokens"] <= 4
    assert report["versions"]["torch"] == torch.__version__
    assert report["versions"]["transformers"] == "4.43.3"
    assert report["peak_memory_bytes"] > 10 * 1024 * 1024
    assert set(report["load"]["verified"]) == set(pins)
    assert report["load"]["load_s"] >= 0
    assert report["host"]["name"]


def test_fixed_seed_gives_the_same_answers(
    tiny: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    directory, pins = tiny
    _, first = run(tmp_path, settings(directory, pins))
    _, second = run(tmp_path, settings(directory, pins))
    assert [p["answer"] for p in first["prompts"]] == [p["answer"] for p in second["prompts"]]


def test_empty_answer_fails(tmp_path: Path) -> None:
    pins = tiny_llama.write_model_dir(tmp_path / "m", eot_bias=30.0)  # <|eot_id|> at once
    code, report = run(tmp_path, settings(tmp_path / "m", pins))
    assert code == runner.EXIT_FAIL
    assert report["verdict"] == "FAIL"
    failed = {c["name"] for c in report["checks"] if not c["ok"]}
    assert "prompt 0: non-empty answer" in failed
    assert "prompt 0: stop token reached" not in failed


def test_length_cap_without_stop_token_fails_unless_not_required(tmp_path: Path) -> None:
    pins = tiny_llama.write_model_dir(tmp_path / "m", eot_bias=-30.0)  # never stops
    code, report = run(tmp_path, settings(tmp_path / "m", pins, max_new_tokens=5))
    assert code == runner.EXIT_FAIL
    failed = {c["name"] for c in report["checks"] if not c["ok"]}
    assert failed == {"prompt 0: stop token reached", "prompt 1: stop token reached"}
    assert report["prompts"][0]["new_tokens"] == 5
    cfg = settings(tmp_path / "m", pins, max_new_tokens=5, require_stop_token=False)
    assert run(tmp_path, cfg)[0] == runner.EXIT_PASS


def test_tokens_per_s_floor_is_applied(tiny: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    directory, pins = tiny
    cfg = settings(directory, pins, thresholds={"min_tokens_per_s": 1e9})
    code, report = run(tmp_path, cfg)
    assert code == runner.EXIT_FAIL
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["decode tokens/s >= 1e+09"]


class _Canary:
    """Unpickling this creates a directory: proof of whether a pickle was ever loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.mkdir, (str(self.marker),))


def test_tampered_checkpoint_is_refused_before_unpickling(
    tiny: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    directory, pins = tiny
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    for name in pins:
        (model_dir / name).write_bytes((directory / name).read_bytes())
    marker = tmp_path / "unpickled"
    torch.save(_Canary(marker), model_dir / "model.pt")  # a hostile checkpoint
    code, report = run(tmp_path, settings(model_dir, pins))
    assert code == runner.EXIT_REFUSED
    assert report["verdict"] == "REFUSED"
    assert "model.pt" in report["error"]
    assert not marker.exists()
    # Same size, one byte off: refused by the hash, not the size.
    good = bytearray((directory / "model.pt").read_bytes())
    good[len(good) // 2] ^= 1
    (model_dir / "model.pt").write_bytes(bytes(good))
    code, report = run(tmp_path, settings(model_dir, pins))
    assert code == runner.EXIT_REFUSED
    assert pins["model.pt"]["sha256"] in report["error"]
    # The canary works: loading the hostile file unverified would have run its code.
    torch.save(_Canary(marker), tmp_path / "hostile.pt")
    torch.load(tmp_path / "hostile.pt", weights_only=False)
    assert marker.exists()


def test_checkpoint_without_a_pin_is_refused(
    tiny: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    directory, pins = tiny
    unpinned = {k: v for k, v in pins.items() if k != "model.pt"}
    code, report = run(tmp_path, settings(directory, unpinned))
    assert code == runner.EXIT_REFUSED
    assert "no pinned sha256" in report["error"]


def test_config_rendered_from_the_recipe_drives_the_runner(
    tiny: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    directory, pins = tiny
    recipe = load_recipe(find_recipe("ryzenai-sw-1.1-llama3.1"))
    files = tuple(ModelFile(path=k, sha256=v["sha256"], size=v["size"]) for k, v in pins.items())
    model = Model(repo_id="local/tiny", revision="a" * 40, checkpoint="model.pt", files=files)
    real = smoke_config.render(
        dataclasses.replace(recipe, model=model), model_dir="m", backend="cpu"
    )
    assert real["passage"]["text"].startswith("Four score and seven years ago")
    assert real["prompts"][0]["expect"] == ["Paris"]
    # The tiny model's greedy answer is "w0 w1 w2 w3" and it cannot score the passage.
    smoke = dataclasses.replace(
        recipe.smoke,
        max_new_tokens=16,
        warmup_prompts=("hello",),
        prompts=(Prompt(text="hello paris", expect=("W3",)),),
        passage=None,
        thresholds={"7940HS": Thresholds(min_tokens_per_s=1e9)},
    )
    recipe = dataclasses.replace(recipe, model=model, smoke=smoke)
    cfg = smoke_config.render(recipe, model_dir=str(directory), backend="cpu", chip="7940HS")
    assert cfg["chips"]["8845HS"]["device"] == "phx"
    assert cfg["warmup_max_new_tokens"] == 16
    path = smoke_config.write(cfg, tmp_path / "cfg.json")
    code = runner.main(["--config", str(path), "--report", str(tmp_path / "r.json")])
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["host"]["chip"] == "7940HS"
    assert report["host"]["device"] == "phx"
    assert report["thresholds"]["min_tokens_per_s"] == 1e9
    assert report["model"]["revision"] == "a" * 40
    assert code == runner.EXIT_FAIL  # the chip's 1e9 tokens/s floor applies
    cfg = smoke_config.render(recipe, model_dir=str(directory), backend="cpu", chip="8845HS")
    path = smoke_config.write(cfg, tmp_path / "cfg.json")
    code = runner.main(["--config", str(path), "--report", str(tmp_path / "r.json")])
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["thresholds"] is None  # no entry for this chip: judged on answers only
    assert "assumption" in report["host"]
    assert report["host"]["assumption"]
    assert code == runner.EXIT_PASS


def test_chip_is_recognised_in_the_cpu_name_when_not_given() -> None:
    chips = {
        "7940HS": {"device": "phx", "assumption": None, "thresholds": {"min_tokens_per_s": 2}},
        "8845HS": {"device": "phx", "assumption": "same NPU", "thresholds": None},
    }
    cpu = "AMD Ryzen 7 8845HS w/ Radeon 780M Graphics"
    got = runner.resolve_chip({"chips": chips}, cpu)
    assert got["chip"] == "8845HS"
    assert got["chip_source"] == "detected from the CPU name"
    assert got["assumption"] == "same NPU"
    got = runner.resolve_chip({"chips": chips}, "AMD Ryzen 7 7940HS w/ Radeon 780M Graphics")
    assert got["thresholds"] == {"min_tokens_per_s": 2}
    assert runner.resolve_chip({"chips": chips}, "Intel Xeon")["chip"] is None
    explicit = runner.resolve_chip({"chips": chips, "chip": "7940HS", "thresholds": {"x": 1}}, cpu)
    assert (explicit["chip"], explicit["thresholds"]) == ("7940HS", {"x": 1})


def test_runner_is_python39_grammar_and_standalone() -> None:
    source = RUNNER.read_text(encoding="utf-8")
    tree = ast.parse(source, feature_version=(3, 9))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party == {"torch", "transformers", "modeling_llama_amd", "qlinear"}


@pytest.mark.integration
def test_runner_runs_as_a_standalone_script(
    tiny: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    import subprocess

    directory, pins = tiny
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(settings(directory, pins, warmup_prompts=[])))
    script = tmp_path / "runner.py"
    script.write_bytes(RUNNER.read_bytes())  # away from the npulab package
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-I", str(script), "--config", str(cfg), "--report", str(report)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(report.read_text())["verdict"] == "PASS"
    assert "smoke PASS" in done.stderr


FAKE_QLINEAR = """
import torch
CALLS = []
class QLinearPerGrp(torch.nn.Linear):
    device = "cpu"
    def quantize_weights(self):
        CALLS.append((self.device, self.weight.dtype))
"""


def test_npu_backend_sets_aie_and_quantizes_every_qlinear(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "qlinear.py").write_text(FAKE_QLINEAR)
    (fake / "modeling_llama_amd.py").write_text(
        "from transformers.models.llama.modeling_llama import LlamaForCausalLM\n"
    )
    monkeypatch.syspath_prepend(str(fake))
    for name in ("qlinear", "modeling_llama_amd"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import qlinear  # type: ignore[import-not-found]

    model_dir = tmp_path / "m"
    tokenizer = tiny_llama.build_tokenizer(model_dir)
    model = tiny_llama.build_model(len(tokenizer), eot_bias=1.0)
    for layer in model.model.layers:
        old = layer.mlp.down_proj
        new = qlinear.QLinearPerGrp(old.in_features, old.out_features, bias=False)
        new.load_state_dict(old.state_dict())
        layer.mlp.down_proj = new
    torch.save(model, model_dir / "model.pt")
    cfg = settings(model_dir, tiny_llama.pins(model_dir), backend="npu", warmup_prompts=[])
    code, report = run(tmp_path, cfg)
    assert report["load"]["qlinear_layers"] == 1
    assert [("aie", torch.bfloat16)] == qlinear.CALLS  # device set first, model already bf16
    assert code == runner.EXIT_PASS, report.get("error")


def test_chat_loop_keeps_history_and_survives_ctrl_c() -> None:
    lines = iter(["hello", "", "again", "boom", "/reset", "w1", "/exit", "never read"])
    seen: list[list[dict[str, str]]] = []

    def respond(history: list[dict[str, str]], stop: threading.Event) -> str:
        seen.append([dict(m) for m in history])
        if history[-1]["content"] == "boom":
            raise KeyboardInterrupt
        return f"answer {len(history)}"

    out: list[str] = []
    history = runner.chat_loop(respond, lambda _prompt: next(lines), out.append)
    assert [len(h) for h in seen] == [1, 3, 5, 1]
    assert seen[1][1] == {"role": "assistant", "content": "answer 1"}
    assert seen[2][-1]["content"] == "boom"
    assert history == [
        {"role": "user", "content": "w1"},
        {"role": "assistant", "content": "answer 1"},
    ]
    assert "\n(interrupted)\n" in out
    assert "(history cleared)\n" in out
    eof = runner.chat_loop(respond, lambda _p: (_ for _ in ()).throw(EOFError), out.append)
    assert eof == []


def test_chat_streams_tokens_from_the_tiny_model(tiny: tuple[Path, dict[str, Any]]) -> None:
    directory, pins = tiny
    cfg = settings(directory, pins)
    model, tokenizer, _ = runner.load(cfg)
    out: list[str] = []
    respond = runner.make_responder(model, tokenizer, cfg, out.append)
    lines = iter(["hello paris", "w1", "/exit"])
    runner.seed_all(1234)
    history = runner.chat_loop(respond, lambda _p: next(lines), out.append)
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    assert history[1]["content"]
    pieces = [p for p in out if p not in ("npu> ", "\n")]
    assert len(pieces) >= 1
    assert "".join(out).count("npu> ") == 2
    # A stop request (what Ctrl-C sets) ends generation after the token in flight.
    stop = threading.Event()
    stop.set()
    assert len(respond([{"role": "user", "content": "hello"}], stop).split()) <= 1


def test_cpu_backend_loads_a_pinned_transformers_directory(tmp_path: Path) -> None:
    import hashlib

    model_dir = tmp_path / "m"
    tokenizer = tiny_llama.build_tokenizer(model_dir)
    tiny_llama.build_model(len(tokenizer), eot_bias=1.0).save_pretrained(model_dir / "hf")
    pins = {
        p.relative_to(model_dir).as_posix(): {
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
            "size": p.stat().st_size,
        }
        for p in model_dir.rglob("*")
        if p.is_file()
    }
    # save_pretrained drops the lm_head bias (standard Llama has none): the stop is not steered.
    cfg = settings(model_dir, pins, checkpoint="hf", warmup_prompts=[], require_stop_token=False)
    code, report = run(tmp_path, cfg)
    assert code == runner.EXIT_PASS, report.get("error")
    assert "hf/model.safetensors" in report["load"]["verified"]
    del pins["hf/config.json"]
    code, report = run(tmp_path, settings(model_dir, pins, checkpoint="hf"))
    assert code == runner.EXIT_REFUSED
    assert "hf/config.json" in report["error"]


LLAMA3 = {
    "rope_theta": 500000.0,
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
    "cache_positions": 128,
}


def test_rotary_state_is_reported_and_repaired_against_the_recipe(
    tiny: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """tiny_llama's model carries llama3 RoPE; checked against default RoPE it does not match,
    and the repair (transformers' modules have no helper: the runner's own) makes it match."""
    directory, pins = tiny
    default = {"rope_theta": 500000.0, "rope_type": "default", "on_load": "repair"}
    model, _, facts = runner.load(settings(directory, pins, rope=default))
    rotary = facts["rotary"]
    assert rotary["checkpoint"]["rope_type"] == "llama3"
    assert not rotary["as_loaded"]["matches"]
    assert rotary["as_loaded"]["worst_inv_freq_rel_error"] == pytest.approx(0.875)  # 1/8 - 1
    assert rotary["repaired_by"] == "runner"
    assert rotary["after"]["matches"]
    assert model.config.rope_scaling is None
    dim = tiny_llama.HIDDEN // 2  # head size
    want = 1.0 / (500000.0 ** (torch.arange(0, dim, 2).float() / dim))
    assert all(torch.equal(m.inv_freq, want) for _, m in runner.rotary_modules(model))
    # Against its own settings it matches as loaded; as-saved leaves it alone.
    _, _, facts = runner.load(settings(directory, pins, rope=dict(LLAMA3, on_load="as-saved")))
    assert facts["rotary"]["as_loaded"]["matches"]
    assert facts["rotary"]["repaired"] is False
    code, report = run(tmp_path, settings(directory, pins, rope=dict(LLAMA3, on_load="maybe")))
    assert code == runner.EXIT_REFUSED
    assert "rope.on_load 'maybe'" in report["error"]


def test_zip_checkpoints_are_memory_mapped(
    tiny: tuple[Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch.load gets mmap=True for a zip-format pickle and not for a legacy one (where torch
    refuses mmap); bench/checkpoint_load.py measures what it saves."""
    directory, _ = tiny
    seen: list[dict[str, Any]] = []
    real = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model, mmapped = runner.load_checkpoint(str(directory / "model.pt"))
    assert mmapped
    assert seen[-1]["mmap"] is True
    legacy = tmp_path / "legacy.pt"
    torch.save(model, legacy, _use_new_zipfile_serialization=False)
    again, mmapped = runner.load_checkpoint(str(legacy))
    assert not mmapped
    assert "mmap" not in seen[-1]
    assert torch.equal(again.lm_head.bias, model.lm_head.bias)


def test_profile_lines_go_to_the_log_file_and_the_report_not_the_console(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The upstream module logs [PROFILE][LLAMAAMD] at CRITICAL from every forward."""
    import logging

    runner.setup_logging(str(tmp_path / "runner.log"))
    runner.PROFILE.start()
    for ns in (5000000, 2000000, 2000000):
        logging.critical("[PROFILE][LLAMAAMD] model_decoder_forward %d 10 20", ns)
    logging.warning("a real warning")
    forwards = runner.PROFILE.stop()
    for handler in logging.getLogger().handlers:
        handler.flush()
    err = capsys.readouterr().err
    assert "[PROFILE]" not in err
    assert "a real warning" in err
    assert (tmp_path / "runner.log").read_text().count("[PROFILE][LLAMAAMD]") == 3
    assert runner.profile_breakdown(forwards, 3) == {
        "forwards": 3,
        "prefill_decoder_ms": 5.0,
        "decode_decoder_ms_per_token": 2.0,
    }
    assert runner.profile_breakdown([], 3) is None
