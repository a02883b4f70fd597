"""The output head: final hidden states to float32 logits, one module for every model.

Untied (Llama 3.1 8B), the head owns its weight, named `lm_head.weight` as in HF
checkpoints. Tied (SmolLM2, the small Qwens, GPT-2), it owns nothing and the model
passes its embedding matrix at each call: a Parameter shared between two modules
would not survive the loader's meta-device construction and `to_empty`.

On the CPU, `replace_linears` (layers/linear.py) builds a faster layer from the weight
(oneDNN-packed or int8) and installs it with `pack`; an untied head then drops its
float copy, which nothing else reads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LMHead(nn.Module):
    def __init__(self, hidden_size: int, vocab_size: int, tied: bool) -> None:
        super().__init__()
        self.tied = tied
        self.weight = None if tied else nn.Parameter(torch.empty(vocab_size, hidden_size))
        self.packed: nn.Module | None = None

    def forward(self, hidden: torch.Tensor, embedding_weight: torch.Tensor) -> torch.Tensor:
        """hidden [N, hidden_size] -> logits [N, vocab_size] float32. embedding_weight is read only when tied."""
        if self.packed is not None:
            return self.packed(hidden).float()
        return F.linear(hidden, self.weight_or(embedding_weight)).float()

    def weight_or(self, embedding_weight: torch.Tensor) -> torch.Tensor:
        """[vocab_size, hidden_size]: the head's matrix, the embedding's when tied."""
        if self.tied:
            return embedding_weight
        if self.weight is None:
            raise RuntimeError("the untied head was packed: its float weight is gone")
        return self.weight

    def pack(self, layer: nn.Module) -> None:
        """Compute logits with `layer` (built from this head's weight) from now on."""
        self.packed = layer
        if not self.tied:
            self.weight = None
