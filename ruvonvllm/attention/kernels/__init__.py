"""Triton kernels behind TritonAttentionBackend, one file per kernel.

kv_write.py  (a) store new K/V rows at their cache slots
decode.py    (b) paged decode attention, GQA-aware, with split-K (flash-decoding)
prefill.py   (c) paged attention for ragged prefill / chunked prefill / mixed batches
"""

from ruvonvllm.attention.kernels.decode import choose_num_splits, paged_decode_attention
from ruvonvllm.attention.kernels.kv_write import store_kv_cache
from ruvonvllm.attention.kernels.prefill import paged_prefill_attention

__all__ = ["choose_num_splits", "paged_decode_attention", "paged_prefill_attention", "store_kv_cache"]
