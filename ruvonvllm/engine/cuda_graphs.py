"""CUDA graphs for decode steps and small prefill steps (Part 20).

A decode step of a small model is hundreds of tiny kernels, and launching
each from Python costs more than running it: the GPU waits for the host. A
CUDA graph records the launches of one forward pass once and replays them
with a single call, so the per-kernel host cost disappears.

A graph replays fixed work on fixed addresses, so each one is captured for a
shape (`GraphShape`: a number of new tokens from a number of sequences) and a
step runs the smallest captured shape that holds it, the rest being padding:

* decode steps (one token per sequence) use one graph per batch size of a
  ladder (1, 2, 4, 8, 16, 24, ...); padding sequences have one token each,
  write no K/V (slot -1) and attend to a 1-token context;
* small prefill steps (a prompt, its uncached tail after a prefix-cache hit,
  a few prompts together) use one graph per token count of a second ladder
  (16, 32, ... 1,024 tokens) for up to PREFILL_MAX_SEQS sequences. Eagerly such
  a step costs ~25 ms of Python and launch overhead on qwen3-0.6b whatever its
  size, which is the time-to-first-token of every short request. Padding
  tokens belong to no sequence and padding sequences have no tokens: the
  prefill attention kernel's programs for them return at once (its grid is
  sized by the shape, its work by the real lengths on the device);
* the inputs live in one device buffer (engine/model_inputs.py), refilled
  before every replay by a single pinned copy; each graph reads its fields at
  the offsets of its padded shape;
* the block table width is fixed at max_model_len / block_size, and so is the
  metadata's max_seq_len: the Triton decode kernel picks its number of
  split-K partitions from it and sizes each sequence's partitions on the
  device, so the captured launch is right for every shorter context.

Bigger steps, and steps that want prompt logprobs (which need every hidden
state), run eagerly. The graph covers the model forward and compute_logits of
the rows that sample; sampling runs after it, eagerly. All graphs share one
memory pool: their activations never live at the same time, so the pool is
about the size of the largest graph's.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from ruvonvllm.engine.model_inputs import (GraphShape, InputBuffer, InputLayout, ModelInputs, StepBatch, device_inputs,
                                           write_inputs)
from ruvonvllm.layers.attention import paged_attention_layers

if TYPE_CHECKING:  # importing it would import Triton, which CPU-only installs may lack
    from ruvonvllm.attention.triton_backend import TritonAttentionBackend

logger = logging.getLogger("ruvonvllm.engine")

# Bigger decode batches spend their time reading weights and K/V, not launching kernels.
MAX_CAPTURED_BATCH_SIZE = 512
# Prefill graphs: up to this many tokens (beyond, even a 0.6B model's matrix products take longer
# than the launches) from up to this many sequences (the prefill attention grid grows with both).
PREFILL_MAX_TOKENS = 1024
PREFILL_MAX_SEQS = 8
PREFILL_MIN_TOKENS = 16


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


def prefill_shapes(max_num_seqs: int, max_num_batched_tokens: int) -> list[GraphShape]:
    """Token counts 16, 32, 64, ... up to min(PREFILL_MAX_TOKENS, max_num_batched_tokens), which
    is included; each for up to min(PREFILL_MAX_SEQS, max_num_seqs) sequences. Doubling keeps
    the padding of any step under half of it, and the ladder short (7 graphs)."""
    num_seqs = min(PREFILL_MAX_SEQS, max_num_seqs)
    top = min(PREFILL_MAX_TOKENS, max_num_batched_tokens)
    sizes = {top} | {2 ** i for i in range(4, 11) if 2 ** i < top}
    # A shape of as many tokens as sequences would be a decode shape: start above it.
    return [GraphShape(t, num_seqs) for t in sorted(sizes) if t >= PREFILL_MIN_TOKENS and t > num_seqs]


class StepGraphs:
    """Captured steps, one graph per shape (decode batch sizes, prefill token counts), replayed by `run`."""

    def __init__(self, model: nn.Module, backend: TritonAttentionBackend, block_size: int,
                 max_model_len: int, batch_sizes: list[int], prefill: list[GraphShape],
                 device: torch.device) -> None:
        self.model = model
        self.backend = backend
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.batch_sizes = sorted(batch_sizes)
        self.prefill_shapes = sorted(prefill)
        self.shapes = [GraphShape(b, b) for b in self.batch_sizes] + self.prefill_shapes
        self.table_width = -(-max_model_len // block_size)
        self.device = device
        # Sized once for the largest layout and never grown: every graph points into it.
        self.buffer = InputBuffer(device, max(self._layout(shape).nbytes for shape in self.shapes))
        self._graphs: dict[GraphShape, torch.cuda.CUDAGraph] = {}
        self._logits: dict[GraphShape, torch.Tensor] = {}   # each graph's output, [rows, vocab]
        self._inputs: dict[GraphShape, ModelInputs] = {}    # each graph's input views into the buffer
        self._workspace: tuple[torch.Tensor, torch.Tensor] | None = None
        self.capture_seconds = 0.0
        self.memory_bytes = 0
        self.num_replays = 0

    @property
    def max_batch_size(self) -> int:
        return self.batch_sizes[-1]

    def _layout(self, shape: GraphShape) -> InputLayout:
        # A decode graph takes every row's logits; a prefill graph those at logits_indices.
        return InputLayout(shape.num_tokens, shape.num_seqs, self.table_width,
                           num_logits=0 if shape.is_decode else shape.num_seqs)

    def shape_for(self, batch: StepBatch) -> GraphShape | None:
        """The smallest captured shape that holds this step, None when none does."""
        if batch.is_decode_only:
            if 0 < batch.num_seqs <= self.max_batch_size:
                size = next(size for size in self.batch_sizes if size >= batch.num_seqs)
                return GraphShape(size, size)
            return None
        return next((shape for shape in self.prefill_shapes
                     if batch.num_tokens <= shape.num_tokens and batch.num_seqs <= shape.num_seqs), None)

    def can_run(self, batch: StepBatch) -> bool:
        return self.shape_for(batch) is not None

    # ---- capture -------------------------------------------------------------
    @torch.inference_mode()
    def capture(self) -> None:
        """Capture every shape, largest first, after one eager warm-up step at each."""
        free_before = torch.cuda.mem_get_info(self.device)[0]
        start = time.perf_counter()
        layer = paged_attention_layers(self.model)[0]
        self._workspace = self.backend.reserve_decode_workspace(
            self.batch_sizes, layer.num_heads, layer.num_kv_heads, layer.head_dim, self.max_model_len, self.device)

        pool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream(self.device)
        # torch.cuda.graph() would garbage-collect before every capture; once is enough.
        gc.collect()
        for shape in sorted(self.shapes, reverse=True):
            self._fill(StepBatch.empty(), shape)  # all padding: valid, harmless inputs
            inputs = self._inputs[shape] = self._graph_inputs(shape)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                # The warm-up compiles this shape's Triton kernels and picks cuBLAS
                # algorithms: neither may happen while capturing.
                self._forward(inputs, shape)
                graph = torch.cuda.CUDAGraph()
                graph.capture_begin(pool=pool)
                try:
                    self._logits[shape] = self._forward(inputs, shape)
                finally:
                    graph.capture_end()
            torch.cuda.current_stream(self.device).wait_stream(stream)
            self._graphs[shape] = graph
        torch.cuda.synchronize(self.device)
        self.capture_seconds = time.perf_counter() - start
        self.memory_bytes = free_before - torch.cuda.mem_get_info(self.device)[0]
        logger.info("captured %d CUDA graphs (decode batch sizes %d..%d, %d prefill token counts) in %.1f s, "
                    "using %.0f MiB", len(self._graphs), self.batch_sizes[0], self.max_batch_size,
                    len(self.prefill_shapes), self.capture_seconds, self.memory_bytes / 2**20)

    def _forward(self, inputs: ModelInputs, shape: GraphShape) -> torch.Tensor:
        hidden = self.model(inputs.input_ids, inputs.positions, inputs.attn_meta)
        if not shape.is_decode:
            hidden = hidden[inputs.logits_indices]
        return self.model.compute_logits(hidden)

    # ---- replay --------------------------------------------------------------
    def _graph_inputs(self, shape: GraphShape) -> ModelInputs:
        """The views a graph of this shape reads: fixed addresses inside the buffer.

        The host-side query lengths only set launch sizes: a prefill graph is captured
        as if one sequence had all the tokens, so the prefill attention grid covers
        every real split of them.
        """
        query_lens = (1,) * shape.num_seqs if shape.is_decode else (shape.num_tokens,) + (0,) * (shape.num_seqs - 1)
        return device_inputs(self.buffer.device_buffer, self._layout(shape), self.max_model_len,
                             query_lens=query_lens, seq_lens=())

    def _fill(self, batch: StepBatch, shape: GraphShape) -> None:
        """Write `batch` padded to the shape into the buffer, and send it."""
        layout = self._layout(shape)
        write_inputs(self.buffer.host_views(layout), batch, self.block_size, padded_shape=shape)
        self.buffer.send(layout.nbytes)

    def run(self, batch: StepBatch, fill_inputs: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
        """Logits [batch.num_logits, vocab] float32 of the rows that sample, by replaying a graph.

        `fill_inputs`, when given, is called with the graph's device input ids after the
        step's inputs were sent and before the replay (asynchronous scheduling writes the
        tokens the previous step sampled there). The returned tensor views the graph's own
        output: valid until the next replay.
        """
        shape = self.shape_for(batch)
        if shape is None:
            raise ValueError(f"no captured graph holds {batch.num_tokens} tokens of {batch.num_seqs} sequences")
        self._fill(batch, shape)
        if fill_inputs is not None:
            fill_inputs(self._inputs[shape].input_ids)
        self._graphs[shape].replay()
        self.num_replays += 1
        logits = self._logits[shape]
        if not shape.is_decode:
            return logits[:batch.num_logits]  # the graph gathered the sampling rows itself
        logits = logits[:batch.num_seqs]
        if batch.sample_rows is not None:
            logits = logits[torch.from_numpy(batch.sample_rows).to(self.device)]
        return logits
