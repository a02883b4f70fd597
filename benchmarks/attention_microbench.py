"""Triton attention backend vs the pure-torch reference, one layer, on CUDA.

    python benchmarks/attention_microbench.py

Shapes are Qwen3-0.6B's attention (16 query heads, 8 kv heads, head_dim 128,
bf16, block size 16). Each row times one backend.forward (KV write included)
with triton.testing.do_bench, median of its repetitions. For decode, GB/s is
the K/V bytes the step must read (every context token's K and V, all kv heads)
over the measured time: how close the kernel gets to HBM bandwidth. The last
rows switch split-K off to show what it buys when the batch is small.
"""

from __future__ import annotations

import torch
import triton.testing

from ruvonvllm.attention.kernels import choose_num_splits, paged_decode_attention
from ruvonvllm.attention.torch_backend import TorchAttentionBackend
from ruvonvllm.attention.triton_backend import TritonAttentionBackend
from ruvonvllm.engine.model_inputs import SequenceChunk, build_model_inputs

NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, BLOCK_SIZE, DTYPE = 16, 8, 128, 16, torch.bfloat16
DEVICE = torch.device("cuda")


def make_step(specs: list[tuple[int, int]]):
    """(context_len, query_len) per sequence -> inputs for one attention layer, blocks shuffled."""
    needed = [-(-(c + q) // BLOCK_SIZE) for c, q in specs]
    blocks = torch.randperm(sum(needed)).tolist()
    chunks = []
    for (context_len, query_len), n in zip(specs, needed):
        chunks.append(SequenceChunk([0] * query_len, context_len, blocks[:n]))
        blocks = blocks[n:]
    meta = build_model_inputs(chunks, BLOCK_SIZE, DEVICE).attn_meta
    num_tokens = sum(q for _, q in specs)
    q = torch.randn(num_tokens, NUM_HEADS, HEAD_DIM, device=DEVICE, dtype=DTYPE)
    k = torch.randn(num_tokens, NUM_KV_HEADS, HEAD_DIM, device=DEVICE, dtype=DTYPE)
    v = torch.randn_like(k)
    cache_shape = (sum(needed), BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM)
    k_cache = torch.randn(cache_shape, device=DEVICE, dtype=DTYPE)
    v_cache = torch.randn_like(k_cache)
    return q, k, v, k_cache, v_cache, meta


def kv_bytes(specs: list[tuple[int, int]]) -> int:
    element = torch.empty((), dtype=DTYPE).element_size()
    return sum(c + q for c, q in specs) * 2 * NUM_KV_HEADS * HEAD_DIM * element


def time_ms(fn) -> float:
    return triton.testing.do_bench(fn, return_mode="median")


def main() -> None:
    scale = HEAD_DIM ** -0.5
    cases = {
        "decode  b=64 ctx=1k": [(1023, 1)] * 64,
        "decode  b=4  ctx=8k": [(8191, 1)] * 4,
        "prefill 4 x 1k": [(0, 1024)] * 4,
        "prefill 1 x 4k": [(0, 4096)],
    }
    print(f"{'case':<22}{'torch ms':>10}{'triton ms':>11}{'speedup':>9}{'triton GB/s':>13}")
    for name, specs in cases.items():
        q, k, v, k_cache, v_cache, meta = make_step(specs)
        reference, backend = TorchAttentionBackend(), TritonAttentionBackend()
        torch_ms = time_ms(lambda: reference.forward(q, k, v, k_cache, v_cache, meta, scale))
        triton_ms = time_ms(lambda: backend.forward(q, k, v, k_cache, v_cache, meta, scale))
        bandwidth = f"{kv_bytes(specs) / triton_ms / 1e6:13.0f}" if meta.max_query_len == 1 else f"{'-':>13}"
        print(f"{name:<22}{torch_ms:10.3f}{triton_ms:11.3f}{torch_ms / triton_ms:8.1f}x{bandwidth}")

    # What split-K buys: the same small-batch, long-context decode with and without it.
    specs = [(8191, 1)] * 4
    q, _, _, k_cache, v_cache, meta = make_step(specs)
    out = torch.empty_like(q)
    sms = torch.cuda.get_device_properties(DEVICE).multi_processor_count
    auto = choose_num_splits(len(specs), NUM_KV_HEADS, meta.max_seq_len, sms)
    rows = len(specs) * NUM_HEADS * auto
    workspace = (torch.empty(rows * HEAD_DIM, device=DEVICE), torch.empty(rows, device=DEVICE))
    for splits in (1, auto):
        ms = time_ms(lambda: paged_decode_attention(q, k_cache, v_cache, meta.block_tables, meta.seq_lens,
                                                    meta.max_seq_len, scale, out, splits, workspace))
        print(f"{f'decode  b=4  ctx=8k splits={splits}':<32}{ms:11.3f} ms{kv_bytes(specs) / ms / 1e6:10.0f} GB/s")


if __name__ == "__main__":
    main()
