"""Typed contracts between the scheduler, the model runner and the engine.

The scheduler produces a `SchedulerOutput` (which sequences compute how many
tokens this step); the runner turns it into tensors, runs the model and returns
a `ModelRunnerOutput` (the sampled tokens and logprobs); the scheduler's
`update` consumes that. Neither side reaches into the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ruvonvllm.engine.sequence import Sequence
from ruvonvllm.outputs import PositionLogprobs


@dataclass
class ScheduledSequence:
    """`seq` computes tokens [start, start + num_new_tokens) this step.

    `start` and `samples` are fixed when the step is scheduled: the scheduler
    advances the sequence as soon as the step is launched (`on_launched`), and
    the step must still be read as it was planned.
    """

    seq: Sequence
    num_new_tokens: int
    # Tokens a proposer guessed would follow (speculative decoding): computed after the
    # sequence's last token, counted in num_new_tokens, kept only as far as the model agrees.
    # A tuple: most steps have none, and the shared empty one costs no allocation per sequence.
    proposed_token_ids: tuple[int, ...] = ()
    start: int = field(init=False)
    samples: bool = field(init=False)  # the step reaches the sequence's end, so its next token is sampled

    def __post_init__(self) -> None:
        self.start = self.seq.num_computed_tokens
        # A chunk of a prompt that is not its last computes K/V only.
        self.samples = self.start + self.num_new_tokens - len(self.proposed_token_ids) == self.seq.num_tokens

    @property
    def end(self) -> int:
        return self.start + self.num_new_tokens


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSequence] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    launched: bool = False  # set by Scheduler.on_launched
    has_proposals: bool = False  # some sequence carries proposed tokens (set by the scheduler)

    @property
    def num_batched_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


@dataclass
class ModelRunnerOutput:
    """What one step of the model produced, keyed by seq_id.

    sampled_token_ids has an entry for every scheduled sequence whose
    ScheduledSequence.samples is True: one token, or with proposals the ones the
    model agreed with followed by the one it sampled after them. logprobs (one entry
    per token in sampled_token_ids) and prompt_logprobs (one entry per prompt
    position computed this step, the first prompt token gets None) are present only
    for sequences that asked.
    """

    sampled_token_ids: dict[int, list[int]] = field(default_factory=dict)
    logprobs: dict[int, list[PositionLogprobs]] = field(default_factory=dict)
    prompt_logprobs: dict[int, list[PositionLogprobs | None]] = field(default_factory=dict)
