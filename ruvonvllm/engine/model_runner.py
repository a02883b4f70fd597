"""ModelRunner: one scheduled batch in, sampled tokens out.

It owns the model, the paged KV pool and the sampler. Per step it lays the
scheduled chunks out as host arrays (`StepBatch`), sends them to the device in
one copy, runs the model once (replaying a CUDA graph for decode steps when
they were captured), takes logits only where a token is sampled (plus prompt
positions whose logprobs were asked for), and samples every row in one
vectorized call. The sampled ids are the step's one device->host copy.
"""

from __future__ import annotations

from itertools import chain

import numpy as np
import torch

from ruvonvllm.attention import get_attention_backend
from ruvonvllm.config import CacheConfig
from ruvonvllm.engine.block_tables import BlockTableMirror
from ruvonvllm.engine.kv_budget import num_kv_blocks
from ruvonvllm.engine.model_inputs import InputBuffer, StepBatch
from ruvonvllm.engine.plan import ModelRunnerOutput, PositionLogprobs, ScheduledSequence, SchedulerOutput
from ruvonvllm.layers.attention import allocate_kv_caches, bind_kv_caches, kv_bytes_per_token
from ruvonvllm.model.loader import LoadedModel
from ruvonvllm.sampling.logprobs import compute_prompt_logprobs, to_position_logprobs
from ruvonvllm.sampling.sampler import Sampler
from ruvonvllm.sampling.sampling_batch import SamplingBatch


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
        self.cuda_graphs = None  # a DecodeGraphs once capture_decode_graphs ran

    @property
    def num_kv_tokens(self) -> int:
        return self.num_blocks * self.block_size

    def capture_decode_graphs(self, max_model_len: int, max_num_seqs: int) -> None:
        """Capture CUDA graphs for decode steps, when this runner can replay them.

        Needs CUDA and the Triton backend: the torch reference backend sizes its
        tensors from host-side lengths that change every step.
        """
        if self.device.type != "cuda" or self.backend.name != "triton":
            return
        from ruvonvllm.engine.cuda_graphs import DecodeGraphs, capture_batch_sizes
        graphs = DecodeGraphs(self.model, self.backend, self.block_size, max_model_len,
                              capture_batch_sizes(max_num_seqs), self.device)
        graphs.capture()
        self.cuda_graphs = graphs

    @torch.inference_mode()
    def execute(self, plan: SchedulerOutput) -> ModelRunnerOutput:
        scheduled = plan.scheduled
        batch = self._step_batch(scheduled)
        output = ModelRunnerOutput()
        seqs = [s.seq for s in scheduled]
        sampling_seqs = seqs if batch.sample_rows is None else [seqs[i] for i in batch.sample_rows]
        # Built before the forward is launched, so its small copies don't wait behind it.
        sampling = SamplingBatch.from_sequences(sampling_seqs, self.config.vocab_size, self.device) \
            if sampling_seqs else None

        if self._replays_graph(batch, scheduled):
            logits = self.cuda_graphs.run(batch)
            if batch.sample_rows is not None:
                logits = logits[torch.from_numpy(batch.sample_rows).to(self.device)]
        else:
            table_width = -(-int((batch.starts + batch.query_lens).max()) // self.block_size)
            inputs = self.inputs.build(batch, self.block_size, table_width)
            hidden = self.model(inputs.input_ids, inputs.positions, inputs.attn_meta)
            self._prompt_logprobs(scheduled, inputs.attn_meta.query_lens_cpu, hidden, output)
            logits = self.model.compute_logits(hidden[inputs.logits_indices]) if sampling_seqs else None

        if sampling is None:
            return output
        sampled = self.sampler(logits, sampling)
        token_ids = sampled.token_ids.tolist()  # the step's one device->host copy
        output.sampled_token_ids = {seq.seq_id: tok for seq, tok in zip(sampling_seqs, token_ids)}
        if sampled.logprobs is not None:
            wanted = [seq.sampling_params.logprobs for seq in sampling_seqs]
            for seq, position in zip(sampling_seqs, to_position_logprobs(token_ids, sampled.logprobs, wanted)):
                if position is not None:
                    output.logprobs[seq.seq_id] = position
        return output

    def _step_batch(self, scheduled: list[ScheduledSequence]) -> StepBatch:
        """The step as numpy arrays: one pass over the sequences per field, nothing per token
        except gathering the new token ids (for decodes, one per sequence)."""
        num_seqs = len(scheduled)
        seqs = [s.seq for s in scheduled]
        starts = np.fromiter((seq.num_computed_tokens for seq in seqs), np.int64, num_seqs)
        query_lens = np.fromiter((s.num_new_tokens for s in scheduled), np.int64, num_seqs)
        num_tokens = int(query_lens.sum())
        if num_tokens == num_seqs:
            token_ids = np.fromiter((seq.token_ids[seq.num_computed_tokens] for seq in seqs), np.int64, num_seqs)
        else:
            chunks = (s.seq.token_ids[s.start:s.end] for s in scheduled)
            token_ids = np.fromiter(chain.from_iterable(chunks), np.int64, num_tokens)
        # A sequence samples when this step reaches its last token (ScheduledSequence.samples).
        lengths = np.fromiter((seq.num_tokens for seq in seqs), np.int64, num_seqs)
        samples = starts + query_lens == lengths
        table_rows = self.block_tables.rows_for(seqs)  # may grow the table: read .tables after it
        return StepBatch(token_ids, starts, query_lens, table_rows, self.block_tables.tables,
                         sample_rows=None if samples.all() else np.flatnonzero(samples))

    def _replays_graph(self, batch: StepBatch, scheduled: list[ScheduledSequence]) -> bool:
        """Decode steps replay a graph; prompt logprobs need the hidden states, which it does not keep."""
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
