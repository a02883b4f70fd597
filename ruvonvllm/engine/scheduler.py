"""Pick the sequences that run each step, and account for what the step produced.

One token budget, no modes (vLLM v1's model): a step may compute at most
`max_num_batched_tokens` tokens across at most `max_num_seqs` running
sequences. A sequence asks for its uncomputed tokens; a decode asks for one, a
prompt for all of it, a prompt cut by the budget gets a chunk now and the rest
in later steps (chunked prefill, Agrawal et al., "SARATHI", 2023).

schedule() serves the running sequences first, oldest first. When one of them
needs a block and the pool is empty, the youngest running sequence is preempted
by recompute: its blocks are released and it goes back to the front of the
waiting queue with nothing computed; when it runs again it recomputes prompt
plus generated tokens (the prefix cache may give most of them back) and only
its last token samples. Then, if nothing was preempted, waiting sequences are
admitted in arrival order, as far as the policy (see policies.py), the budget,
max_num_seqs and the blocks allow.

on_launched() advances every scheduled sequence by the tokens the step
computes, as soon as the runner has launched it; update() appends the sampled
tokens when they arrive, applies the stop rules, keys newly completed blocks
for the prefix cache and releases finished sequences. Between the two the next
step may already be scheduled (asynchronous scheduling, see llm_engine.py).

With a `Proposer`, a decoding sequence may also carry guessed tokens: the step
computes them after its last token, update() keeps those the model agreed with
and gives back the blocks of the rest. Such a step must be updated before the
next is scheduled (docs/contracts.md).
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import Protocol

from ruvonvllm.config import SchedulerConfig
from ruvonvllm.engine.block_manager import BlockManager
from ruvonvllm.engine.plan import ModelRunnerOutput, ScheduledSequence, SchedulerOutput
from ruvonvllm.engine.policies import make_policy
from ruvonvllm.engine.sequence import Sequence, SequenceStatus


class Proposer(Protocol):
    """Guesses the tokens that follow a sequence (speculative decoding's draft)."""

    def propose(self, seq: Sequence, max_tokens: int) -> list[int]:
        """At most max_tokens guesses; the model keeps the prefix it agrees with."""
        ...


def _priority(seq: Sequence) -> tuple[float, int]:
    """First come, first served: earlier arrival is higher priority (smaller key)."""
    return (seq.arrival_time, seq.seq_id)


class Scheduler:
    def __init__(self, config: SchedulerConfig, block_manager: BlockManager, max_model_len: int,
                 proposer: Proposer | None = None) -> None:
        if max_model_len < 1:
            raise ValueError(f"max_model_len must be >= 1, got {max_model_len}")
        self.config = config
        self.proposer = proposer
        self._steps_with_proposals_in_flight = 0
        self.block_manager = block_manager
        self.max_model_len = max_model_len
        self.policy = make_policy(config.policy)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # kept sorted by _priority
        self.num_preemptions = 0
        # Without a KV cache every step recomputes whole sequences, so neither
        # chunks nor shared prefixes make sense.
        self._share_prefixes = block_manager.enable_prefix_caching and config.enable_kv_cache
        self._may_chunk = config.enable_chunked_prefill and config.enable_kv_cache

    # ---- queue state ---------------------------------------------------------------
    @property
    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def add(self, seq: Sequence) -> None:
        self.validate(seq)
        self.waiting.append(seq)

    def validate(self, seq: Sequence) -> None:
        """Raise ValueError for a sequence that could never run to its end (the engine may call it early)."""
        if seq.status is not SequenceStatus.WAITING or seq.block_table or seq.num_computed_tokens:
            raise ValueError(f"only fresh sequences can be added, got {seq}")
        if not 1 <= seq.num_prompt_tokens <= self.max_model_len:
            raise ValueError(f"request {seq.request_id!r}: the prompt has {seq.num_prompt_tokens} tokens; it "
                             f"must have between 1 and max_model_len={self.max_model_len}")
        # A sequence alone in the pool must fit at its longest, or it would preempt
        # itself forever. The last sampled token is never computed, hence the - 1.
        max_tokens = seq.sampling_params.max_tokens
        final_len = self.max_model_len if max_tokens is None else min(
            seq.num_prompt_tokens + max_tokens, self.max_model_len)
        max_computed = max(seq.num_prompt_tokens, final_len - 1)
        capacity = self.block_manager.num_blocks * self.block_manager.block_size
        if max_computed > capacity:
            raise ValueError(f"request {seq.request_id!r} may need the K/V of {max_computed} tokens but the "
                             f"KV cache holds {capacity}: lower max_tokens or max_model_len, or give the "
                             "cache more memory")

    # ---- schedule ------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        if self._steps_with_proposals_in_flight:
            # How many of the proposals hold is known only at update(): until then the next
            # step cannot know where its sequences stand.
            raise RuntimeError("a step with proposed tokens must be updated before the next is scheduled")
        output = SchedulerOutput()
        self.policy.start_step(self.running)
        budget = self._schedule_running(output, self.config.max_num_batched_tokens)
        # After a preemption the pool is known to be short: admitting newcomers would
        # only take blocks the running sequences need next.
        if not output.preempted:
            self._schedule_waiting(output, budget)
        return output

    def _num_new_tokens(self, seq: Sequence, budget: int, alone: bool) -> int:
        """Tokens seq computes this step, 0 when it has to wait for a later step.

        Without chunking a sequence runs whole or not at all; one bigger than the
        entire budget runs alone in a step rather than never.
        """
        remaining = seq.num_uncomputed_tokens
        if self._may_chunk:
            return min(remaining, budget)
        return remaining if remaining <= budget or alone else 0

    def _schedule_running(self, output: SchedulerOutput, budget: int) -> int:
        index = 0
        while index < len(self.running) and budget > 0:
            seq = self.running[index]
            if seq.num_pending_tokens and self._reached_length_limit(seq):
                index += 1  # its last token is being sampled: nothing left to compute
                continue
            num_new = self._num_new_tokens(seq, budget, alone=not output.scheduled)
            if num_new == 0:
                index += 1
                continue
            proposed = self._proposals(seq, num_new, budget) if self.proposer is not None else ()
            if not self._allocate_or_preempt(seq, num_new + len(proposed), output):
                break  # seq preempted itself; it was the last running sequence
            output.scheduled.append(ScheduledSequence(seq, num_new + len(proposed), proposed))
            output.has_proposals |= bool(proposed)
            budget -= num_new + len(proposed)
            index += 1
        return budget

    def _proposals(self, seq: Sequence, num_new: int, budget: int) -> tuple[int, ...]:
        """The proposer's guesses for a decoding sequence: as many as the budget, the context
        and max_tokens leave room for after the token the step samples anyway."""
        if num_new != 1 or seq.num_uncomputed_tokens != 1 or seq.num_pending_tokens:
            return ()
        room = min(budget - 1, self.max_model_len - seq.num_tokens - 1)
        max_tokens = seq.sampling_params.max_tokens
        if max_tokens is not None:
            room = min(room, max_tokens - seq.num_output_tokens - 1)
        return tuple(self.proposer.propose(seq, room))[:room] if room > 0 else ()

    def _allocate_or_preempt(self, seq: Sequence, num_new: int, output: SchedulerOutput) -> bool:
        """Find blocks for seq, preempting the youngest running sequences until they fit.

        Because running is sorted oldest first and served in that order, a victim
        (always the last one) was never scheduled earlier in this step.
        """
        while not self.block_manager.allocate_slots(seq, num_new):
            victim = self.running[-1]
            self._preempt(victim)
            output.preempted.append(victim)
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(seq)

    def _schedule_waiting(self, output: SchedulerOutput, budget: int) -> None:
        for seq in list(self.waiting):
            if budget <= 0 or len(self.running) >= self.config.max_num_seqs:
                break
            # These two wait for something other than capacity, so they do not
            # hold back the sequences queued behind them.
            if not self.policy.may_admit(seq, self.running) or self._waits_for_leader(seq):
                continue
            if seq.num_pending_tokens:
                continue  # preempted while its last token was being sampled: resumes once it is known
            if self._share_prefixes:
                self.block_manager.allocate_prefix(seq)
            num_new = self._num_new_tokens(seq, budget, alone=not output.scheduled)
            if num_new == 0 or not self.block_manager.allocate_slots(seq, num_new):
                # Out of capacity: give back the prefix blocks and keep arrival order,
                # so a big request is not starved by smaller ones behind it.
                self.block_manager.free(seq)
                seq.num_computed_tokens = 0
                break
            self.waiting.remove(seq)
            seq.status = SequenceStatus.RUNNING
            bisect.insort(self.running, seq, key=_priority)
            self.policy.admitted(seq)
            output.scheduled.append(ScheduledSequence(seq, num_new))
            budget -= num_new

    def _waits_for_leader(self, seq: Sequence) -> bool:
        """Siblings of an n > 1 request start once the leader has computed the shared prompt.

        They then find its full blocks in the prefix cache instead of computing
        them again (only a partial last block, or a last block that would leave
        nothing to compute, is recomputed per sibling).
        """
        leader = seq.leader
        if leader is None or not self._share_prefixes or leader.is_finished:
            return False
        return leader.num_computed_tokens < leader.num_prompt_tokens

    # ---- update --------------------------------------------------------------------
    def on_launched(self, output: SchedulerOutput) -> None:
        """The step's computation is under way: its tokens count as computed, and each
        sequence that samples has one more token, pending until `update` learns it.

        Called right after the runner launches the step, so that the next step can be
        scheduled while this one still runs (asynchronous scheduling).
        """
        if output.launched:
            raise ValueError("this step was already launched")
        output.launched = True
        if output.has_proposals:
            self._steps_with_proposals_in_flight += 1
        for scheduled in output.scheduled:
            seq = scheduled.seq
            if seq.is_finished:  # aborted before the launch
                continue
            seq.num_computed_tokens += scheduled.num_new_tokens
            if scheduled.samples:
                seq.num_pending_tokens += 1

    def update(self, output: SchedulerOutput, result: ModelRunnerOutput) -> list[Sequence]:
        """Apply one step's results; returns the sequences that finished in it.

        A step not yet marked launched is marked first (the synchronous case).
        """
        if not output.launched:
            self.on_launched(output)
        if output.has_proposals:
            self._steps_with_proposals_in_flight -= 1
        finished: list[Sequence] = []
        for scheduled in output.scheduled:
            seq = scheduled.seq
            if seq.is_finished:  # aborted, or finished by the step before, while this one ran
                # Drop what it computed, so that nothing downstream sees a token past its end.
                result.sampled_token_ids.pop(seq.seq_id, None)
                result.logprobs.pop(seq.seq_id, None)
                continue
            status, stop_reason = self._append_tokens(seq, result)
            if scheduled.proposed_token_ids:
                self._roll_back_rejected(seq)
            if status is not None:
                self.finish(seq, status, stop_reason)
                finished.append(seq)
                continue
            if not self.config.enable_kv_cache:
                # The "no cache" baseline: K/V is thrown away, the blocks are only
                # scratch space the next step overwrites.
                seq.num_computed_tokens = 0
            elif seq.status is SequenceStatus.RUNNING:
                self.block_manager.cache_computed_blocks(seq)
        return finished

    def _append_tokens(self, seq: Sequence, result: ModelRunnerOutput) -> tuple[SequenceStatus | None, int | None]:
        """Append the step's tokens for seq (one, or several after proposals) up to the first
        that ends it; drop the rest from result, so downstream sees only what was appended."""
        tokens = result.sampled_token_ids.get(seq.seq_id)
        if not tokens:
            return None, None
        logprobs = result.logprobs.get(seq.seq_id)
        for j, token_id in enumerate(tokens):
            seq.append_token(token_id)
            if logprobs and token_id in logprobs[j]:
                seq.cumulative_logprob += logprobs[j][token_id].logprob
            status, stop_reason = self._check_stop(seq, token_id)
            if status is not None:
                del tokens[j + 1:]
                if logprobs:
                    del logprobs[j + 1:]
                return status, stop_reason
        return None, None

    def _roll_back_rejected(self, seq: Sequence) -> None:
        """After a step with proposals: K/V counts as computed only for the tokens kept (all but
        the last, which the next step computes); the blocks of the rejected ones go back."""
        seq.num_computed_tokens = min(seq.num_computed_tokens, len(seq.token_ids) - 1)
        if self.config.enable_kv_cache:
            self.block_manager.free_tail(seq, seq.num_computed_tokens)

    def _check_stop(self, seq: Sequence, token_id: int) -> tuple[SequenceStatus | None, int | None]:
        """Token-level stops after `token_id` was appended. Counts only tokens the host
        knows (a later step may already have sampled another one)."""
        params = seq.sampling_params
        num_known = len(seq.token_ids)
        num_output = num_known - seq.num_prompt_tokens
        may_stop = num_output >= params.min_tokens
        if may_stop and not params.ignore_eos and token_id in seq.eos_token_ids:
            return SequenceStatus.FINISHED_STOPPED, None
        if may_stop and token_id in params.stop_token_ids:
            return SequenceStatus.FINISHED_STOPPED, token_id
        if params.max_tokens is not None and num_output >= params.max_tokens:
            return SequenceStatus.FINISHED_LENGTH, None
        if num_known >= self.max_model_len:
            return SequenceStatus.FINISHED_LENGTH, None
        return None, None

    def _reached_length_limit(self, seq: Sequence) -> bool:
        """True once seq has all the tokens it may have, counting a pending one: it will
        finish when that token arrives, so it must not be scheduled again."""
        max_tokens = seq.sampling_params.max_tokens
        return (seq.num_tokens >= self.max_model_len
                or (max_tokens is not None and seq.num_output_tokens >= max_tokens))

    # ---- finishing -----------------------------------------------------------------
    def finish(self, seq: Sequence, status: SequenceStatus,
               stop_reason: int | str | None = None) -> None:
        """End seq (waiting or running) and release its blocks, keeping them as prefix-cache entries."""
        if not status.is_finished:
            raise ValueError(f"finish() needs a finished status, got {status}")
        if seq.is_finished:
            raise ValueError(f"{seq} has already finished")
        seq.num_pending_tokens = 0  # a token still being sampled for it will be discarded
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        if self.config.enable_kv_cache:
            self.block_manager.cache_computed_blocks(seq)
        self.block_manager.free(seq)
        seq.status = status
        seq.stop_reason = stop_reason

    def abort(self, request_id: str) -> list[Sequence]:
        """Finish every sequence of a request as aborted; returns them."""
        aborted = [seq for seq in (*self.running, *self.waiting) if seq.request_id == request_id]
        for seq in aborted:
            self.finish(seq, SequenceStatus.FINISHED_ABORTED)
        return aborted
