"""ModelArchConfig: one normalized description of an architecture's shape.

HF config.json files and GGUF metadata spell the same facts differently
(`num_key_value_heads` vs `llama.attention.head_count_kv`, `n_embd` vs
`hidden_size`). The loaders translate into this one dataclass, and the model
code reads only it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# HF `architectures` / `model_type` values we implement, mapped to our model family.
SUPPORTED_MODEL_TYPES = {
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gpt2": "gpt2",
}


@dataclass(frozen=True)
class ModelArchConfig:
    model_type: str                   # one of SUPPORTED_MODEL_TYPES
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6        # layer_norm_epsilon for gpt2
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # e.g. llama3: factor, low/high_freq_factor, ...
    hidden_act: str = "silu"
    tie_word_embeddings: bool = False
    attention_bias: bool = False      # qwen2 has q/k/v biases
    qk_norm: bool = False             # qwen3 normalizes q and k per head
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    torch_dtype: str | None = None    # the checkpoint's own dtype, used by dtype="auto"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def family(self) -> str:
        return SUPPORTED_MODEL_TYPES[self.model_type]

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> ModelArchConfig:
        model_type = d.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(f"model_type {model_type!r} is not supported; supported: "
                             f"{sorted(SUPPORTED_MODEL_TYPES)}")
        eos = d.get("eos_token_id")
        eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
        if model_type == "gpt2":
            hidden = d["n_embd"]
            heads = d["n_head"]
            return cls(
                model_type="gpt2", vocab_size=d["vocab_size"], hidden_size=hidden,
                intermediate_size=d.get("n_inner") or 4 * hidden, num_hidden_layers=d["n_layer"],
                num_attention_heads=heads, num_key_value_heads=heads, head_dim=hidden // heads,
                max_position_embeddings=d["n_positions"], rms_norm_eps=d.get("layer_norm_epsilon", 1e-5),
                hidden_act=d.get("activation_function", "gelu_new"), tie_word_embeddings=True,
                attention_bias=True, bos_token_id=d.get("bos_token_id"), eos_token_ids=eos_ids,
                torch_dtype=d.get("torch_dtype") or d.get("dtype"))
        heads = d["num_attention_heads"]
        rope_theta = d.get("rope_theta")
        rope_scaling = d.get("rope_scaling")
        # transformers 5 folds rope_theta and rope_scaling into one `rope_parameters` dict.
        rope_params = d.get("rope_parameters")
        if isinstance(rope_params, dict):
            rope_theta = rope_params.get("rope_theta", rope_theta)
            if rope_params.get("rope_type", "default") != "default":
                rope_scaling = rope_params
        if rope_scaling is not None and rope_scaling.get("rope_type", rope_scaling.get("type")) in (None, "default"):
            rope_scaling = None
        return cls(
            model_type=model_type, vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"], num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=heads, num_key_value_heads=d.get("num_key_value_heads") or heads,
            head_dim=d.get("head_dim") or d["hidden_size"] // heads,
            max_position_embeddings=d.get("max_position_embeddings", 2048),
            rms_norm_eps=d.get("rms_norm_eps", 1e-6), rope_theta=rope_theta or 10000.0,
            rope_scaling=rope_scaling, hidden_act=d.get("hidden_act", "silu"),
            tie_word_embeddings=d.get("tie_word_embeddings", False),
            attention_bias=d.get("attention_bias", model_type == "qwen2"),
            qk_norm=model_type == "qwen3", bos_token_id=d.get("bos_token_id"), eos_token_ids=eos_ids,
            torch_dtype=d.get("torch_dtype") or d.get("dtype"))
