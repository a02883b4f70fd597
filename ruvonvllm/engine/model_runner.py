"""ModelRunner: one scheduled batch in, sampled tokens out.

It owns the model, the paged KV pool and the sampler. Per step it lays the
scheduled chunks out as one flat batch (`build_model_inputs`), runs the model
once, takes logits only where a token is sampled (plus prompt positions whose
logprobs were asked for), and samples every row in one vectorized call.
"""

from __future__ import annotations

import torch

from ruvonvllm.attention import get_attention_backend
from ruvonvllm.config import CacheConfig
from ruvonvllm.engine.kv_budget import num_kv_blocks
from ruvonvllm.engine.model_inputs import SequenceChunk, build_model_inputs
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

    @property
    def num_kv_tokens(self) -> int:
        return self.num_blocks * self.block_size

    @torch.inference_mode()
    def execute(self, plan: SchedulerOutput) -> ModelRunnerOutput:
        scheduled = plan.scheduled
        chunks = [SequenceChunk(s.seq.token_ids[s.start:s.end], s.start, s.seq.block_table) for s in scheduled]
        inputs = build_model_inputs(chunks, self.block_size, self.device)
        hidden = self.model(inputs.input_ids, inputs.positions, inputs.attn_meta)

        output = ModelRunnerOutput()
        self._prompt_logprobs(scheduled, inputs.attn_meta.query_lens_cpu, hidden, output)

        sampling_rows = [i for i, s in enumerate(scheduled) if s.samples]
        if not sampling_rows:
            return output
        seqs = [scheduled[i].seq for i in sampling_rows]
        last_tokens = inputs.last_token_indices[torch.tensor(sampling_rows, device=self.device)]
        logits = self.model.compute_logits(hidden[last_tokens])
        batch = SamplingBatch.from_sequences(seqs, logits.shape[-1], self.device)
        sampled = self.sampler(logits, batch)

        token_ids = sampled.token_ids.tolist()  # the step's one device->host copy
        output.sampled_token_ids = {seq.seq_id: tok for seq, tok in zip(seqs, token_ids)}
        if sampled.logprobs is not None:
            wanted = [seq.sampling_params.logprobs for seq in seqs]
            for seq, position in zip(seqs, to_position_logprobs(token_ids, sampled.logprobs, wanted)):
                if position is not None:
                    output.logprobs[seq.seq_id] = position
        return output

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
