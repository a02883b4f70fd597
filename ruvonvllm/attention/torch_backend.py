"""The pure-torch reference backend: obviously correct, runs on any device.

It pads the ragged batch into a dense one: each sequence's context is gathered
from its cache blocks into `[num_seqs, max_seq_len, num_kv_heads, head_dim]`,
queries into `[num_seqs, max_query_len, num_heads, head_dim]`, and a boolean
mask keeps both causality and the padding out. One scaled_dot_product_attention
call per layer then handles the whole batch, so a batch of 16 decodes costs one
kernel, not sixteen. Every fast backend is tested against this one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ruvonvllm.attention.base import AttentionBackend, AttentionMetadata
from ruvonvllm.ops.kv_cache import write_kv_cache


def context_block_ids(block_tables: torch.Tensor, max_seq_len: int, block_size: int) -> torch.Tensor:
    """The blocks holding each sequence's first max_seq_len tokens, flattened: [num_seqs * blocks_needed]."""
    num_blocks_needed = (max_seq_len + block_size - 1) // block_size
    return block_tables[:, :num_blocks_needed].reshape(-1)


def gather_context(cache: torch.Tensor, block_ids: torch.Tensor, num_seqs: int, max_seq_len: int) -> torch.Tensor:
    """[num_blocks, block_size, H, D] gathered at `block_ids` -> [num_seqs, max_seq_len, H, D].

    index_select along the block dimension, not advanced indexing (`cache[tables]`):
    on the 2-core CPU machine 1.9x faster for one sequence and 6.5x for sixteen
    (`python benchmarks/cpu_gather_microbench.py`).
    """
    gathered = cache.index_select(0, block_ids)  # [num_seqs * blocks_needed, block_size, H, D]
    return gathered.view(num_seqs, -1, *cache.shape[2:])[:, :max_seq_len]


@dataclass
class PaddedLayout:
    """Per-step tensors that place the ragged batch in a padded one; the same for every layer."""

    seq_of_token: torch.Tensor | None  # [num_tokens]: each token's sequence (None: decode, one per sequence)
    row_of_token: torch.Tensor | None  # [num_tokens]: its row in that sequence's padded query block
    mask: torch.Tensor | None          # [num_seqs, 1, max_q, max_s] bool; None when nothing is masked
    context_blocks: torch.Tensor       # [num_seqs * blocks of max_s tokens]: what each layer gathers


def padded_layout(meta: AttentionMetadata, device: torch.device, block_size: int) -> PaddedLayout:
    num_seqs, max_q, max_s = meta.num_seqs, meta.max_query_len, meta.max_seq_len
    context_blocks = context_block_ids(meta.block_tables, max_s, block_size)
    decode = max_q == 1 and len(meta.query_lens_cpu) == num_seqs and sum(meta.query_lens_cpu) == num_seqs
    if decode and num_seqs == 1:
        return PaddedLayout(None, None, None, context_blocks)  # one query seeing its whole context: no mask at all
    seq_of_token = row_of_token = None
    if not decode:
        query_lens = torch.tensor(meta.query_lens_cpu, device=device)
        seq_of_token = torch.repeat_interleave(torch.arange(num_seqs, device=device), query_lens)
        row_of_token = torch.arange(seq_of_token.shape[0], device=device) - meta.query_start_loc[:-1].long()[seq_of_token]
    # Query row j of sequence i sits at absolute position seq_len - query_len + j; it may
    # see key positions <= its own, and never past the sequence's end.
    seq_lens = meta.seq_lens.long().view(num_seqs, 1, 1)
    query_lens_t = (meta.query_start_loc[1:] - meta.query_start_loc[:-1]).long().view(num_seqs, 1, 1)
    q_pos = seq_lens - query_lens_t + torch.arange(max_q, device=device).view(1, max_q, 1)
    k_pos = torch.arange(max_s, device=device).view(1, 1, max_s)
    mask = (k_pos <= q_pos) & (k_pos < seq_lens)
    return PaddedLayout(seq_of_token, row_of_token, mask.unsqueeze(1), context_blocks)


class TorchAttentionBackend(AttentionBackend):
    name = "torch"

    def __init__(self) -> None:
        # The layout depends only on the step's metadata: build it in the first layer, reuse it
        # in the others (a model has tens of layers; rebuilding costs more than attention itself
        # for small CPU batches).
        self._layout_meta: AttentionMetadata | None = None
        self._layout: PaddedLayout | None = None

    def _layout_for(self, meta: AttentionMetadata, device: torch.device, block_size: int) -> PaddedLayout:
        if meta is not self._layout_meta:
            self._layout_meta, self._layout = meta, padded_layout(meta, device, block_size)
        return self._layout

    def forward(self, query: torch.Tensor, key: torch.Tensor | None, value: torch.Tensor | None,
                k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                scale: float) -> torch.Tensor:
        if key is not None:
            write_kv_cache(key, value, k_cache, v_cache, meta.slot_mapping)
        layout = self._layout_for(meta, query.device, k_cache.shape[1])

        num_tokens, num_heads, head_dim = query.shape
        num_seqs, max_q, max_s = meta.num_seqs, meta.max_query_len, meta.max_seq_len
        keys = gather_context(k_cache, layout.context_blocks, num_seqs, max_s).to(query.dtype)
        values = gather_context(v_cache, layout.context_blocks, num_seqs, max_s).to(query.dtype)

        if layout.seq_of_token is None:
            padded_q = query.unsqueeze(1)  # decode: one token per sequence, already dense
        else:
            padded_q = query.new_zeros(num_seqs, max_q, num_heads, head_dim)
            padded_q[layout.seq_of_token, layout.row_of_token] = query

        # SDPA wants [batch, heads, len, dim]; enable_gqa lets each kv head serve its group of
        # query heads without copying K/V (the same grouping as HF's repeat_kv).
        out = F.scaled_dot_product_attention(padded_q.transpose(1, 2), keys.transpose(1, 2),
                                             values.transpose(1, 2), attn_mask=layout.mask, scale=scale,
                                             enable_gqa=True)
        out = out.transpose(1, 2)  # [num_seqs, max_q, num_heads, head_dim]
        if layout.seq_of_token is None:
            return out.squeeze(1)
        return out[layout.seq_of_token, layout.row_of_token]
