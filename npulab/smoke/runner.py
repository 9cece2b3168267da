"""Smoke generation test and chat for the RyzenAI-SW 1.1 stack: runs INSIDE the 1.1 conda env.

Standalone on purpose: Python 3.9 grammar, only the standard library plus the env's torch and
transformers, nothing from npulab (it is copied to the lab machine and run there). Settings come
from a JSON file that ``npulab.smoke.config`` renders from the recipe.

    python runner.py --config smoke.json [--report out.json]   # smoke test, exit code = verdict
    python runner.py --config smoke.json --chat                 # interactive chat

Order of work: verify size and sha256 of every model file (the checkpoint is a pickle, i.e. code:
it is never loaded unverified) -> load (``torch.load(weights_only=False)`` of the whole model,
memory-mapped when the file is a zip-format pickle, so pickled buffers that are replaced are never
read) -> rotary check against ``cfg["rope"]`` and, with ``on_load: repair``, the rebuild of every
rotary module (the published pickle carries default frequencies and a 131072-position cos/sin
cache per layer) -> ``npu``: bf16, every ``QLinearPerGrp`` to device "aie" +
``quantize_weights()`` (``cpu``: as loaded, or a transformers model directory) -> warm-up prompts
-> smoke prompts with a fixed seed -> JSON report -> exit 0 (PASS), 1 (FAIL), 2 (refused: bad
config or hash), 3 (error while loading or generating).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import platform
import queue
import socket
import sys
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

REPORT_VERSION = 1
EXIT_PASS, EXIT_FAIL, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2, 3
PAD_TOKEN = "<|finetune_right_pad_id|>"
EOT_TOKEN = "<|eot_id|>"


class Refused(Exception):
    """The runner will not go on: a model file does not verify or the config is unusable."""


# -- verification ---------------------------------------------------------------------------------
def sha256_file(path: str, buffer_size: int = 4 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    buf = bytearray(buffer_size)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(view)
            if not n:
                break
            digest.update(view[:n])
    return digest.hexdigest()


def verify_files(model_dir: str, files: Dict[str, Dict[str, Any]]) -> Dict[str, str]:
    """Check size then sha256 of every listed file; raise Refused naming the first bad one."""
    seen = {}
    for name, pin in sorted(files.items()):
        path = os.path.join(model_dir, name)
        if not os.path.isfile(path):
            raise Refused("model file missing: %s (run `invoke model.fetch`)" % path)
        size = os.path.getsize(path)
        if pin.get("size") is not None and size != pin["size"]:
            raise Refused("%s: size %d, pinned %d: not loading it" % (path, size, pin["size"]))
        actual = sha256_file(path)
        if actual != pin["sha256"]:
            raise Refused(
                "%s: sha256 %s, pinned %s: refusing to unpickle an unverified file"
                % (path, actual, pin["sha256"])
            )
        seen[name] = actual
    return seen


def unpinned_parts(model_dir: str, checkpoint: str, verified: Dict[str, str]) -> List[str]:
    """Files of the checkpoint (a file, or a transformers model directory) without a pin."""
    path = os.path.join(model_dir, checkpoint)
    if not os.path.isdir(path):
        return [] if checkpoint in verified else [checkpoint]
    parts = []
    for root, _dirs, names in os.walk(path):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), model_dir).replace(os.sep, "/")
            if rel not in verified:
                parts.append(rel)
    return sorted(parts) if parts or verified else [checkpoint]


# -- loading --------------------------------------------------------------------------------------
def load_checkpoint(path: str) -> Tuple[Any, bool]:
    """(object, mmapped): ``torch.load`` of a verified pickle, memory-mapped when the file is a
    zip-format pickle (torch >= 2.1), so tensors nobody reads are never paged in."""
    import zipfile

    import torch

    mmap = zipfile.is_zipfile(path)
    kwargs = {"weights_only": False, "map_location": "cpu"}  # type: Dict[str, Any]
    if mmap:
        kwargs["mmap"] = True
    return torch.load(path, **kwargs), mmap


def expected_inv_freq(dim: int, rope: Dict[str, Any]) -> Any:
    """The rotary frequencies ``rope`` asks for, for head size ``dim`` (float32): default RoPE,
    or Llama 3.1's scaling (the computation of transformers 4.43.3 _compute_llama3_parameters)."""
    import math

    import torch

    base = float(rope["rope_theta"])
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if rope.get("rope_type", "default") != "llama3":
        return inv_freq
    factor = rope["factor"]
    low, high = rope["low_freq_factor"], rope["high_freq_factor"]
    old_context = rope["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_context / low, old_context / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


def rotary_modules(model: Any) -> List[Tuple[str, Any]]:
    """Every module that holds rotary frequencies (``inv_freq``), by name."""
    return [(n, m) for n, m in model.named_modules() if hasattr(m, "inv_freq")]


def _cache_bytes(module: Any) -> int:
    total = 0
    for name in ("cos_cached", "sin_cached"):
        tensor = getattr(module, name, None)
        if tensor is not None:
            total += tensor.numel() * tensor.element_size()
    return total


def pickled_rope(model: Any) -> Dict[str, Any]:
    """The RoPE settings the checkpoint's own (pickled) config states."""
    config = getattr(model, "config", None)
    scaling = getattr(config, "rope_scaling", None)
    if scaling:
        rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    else:
        rope_type = "default"
    return {
        "rope_type": rope_type,
        "rope_scaling": scaling,
        "rope_theta": getattr(config, "rope_theta", None),
        "max_position_embeddings": getattr(config, "max_position_embeddings", None),
    }


def inspect_rotary(model: Any, rope: Dict[str, Any]) -> Dict[str, Any]:
    """What the rotary modules hold against ``rope``: worst relative inv_freq error, positions
    and bytes of the cos/sin caches."""
    worst = 0.0
    positions = []
    cache = 0
    modules = rotary_modules(model)
    for _name, module in modules:
        have = module.inv_freq.detach().float().cpu()
        want = expected_inv_freq(2 * have.shape[0], rope)
        worst = max(worst, float(((have - want).abs() / want).max()))
        positions.append(int(getattr(module, "max_seq_len_cached", 0) or 0))
        cache += _cache_bytes(module)
    return {
        "modules": len(modules),
        "worst_inv_freq_rel_error": worst,
        "cached_positions": max(positions) if positions else 0,
        "cache_bytes": cache,
        "matches": bool(modules) and worst <= ROPE_RTOL,
    }


ROPE_RTOL = 1e-5


def repair_rotary(model: Any, rope: Dict[str, Any]) -> str:
    """Make every rotary module use ``rope``: the model's config states it, and each module gets
    the expected frequencies (float32) and a cache of ``cache_positions`` rebuilt from them. With
    the patched modeling_llama_amd its own ``repair_rotary_embeddings`` rebuilds the modules from
    the corrected config; other modules are rebuilt here. Returns what did the repair."""
    import torch

    config = getattr(model, "config", None)
    if config is not None:
        config.rope_theta = float(rope["rope_theta"])
        if rope.get("rope_type", "default") == "llama3":
            config.rope_scaling = {
                "rope_type": "llama3",
                "factor": rope["factor"],
                "low_freq_factor": rope["low_freq_factor"],
                "high_freq_factor": rope["high_freq_factor"],
                "original_max_position_embeddings": rope["original_max_position_embeddings"],
            }
        else:
            config.rope_scaling = None
    modeling = sys.modules.get(type(model).__module__)
    helper = getattr(modeling, "repair_rotary_embeddings", None)
    if helper is not None:
        helper(model)
        how = "%s.repair_rotary_embeddings" % modeling.__name__  # type: ignore[union-attr]
    else:
        how = "runner"
    positions = int(rope.get("cache_positions") or 8192)
    for _name, module in rotary_modules(model):
        want = expected_inv_freq(2 * module.inv_freq.shape[0], rope).to(module.inv_freq.device)
        if how == "runner" or not torch.equal(module.inv_freq.float().cpu(), want.cpu()):
            module.inv_freq = want
        if how == "runner" and hasattr(module, "_set_cos_sin_cache"):
            module._set_cos_sin_cache(
                seq_len=positions, device=module.inv_freq.device, dtype=torch.float32
            )
    return how


def check_and_repair(model: Any, rope: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The rotary facts for the report; repairs when ``rope["on_load"]`` is ``repair``."""
    if not rope:
        return {"checked": False}
    facts = {
        "checked": True,
        "on_load": rope.get("on_load", "repair"),
        "expected": {k: v for k, v in rope.items() if k not in ("on_load",)},
        "checkpoint": pickled_rope(model),
        "as_loaded": inspect_rotary(model, rope),
    }  # type: Dict[str, Any]
    if facts["on_load"] == "as-saved":
        facts["repaired"] = False
        return facts
    if facts["on_load"] != "repair":
        raise Refused("rope.on_load %r: expected repair or as-saved" % facts["on_load"])
    facts["repaired_by"] = repair_rotary(model, rope)
    after = inspect_rotary(model, rope)
    facts["after"] = after
    facts["repaired"] = True
    facts["bytes_freed"] = facts["as_loaded"]["cache_bytes"] - after["cache_bytes"]
    if not after["matches"]:
        raise RuntimeError(
            "rotary repair left inv_freq off by %.3g (relative)" % after["worst_inv_freq_rel_error"]
        )
    return facts


def load(cfg: Dict[str, Any]) -> Tuple[Any, Any, Dict[str, Any]]:
    """(model, tokenizer, facts) for cfg['backend'] after verifying every pinned file."""
    import torch
    from transformers import AutoTokenizer

    facts = {}  # type: Dict[str, Any]
    torch.set_num_threads(int(cfg.get("cpu_threads") or 4))
    started = time.perf_counter()
    facts["verified"] = verify_files(cfg["model_dir"], cfg.get("files") or {})
    facts["verify_s"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    checkpoint = os.path.join(cfg["model_dir"], cfg["checkpoint"])
    unpinned = unpinned_parts(cfg["model_dir"], cfg["checkpoint"], facts["verified"])
    if unpinned:
        raise Refused(
            "checkpoint %s: no pinned sha256 in the config for %s"
            % (cfg["checkpoint"], ", ".join(unpinned))
        )
    backend = cfg.get("backend", "npu")
    if backend not in ("npu", "cpu"):
        raise Refused("unknown backend %r (npu or cpu)" % backend)
    if backend == "npu":
        import modeling_llama_amd  # noqa: F401  (the patched module the pickle references)
        import qlinear
    if backend == "cpu" and os.path.isdir(checkpoint):
        from transformers import LlamaForCausalLM

        model = LlamaForCausalLM.from_pretrained(checkpoint)
        facts["mmap"] = False
    else:
        model, facts["mmap"] = load_checkpoint(checkpoint)
    model.eval()
    # Before bf16 and quantization: the repair works on the float32 buffers as pickled.
    facts["rotary"] = check_and_repair(model, cfg.get("rope"))
    if backend == "npu":
        model = model.to(torch.bfloat16)
        quantized = 0
        for module in model.modules():
            if isinstance(module, qlinear.QLinearPerGrp):
                module.device = "aie"
                module.quantize_weights()
                quantized += 1
        facts["qlinear_layers"] = quantized
    tokenizer = AutoTokenizer.from_pretrained(cfg.get("tokenizer_dir") or cfg["model_dir"])
    if PAD_TOKEN in tokenizer.get_vocab():
        tokenizer.pad_token = PAD_TOKEN
    facts["load_s"] = round(time.perf_counter() - started, 3)
    facts["peak_memory_bytes"] = peak_memory_bytes()
    return model, tokenizer, facts


def stop_ids(tokenizer: Any) -> List[int]:
    ids = [tokenizer.eos_token_id]
    eot = tokenizer.convert_tokens_to_ids(EOT_TOKEN)
    if eot is not None and eot != tokenizer.unk_token_id:
        ids.append(eot)
    return [i for n, i in enumerate(ids) if i is not None and i not in ids[:n]]


# -- generation -----------------------------------------------------------------------------------
class _FirstToken:
    """A generate() streamer that only notes when the first new token arrives."""

    def __init__(self) -> None:
        self.prompt_seen = False
        self.first = None  # type: Optional[float]

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
        elif self.first is None:
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


def generate(
    model: Any,
    tokenizer: Any,
    messages: List[Dict[str, str]],
    cfg: Dict[str, Any],
    max_new_tokens: int,
    streamer: Any = None,
    stopping_criteria: Any = None,
) -> Dict[str, Any]:
    """One chat-templated generation; returns answer, token counts, stop flag and timings."""
    import torch

    input_ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt"
    )
    stops = stop_ids(tokenizer)
    timer = _FirstToken()
    kwargs = dict(  # type: Dict[str, Any]
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=max_new_tokens,
        do_sample=bool(cfg.get("do_sample", True)),
        eos_token_id=stops,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0],
        streamer=_Tee(timer, streamer),
    )
    if kwargs["do_sample"]:
        kwargs.update(
            temperature=float(cfg.get("temperature", 0.6)), top_p=float(cfg.get("top_p", 0.9))
        )
    if stopping_criteria is not None:
        kwargs["stopping_criteria"] = stopping_criteria
    PROFILE.start()
    started = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids, **kwargs)
    ended = time.perf_counter()
    forwards = PROFILE.stop()
    new = out[0, input_ids.shape[1] :].tolist()
    stopped = bool(new) and new[-1] in stops
    first = timer.first if timer.first is not None else ended
    decode_tokens = max(len(new) - 1, 0)
    decode_s = ended - first
    return {
        "answer": tokenizer.decode(new, skip_special_tokens=True).strip(),
        "prompt_tokens": int(input_ids.shape[1]),
        "new_tokens": len(new),
        "stop_token_reached": stopped,
        "time_to_first_token_s": round(first - started, 4),
        "generate_s": round(ended - started, 4),
        "decode_tokens_per_s": (
            round(decode_tokens / decode_s, 3) if decode_tokens and decode_s > 0 else None
        ),
        "tokens_per_s": round(len(new) / (ended - started), 3) if ended > started else None,
        "profile": profile_breakdown(forwards, len(new)),
    }


class _ProfileLines(logging.Handler):
    """The upstream module's ``[PROFILE][LLAMAAMD] model_decoder_forward <decoder_ns> <pre_ns>
    <post_ns>`` lines (logging.critical, once per forward): kept for the report's prefill/decode
    breakdown while a generation runs. They go to the run's log file, never the console."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.forwards = None  # type: Optional[List[Tuple[int, int, int]]]

    def emit(self, record: logging.LogRecord) -> None:
        parts = record.getMessage().split()
        if self.forwards is None or parts[:2] != ["[PROFILE][LLAMAAMD]", "model_decoder_forward"]:
            return
        with contextlib.suppress(IndexError, ValueError):
            self.forwards.append((int(parts[2]), int(parts[3]), int(parts[4])))

    def start(self) -> None:
        self.forwards = []

    def stop(self) -> List[Tuple[int, int, int]]:
        got, self.forwards = self.forwards or [], None
        return got


PROFILE = _ProfileLines()


class _NotProfile(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("[PROFILE]")


def setup_logging(log_path: Optional[str]) -> None:
    """Root logging: every record to ``log_path`` (the run's log file), ``[PROFILE]`` lines kept
    off the console (they come once per token), the rest of WARNING and above to stderr."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for old in _ADDED:  # a second run in one process (tests) replaces the first one's handlers
        root.removeHandler(old)
        old.close()
    del _ADDED[:]
    if PROFILE not in root.handlers:
        root.addHandler(PROFILE)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.addFilter(_NotProfile())
    root.addHandler(console)
    _ADDED.append(console)
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        handler = logging.FileHandler(log_path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        root.addHandler(handler)
        _ADDED.append(handler)


_ADDED = []  # type: List[logging.Handler]


def profile_breakdown(
    forwards: List[Tuple[int, int, int]], new_tokens: int
) -> Optional[Dict[str, Any]]:
    """Prefill (the first forward) and decode (the others, per new token after the first), in
    ms, from the upstream's decoder timings (ns), as AMD's tools/profiler.py reads them."""
    if not forwards:
        return None
    prefill = forwards[0][0] / 1e6
    decode = [f[0] for f in forwards[1:]]
    return {
        "forwards": len(forwards),
        "prefill_decoder_ms": round(prefill, 3),
        "decode_decoder_ms_per_token": (
            round(sum(decode) / 1e6 / max(new_tokens - 1, 1), 3) if decode else None
        ),
    }


class _Tee:
    def __init__(self, *streamers: Any) -> None:
        self.streamers = [s for s in streamers if s is not None]

    def put(self, value: Any) -> None:
        for s in self.streamers:
            s.put(value)

    def end(self) -> None:
        for s in self.streamers:
            s.end()


def seed_all(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    torch.manual_seed(seed)


# -- report ---------------------------------------------------------------------------------------
def peak_memory_bytes() -> Optional[int]:
    """Peak resident memory of this process (Linux/macOS getrusage, Windows PeakWorkingSetSize)."""
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)
    except ImportError:
        pass
    try:
        import ctypes
        from ctypes import wintypes

        class Counters(ctypes.Structure):
            _fields_ = [("cb", wintypes.DWORD), ("PageFaultCount", wintypes.DWORD)] + [
                (n, ctypes.c_size_t)
                for n in (
                    "PeakWorkingSetSize",
                    "WorkingSetSize",
                    "QuotaPeakPagedPoolUsage",
                    "QuotaPagedPoolUsage",
                    "QuotaPeakNonPagedPoolUsage",
                    "QuotaNonPagedPoolUsage",
                    "PagefileUsage",
                    "PeakPagefileUsage",
                )
            ]

        counters = Counters()
        counters.cb = ctypes.sizeof(counters)
        handle = ctypes.windll.kernel32.GetCurrentProcess()  # type: ignore[attr-defined]
        ok = ctypes.windll.psapi.GetProcessMemoryInfo(  # type: ignore[attr-defined]
            handle, ctypes.byref(counters), counters.cb
        )
        return int(counters.PeakWorkingSetSize) if ok else None
    except (ImportError, AttributeError, OSError):
        return None


def os_name() -> str:
    """Like platform.platform() without its processor lookup (which runs ``uname -p``)."""
    u = platform.uname()
    return "-".join(p for p in (u.system, u.release, u.version, u.machine) if p)


def cpu_name() -> Optional[str]:
    """The marketing name of the CPU ("AMD Ryzen 7 7940HS ..."), without running a process."""
    try:
        import winreg  # type: ignore[import-not-found,unused-ignore]

        key = winreg.OpenKey(  # type: ignore[attr-defined,unused-ignore]
            winreg.HKEY_LOCAL_MACHINE,  # type: ignore[attr-defined,unused-ignore]
            r"HARDWARE\DESCRIPTION\System\CentralProcessor\0",
        )
        return str(winreg.QueryValueEx(key, "ProcessorNameString")[0]).strip()  # type: ignore[attr-defined,unused-ignore]
    except (ImportError, OSError):
        pass
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def versions() -> Dict[str, Optional[str]]:
    out = {"python": platform.python_version()}  # type: Dict[str, Optional[str]]
    for name in ("torch", "transformers", "tokenizers", "huggingface_hub", "numpy"):
        module = sys.modules.get(name)
        out[name] = getattr(module, "__version__", None) if module is not None else None
    return out


def resolve_chip(cfg: Dict[str, Any], cpu: Optional[str]) -> Dict[str, Any]:
    """The chip (named in the config, else found in the CPU name), its DEVICE, assumption and
    thresholds. An explicit ``thresholds`` in the config wins over the chip's."""
    chips = cfg.get("chips") or {}  # type: Dict[str, Dict[str, Any]]
    chip = cfg.get("chip")  # type: Optional[str]
    how = "config"  # type: Optional[str]
    if chip is None:
        found = [c for c in sorted(chips) if cpu and c in cpu]
        chip, how = (found[0], "detected from the CPU name") if found else (None, None)
    info = chips.get(chip, {}) if chip else {}
    return {
        "chip": chip,
        "chip_source": how,
        "device": info.get("device"),
        "assumption": info.get("assumption"),
        "thresholds": cfg.get("thresholds") or info.get("thresholds"),
    }


def score_passage(model: Any, tokenizer: Any, text: str) -> Dict[str, Any]:
    """Mean log-likelihood per token of ``text`` (after the BOS the tokenizer adds) and its
    perplexity: one forward pass, no sampling, the same figure every run of the same model."""
    import math

    import torch

    ids = tokenizer(text, return_tensors="pt").input_ids
    started = time.perf_counter()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float()
    logprobs = torch.log_softmax(logits[0, :-1], dim=-1)
    picked = logprobs.gather(1, ids[0, 1:, None])[:, 0]
    mean = float(picked.mean())
    return {
        "tokens": int(picked.numel()),
        "mean_log_likelihood": round(mean, 6),
        "perplexity": round(math.exp(-mean), 6),
        "score_s": round(time.perf_counter() - started, 4),
    }


def judge(
    results: List[Dict[str, Any]], cfg: Dict[str, Any], passage: Optional[Dict[str, Any]] = None
) -> List[Dict[str, Any]]:
    """The checks behind the verdict: non-empty answers with the expected content, stop tokens,
    the passage's perplexity ceiling, per-chip floors."""
    checks = []
    for n, r in enumerate(results):
        checks.append(
            {
                "name": "prompt %d: non-empty answer" % n,
                "ok": bool(r["answer"]),
                "detail": "%d chars" % len(r["answer"]),
            }
        )
        for want in r.get("expect") or []:
            checks.append(
                {
                    "name": "prompt %d: answer contains %r" % (n, want),
                    "ok": want.lower() in r["answer"].lower(),
                    "detail": r["answer"][:120],
                }
            )
        if cfg.get("require_stop_token", True):
            checks.append(
                {
                    "name": "prompt %d: stop token reached" % n,
                    "ok": r["stop_token_reached"],
                    "detail": "%d new tokens" % r["new_tokens"],
                }
            )
    ceiling = (cfg.get("passage") or {}).get("max_perplexity")
    if passage is not None and ceiling is not None:
        checks.append(
            {
                "name": "passage perplexity <= %g" % ceiling,
                "ok": passage["perplexity"] <= ceiling,
                "detail": "%.4g over %d tokens" % (passage["perplexity"], passage["tokens"]),
            }
        )
    limits = cfg.get("thresholds") or {}
    if results and limits.get("min_tokens_per_s") is not None:
        tokens = sum(max(r["new_tokens"] - 1, 0) for r in results)
        seconds = sum(r["generate_s"] - r["time_to_first_token_s"] for r in results)
        rate = tokens / seconds if seconds > 0 else 0.0
        checks.append(
            {
                "name": "decode tokens/s >= %g" % limits["min_tokens_per_s"],
                "ok": rate >= limits["min_tokens_per_s"],
                "detail": "%.3f tokens/s" % rate,
            }
        )
    if results and limits.get("max_time_to_first_token_s") is not None:
        worst = max(r["time_to_first_token_s"] for r in results)
        checks.append(
            {
                "name": "time to first token <= %gs" % limits["max_time_to_first_token_s"],
                "ok": worst <= limits["max_time_to_first_token_s"],
                "detail": "%.3fs" % worst,
            }
        )
    return checks


def write_json(path: str, payload: Dict[str, Any]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def run_smoke(cfg: Dict[str, Any]) -> Tuple[int, Dict[str, Any]]:
    """The whole smoke test; returns (exit code, report)."""
    cpu = cpu_name()
    target = resolve_chip(cfg, cpu)
    # Greedy: the judged answers are reproducible and checked on content (sampling is for chat).
    cfg = dict(cfg, thresholds=target.pop("thresholds"), do_sample=False)
    report = {
        "report_version": REPORT_VERSION,
        "recipe": cfg.get("recipe"),
        "recipe_digest": cfg.get("recipe_digest"),
        "model": {
            "repo_id": cfg.get("repo_id"),
            "revision": cfg.get("revision"),
            "checkpoint": cfg.get("checkpoint"),
        },
        "backend": cfg.get("backend"),
        "host": {
            "name": socket.gethostname(),
            "platform": os_name(),
            "processor": cpu,
            **target,
        },
        "thresholds": cfg["thresholds"],
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "verdict": "ERROR",
        "checks": [],
        "prompts": [],
        "warmup": [],
    }  # type: Dict[str, Any]
    code = EXIT_ERROR
    try:
        model, tokenizer, facts = load(cfg)
        report["load"] = facts
        warm_tokens = int(cfg.get("warmup_max_new_tokens") or 16)
        for text in cfg.get("warmup_prompts") or []:
            seed_all(int(cfg.get("seed", 0)))
            r = generate(model, tokenizer, [{"role": "user", "content": text}], cfg, warm_tokens)
            report["warmup"].append(
                {"prompt": text, "new_tokens": r["new_tokens"], "generate_s": r["generate_s"]}
            )
        for prompt in cfg["prompts"]:
            seed_all(int(cfg.get("seed", 0)))
            limit = int(prompt.get("max_new_tokens") or cfg.get("max_new_tokens") or 64)
            r = generate(
                model, tokenizer, [{"role": "user", "content": prompt["text"]}], cfg, limit
            )
            r["prompt"] = prompt["text"]
            r["max_new_tokens"] = limit
            r["expect"] = list(prompt.get("expect") or [])
            report["prompts"].append(r)
        passage = cfg.get("passage")
        if passage:
            report["passage"] = dict(
                score_passage(model, tokenizer, passage["text"]), name=passage.get("name")
            )
        report["checks"] = judge(report["prompts"], cfg, report.get("passage"))
        passed = all(c["ok"] for c in report["checks"])
        report["verdict"] = "PASS" if passed else "FAIL"
        code = EXIT_PASS if passed else EXIT_FAIL
    except Refused as exc:
        report["verdict"] = "REFUSED"
        report["error"] = str(exc)
        code = EXIT_REFUSED
    except Exception as exc:
        report["error"] = "%s: %s" % (type(exc).__name__, exc)
        report["traceback"] = traceback.format_exc(limit=8)
    report["versions"] = versions()
    report["peak_memory_bytes"] = peak_memory_bytes()
    report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return code, report


# -- chat -----------------------------------------------------------------------------------------
def chat_loop(
    respond: Callable[[List[Dict[str, str]], threading.Event], str],
    read_line: Callable[[str], str],
    write: Callable[[str], None],
) -> List[Dict[str, str]]:
    """Read a line, answer with the whole history, repeat. ``/reset`` clears the history,
    ``/exit``, EOF or Ctrl-C at the prompt leave; Ctrl-C while answering stops that answer only
    (``respond`` gets an Event it must honour)."""
    history = []  # type: List[Dict[str, str]]
    while True:
        try:
            line = read_line("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return history
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return history
        if line == "/reset":
            history = []
            write("(history cleared)\n")
            continue
        history.append({"role": "user", "content": line})
        stop = threading.Event()
        try:
            answer = respond(history, stop)
        except KeyboardInterrupt:
            stop.set()
            write("\n(interrupted)\n")
            history.pop()
            continue
        history.append({"role": "assistant", "content": answer})


def make_responder(
    model: Any, tokenizer: Any, cfg: Dict[str, Any], write: Callable[[str], None]
) -> Callable[[List[Dict[str, str]], threading.Event], str]:
    """Stream tokens from generate() (run in a thread) to ``write`` as they come."""
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    class _Stop(StoppingCriteria):  # type: ignore[misc]
        def __init__(self, event: threading.Event) -> None:
            self.event = event

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
            return self.event.is_set()

    def respond(history: List[Dict[str, str]], stop: threading.Event) -> str:
        # A timeout on the queue keeps the main thread responsive to Ctrl-C (also on Windows).
        streamer = TextIteratorStreamer(
            tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=0.25
        )
        limit = int(cfg.get("max_new_tokens") or 256)
        failed = []  # type: List[BaseException]

        def work() -> None:
            try:
                generate(
                    model,
                    tokenizer,
                    history,
                    cfg,
                    limit,
                    streamer,
                    StoppingCriteriaList([_Stop(stop)]),
                )
            except BaseException as exc:
                failed.append(exc)
                streamer.end()

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        parts = []
        write("npu> ")
        try:
            while True:
                try:
                    piece = next(streamer)
                except StopIteration:
                    break
                except queue.Empty:
                    if not worker.is_alive() and failed:
                        break
                    continue
                parts.append(piece)
                write(piece)
        finally:
            stop.set()
            worker.join()
        write("\n")
        if failed:
            raise failed[0]
        return "".join(parts).strip()

    return respond


def _write_out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="JSON settings rendered by npulab")
    parser.add_argument("--report", help="where to write the JSON report (default: from config)")
    parser.add_argument("--chat", action="store_true", help="interactive chat instead of smoke")
    args = parser.parse_args(argv)
    with open(args.config, encoding="utf-8") as f:
        cfg = json.load(f)
    path = args.report or cfg.get("report") or "smoke-report.json"
    setup_logging(
        cfg.get("log") or os.path.join(os.path.dirname(os.path.abspath(path)), "runner.log")
    )
    if args.chat:
        try:
            model, tokenizer, _ = load(cfg)
        except Refused as exc:
            sys.stderr.write("refused: %s\n" % exc)
            return EXIT_REFUSED
        chat_loop(make_responder(model, tokenizer, cfg, _write_out), input, _write_out)
        return EXIT_PASS
    code, report = run_smoke(cfg)
    write_json(path, report)
    sys.stderr.write("smoke %s (%s): %s\n" % (report["verdict"], path, report.get("error", "")))
    for check in report["checks"]:
        sys.stderr.write(
            "  [%s] %s: %s\n" % ("ok" if check["ok"] else "FAIL", check["name"], check["detail"])
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
