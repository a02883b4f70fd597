"""From sampled token ids to RequestOutputs: detokenize, apply stop strings, collect logprobs.

The scheduler stops sequences on token-level conditions (EOS, stop token ids,
length). Stop *strings* only exist in text, so they are found here, after
incremental detokenization, and reported back so the scheduler can free the
sequence's blocks within the same step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ruvonvllm.engine.plan import ModelRunnerOutput, ScheduledSequence
from ruvonvllm.engine.sequence import Sequence
from ruvonvllm.outputs import CompletionOutput, PositionLogprobs, RequestMetrics, RequestOutput
from ruvonvllm.sampling.detokenizer import IncrementalDetokenizer
from ruvonvllm.sampling.params import RequestOutputKind, SamplingParams
from ruvonvllm.sampling.stop import StopChecker
from ruvonvllm.tokenizer import Tokenizer


@dataclass
class SequenceText:
    """Text state of one sequence: everything decoded so far, and what a reader may see yet."""

    detokenizer: IncrementalDetokenizer | None  # None when the engine has no tokenizer
    text: str = ""
    logprobs: list[PositionLogprobs] = field(default_factory=list)


@dataclass
class RequestState:
    request_id: str
    prompt: str | None
    params: SamplingParams
    seqs: list[Sequence]
    texts: list[SequenceText]
    stop_checker: StopChecker
    metrics: RequestMetrics
    prompt_logprobs: list[PositionLogprobs | None] | None = None

    @property
    def finished(self) -> bool:
        for seq in self.seqs:  # a loop, not all(<genexpr>): asked for every request every step
            if not seq.is_finished:
                return False
        return True


StopSequence = tuple[Sequence, str]  # a sequence that hit a stop string, and which one


class OutputProcessor:
    def __init__(self, tokenizer: Tokenizer | None) -> None:
        self.tokenizer = tokenizer
        self.requests: dict[str, RequestState] = {}

    def add_request(self, request_id: str, prompt: str | None, params: SamplingParams,
                    seqs: list[Sequence]) -> None:
        if self.tokenizer is None and params.stop_strings:
            raise ValueError("stop strings need a tokenizer; this engine has none (dummy weights)")
        texts = [SequenceText(self._detokenizer(seqs[0].prompt_token_ids, params)) for _ in seqs]
        self.requests[request_id] = RequestState(
            request_id, prompt, params, seqs, texts,
            StopChecker(params.stop_strings, params.include_stop_str_in_output),
            RequestMetrics(arrival_time=seqs[0].arrival_time),
            prompt_logprobs=[] if params.prompt_logprobs is not None else None)

    def _detokenizer(self, prompt_token_ids: list[int], params: SamplingParams) -> IncrementalDetokenizer | None:
        if self.tokenizer is None:
            return None
        return IncrementalDetokenizer(self.tokenizer.hf, prompt_token_ids, params.skip_special_tokens)

    def mark_scheduled(self, scheduled: list[ScheduledSequence]) -> None:
        """Stamp the requests a step is about to run for the first time (their queue time ends now)."""
        now = time.monotonic()
        for s in scheduled:
            state = self.requests.get(s.seq.request_id)
            if state is not None and state.metrics.first_scheduled_time is None:
                state.metrics.first_scheduled_time = now

    def fold_step(self, result: ModelRunnerOutput, touched: list[Sequence]) -> list[StopSequence]:
        """Fold one step's tokens into text and logprobs; return the sequences a stop
        string has just ended (the engine finishes them in the scheduler)."""
        now = time.monotonic()
        stopped: list[StopSequence] = []
        for seq in touched:
            state = self.requests.get(seq.request_id)
            if state is None:
                continue
            entries = result.prompt_logprobs.get(seq.seq_id) if seq.index == 0 else None
            if entries and state.prompt_logprobs is not None:
                if entries[0] is None:  # the prompt starts (again, after a preemption): recompute is exact
                    state.prompt_logprobs = []
                state.prompt_logprobs.extend(entries)
            tokens = result.sampled_token_ids.get(seq.seq_id)
            if not tokens:
                continue
            if state.metrics.first_token_time is None:
                state.metrics.first_token_time = now
            state.metrics.last_token_time = now
            text_state = state.texts[seq.index]
            if seq.seq_id in result.logprobs:
                text_state.logprobs.extend(result.logprobs[seq.seq_id])
            detokenizer = text_state.detokenizer
            delta = detokenizer.append(tokens) if detokenizer else ""
            if detokenizer and seq.is_finished:  # EOS or length: release a character held back
                delta += detokenizer.flush()
            text_state.text += delta
            if state.stop_checker.stop_strings and delta:
                hit = state.stop_checker.check(text_state.text, len(delta))
                if hit.stopped:
                    text_state.text = hit.text
                    if not seq.is_finished:
                        stopped.append((seq, hit.stop_string))
        return stopped

    def make_outputs(self, request_ids: list[str]) -> list[RequestOutput]:
        """Current outputs of these requests (FINAL_ONLY ones only once finished);
        finished requests are forgotten afterwards."""
        now = time.monotonic()
        outputs = []
        for request_id in dict.fromkeys(request_ids):
            state = self.requests.get(request_id)
            if state is None or (state.params.output_kind is RequestOutputKind.FINAL_ONLY and not state.finished):
                continue
            outputs.append(self._make_output(state, now))
            if state.finished:
                del self.requests[request_id]
        return outputs

    def _make_output(self, state: RequestState, now: float) -> RequestOutput:
        completions = []
        for seq, text_state in zip(state.seqs, state.texts):
            if seq.is_finished:
                text = text_state.text
            else:
                # Hold back a tail that could still become a stop string: a stream must never
                # show text that a later token would cut away.
                text = text_state.text[: state.stop_checker.stream_safe_length(text_state.text)]
            wants_logprobs = state.params.logprobs is not None
            completions.append(CompletionOutput(
                index=seq.index, text=text, token_ids=seq.output_token_ids,
                cumulative_logprob=seq.cumulative_logprob if wants_logprobs else None,
                logprobs=text_state.logprobs if wants_logprobs else None,
                finish_reason=seq.status.finish_reason, stop_reason=seq.stop_reason))
        metrics = state.metrics
        metrics.num_cached_tokens = state.seqs[0].num_cached_tokens
        metrics.num_preemptions = sum(seq.num_preemptions for seq in state.seqs)
        if state.finished and metrics.finished_time is None:
            metrics.finished_time = now
        return RequestOutput(state.request_id, state.prompt, state.seqs[0].prompt_token_ids, completions,
                             state.finished, state.prompt_logprobs, metrics)
