"""Every knob of the engine, as frozen dataclasses validated once at construction.

The engine reads configuration from here and nowhere else. Values derived from
others (for example the KV budget in blocks) are computed by the components that
own them, never written back into a config.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

SchedulerPolicy = Literal["sequential", "static", "continuous"]
LoadFormat = Literal["auto", "hf", "gguf", "dummy"]

SCHEDULER_POLICIES = ("sequential", "static", "continuous")
LOAD_FORMATS = ("auto", "hf", "gguf", "dummy")
DTYPES = ("auto", "float32", "float16", "bfloat16")


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class ModelConfig:
    """Which weights to load and how.

    `model` is an HF model directory, a .gguf file, or (with load_format="dummy")
    a config.json; None means the embedded default model (SmolLM2-135M-Instruct).
    """

    model: str | None = None
    tokenizer: str | None = None
    load_format: LoadFormat = "auto"
    dtype: str = "auto"
    device: str = "auto"
    max_model_len: int | None = None
    seed: int = 0
    quantization: str | None = None  # None (the checkpoint's precision) or "int8" (CPU, see layers/int8_linear.py)

    def __post_init__(self) -> None:
        _require(self.load_format in LOAD_FORMATS,
                 f"load_format must be one of {LOAD_FORMATS}, got {self.load_format!r}")
        _require(self.dtype in DTYPES, f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        _require(self.max_model_len is None or self.max_model_len >= 1,
                 f"max_model_len must be >= 1, got {self.max_model_len}")
        _require(self.quantization in (None, "int8"),
                 f"quantization must be None or 'int8', got {self.quantization!r}")


@dataclass(frozen=True)
class CacheConfig:
    """The paged KV cache: block size and how much memory it may take.

    The budget is either an absolute number of bytes (`kv_cache_bytes`) or, on
    CUDA, a fraction of the device memory left after loading the weights
    (`gpu_memory_utilization`, vLLM's name). `num_blocks` overrides both; tests
    use it to force preemption with a tiny pool.
    """

    block_size: int = 16
    kv_cache_bytes: int | None = None
    gpu_memory_utilization: float = 0.85
    num_blocks: int | None = None
    enable_prefix_caching: bool = True

    def __post_init__(self) -> None:
        _require(self.block_size >= 1, f"block_size must be >= 1, got {self.block_size}")
        _require(self.kv_cache_bytes is None or self.kv_cache_bytes > 0,
                 f"kv_cache_bytes must be > 0, got {self.kv_cache_bytes}")
        _require(0.0 < self.gpu_memory_utilization <= 1.0,
                 f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        _require(self.num_blocks is None or self.num_blocks >= 1,
                 f"num_blocks must be >= 1, got {self.num_blocks}")


@dataclass(frozen=True)
class SchedulerConfig:
    """How requests share the engine's steps.

    `max_num_batched_tokens` is the per-step token budget (prefill chunks and
    decodes together); `max_num_seqs` bounds the running batch. `policy` picks
    the queueing discipline compared in Parts 6-8. `enable_kv_cache=False`
    recomputes every sequence from scratch each step: the "no cache" baseline
    of Part 3, never what you want in production.
    """

    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048
    policy: SchedulerPolicy = "continuous"
    enable_chunked_prefill: bool = True
    enable_kv_cache: bool = True

    def __post_init__(self) -> None:
        _require(self.max_num_seqs >= 1, f"max_num_seqs must be >= 1, got {self.max_num_seqs}")
        _require(self.max_num_batched_tokens >= 1,
                 f"max_num_batched_tokens must be >= 1, got {self.max_num_batched_tokens}")
        _require(self.policy in SCHEDULER_POLICIES,
                 f"scheduler policy must be one of {SCHEDULER_POLICIES}, got {self.policy!r}")


@dataclass(frozen=True)
class EngineConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    attention_backend: str = "auto"
    enforce_eager: bool = False
    # Schedule step N+1 while the device computes step N (None: on for CUDA, where the
    # host's work is otherwise the GPU's idle time; off on the CPU, whose model work is synchronous).
    async_scheduling: bool | None = None


def env_flag(name: str, default: bool = False) -> bool:
    """Environment variables are read here and only here."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def env_str(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)
