"""The attention backend interface: one small contract every backend implements.

A step's batch is flattened: `num_tokens` new tokens from `num_seqs`
sequences, sequence i owning tokens query_start_loc[i]:query_start_loc[i+1].
Sequence i already has `seq_lens[i] - query_len(i)` tokens of K/V in the paged
cache; this step adds its new tokens' K/V (written at `slot_mapping`) and every
new token attends causally to all of its sequence's context, cached or new.
That one description covers prefill, chunked prefill, prefix-cache hits and
decode, so the model never needs to know which it is running.

Cache layout, per layer: k_cache and v_cache are
`[num_blocks, block_size, num_kv_heads, head_dim]`. Token t of a sequence
lives in block `block_table[t // block_size]` at offset `t % block_size`; its
slot is `block * block_size + offset`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AttentionMetadata:
    query_start_loc: torch.Tensor  # [num_seqs + 1] int32, on the model's device
    seq_lens: torch.Tensor         # [num_seqs] int32: context length after this step
    block_tables: torch.Tensor     # [num_seqs, max_blocks_per_seq] int32, padding entries 0
    slot_mapping: torch.Tensor     # [num_tokens] int64: cache slot for each new token's K/V
    max_query_len: int
    max_seq_len: int
    # Host copies, so backends that need Python-side shapes don't sync with the device.
    query_lens_cpu: tuple[int, ...] = ()
    seq_lens_cpu: tuple[int, ...] = ()

    @property
    def num_seqs(self) -> int:
        return self.seq_lens.shape[0]

    @property
    def is_decode_only(self) -> bool:
        return self.max_query_len == 1


class AttentionBackend:
    """Computes paged attention for one layer. Stateless: the caches are arguments."""

    name = "base"

    def forward(self, query: torch.Tensor, key: torch.Tensor | None, value: torch.Tensor | None,
                k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                scale: float) -> torch.Tensor:
        """query [num_tokens, num_heads, head_dim]; key/value [num_tokens, num_kv_heads, head_dim].

        Writes key/value into the caches at meta.slot_mapping, then returns the
        attention output [num_tokens, num_heads, head_dim] in query's dtype.
        key and value None mean the caller has already written them there (the
        Llama layers do, in their rotary kernel: ops/rotary.py).
        """
        raise NotImplementedError
