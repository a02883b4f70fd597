"""CUDA graphs for decode steps (Part 20).

A decode step of a small model is hundreds of tiny kernels, and launching
each from Python costs more than running it: the GPU waits for the host. A
CUDA graph records the launches of one forward pass once and replays them
with a single call, so the per-kernel host cost disappears.

A graph replays fixed work on fixed addresses, so:

* one graph per batch size of a ladder (1, 2, 4, 8, 16, 24, ...); a step
  runs the graph of the next size up, the extra rows being padding that
  writes no K/V (slot -1) and attends to a 1-token context;
* the inputs live in one device buffer (engine/model_inputs.py), refilled
  before every replay by a single pinned copy; each graph reads its fields at
  the offsets of its padded size;
* the block table width is fixed at max_model_len / block_size, and so is the
  metadata's max_seq_len: the Triton decode kernel picks its number of
  split-K partitions from it and sizes each sequence's partitions on the
  device, so the captured launch is right for every shorter context;
* only decode steps (one new token per sequence) are captured: prefill
  shapes vary too much and spend their time in large matmuls anyway.

The graph covers the model forward and compute_logits; sampling runs after it,
eagerly. All graphs share one memory pool: their activations never live at
the same time, so the pool is about the size of the largest graph's.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from ruvonvllm.engine.model_inputs import InputBuffer, InputLayout, ModelInputs, StepBatch, device_inputs, write_inputs
from ruvonvllm.layers.attention import paged_attention_layers

if TYPE_CHECKING:  # importing it would import Triton, which CPU-only installs may lack
    from ruvonvllm.attention.triton_backend import TritonAttentionBackend

logger = logging.getLogger("ruvonvllm.engine")

# Bigger decode batches spend their time reading weights and K/V, not launching kernels.
MAX_CAPTURED_BATCH_SIZE = 512


def capture_batch_sizes(max_num_seqs: int, limit: int = MAX_CAPTURED_BATCH_SIZE) -> list[int]:
    """The ladder: 1, 2, 4, 8, then steps of 8 to 64, 16 to 128, 32 to 256, 64 beyond.

    Padding wastes at most a few rows where a row costs the most relative to
    the step (small batches) and coarser steps where it hardly matters. The
    largest size is max_num_seqs itself (up to `limit`), so a full batch never pads.
    """
    top = min(max_num_seqs, limit)
    sizes = [1, 2, 4]
    for start, stop, step in ((8, 64, 8), (80, 128, 16), (160, 256, 32), (320, limit, 64)):
        sizes.extend(range(start, stop + 1, step))
    return sorted({s for s in sizes if s < top} | {top})


class DecodeGraphs:
    """Captured decode steps, one per batch size of the ladder, replayed by `run`."""

    def __init__(self, model: nn.Module, backend: TritonAttentionBackend, block_size: int,
                 max_model_len: int, batch_sizes: list[int], device: torch.device) -> None:
        self.model = model
        self.backend = backend
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.batch_sizes = sorted(batch_sizes)
        self.table_width = -(-max_model_len // block_size)
        self.device = device
        largest = self._layout(self.batch_sizes[-1])
        # Sized once for the largest graph and never grown: every graph points into it.
        self.buffer = InputBuffer(device, largest.nbytes)
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self._logits: dict[int, torch.Tensor] = {}     # each graph's output, [batch_size, vocab]
        self._inputs: dict[int, ModelInputs] = {}      # each graph's input views into the buffer
        self._workspace: tuple[torch.Tensor, torch.Tensor] | None = None
        self.capture_seconds = 0.0
        self.memory_bytes = 0
        self.num_replays = 0

    @property
    def max_batch_size(self) -> int:
        return self.batch_sizes[-1]

    def _layout(self, batch_size: int) -> InputLayout:
        return InputLayout(batch_size, batch_size, self.table_width, num_logits=0)

    def padded_size(self, num_seqs: int) -> int:
        """The smallest captured batch size that holds num_seqs rows."""
        return next(size for size in self.batch_sizes if size >= num_seqs)

    def can_run(self, batch: StepBatch) -> bool:
        return batch.is_decode_only and 0 < batch.num_seqs <= self.max_batch_size

    # ---- capture -------------------------------------------------------------
    @torch.inference_mode()
    def capture(self) -> None:
        """Capture every batch size, largest first, after one eager warm-up step at each."""
        free_before = torch.cuda.mem_get_info(self.device)[0]
        start = time.perf_counter()
        layer = paged_attention_layers(self.model)[0]
        self._workspace = self.backend.reserve_decode_workspace(
            self.batch_sizes, layer.num_heads, layer.num_kv_heads, layer.head_dim, self.max_model_len, self.device)

        pool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream(self.device)
        # torch.cuda.graph() would garbage-collect before every capture; once is enough.
        gc.collect()
        for batch_size in reversed(self.batch_sizes):
            self._fill(StepBatch.empty(), batch_size)  # all rows padding: valid, harmless inputs
            inputs = self._inputs[batch_size] = self._graph_inputs(batch_size)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                # The warm-up compiles this shape's Triton kernels and picks cuBLAS
                # algorithms: neither may happen while capturing.
                self._forward(inputs)
                graph = torch.cuda.CUDAGraph()
                graph.capture_begin(pool=pool)
                try:
                    self._logits[batch_size] = self._forward(inputs)
                finally:
                    graph.capture_end()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            self._graphs[batch_size] = graph
        torch.cuda.synchronize(self.device)
        self.capture_seconds = time.perf_counter() - start
        self.memory_bytes = free_before - torch.cuda.mem_get_info(self.device)[0]
        logger.info("captured %d decode CUDA graphs (batch sizes %d..%d) in %.1f s, using %.0f MiB",
                    len(self._graphs), self.batch_sizes[0], self.max_batch_size, self.capture_seconds,
                    self.memory_bytes / 2**20)

    def _forward(self, inputs: ModelInputs) -> torch.Tensor:
        hidden = self.model(inputs.input_ids, inputs.positions, inputs.attn_meta)
        return self.model.compute_logits(hidden)

    # ---- replay --------------------------------------------------------------
    def _graph_inputs(self, batch_size: int) -> ModelInputs:
        """The views a graph of this size reads: fixed addresses inside the buffer."""
        return device_inputs(self.buffer.device_buffer, self._layout(batch_size), self.max_model_len,
                             query_lens=(1,) * batch_size, seq_lens=())

    def _fill(self, batch: StepBatch, batch_size: int) -> None:
        """Write `batch` padded to batch_size rows into the buffer, and send it."""
        layout = self._layout(batch_size)
        write_inputs(self.buffer.host_views(layout), batch, self.block_size, num_padded_seqs=batch_size)
        self.buffer.send(layout.nbytes)

    def run(self, batch: StepBatch, fill_inputs: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
        """Logits [num_seqs, vocab] float32 of a decode batch, by replaying a captured graph.

        `fill_inputs`, when given, is called with the graph's device input ids after the
        step's inputs were sent and before the replay (asynchronous scheduling writes the
        tokens the previous step sampled there). The returned tensor is the graph's own
        output: valid until the next replay.
        """
        batch_size = self.padded_size(batch.num_seqs)
        self._fill(batch, batch_size)
        if fill_inputs is not None:
            fill_inputs(self._inputs[batch_size].input_ids)
        self._graphs[batch_size].replay()
        self.num_replays += 1
        return self._logits[batch_size][:batch.num_seqs]
