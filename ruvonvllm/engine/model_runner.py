"""ModelRunner: one scheduled batch in, sampled tokens out.

It owns the model, the paged KV pool and the sampler. Per step it lays the
scheduled chunks out as host arrays (`StepBatch`), sends them to the device in
one copy, runs the model once (replaying a CUDA graph for decode steps when
they were captured), takes logits only where a token is sampled (plus prompt
positions whose logprobs were asked for), and samples every row in one
vectorized call. The sampled ids are the step's one device->host copy.

A step is launched (`launch`: everything queued on the device) and waited for
(`wait`: its sampled ids on the host) separately, so that the engine can
schedule and launch the next step in between (asynchronous scheduling).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain

import numpy as np
import torch

from ruvonvllm.attention import get_attention_backend
from ruvonvllm.config import CacheConfig
from ruvonvllm.engine.block_tables import BlockTableMirror
from ruvonvllm.engine.kv_budget import num_kv_blocks
from ruvonvllm.engine.model_inputs import InputBuffer, StepBatch
from ruvonvllm.engine.plan import ModelRunnerOutput, ScheduledSequence, SchedulerOutput
from ruvonvllm.engine.sequence import Sequence
from ruvonvllm.layers.attention import allocate_kv_caches, bind_kv_caches, kv_bytes_per_token
from ruvonvllm.model.loader import LoadedModel
from ruvonvllm.outputs import PositionLogprobs
from ruvonvllm.sampling.logprobs import compute_prompt_logprobs, to_position_logprobs
from ruvonvllm.sampling.sampler import Sampler, SamplerOutput
from ruvonvllm.sampling.sampling_batch import SamplingBatch


class LaunchedStep:
    """A step whose work is queued on the device: what `ModelRunner.wait` needs to finish it."""

    def __init__(self, sampling_seqs: list[Sequence], sampling: SamplingBatch | None) -> None:
        self.sampling_seqs = sampling_seqs   # the sequences that sample, in row order
        self.sampling = sampling
        self.output = ModelRunnerOutput()    # prompt logprobs are filled in at launch
        self.sampled: SamplerOutput | None = None
        self._host_ids: torch.Tensor | None = None
        self._copied: torch.cuda.Event | None = None

    def start_copy(self) -> None:
        """Queue the sampled ids' copy to the host (the step's one device->host copy)."""
        ids = self.sampled.token_ids
        if ids.is_cuda:
            self._host_ids = torch.empty(ids.shape, dtype=ids.dtype, pin_memory=True)
            self._host_ids.copy_(ids, non_blocking=True)
            self._copied = torch.cuda.Event()
            self._copied.record()
        else:
            self._host_ids = ids

    def host_token_ids(self) -> list[int]:
        if self._copied is not None:
            self._copied.synchronize()
        return self._host_ids.tolist()

    def row_of_seq(self) -> dict[int, int]:
        return {seq.seq_id: row for row, seq in enumerate(self.sampling_seqs)}


class ModelRunner:
    def __init__(self, loaded: LoadedModel, cache_config: CacheConfig, attention_backend: str = "auto") -> None:
        self.model = loaded.model
        self.config = loaded.config
        self.device = loaded.device
        self.dtype = loaded.dtype
        self.block_size = cache_config.block_size
        self.backend = get_attention_backend(attention_backend, self.device)

        self.kv_bytes_per_token = kv_bytes_per_token(self.model, self.dtype)
        self.num_blocks = num_kv_blocks(cache_config, self.kv_bytes_per_token, self.device)
        self.kv_caches = allocate_kv_caches(self.model, self.num_blocks, self.block_size, self.dtype, self.device)
        bind_kv_caches(self.model, self.kv_caches, self.backend)
        self.sampler = Sampler()
        self.block_tables = BlockTableMirror()
        self.inputs = InputBuffer(self.device)
        self.cuda_graphs = None  # a StepGraphs once capture_cuda_graphs ran

    @property
    def num_kv_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def capture_cuda_graphs(self, max_model_len: int, max_num_seqs: int, max_num_batched_tokens: int) -> None:
        """Capture CUDA graphs for decode and small prefill steps, when this runner can replay them.

        Needs CUDA and the Triton backend: the torch reference backend sizes its
        tensors from host-side lengths that change every step.
        """
        if self.device.type != "cuda" or self.backend.name != "triton":
            return
        from ruvonvllm.engine.cuda_graphs import StepGraphs, capture_batch_sizes, prefill_shapes
        graphs = StepGraphs(self.model, self.backend, self.block_size, max_model_len,
                            capture_batch_sizes(max_num_seqs), prefill_shapes(max_num_seqs, max_num_batched_tokens),
                            self.device)
        graphs.capture()
        self.cuda_graphs = graphs

    def compile_sampler(self) -> None:
        """Compile the sampler's Triton kernel now, not inside the first large sampling batch."""
        from ruvonvllm.sampling.fused import compile_kernel
        compile_kernel(self.config.vocab_size, self.device)

    def execute(self, plan: SchedulerOutput) -> ModelRunnerOutput:
        """Run one step to completion (launch, then wait for its sampled tokens)."""
        return self.wait(self.launch(plan))

    @torch.inference_mode()
    def launch(self, plan: SchedulerOutput, previous: LaunchedStep | None = None) -> LaunchedStep:
        """Queue the step's work on the device and return without waiting for it.

        `previous` is the step still in flight when this one was scheduled
        (asynchronous scheduling): tokens it samples are inputs of this step, and
        they are copied from its device tensor, never through the host.
        """
        scheduled = plan.scheduled
        if plan.has_proposals:
            # The contract allows them (plan.py); verifying them needs logits at every proposed
            # position, which this runner does not compute yet.
            raise NotImplementedError("this model runner does not verify proposed tokens yet")
        batch, pending = self._step_batch(scheduled)
        seqs = [s.seq for s in scheduled]
        sampling_seqs = seqs if batch.sample_rows is None else [seqs[i] for i in batch.sample_rows]
        # Built before the forward is launched, so its small copies don't wait behind it.
        sampling = SamplingBatch.from_sequences(sampling_seqs, self.config.vocab_size, self.device) \
            if sampling_seqs else None
        fill_pending = self._pending_filler(pending, previous)
        step = LaunchedStep(sampling_seqs, sampling)

        if self._replays_graph(batch, scheduled):
            logits = self.cuda_graphs.run(batch, fill_pending)  # the sampling rows' logits
        else:
            table_width = -(-int((batch.starts + batch.query_lens).max()) // self.block_size)
            inputs = self.inputs.build(batch, self.block_size, table_width)
            if fill_pending is not None:
                fill_pending(inputs.input_ids)
            hidden = self.model(inputs.input_ids, inputs.positions, inputs.attn_meta)
            self._prompt_logprobs(scheduled, inputs.attn_meta.query_lens_cpu, hidden, step.output)
            logits = self.model.compute_logits(hidden[inputs.logits_indices]) if sampling_seqs else None

        if sampling is not None:
            step.sampled = self.sampler(logits, sampling)
            step.start_copy()
        return step

    def wait(self, step: LaunchedStep) -> ModelRunnerOutput:
        """Block until the step's sampled tokens are on the host; its results, keyed by seq_id."""
        output = step.output
        if step.sampled is None:
            return output
        token_ids = step.host_token_ids()
        output.sampled_token_ids = {seq.seq_id: [tok] for seq, tok in zip(step.sampling_seqs, token_ids)}
        if step.sampled.logprobs is not None:
            wanted = [seq.sampling_params.logprobs for seq in step.sampling_seqs]
            positions = to_position_logprobs(token_ids, step.sampled.logprobs, wanted)
            for seq, position in zip(step.sampling_seqs, positions):
                if position is not None:
                    output.logprobs[seq.seq_id] = [position]
        return output

    def _pending_filler(self, pending: list[tuple[int, Sequence]],
                        previous: LaunchedStep | None) -> Callable[[torch.Tensor], None] | None:
        """A function that writes the pending tokens of `pending` (flat token index, sequence)
        into a step's device input ids, from the previous step's sampled ids."""
        if not pending:
            return None
        if previous is None or previous.sampled is None:
            raise RuntimeError("a sequence has a pending token but no step in flight samples it")
        rows = previous.row_of_seq()
        try:
            sources = [rows[seq.seq_id] for _, seq in pending]
        except KeyError as missing:
            raise RuntimeError(f"sequence {missing} has a pending token the step in flight does not sample") from None
        # Destinations and sources travel in one small copy.
        destination, source = torch.tensor([[index for index, _ in pending], sources],
                                           dtype=torch.int64).to(self.device, non_blocking=True)
        sampled = previous.sampled.token_ids

        def fill(input_ids: torch.Tensor) -> None:
            input_ids.index_copy_(0, destination, sampled.index_select(0, source))
        return fill

    def _step_batch(self, scheduled: list[ScheduledSequence]) -> tuple[StepBatch, list[tuple[int, Sequence]]]:
        """The step as numpy arrays: one pass over the sequences per field, nothing per token
        except gathering the new token ids (for decodes, one per sequence).

        Also returns the tokens whose ids the host does not know yet (sampled by the step
        in flight): (index in the flat token ids, sequence). They get a placeholder 0 here.
        """
        num_seqs = len(scheduled)
        seqs = [s.seq for s in scheduled]
        starts = np.fromiter((s.start for s in scheduled), np.int64, num_seqs)
        query_lens = np.fromiter((s.num_new_tokens for s in scheduled), np.int64, num_seqs)
        num_tokens = int(query_lens.sum())
        pending: list[tuple[int, Sequence]] = []
        if num_tokens == num_seqs:
            token_ids = np.zeros(num_seqs, np.int64)
            for row, s in enumerate(scheduled):
                if s.start < len(s.seq.token_ids):
                    token_ids[row] = s.seq.token_ids[s.start]
                else:
                    pending.append((row, s.seq))
        else:
            chunks = []
            offset = 0
            for s in scheduled:
                known = s.seq.token_ids[s.start:s.end]
                chunks.append(known)
                if len(known) < s.num_new_tokens:  # only ever the last token: the one being sampled
                    chunks.append((0,) * (s.num_new_tokens - len(known)))
                    pending.append((offset + len(known), s.seq))
                offset += s.num_new_tokens
            token_ids = np.fromiter(chain.from_iterable(chunks), np.int64, num_tokens)
        samples = np.fromiter((s.samples for s in scheduled), np.bool_, num_seqs)
        table_rows = self.block_tables.rows_for(seqs)  # may grow the table: read .tables after it
        batch = StepBatch(token_ids, starts, query_lens, table_rows, self.block_tables.tables,
                          sample_rows=None if samples.all() else np.flatnonzero(samples))
        return batch, pending

    def _replays_graph(self, batch: StepBatch, scheduled: list[ScheduledSequence]) -> bool:
        """Steps a captured shape holds replay a graph; prompt logprobs need the hidden states, which
        a graph does not keep."""
        if self.cuda_graphs is None or not self.cuda_graphs.can_run(batch):
            return False
        return not any(s.seq.sampling_params.prompt_logprobs is not None and s.start < s.seq.num_prompt_tokens
                       for s in scheduled)

    def _prompt_logprobs(self, scheduled: list[ScheduledSequence], query_lens: tuple[int, ...],
                         hidden: torch.Tensor, output: ModelRunnerOutput) -> None:
        """Logprobs of prompt tokens computed this step (only for sequences that asked).

        The logits at position p predict token p + 1, so a chunk [start, end) yields
        logprobs for prompt tokens start + 1 .. min(end, num_prompt_tokens - 1).
        """
        offset = 0
        for s, n in zip(scheduled, query_lens):
            seq = s.seq
            num_top = seq.sampling_params.prompt_logprobs
            if num_top is not None and s.start < seq.num_prompt_tokens:
                last = min(s.end, seq.num_prompt_tokens - 1)  # last prompt token that gets a logprob
                entries: list[PositionLogprobs | None] = [None] if s.start == 0 else []
                if last > s.start:
                    positions = torch.arange(offset, offset + last - s.start, device=self.device)
                    logits = self.model.compute_logits(hidden[positions])
                    targets = torch.tensor(seq.token_ids[s.start + 1:last + 1], device=self.device)
                    entries.extend(compute_prompt_logprobs(logits, targets, num_top))
                output.prompt_logprobs[seq.seq_id] = entries
            offset += n
