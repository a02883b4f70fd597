"""Rotary position embeddings (RoPE, Su et al. 2021, "RoFormer").

Each pair of dimensions (i, i + head_dim/2) of a query or key is rotated by
the angle `position * inv_freq[i]`. This is HF's "rotate_half" layout (the two
halves of the head are paired, not neighbouring dimensions), which is how
Llama, Mistral and Qwen checkpoints on the Hub expect to be used.

The cos/sin of every angle are computed once into a float32 table
`[max_positions, head_dim]` (cos in the first half, sin in the second) and a
step only gathers the rows of its positions: no trigonometry per token. The
rotation itself is ruvonvllm/ops/rotary.py (one fused kernel for q and k on CUDA).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ruvonvllm.ops.rotary import RotaryAngles

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")

# Precomputing 128k positions for a Llama 3.1 would cost 64 MiB per head size for
# positions almost nobody reaches; the table grows on demand past this.
MAX_PRECOMPUTED_POSITIONS = 32768


def rope_type(rope_scaling: dict[str, Any] | None) -> str:
    """HF spells the kind `rope_type` (newer configs) or `type` (older ones)."""
    if rope_scaling is None:
        return "default"
    return rope_scaling.get("rope_type", rope_scaling.get("type", "default"))


def compute_inv_freq(head_dim: int, base: float, rope_scaling: dict[str, Any] | None) -> torch.Tensor:
    """The rotation frequency of each dimension pair, [head_dim // 2] float32, on the CPU."""
    kind = rope_type(rope_scaling)
    if kind not in SUPPORTED_ROPE_TYPES:
        raise ValueError(f"rope scaling type {kind!r} is not supported; supported: {SUPPORTED_ROPE_TYPES}")
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim
    inv_freq = 1.0 / (base ** exponents)
    if kind == "linear":
        # Position interpolation: positions divided by `factor`, the same as dividing the frequencies.
        return inv_freq / rope_scaling["factor"]
    if kind == "llama3":
        return _llama3_inv_freq(inv_freq, rope_scaling)
    return inv_freq


def _llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict[str, Any]) -> torch.Tensor:
    """Llama 3.1's frequency-dependent scaling (Meta's reference `apply_scaling`).

    Wavelengths shorter than original_context / high_freq_factor keep their
    frequency, those longer than original_context / low_freq_factor are slowed
    down by `factor`, and the band between blends the two linearly in
    original_context / wavelength.
    """
    factor = scaling["factor"]
    low_freq_factor = scaling["low_freq_factor"]
    high_freq_factor = scaling["high_freq_factor"]
    original_context = scaling["original_max_position_embeddings"]
    low_freq_wavelen = original_context / low_freq_factor
    high_freq_wavelen = original_context / high_freq_factor

    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (original_context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    in_band = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(in_band, blended, scaled)


class RotaryEmbedding(nn.Module):
    """Holds the cos/sin table; `forward(positions)` returns the rows a step needs.

    The table is a non-persistent buffer, so it never appears in checkpoints and
    follows the model across devices. A loader that builds the model on the meta
    device calls `rebuild_cache()` after materializing it.
    """

    def __init__(self, head_dim: int, max_position_embeddings: int, base: float,
                 rope_scaling: dict[str, Any] | None = None) -> None:
        super().__init__()
        if head_dim % 2 != 0:
            raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}")
        self.head_dim = head_dim
        self.inv_freq = compute_inv_freq(head_dim, base, rope_scaling)  # plain attribute: stays float32 on CPU
        num_positions = min(max_position_embeddings, MAX_PRECOMPUTED_POSITIONS)
        self.register_buffer("cos_sin_cache", self._table(num_positions, device=None), persistent=False)

    def _table(self, num_positions: int, device: torch.device | None) -> torch.Tensor:
        """[num_positions, head_dim] float32: cos of every angle, then sin."""
        positions = torch.arange(num_positions, dtype=torch.float32, device=device)
        angles = torch.outer(positions, self.inv_freq.to(positions.device))
        return torch.cat((angles.cos(), angles.sin()), dim=-1)

    def rebuild_cache(self) -> None:
        """Recompute the table in float32 where the buffer lives now (after to_empty or a dtype cast)."""
        self.cos_sin_cache = self._table(self.cos_sin_cache.shape[0], self.cos_sin_cache.device)

    def forward(self, positions: torch.Tensor, max_seq_len: int) -> RotaryAngles:
        """positions [T] int64 -> the step's angles (rows of the table, [T, head_dim] float32).

        `max_seq_len` is a host-side bound on the positions (every position is
        < max_seq_len), so growing the table never needs a device sync.
        """
        if max_seq_len > self.cos_sin_cache.shape[0]:
            grown = max(max_seq_len, 2 * self.cos_sin_cache.shape[0])
            self.cos_sin_cache = self._table(grown, self.cos_sin_cache.device)
        return RotaryAngles(self.cos_sin_cache.index_select(0, positions))
