"""LLMEngine: the loop at the heart of the engine — schedule, run, update.

Requests come in through add_request (validated before they touch any
state), and every call to step() advances all running sequences by one
scheduler decision. The offline LLM class, the CLI and the HTTP server all
drive this same object.

Asynchronous scheduling (on with CUDA): the GPU runs a step while the host
works on the one before and the one after. step() schedules and launches step
N, and only then waits for step N-1's sampled tokens and applies them
(scheduler update, stop strings, outputs), while the GPU computes step N. Step
N was planned assuming every sequence of step N-1 got one more token; that
token reaches step N's inputs on the device, never through the host
(ModelRunner.launch). A sequence that N-1 finishes by EOS or a stop string has
computed one token too many in step N, which is dropped. Penalties need every
generated token on the host when sampling, so a batch with penalties runs
synchronously.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass

from ruvonvllm.config import EngineConfig
from ruvonvllm.engine.block_manager import BlockManager
from ruvonvllm.engine.model_runner import LaunchedStep, ModelRunner
from ruvonvllm.engine.output_processor import OutputProcessor
from ruvonvllm.engine.plan import SchedulerOutput
from ruvonvllm.engine.scheduler import Scheduler
from ruvonvllm.engine.sequence import Sequence, SequenceStatus
from ruvonvllm.engine.step_trace import StepTrace
from ruvonvllm.model.loader import LoadedModel, load_model
from ruvonvllm.outputs import RequestOutput
from ruvonvllm.sampling.params import SamplingParams
from ruvonvllm.tokenizer import Tokenizer


@dataclass
class EngineStats:
    """A snapshot for `ruvon info`, the metrics endpoint and the benchmarks."""

    num_running: int
    num_waiting: int
    kv_cache_usage: float
    prefix_cache_queries: int
    prefix_cache_hits: int
    num_preemptions: int


class LLMEngine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.loaded: LoadedModel = load_model(config.model)
        self.tokenizer = self._load_tokenizer(config)
        arch = self.loaded.config
        tokenizer_eos = self.tokenizer.eos_token_ids if self.tokenizer else frozenset()
        self.eos_token_ids = frozenset(arch.eos_token_ids) | tokenizer_eos

        self.runner = ModelRunner(self.loaded, config.cache, config.attention_backend)
        self.max_model_len = self._max_model_len(config.model.max_model_len, arch.max_position_embeddings)
        if not config.enforce_eager:
            self.runner.capture_cuda_graphs(self.max_model_len, config.scheduler.max_num_seqs,
                                            config.scheduler.max_num_batched_tokens)
        self.runner.compile_sampler()
        self.block_manager = BlockManager(self.runner.num_blocks, config.cache.block_size,
                                          config.cache.enable_prefix_caching)
        self.scheduler = Scheduler(config.scheduler, self.block_manager, self.max_model_len)
        self.output_processor = OutputProcessor(self.tokenizer)
        # The no-KV-cache baseline (Part 3) recomputes every sequence each step from what the
        # host knows, so it cannot run ahead of the host.
        self.async_scheduling = config.scheduler.enable_kv_cache and (
            self.loaded.device.type == "cuda" if config.async_scheduling is None else config.async_scheduling)
        self._in_flight: tuple[SchedulerOutput, LaunchedStep] | None = None  # launched, not yet applied
        self.step_trace: StepTrace | None = None  # set one to record every step (bench --timeline)

    def _load_tokenizer(self, config: EngineConfig) -> Tokenizer | None:
        """The model's tokenizer. Dummy weights come from a bare config.json with none: such an
        engine takes token ids and returns token ids (text stays empty), like vLLM's
        skip_tokenizer_init."""
        if config.model.tokenizer is None and self.loaded.load_format == "dummy":
            return None
        return Tokenizer.from_model_path(config.model.tokenizer or self.loaded.source)

    @property
    def model_name(self) -> str:
        """The model file or directory's name (without .gguf/.json), or the embedded default's."""
        from ruvonvllm.model.default_model import DEFAULT_MODEL_NAME
        if self.config.model.model is None:
            return DEFAULT_MODEL_NAME
        name = os.path.basename(os.path.normpath(self.config.model.model))
        return name.removesuffix(".gguf").removesuffix(".json") or name

    def require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError("this model was loaded without a tokenizer (dummy weights): pass prompts as "
                             "token ids, or give a tokenizer path")
        return self.tokenizer

    def _max_model_len(self, requested: int | None, model_limit: int) -> int:
        """The context length: as asked (or the model's), and never more than the KV pool holds,
        since one sequence at full length must fit alone."""
        pool = self.runner.num_kv_tokens
        if requested is not None and requested > pool:
            raise ValueError(f"max_model_len={requested} needs more KV cache than the pool holds ({pool} tokens); "
                             "lower max_model_len or give the cache more memory")
        return min(requested or model_limit, pool)

    # ---- requests --------------------------------------------------------------
    def add_request(self, request_id: str, prompt: str | list[int], params: SamplingParams | None = None,
                    arrival_time: float | None = None, prompt_token_ids: list[int] | None = None) -> list[int]:
        """Validate and queue a request. Raises ValueError before touching any engine state.

        `prompt` is text or a list of token ids; callers that tokenized already pass
        prompt_token_ids too (the text is then kept only for the output). Returns the
        prompt's token ids.
        """
        # A private copy: the caller may reuse one SamplingParams for many prompts.
        params = copy.copy(params or SamplingParams())
        if request_id in self.output_processor.requests:
            raise ValueError(f"request_id {request_id!r} is already in use")
        prompt_text = prompt if isinstance(prompt, str) else None
        if prompt_token_ids is not None:
            token_ids = list(prompt_token_ids)
        else:
            token_ids = self.require_tokenizer().encode(prompt) if isinstance(prompt, str) else list(prompt)
        self.validate_prompt(token_ids)
        if params.max_tokens is None:
            params.max_tokens = self.max_model_len - len(token_ids)

        arrival = time.monotonic() if arrival_time is None else arrival_time
        leader = Sequence(request_id, token_ids, params, self.eos_token_ids, 0, arrival)
        seqs = [leader] + [Sequence(request_id, token_ids, params, self.eos_token_ids, i, arrival, leader=leader)
                           for i in range(1, params.n)]
        self.scheduler.validate(leader)
        self.output_processor.add_request(request_id, prompt_text, params, seqs)
        for seq in seqs:
            self.scheduler.add(seq)
        return token_ids

    def validate_prompt(self, token_ids: list[int]) -> None:
        if not token_ids:
            raise ValueError("prompt must not be empty")
        vocab = self.loaded.config.vocab_size
        bad = next((t for t in token_ids if not isinstance(t, int) or not 0 <= t < vocab), None)
        if bad is not None:
            raise ValueError(f"prompt token id {bad!r} is outside the vocabulary [0, {vocab})")
        if len(token_ids) >= self.max_model_len:
            raise ValueError(f"prompt is {len(token_ids)} tokens, but the model's context (max_model_len) "
                             f"is {self.max_model_len}: it must be at most {self.max_model_len - 1}")

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """Stop a request now and free its KV blocks; returns its final output, if it existed."""
        self.scheduler.abort(request_id)
        outputs = self.output_processor.make_outputs([request_id])
        return outputs[0] if outputs else None

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished or self._in_flight is not None

    # ---- the loop ------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Schedule, run, update. Returns the outputs of every request that progressed.

        Asynchronously, the outputs returned are those of the previous step, applied
        while the GPU computes the step launched here.
        """
        previous, self._in_flight = self._in_flight, None
        if previous is not None and not self._may_overlap():
            return self._apply(*previous)
        plan = self.scheduler.schedule()
        if not plan.is_empty:
            self.output_processor.mark_scheduled(plan.scheduled)
            launched = self.runner.launch(plan, previous[1] if previous else None)
            self.scheduler.on_launched(plan)
            self._in_flight = (plan, launched)
            if self.step_trace is not None:
                self.step_trace.launched(plan)
        outputs = self._apply(*previous) if previous else []
        if not self.async_scheduling and self._in_flight is not None:
            current, self._in_flight = self._in_flight, None
            outputs += self._apply(*current)
        return outputs

    def _apply(self, plan: SchedulerOutput, launched: LaunchedStep) -> list[RequestOutput]:
        """Wait for a launched step's tokens and fold them into sequences, text and outputs."""
        result = self.runner.wait(launched)
        if self.step_trace is not None:
            self.step_trace.finished()
        self.scheduler.update(plan, result)
        touched = [s.seq for s in plan.scheduled]
        for seq, stop_string in self.output_processor.fold_step(result, touched):
            self.scheduler.finish(seq, SequenceStatus.FINISHED_STOPPED, stop_reason=stop_string)
        return self.output_processor.make_outputs([seq.request_id for seq in touched])

    def _may_overlap(self) -> bool:
        """Whether the next step may be scheduled before the one in flight is applied:
        not when a running sequence's sampling needs every token it generated (penalties)."""
        return self.async_scheduling and not any(seq.sampling_params.has_penalties
                                                 for seq in self.scheduler.running)

    def stats(self) -> EngineStats:
        bm = self.block_manager
        return EngineStats(self.scheduler.num_running, self.scheduler.num_waiting, bm.usage,
                           bm.prefix_cache_queries, bm.prefix_cache_hits, self.scheduler.num_preemptions)
