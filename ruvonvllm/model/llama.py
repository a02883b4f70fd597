"""The Llama family: Llama 2/3, Mistral, SmolLM, Qwen2 and Qwen3.

They share one decoder: pre-norm blocks of (RMSNorm, rotary GQA attention)
and (RMSNorm, SwiGLU MLP). The variants differ only in details that
ModelArchConfig carries:

- Qwen2 adds biases to the q/k/v projections (not to o_proj);
- Qwen3 RMS-normalizes each head of q and k before rotary, and has no biases;
- Llama 3.1 scales its rotary frequencies (rope_scaling type "llama3");
- SmolLM and the small Qwens tie lm_head to the token embeddings.

Mistral's sliding window is not applied: attention is always full, which is
exact for contexts up to the window (4096 tokens for Mistral 7B).

The forward pass sees one flattened batch of tokens from any number of
sequences; the attention layers and AttentionMetadata take care of which
token sees which, so there is no prefill/decode distinction here.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ruvonvllm.attention.base import AttentionMetadata
from ruvonvllm.layers.activation import ActAndMul
from ruvonvllm.layers.attention import PagedAttention
from ruvonvllm.layers.linear import Linear, MergedLinear, copy_weight
from ruvonvllm.layers.lm_head import LMHead
from ruvonvllm.layers.norm import RMSNorm
from ruvonvllm.layers.rotary import RotaryEmbedding
from ruvonvllm.model.config import ModelArchConfig
from ruvonvllm.model.weight_utils import check_all_loaded, shard_key
from ruvonvllm.ops.rotary import QKNorm, RotaryAngles, rotate_qk_, writes_kv_cache

# Checkpoint projection name -> (our fused projection, its shard).
FUSED_PROJECTIONS = {
    "q_proj": ("qkv_proj", "q"),
    "k_proj": ("qkv_proj", "k"),
    "v_proj": ("qkv_proj", "v"),
    "gate_proj": ("gate_up_proj", "gate"),
    "up_proj": ("gate_up_proj", "up"),
}


class LlamaAttention(nn.Module):
    def __init__(self, config: ModelArchConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.qkv_proj = MergedLinear(config.hidden_size, {"q": self.q_size, "k": self.kv_size, "v": self.kv_size},
                                     bias=config.attention_bias)
        # Llama's attention_bias covers o_proj too; Qwen2's q/k/v biases do not.
        self.o_proj = Linear(self.q_size, config.hidden_size,
                             bias=config.attention_bias and config.family != "qwen2")
        self.qk_norm = config.qk_norm
        if config.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.attn = PagedAttention(self.num_heads, self.num_kv_heads, self.head_dim, scale=self.head_dim ** -0.5)

    def forward(self, hidden: torch.Tensor, angles: RotaryAngles, attn_meta: AttentionMetadata) -> torch.Tensor:
        qkv = self.qkv_proj(hidden)  # [T, q_size + 2 * kv_size]
        # Qwen3's per-head q/k norm and the rotation of q and k, in place, in one op; where that
        # op is a kernel it also writes k and v into the paged cache, and attention only reads it.
        qk_norm = QKNorm(self.q_norm.weight, self.k_norm.weight, self.q_norm.eps) if self.qk_norm else None
        if writes_kv_cache(qkv):
            rotate_qk_(qkv, angles, self.num_heads, self.num_kv_heads, self.head_dim, qk_norm,
                       kv_write=self.attn.kv_cache_write(attn_meta))
            return self.o_proj(self.attn(qkv[:, :self.q_size], None, None, attn_meta))
        rotate_qk_(qkv, angles, self.num_heads, self.num_kv_heads, self.head_dim, qk_norm)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        return self.o_proj(self.attn(q, k, v, attn_meta))


class LlamaMLP(nn.Module):
    def __init__(self, config: ModelArchConfig) -> None:
        super().__init__()
        size = config.intermediate_size
        self.gate_up_proj = MergedLinear(config.hidden_size, {"gate": size, "up": size}, bias=False)
        self.act_and_mul = ActAndMul(config.hidden_act)
        self.down_proj = Linear(size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)
        if self.act_and_mul.is_silu and isinstance(self.down_proj, Linear):
            # One op for silu(gate) * up and the down projection (one kernel at small batch on a GPU).
            # Transforms that replace the layer (int8, the CPU's packed layers) take the plain path.
            return self.down_proj.forward_silu_and_mul(gate_up)
        return self.down_proj(self.act_and_mul(gate_up))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: ModelArchConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = LlamaAttention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = LlamaMLP(config)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor | None, angles: RotaryAngles,
                attn_meta: AttentionMetadata) -> tuple[torch.Tensor, torch.Tensor]:
        """(sublayer output, residual stream) -> the same pair after this layer.

        The residual add of each sublayer is deferred into the next RMSNorm,
        which adds and normalizes in one op: the first layer gets residual None.
        """
        if residual is None:
            residual, hidden = hidden, self.input_layernorm(hidden)
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(hidden, angles, attn_meta)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(hidden), residual


class LlamaModel(nn.Module):
    def __init__(self, config: ModelArchConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.max_position_embeddings,
                                          config.rope_theta, config.rope_scaling)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                attn_meta: AttentionMetadata) -> torch.Tensor:
        # One gather of cos/sin rows per step, shared by every layer.
        angles = self.rotary_emb(positions, attn_meta.max_seq_len)
        hidden, residual = self.embed_tokens(input_ids), None
        for layer in self.layers:
            hidden, residual = layer(hidden, residual, angles, attn_meta)
        hidden, _ = self.norm(hidden, residual)
        return hidden


class LlamaForCausalLM(nn.Module):
    """Also serves Mistral, SmolLM, Qwen2 and Qwen3 (see the module docstring)."""

    def __init__(self, config: ModelArchConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = LMHead(config.hidden_size, config.vocab_size, tied=config.tie_word_embeddings)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                attn_meta: AttentionMetadata) -> torch.Tensor:
        """input_ids, positions [T] int64 -> final hidden states [T, hidden_size]."""
        return self.model(input_ids, positions, attn_meta)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, hidden_size] -> logits [N, vocab_size] float32."""
        return self.lm_head(hidden, self.model.embed_tokens.weight)

    def lm_head_weight(self) -> torch.Tensor:
        """[vocab_size, hidden_size]: the embedding matrix when tied."""
        return self.lm_head.weight_or(self.model.embed_tokens.weight)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy a complete HF-named checkpoint into the allocated parameters, one tensor at a time."""
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for name, tensor in weights:
            if name.endswith("rotary_emb.inv_freq"):
                continue  # older checkpoints saved HF's rotary buffer; ours is recomputed
            if name == "lm_head.weight" and self.config.tie_word_embeddings:
                continue  # some tied checkpoints store the embedding a second time
            parts = name.split(".")
            if len(parts) >= 2 and parts[-2] in FUSED_PROJECTIONS:
                fused, shard = FUSED_PROJECTIONS[parts[-2]]
                kind = parts[-1]
                target = ".".join([*parts[:-2], fused])
                module = self.get_submodule(target) if f"{target}.{kind}" in params else None
                if not isinstance(module, MergedLinear):
                    raise ValueError(f"unexpected weight {name!r} for {type(self).__name__}")
                module.load_shard(shard, kind, tensor, name)
                loaded.add(shard_key(f"{target}.{kind}", shard))
            elif name in params:
                copy_weight(params[name], tensor, name)
                loaded.add(name)
            else:
                raise ValueError(f"unexpected weight {name!r} for {type(self).__name__}")
        check_all_loaded(self, loaded)
