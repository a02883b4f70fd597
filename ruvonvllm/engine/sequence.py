"""The state of one generated sequence, as the scheduler and the runner see it.

One rule drives everything (vLLM v1's token-budget model): a sequence has
`num_tokens` tokens (prompt plus generated) of which the first
`num_computed_tokens` have their K/V in the cache. A step computes some of the
rest. Prefill, chunked prefill, decode and resumption after preemption are all
the same operation with different numbers.

With asynchronous scheduling (engine/llm_engine.py) a sampled token can exist
on the GPU before the host knows it: `num_pending_tokens` counts those (0 or
1). They are part of `num_tokens`, so the next step can be scheduled to
compute them, but not yet of `token_ids`.
"""

from __future__ import annotations

import enum
import itertools
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ruvonvllm.sampling.params import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED_STOPPED = "stop"
    FINISHED_LENGTH = "length"
    FINISHED_ABORTED = "abort"

    @property
    def is_finished(self) -> bool:
        return self in _FINISHED_STATUSES

    @property
    def finish_reason(self) -> str | None:
        """OpenAI's finish_reason for a finished status, None otherwise."""
        return self.value if self.is_finished else None


# Looked up several times per sequence per step: a frozenset, built once.
_FINISHED_STATUSES = frozenset((SequenceStatus.FINISHED_STOPPED, SequenceStatus.FINISHED_LENGTH,
                                SequenceStatus.FINISHED_ABORTED))
_seq_ids = itertools.count()


class Sequence:
    """One output stream of a request (a request with n=3 has three).

    token_ids holds prompt then generated tokens. block_table lists the KV
    blocks holding tokens [0, len(block_table) * block_size), owned by the
    BlockManager. `leader` is set on siblings 1..n-1 of an n > 1 request: they
    wait until the leader has computed the prompt, then take its blocks from
    the prefix cache instead of computing them again.
    """

    def __init__(self, request_id: str, prompt_token_ids: list[int], sampling_params: SamplingParams,
                 eos_token_ids: frozenset[int] = frozenset(), index: int = 0,
                 arrival_time: float | None = None, leader: Sequence | None = None) -> None:
        self.seq_id = next(_seq_ids)
        self.request_id = request_id
        self.index = index
        self.token_ids: list[int] = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.sampling_params = sampling_params
        self.eos_token_ids = eos_token_ids
        self.arrival_time = time.monotonic() if arrival_time is None else arrival_time
        self.leader = leader

        self.status = SequenceStatus.WAITING
        self.num_computed_tokens = 0
        self.block_table: list[int] = []
        self.num_cached_tokens = 0  # prompt tokens served by the prefix cache
        self.num_preemptions = 0
        self.stop_reason: int | str | None = None
        self.cumulative_logprob = 0.0
        self.num_pending_tokens = 0  # sampled by a step still running on the device

    # ---- sizes ---------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        return len(self.token_ids) + self.num_pending_tokens

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) + self.num_pending_tokens - self.num_prompt_tokens

    @property
    def prompt_token_ids(self) -> list[int]:
        return self.token_ids[: self.num_prompt_tokens]

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_uncomputed_tokens(self) -> int:
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status in _FINISHED_STATUSES

    def append_token(self, token_id: int) -> None:
        """The host learns a sampled token (one that was pending, when there is one)."""
        self.token_ids.append(token_id)
        if self.num_pending_tokens:
            self.num_pending_tokens -= 1

    def __repr__(self) -> str:
        return (f"Sequence(id={self.seq_id}, request={self.request_id!r}, status={self.status.name}, "
                f"tokens={self.num_tokens}, computed={self.num_computed_tokens}, "
                f"blocks={len(self.block_table)})")
