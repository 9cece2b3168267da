"""The stack recipe: a typed, frozen, fully validated model of ``recipes/*.yaml``.

``recipes/README.md`` documents every key. Loading validates everything before any side effect;
bad input is a one-line :class:`~npulab.errors.ConfigError` naming the file and key path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from npulab import paths
from npulab.errors import ConfigError
from npulab.schema import (
    build,
    check_commit,
    check_name,
    check_nonempty,
    check_positive,
    check_relative_path,
    check_repo_id,
    check_sha256,
    check_url,
    load_yaml,
)

Chip = Literal["7940HS", "8845HS"]
Family = Literal["PHX", "HPT"]
NpuDevice = Literal["phx", "stx"]


@dataclass(frozen=True, kw_only=True)
class Lfs:
    """Git LFS expectations of the upstream tree."""

    #: Paths (relative to the upstream root) that must hold real content, not pointer files, for
    #: a full Windows build; staging names every one that is a pointer.
    required: tuple[str, ...] = ()
    #: ``git lfs pull --include`` patterns the Windows build fetches.
    include: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Upstream:
    repo_url: str = field(metadata={"check": check_url})
    tag: str = field(metadata={"check": check_nonempty})
    commit: str = field(metadata={"check": check_commit})
    #: The commit's root tree sha (``git rev-parse <commit>^{tree}``); verified before use.
    tree: str | None = field(default=None, metadata={"check": check_commit})
    #: The part of the tree the stack lives in (``example/transformers``).
    subdir: str = field(metadata={"check": check_relative_path})
    lfs: Lfs = field(default_factory=Lfs)


@dataclass(frozen=True, kw_only=True)
class PatchSeriesRef:
    """Points at ``patches/<component>/<version>/series``."""

    component: str = field(metadata={"check": check_name})
    version: str = field(metadata={"check": check_name})

    @property
    def directory(self) -> Path:
        return paths.patches_dir() / self.component / self.version


@dataclass(frozen=True, kw_only=True)
class PythonEnv:
    """The conda environment of the stack and its pip pins."""

    #: The conda env name: a token in the rendered .cmd scripts.
    name: str = field(metadata={"check": check_name})
    python: str
    #: env.yaml inside the (patched) upstream tree, relative to the upstream root.
    env_file: str = field(metadata={"check": check_relative_path})
    #: Hash-locked pip requirements for win_amd64 / CPython <python>, relative to this repo.
    lock: str = field(metadata={"check": check_relative_path})
    #: The pip pins the lock must agree with: package name -> exact version.
    pins: dict[str, str] = field(metadata={"check": check_nonempty})
    #: Extra pip constraints that are not exact pins (``numpy: "<2"``).
    constraints: dict[str, str] = field(default_factory=dict)
    #: Further pip requirement lines the lock resolves without pinning them here (what the Llama
    #: flow needs from env.yaml's pip part beyond the pins, e.g. ``pybind11[global]``).
    requirements: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.python.count(".") != 1 or not all(p.isdigit() for p in self.python.split(".")):
            msg = f"python: expected a 'major.minor' string like '3.9', got {self.python!r}"
            raise ValueError(msg)


@dataclass(frozen=True, kw_only=True)
class ModelFile:
    path: str = field(metadata={"check": check_relative_path})
    #: Both None until ``invoke model.pin`` has read them from the hub.
    sha256: str | None = field(default=None, metadata={"check": check_sha256})
    size: int | None = field(default=None, metadata={"check": check_positive})


RopeType = Literal["default", "llama3"]
RopeOnLoad = Literal["repair", "as-saved"]


@dataclass(frozen=True, kw_only=True)
class Rope:
    """The RoPE the model must run with, checked against every rotary module after load.

    A checkpoint pickled with ``torch.save(model)`` carries its own rotary buffers (frequencies
    and a cos/sin cache), built by whatever code saved it; the smoke runner compares them with
    these settings, reports what it found and, with ``on_load: repair``, rebuilds them."""

    rope_theta: float = field(metadata={"check": check_positive})
    rope_type: RopeType = "default"
    #: llama3 only (Llama 3.1: 8.0, 1.0, 4.0, 8192).
    factor: float | None = field(default=None, metadata={"check": check_positive})
    low_freq_factor: float | None = field(default=None, metadata={"check": check_positive})
    high_freq_factor: float | None = field(default=None, metadata={"check": check_positive})
    original_max_position_embeddings: int | None = field(
        default=None, metadata={"check": check_positive}
    )
    #: ``repair``: rebuild frequencies and a bounded cache before bf16 and quantization;
    #: ``as-saved``: run the pickled state untouched (the A/B baseline).
    on_load: RopeOnLoad = "repair"
    #: Positions the rebuilt cos/sin cache holds up front (it grows on demand).
    cache_positions: int = field(default=8192, metadata={"check": check_positive})

    def __post_init__(self) -> None:
        llama3 = (
            self.factor,
            self.low_freq_factor,
            self.high_freq_factor,
            self.original_max_position_embeddings,
        )
        if self.rope_type == "llama3" and None in llama3:
            msg = (
                "rope_type llama3 needs factor, low_freq_factor, high_freq_factor and "
                "original_max_position_embeddings"
            )
            raise ValueError(msg)
        if self.rope_type == "llama3" and self.low_freq_factor == self.high_freq_factor:
            msg = "low_freq_factor and high_freq_factor must differ"
            raise ValueError(msg)


@dataclass(frozen=True, kw_only=True)
class Model:
    """A Hugging Face hub model pinned by revision, with every file's size and sha256."""

    repo_id: str = field(metadata={"check": check_repo_id})
    revision: str | None = field(default=None, metadata={"check": check_commit})
    #: The whole pickled model (``torch.save``); loaded with ``weights_only=False`` only after
    #: its hash is verified.
    checkpoint: str
    files: tuple[ModelFile, ...] = field(metadata={"check": check_nonempty})
    #: The RoPE to check (and repair) the loaded checkpoint against; None: no rotary check.
    rope: Rope | None = None

    def __post_init__(self) -> None:
        names = [f.path for f in self.files]
        if self.checkpoint not in names:
            msg = f"checkpoint {self.checkpoint!r} is not one of the files {names}"
            raise ValueError(msg)
        if len(set(names)) != len(names):
            msg = "files: a path is listed twice"
            raise ValueError(msg)

    @property
    def pinned(self) -> bool:
        """True when the revision and every file's sha256 and size are recorded."""
        return self.revision is not None and all(
            f.sha256 is not None and f.size is not None for f in self.files
        )


@dataclass(frozen=True, kw_only=True)
class Device:
    """A chip the stack targets and the DEVICE value its runtime uses."""

    chip: Chip
    family: Family
    device: NpuDevice
    #: PCI hardware id prefix of the NPU (``VEN_1022&DEV_1502``).
    pci_id: str
    #: What we assume rather than know (recorded in the manifest and the smoke report).
    assumption: str | None = None


@dataclass(frozen=True, kw_only=True)
class Prompt:
    text: str = field(metadata={"check": check_nonempty})
    max_new_tokens: int | None = field(default=None, metadata={"check": check_positive})
    #: Text the (greedy) answer must contain, each case-insensitively ("Paris").
    expect: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Passage:
    """A fixed text scored every run (mean log-likelihood per token, perplexity)."""

    #: The text file, relative to the recipe's directory (shipped in the repository).
    path: str = field(metadata={"check": check_relative_path})
    #: The run fails when the passage's perplexity is above this.
    max_perplexity: float | None = field(default=None, metadata={"check": check_positive})


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    min_tokens_per_s: float = field(metadata={"check": check_positive})
    max_time_to_first_token_s: float | None = field(
        default=None, metadata={"check": check_positive}
    )


@dataclass(frozen=True, kw_only=True)
class Smoke:
    warmup_prompts: tuple[str, ...] = ()
    prompts: tuple[Prompt, ...] = field(metadata={"check": check_nonempty})
    max_new_tokens: int = field(default=64, metadata={"check": check_positive})
    seed: int = 0
    #: ``do_sample``, ``temperature`` and ``top_p`` apply to ``invoke chat`` only: the smoke
    #: test decodes greedily, so its answers are reproducible and judged on their content.
    do_sample: bool = True
    temperature: float = field(default=0.6, metadata={"check": check_positive})
    top_p: float = field(default=0.9, metadata={"check": check_positive})
    #: Threads torch may use (the published script pins the process to 4 cores).
    cpu_threads: int = field(default=4, metadata={"check": check_positive})
    #: Answers must end on one of the stop tokens (eos / <|eot_id|>), not on the length cap.
    require_stop_token: bool = True
    #: Per chip. A chip without an entry is judged only on non-empty answers and stop tokens.
    thresholds: dict[Chip, Thresholds] = field(default_factory=dict)
    passage: Passage | None = None


@dataclass(frozen=True, kw_only=True)
class Recipe:
    #: Becomes ``build/<name>`` and the Windows build directory: a plain name, never a path.
    name: str = field(metadata={"check": check_name})
    description: str = ""
    upstream: Upstream
    patches: PatchSeriesRef
    env: PythonEnv
    model: Model
    devices: tuple[Device, ...] = field(metadata={"check": check_nonempty})
    smoke: Smoke
    #: Where the recipe was loaded from and the sha256 of its canonical content (set by load).
    source: str = ""
    digest: str = ""

    def __post_init__(self) -> None:
        chips = [d.chip for d in self.devices]
        twice = sorted({c for c in chips if chips.count(c) > 1})
        if twice:
            msg = f"devices: chip(s) listed more than once: {', '.join(twice)}"
            raise ValueError(msg)

    def device_for(self, chip: str) -> Device:
        for device in self.devices:
            if device.chip == chip:
                return device
        known = ", ".join(d.chip for d in self.devices)
        msg = f"recipe {self.name}: chip {chip!r} is not a target (targets: {known})"
        raise ConfigError(msg)


def canonical_digest(data: Any) -> str:
    """sha256 of the recipe's parsed content: comments and key order do not change it."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def load_recipe(path: Path) -> Recipe:
    """Load and validate a recipe file. Raises ConfigError naming file and key path."""
    data = load_yaml(path)
    if isinstance(data, dict) and ("source" in data or "digest" in data):
        msg = f"{path}: 'source' and 'digest' are computed by npulab; remove them from the file"
        raise ConfigError(msg)
    recipe = build(Recipe, data, source=str(path))
    object.__setattr__(recipe, "source", str(path))
    object.__setattr__(recipe, "digest", canonical_digest(data))
    return recipe


def find_recipe(name_or_path: str) -> Path:
    """Resolve ``ryzenai-sw-1.1-llama3.1`` or a path to a recipe file."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} or candidate.exists():
        return candidate
    path = paths.recipes_dir() / f"{name_or_path}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in paths.recipes_dir().glob("*.yaml"))
        msg = f"no recipe named {name_or_path!r} in {paths.recipes_dir()} (known: {known})"
        raise ConfigError(msg)
    return path


DEFAULT_RECIPE = "ryzenai-sw-1.1-llama3.1"
