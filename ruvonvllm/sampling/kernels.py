"""The Triton kernel behind `fused_sample` (imported only when it runs: the CPU never needs Triton)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def gumbel_max_partial_kernel(
    logits_ptr,                    # [B, V] float32
    inv_temperature_ptr,           # [B] float32, 1 / temperature
    greedy_ptr,                    # [B] int8: 1 = argmax, no noise
    seeds_ptr,                     # [B] int64: each row's noise seed
    best_score_ptr, best_index_ptr,  # [B, num_blocks]: each block's winner
    stride_logits, vocab_size, num_blocks,
    BLOCK: tl.constexpr,
):
    # Program (row, block) scores BLOCK tokens of one row: logit / T plus Gumbel noise
    # -log(-log(u)), u uniform from the row's seed and the token's index (so a row's draw does
    # not depend on the rest of the batch), and keeps the best. A greedy row scores the logit alone.
    row = tl.program_id(0)
    block = tl.program_id(1)
    cols = block * BLOCK + tl.arange(0, BLOCK)
    mask = cols < vocab_size
    logits = tl.load(logits_ptr + row * stride_logits + cols, mask=mask, other=float("-inf"))
    greedy = tl.load(greedy_ptr + row) != 0
    seed = tl.load(seeds_ptr + row)
    uniform = tl.rand(seed, cols)
    gumbel = -tl.log(-tl.log(uniform))
    scores = tl.where(greedy, logits, logits * tl.load(inv_temperature_ptr + row) + gumbel)
    scores = tl.where(mask, scores, float("-inf"))
    best = tl.argmax(scores, axis=0)  # the first of equal maxima, as torch.argmax
    tl.store(best_score_ptr + row * num_blocks + block, tl.max(scores, axis=0))
    tl.store(best_index_ptr + row * num_blocks + block, block * BLOCK + best)
