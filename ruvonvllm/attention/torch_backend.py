"""The pure-torch reference backend: obviously correct, runs on any device.

It pads the ragged batch into a dense one: each sequence's context is gathered
from its cache blocks into `[num_seqs, max_seq_len, num_kv_heads, head_dim]`,
queries into `[num_seqs, max_query_len, num_heads, head_dim]`, and a boolean
mask keeps both causality and the padding out. One scaled_dot_product_attention
call per layer then handles the whole batch, so a batch of 16 decodes costs one
kernel, not sixteen. Every fast backend is tested against this one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ruvonvllm.attention.base import AttentionBackend, AttentionMetadata


def write_kv_cache(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor,
                   v_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Store each new token's K/V at its slot. Slots < 0 mean "don't store" (padding)."""
    num_blocks, block_size, num_kv_heads, head_dim = k_cache.shape
    flat_k = k_cache.view(num_blocks * block_size, num_kv_heads, head_dim)
    flat_v = v_cache.view(num_blocks * block_size, num_kv_heads, head_dim)
    flat_k.index_copy_(0, slot_mapping, key.to(k_cache.dtype))
    flat_v.index_copy_(0, slot_mapping, value.to(v_cache.dtype))


def gather_context(cache: torch.Tensor, block_tables: torch.Tensor, max_seq_len: int) -> torch.Tensor:
    """[num_blocks, block_size, H, D] gathered through block tables -> [num_seqs, max_seq_len, H, D]."""
    block_size = cache.shape[1]
    num_blocks_needed = (max_seq_len + block_size - 1) // block_size
    tables = block_tables[:, :num_blocks_needed].long()
    gathered = cache[tables]  # [num_seqs, blocks, block_size, H, D]
    num_seqs = tables.shape[0]
    return gathered.reshape(num_seqs, num_blocks_needed * block_size, *cache.shape[2:])[:, :max_seq_len]


def ragged_to_padded_index(meta: AttentionMetadata, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For each new token: (its sequence, its row inside that sequence's padded query block)."""
    query_lens = torch.tensor(meta.query_lens_cpu, device=device)
    seq_of_token = torch.repeat_interleave(torch.arange(len(meta.query_lens_cpu), device=device), query_lens)
    row_of_token = torch.arange(int(query_lens.sum()), device=device) - meta.query_start_loc[:-1].long()[seq_of_token]
    return seq_of_token, row_of_token


class TorchAttentionBackend(AttentionBackend):
    name = "torch"

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata,
                scale: float) -> torch.Tensor:
        write_kv_cache(key, value, k_cache, v_cache, meta.slot_mapping)

        num_tokens, num_heads, head_dim = query.shape
        num_kv_heads = k_cache.shape[2]
        num_seqs, max_q, max_s = meta.num_seqs, meta.max_query_len, meta.max_seq_len
        device = query.device

        keys = gather_context(k_cache, meta.block_tables, max_s).to(query.dtype)
        values = gather_context(v_cache, meta.block_tables, max_s).to(query.dtype)

        if max_q == 1 and num_tokens == num_seqs:
            padded_q = query.unsqueeze(1)  # decode: one token per sequence, already dense
            seq_of_token = row_of_token = None
        else:
            seq_of_token, row_of_token = ragged_to_padded_index(meta, device)
            padded_q = query.new_zeros(num_seqs, max_q, num_heads, head_dim)
            padded_q[seq_of_token, row_of_token] = query

        # Query row j of sequence i sits at absolute position seq_len - query_len + j; it may
        # see key positions <= its own, and never past the sequence's end.
        seq_lens = meta.seq_lens.long().view(num_seqs, 1, 1)
        query_lens = (meta.query_start_loc[1:] - meta.query_start_loc[:-1]).long().view(num_seqs, 1, 1)
        q_pos = seq_lens - query_lens + torch.arange(max_q, device=device).view(1, max_q, 1)
        k_pos = torch.arange(max_s, device=device).view(1, 1, max_s)
        mask = (k_pos <= q_pos) & (k_pos < seq_lens)  # [num_seqs, max_q, max_s]

        # SDPA wants [batch, heads, len, dim]. GQA: each kv head serves num_heads // num_kv_heads
        # query heads; repeat_interleave matches HF's repeat_kv layout.
        group = num_heads // num_kv_heads
        q = padded_q.transpose(1, 2)
        k = keys.transpose(1, 2).repeat_interleave(group, dim=1)
        v = values.transpose(1, 2).repeat_interleave(group, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.unsqueeze(1), scale=scale)
        out = out.transpose(1, 2)  # [num_seqs, max_q, num_heads, head_dim]

        if seq_of_token is None:
            return out.squeeze(1)
        return out[seq_of_token, row_of_token]
