"""GPT-2 (Radford et al. 2019): learned positions, LayerNorm, GELU MLP, tied head.

The module names mirror HF's `GPT2LMHeadModel` so checkpoint names map
directly. Two checkpoint quirks are handled in `load_weights`:

- HF stores the projections as `Conv1D`, whose weight is [in, out]; ours are
  `nn.Linear` ([out, in]), so those matrices are transposed on load;
- c_attn is already fused (q, k, v along the output dimension), which is
  exactly the layout our attention splits.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from ruvonvllm.attention.base import AttentionMetadata
from ruvonvllm.layers.activation import get_activation
from ruvonvllm.layers.attention import PagedAttention
from ruvonvllm.layers.linear import copy_weight
from ruvonvllm.layers.lm_head import LMHead
from ruvonvllm.model.config import ModelArchConfig
from ruvonvllm.model.weight_utils import check_all_loaded

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Causal-mask buffers that old checkpoints saved alongside the weights.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


class GPT2Attention(nn.Module):
    def __init__(self, config: ModelArchConfig) -> None:
        super().__init__()
        self.hidden_size = config.hidden_size
        self.c_attn = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=True)
        self.c_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=True)
        self.attn = PagedAttention(config.num_attention_heads, config.num_attention_heads, config.head_dim,
                                   scale=config.head_dim ** -0.5)

    def forward(self, hidden: torch.Tensor, attn_meta: AttentionMetadata) -> torch.Tensor:
        q, k, v = self.c_attn(hidden).split(self.hidden_size, dim=-1)
        return self.c_proj(self.attn(q, k, v, attn_meta))


class GPT2MLP(nn.Module):
    def __init__(self, config: ModelArchConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.hidden_size, config.intermediate_size, bias=True)
        self.act = get_activation(config.hidden_act)
        self.c_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


class GPT2Block(nn.Module):
    def __init__(self, config: ModelArchConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.attn = GPT2Attention(config)
        self.ln_2 = nn.LayerNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = GPT2MLP(config)

    def forward(self, hidden: torch.Tensor, attn_meta: AttentionMetadata) -> torch.Tensor:
        hidden = hidden + self.attn(self.ln_1(hidden), attn_meta)
        return hidden + self.mlp(self.ln_2(hidden))


class GPT2Model(nn.Module):
    def __init__(self, config: ModelArchConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.wpe = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.h = nn.ModuleList(GPT2Block(config) for _ in range(config.num_hidden_layers))
        self.ln_f = nn.LayerNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                attn_meta: AttentionMetadata) -> torch.Tensor:
        hidden = self.wte(input_ids) + self.wpe(positions)
        for block in self.h:
            hidden = block(hidden, attn_meta)
        return self.ln_f(hidden)


class GPT2LMHeadModel(nn.Module):
    def __init__(self, config: ModelArchConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = GPT2Model(config)
        self.lm_head = LMHead(config.hidden_size, config.vocab_size, tied=True)  # GPT-2 always ties it to wte

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                attn_meta: AttentionMetadata) -> torch.Tensor:
        """input_ids, positions [T] int64 -> final hidden states [T, hidden_size].

        Positions must stay below max_position_embeddings: GPT-2 learned no others.
        """
        return self.transformer(input_ids, positions, attn_meta)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, hidden_size] -> logits [N, vocab_size] float32."""
        return self.lm_head(hidden, self.transformer.wte.weight)

    def lm_head_weight(self) -> torch.Tensor:
        return self.transformer.wte.weight

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy a complete HF-named checkpoint into the allocated parameters, one tensor at a time."""
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for name, tensor in weights:
            if name == "lm_head.weight" or name.endswith(IGNORED_SUFFIXES):
                continue
            # The original OpenAI checkpoints name weights without the "transformer." prefix.
            target = name if name.startswith("transformer.") else f"transformer.{name}"
            if target not in params:
                raise ValueError(f"unexpected weight {name!r} for {type(self).__name__}")
            if target.endswith(CONV1D_WEIGHTS):
                tensor = tensor.t()
            copy_weight(params[target], tensor, name)
            loaded.add(target)
        check_all_loaded(self, loaded)
