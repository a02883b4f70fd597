"""Turn "these sequences compute these tokens" into the tensors a model step needs.

This is pure bookkeeping over Python lists, done once per step on the host;
the result travels to the device in as few copies as possible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ruvonvllm.attention.base import AttentionMetadata


@dataclass
class SequenceChunk:
    """New tokens of one sequence: token_ids sit at positions start, start+1, ... of the sequence."""

    token_ids: list[int]
    start: int
    block_table: list[int]


@dataclass
class ModelInputs:
    input_ids: torch.Tensor   # [num_tokens] int64
    positions: torch.Tensor   # [num_tokens] int64
    attn_meta: AttentionMetadata
    # Index (into the flattened tokens) of each sequence's last new token: where logits are taken.
    last_token_indices: torch.Tensor  # [num_seqs] int64


def build_model_inputs(chunks: list[SequenceChunk], block_size: int, device: torch.device) -> ModelInputs:
    input_ids: list[int] = []
    positions: list[int] = []
    slot_mapping: list[int] = []
    query_start_loc = [0]
    seq_lens: list[int] = []
    for chunk in chunks:
        n = len(chunk.token_ids)
        end = chunk.start + n
        if (end + block_size - 1) // block_size > len(chunk.block_table):
            raise ValueError(f"block table of {len(chunk.block_table)} blocks cannot hold {end} tokens")
        input_ids.extend(chunk.token_ids)
        positions.extend(range(chunk.start, end))
        table = chunk.block_table
        slot_mapping.extend(table[p // block_size] * block_size + p % block_size for p in range(chunk.start, end))
        query_start_loc.append(query_start_loc[-1] + n)
        seq_lens.append(end)

    max_blocks = max((len(c.block_table) for c in chunks), default=0)
    block_tables = [c.block_table + [0] * (max_blocks - len(c.block_table)) for c in chunks]
    query_lens = tuple(len(c.token_ids) for c in chunks)

    def as_tensor(values, dtype):
        return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)

    meta = AttentionMetadata(
        query_start_loc=as_tensor(query_start_loc, torch.int32),
        seq_lens=as_tensor(seq_lens, torch.int32),
        block_tables=as_tensor(block_tables, torch.int32).view(len(chunks), max_blocks),
        slot_mapping=as_tensor(slot_mapping, torch.int64),
        max_query_len=max(query_lens, default=0),
        max_seq_len=max(seq_lens, default=0),
        query_lens_cpu=query_lens,
        seq_lens_cpu=tuple(seq_lens),
    )
    last = [loc - 1 for loc in query_start_loc[1:]]
    return ModelInputs(as_tensor(input_ids, torch.int64), as_tensor(positions, torch.int64), meta,
                       as_tensor(last, torch.int64))
