"""The step as a wire format: what a model worker must be told, as ids and deltas.

`SchedulerOutput` hands the runner live `Sequence` objects, which only works inside one
process. A worker in another process (tensor or pipeline parallelism, issue 14) keeps its
own state per sequence and needs to hear only what changed, in the manner of vLLM v1's
`NewRequestData` / `CachedRequestData`:

- a sequence the worker has not seen, or sees again after preemption, arrives whole
  (`NewSequence`: its tokens, sampling parameters, block ids);
- one it already holds sends only the tokens the host learnt since, the blocks it
  gained (and, after a rollback, how many of the old ones still hold), the slice of
  positions this step computes and any proposed tokens (`CachedSequence`; only a
  decoding sequence, which the worker always holds already, carries proposals);
- sequences that finished or were preempted are named, so the worker forgets them.

`StepPlanner` (on the scheduler's side) turns each `SchedulerOutput` into a `StepPlan`;
`WorkerSequences` (on the worker's side) applies the plans and rebuilds each sequence's
token ids and block table from them alone. Both are plain msgspec structs, which encode
to msgpack in microseconds (`python benchmarks/step_plan_microbench.py`).

Not wired into the runner yet: the in-process runner still reads `SchedulerOutput`.
"""

from __future__ import annotations

import msgspec

from ruvonvllm.engine.plan import SchedulerOutput
from ruvonvllm.engine.sequence import Sequence
from ruvonvllm.sampling.params import SamplingParams


class NewSequence(msgspec.Struct, array_like=True):
    seq_id: int
    token_ids: list[int]          # prompt, then every output token the host knows
    num_prompt_tokens: int
    sampling_params: SamplingParams
    eos_token_ids: list[int]
    index: int                    # which of the request's n outputs
    block_ids: list[int]
    start: int                    # this step computes positions [start, start + num_new_tokens)
    num_new_tokens: int


class CachedSequence(msgspec.Struct, array_like=True):
    seq_id: int
    new_token_ids: list[int]      # appended to the worker's token ids
    num_kept_blocks: int          # the worker's blocks still valid (fewer after a rollback)
    new_block_ids: list[int]      # appended after those
    start: int
    num_new_tokens: int           # proposals included
    # Guesses computed after the known tokens (plan.py). A tuple: decoding an empty one
    # costs nothing, an empty list per sequence doubled the decode time of a step.
    proposed_token_ids: tuple[int, ...] = ()


class StepPlan(msgspec.Struct, array_like=True):
    new: list[NewSequence]
    cached: list[CachedSequence]
    forgotten: list[int]          # seq_ids the worker drops: finished or preempted


class StepPlanner:
    """Scheduler side: remembers what the worker knows of each sequence, sends the difference."""

    def __init__(self) -> None:
        # seq_id -> (the Sequence, token ids sent, the block_table list last sent, its length then).
        # No copy of the list is needed: the BlockManager only appends to a table it handed out,
        # and replaces it (free, free_tail, a prefix lookup) by a new list, never edits it.
        self._sent: dict[int, tuple[Sequence, int, list[int], int]] = {}

    def plan(self, output: SchedulerOutput) -> StepPlan:
        scheduled_ids = {item.seq.seq_id for item in output.scheduled}
        # Finished, or not running and holding no blocks (preempted): the worker lets go. A
        # preempted sequence that comes back arrives whole, as a new one.
        forgotten = [seq_id for seq_id, (seq, *_) in self._sent.items()
                     if seq.is_finished or (seq_id not in scheduled_ids and not seq.block_table)]
        for seq_id in forgotten:
            del self._sent[seq_id]
        new, cached = [], []
        for item in output.scheduled:
            seq = item.seq
            known = self._sent.get(seq.seq_id)
            tokens = seq.token_ids
            if known is None:
                if item.proposed_token_ids:
                    raise ValueError(f"{seq} carries proposals in its first step to this worker; only a "
                                     "decoding sequence the worker already holds may")
                new.append(NewSequence(seq.seq_id, list(tokens), seq.num_prompt_tokens, seq.sampling_params,
                                       sorted(seq.eos_token_ids), seq.index, list(seq.block_table),
                                       item.start, item.num_new_tokens))
            else:
                _, num_tokens_sent, table_sent, num_blocks_sent = known
                table = seq.block_table
                if table is table_sent:  # only appended to since
                    kept = num_blocks_sent
                else:  # a new list: a rollback (free_tail) keeps a prefix of the old one
                    kept = _common_prefix(table_sent[:num_blocks_sent], table)
                cached.append(CachedSequence(seq.seq_id, tokens[num_tokens_sent:], kept, table[kept:],
                                             item.start, item.num_new_tokens, item.proposed_token_ids))
            self._sent[seq.seq_id] = (seq, len(tokens), seq.block_table, len(seq.block_table))
        return StepPlan(new, cached, forgotten)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class WorkerSequence:
    """A worker's own copy of one sequence: enough to build its inputs and to sample for it.

    It satisfies sampling's SamplingRow protocol, so the sampler runs on it as on a Sequence.
    """

    __slots__ = ("seq_id", "token_ids", "num_prompt_tokens", "sampling_params", "eos_token_ids", "index",
                 "block_table", "start", "num_new_tokens", "proposed_token_ids")

    def __init__(self, new: NewSequence) -> None:
        self.seq_id = new.seq_id
        self.token_ids = list(new.token_ids)
        self.num_prompt_tokens = new.num_prompt_tokens
        self.sampling_params = new.sampling_params
        self.eos_token_ids = frozenset(new.eos_token_ids)
        self.index = new.index
        self.block_table = list(new.block_ids)
        self.start, self.num_new_tokens = new.start, new.num_new_tokens
        self.proposed_token_ids: tuple[int, ...] = ()

    @property
    def prompt_token_ids(self) -> list[int]:
        return self.token_ids[:self.num_prompt_tokens]

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens


class WorkerSequences:
    """Worker side: the sequences as the plans describe them, rebuilt from deltas alone."""

    def __init__(self) -> None:
        self.by_id: dict[int, WorkerSequence] = {}

    def apply(self, plan: StepPlan) -> list[WorkerSequence]:
        """Update from one step's plan; returns the step's sequences, new ones first, as planned."""
        for seq_id in plan.forgotten:
            self.by_id.pop(seq_id, None)
        step = []
        for new in plan.new:
            seq = self.by_id[new.seq_id] = WorkerSequence(new)
            step.append(seq)
        for delta in plan.cached:
            seq = self.by_id[delta.seq_id]
            seq.token_ids.extend(delta.new_token_ids)
            del seq.block_table[delta.num_kept_blocks:]
            seq.block_table.extend(delta.new_block_ids)
            seq.start, seq.num_new_tokens = delta.start, delta.num_new_tokens
            seq.proposed_token_ids = delta.proposed_token_ids
            step.append(seq)
        return step


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(StepPlan)


def encode_plan(plan: StepPlan) -> bytes:
    return _encoder.encode(plan)


def decode_plan(data: bytes) -> StepPlan:
    return _decoder.decode(data)
