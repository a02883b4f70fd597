"""The scheduler's test harness: a fake model over a fake KV cache, and workloads to drive it.

`FakeRunner` keeps a "KV cache" of token ids written through each sequence's block
table and slot mapping, and reads a sequence's whole context back from it before
sampling. The next token is a digest of that context (`next_token`), so a wrong block
table, a block shared by mistake, a prefix hit on the wrong tokens, a bad recompute
after preemption or a rejected proposal kept by mistake changes the outputs; the
expected outputs come from a plain loop over the token lists (`reference_output`).
Used by test_scheduler.py, test_scheduler_proposals.py and test_step_plan.py.
"""

from __future__ import annotations

import random
import zlib
from array import array
from collections import Counter
from dataclasses import dataclass

import pytest

from ruvonvllm.config import SchedulerConfig
from ruvonvllm.engine.block_manager import BlockManager
from ruvonvllm.engine.plan import ModelRunnerOutput, SchedulerOutput
from ruvonvllm.engine.scheduler import Proposer, Scheduler
from ruvonvllm.engine.sequence import Sequence, SequenceStatus
from ruvonvllm.sampling.params import SamplingParams

EOS = 1  # the fake model only emits tokens in [10, 110)


def next_token(index: int, context: list[int]) -> int:
    """The fake model: a function of the context (and of the sibling index, like a per-output seed)."""
    return zlib.crc32(array("q", [index, *context]).tobytes()) % 100 + 10


def reference_output(seq: Sequence, max_tokens: int) -> list[int]:
    tokens = list(seq.prompt_token_ids)
    for _ in range(max_tokens):
        tokens.append(next_token(seq.index, tokens))
    return tokens[seq.num_prompt_tokens:]


class FakeRunner:
    """Writes each scheduled token into its KV slot, reads contexts back, samples next_token."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.slots: dict[int, int] = {}

    def slot(self, seq: Sequence, position: int) -> int:
        return seq.block_table[position // self.block_size] * self.block_size + position % self.block_size

    def run(self, output: SchedulerOutput) -> ModelRunnerOutput:
        for item in output.scheduled:  # all K/V writes of a step land before attention reads
            tokens = [*item.seq.token_ids, *item.proposed_token_ids]  # proposals follow the known tokens
            for position in range(item.start, item.end):
                self.slots[self.slot(item.seq, position)] = tokens[position]
        result = ModelRunnerOutput()
        for item in output.scheduled:
            if item.samples:
                seq = item.seq
                known = item.end - len(item.proposed_token_ids)
                context = [self.slots.get(self.slot(seq, p)) for p in range(item.end)]
                assert context == [*seq.token_ids, *item.proposed_token_ids][:item.end], \
                    f"{seq} reads a corrupted KV cache"
                # The model's token after the known ones, then, while each proposal equals what
                # the model predicted at its position, the token after that proposal too.
                sampled = [next_token(seq.index, context[:known])]
                for j, proposal in enumerate(item.proposed_token_ids):
                    if proposal != sampled[-1]:
                        break
                    sampled.append(next_token(seq.index, context[:known + j + 1]))
                result.sampled_token_ids[seq.seq_id] = sampled
        return result


def make_request(request_id, prompt, max_tokens=8, n=1, arrival_time=None, **params):
    """The n sequences of one request; siblings point at the first as their leader."""
    sampling = SamplingParams(n=n, max_tokens=max_tokens, **params)
    leader = Sequence(request_id, prompt, sampling, eos_token_ids=frozenset({EOS}), arrival_time=arrival_time)
    siblings = [Sequence(request_id, prompt, sampling, eos_token_ids=frozenset({EOS}), index=i,
                         arrival_time=leader.arrival_time, leader=leader) for i in range(1, n)]
    return [leader, *siblings]


def random_prompt(rng, length):
    return [rng.randrange(10, 110) for _ in range(length)]


def make_scheduler(num_blocks=64, block_size=4, prefix_caching=True, max_model_len=4096, **config):
    bm = BlockManager(num_blocks, block_size, enable_prefix_caching=prefix_caching)
    return Scheduler(SchedulerConfig(**config), bm, max_model_len)


def check_plan(scheduler: Scheduler, output: SchedulerOutput, was_running: list[Sequence]) -> None:
    config = scheduler.config
    assert output.scheduled, "nothing scheduled while requests are unfinished"
    assert output.num_batched_tokens <= config.max_num_batched_tokens or len(output.scheduled) == 1
    assert len(scheduler.running) <= config.max_num_seqs
    seqs = [item.seq for item in output.scheduled]
    assert len(set(map(id, seqs))) == len(seqs), "a sequence scheduled twice"
    for item in output.scheduled:
        assert item.seq.status is SequenceStatus.RUNNING and item.seq in scheduler.running
        assert 1 <= item.num_new_tokens and item.end - len(item.proposed_token_ids) <= item.seq.num_tokens
        assert len(item.seq.block_table) * scheduler.block_manager.block_size >= item.end
        if not (config.enable_chunked_prefill and config.enable_kv_cache):
            assert item.samples, "a whole-sequence step must reach the end of the sequence"
        if not config.enable_kv_cache:
            assert item.start == 0
    if output.preempted:
        assert all(seq in was_running for seq in seqs), "admitted a newcomer in a step that preempted"
    for seq in output.preempted:
        assert seq.status is SequenceStatus.WAITING and seq in scheduler.waiting
        assert not seq.block_table and seq.num_computed_tokens == 0
        assert seq not in seqs


def drive(scheduler: Scheduler, seqs: list[Sequence], on_step=None, runner=None, max_steps=20_000) -> Counter:
    """Add seqs, step until everything finished; returns how often each seq_id finished."""
    runner = runner or FakeRunner(scheduler.block_manager.block_size)
    for seq in seqs:
        scheduler.add(seq)
    finished = Counter()
    for _ in range(max_steps):
        if not scheduler.has_unfinished:
            break
        was_running = list(scheduler.running)
        output = scheduler.schedule()
        check_plan(scheduler, output, was_running)
        result = runner.run(output)
        if on_step is not None:  # between the model step and update(): where an abort can land
            on_step(output)
        for seq in scheduler.update(output, result):
            finished[seq.seq_id] += 1
        scheduler.block_manager.check_invariants()
    else:
        pytest.fail("the workload did not finish")
    return finished


def check_done(scheduler: Scheduler, seqs: list[Sequence], finished: Counter, max_tokens: int) -> None:
    bm = scheduler.block_manager
    assert all(finished[seq.seq_id] == 1 for seq in seqs)
    assert sum(finished.values()) == len(seqs)
    for seq in seqs:
        assert seq.status is SequenceStatus.FINISHED_LENGTH
        assert seq.output_token_ids == reference_output(seq, max_tokens)
    assert bm.num_free_blocks == bm.num_blocks, "blocks leaked"
    bm.check_invariants()


def random_workload(rng, num_requests, max_tokens, prompt_lens=(1, 40), shared_prefix=None, max_n=1):
    seqs = []
    for i in range(num_requests):
        prompt = random_prompt(rng, rng.randint(*prompt_lens))
        if shared_prefix is not None and rng.random() < 0.5:
            prompt = shared_prefix + prompt
        seqs += make_request(f"req{i}", prompt, max_tokens, n=rng.randint(1, max_n), arrival_time=float(i))
    return seqs


class NoisyProposer:
    """Proposes the reference continuation, each guess wrong with probability p_wrong: the
    scheduler must keep exactly the right prefix and give back the blocks of the rest."""

    def __init__(self, rng: random.Random, max_guesses: int, p_wrong: float) -> None:
        self.rng, self.max_guesses, self.p_wrong = rng, max_guesses, p_wrong
        self.num_proposed = 0

    def propose(self, seq: Sequence, max_tokens: int) -> list[int]:
        context, guesses = list(seq.token_ids), []
        for _ in range(min(self.rng.randint(0, self.max_guesses), max_tokens)):
            guess = next_token(seq.index, context)
            if self.rng.random() < self.p_wrong:
                guess = 10 + (guess - 10 + 1) % 100  # a wrong token, still in the fake vocabulary
            guesses.append(guess)
            context.append(guess)
        self.num_proposed += len(guesses)
        return guesses


@dataclass
class RandomCase:
    """A random configuration and workload, with a pool small enough that preemption happens."""

    block_size: int
    max_tokens: int
    config: dict
    seqs: list[Sequence]
    num_blocks: int
    prefix_caching: bool

    def scheduler(self, proposer: Proposer | None = None) -> Scheduler:
        manager = BlockManager(self.num_blocks, self.block_size, enable_prefix_caching=self.prefix_caching)
        return Scheduler(SchedulerConfig(**self.config), manager, max_model_len=4096, proposer=proposer)


def random_case(rng: random.Random, policies=("continuous", "sequential", "static"), vary_kv_cache=False,
                max_tokens=12, max_requests=10, max_n=3, max_shared=20) -> RandomCase:
    block_size = rng.choice([1, 2, 4, 8])
    max_tokens = rng.randint(1, max_tokens)
    config = dict(policy=rng.choice(policies), enable_chunked_prefill=rng.random() < 0.7)
    if vary_kv_cache:
        config["enable_kv_cache"] = rng.random() < 0.85
    config.update(max_num_seqs=rng.randint(1, 6), max_num_batched_tokens=rng.randint(8, 48))
    shared = random_prompt(rng, rng.randint(1, max_shared))
    seqs = random_workload(rng, rng.randint(1, max_requests), max_tokens, prompt_lens=(1, 24),
                           shared_prefix=shared, max_n=max_n)
    longest = max(s.num_prompt_tokens for s in seqs) + max_tokens
    num_blocks = -(-longest // block_size) + rng.randint(0, 12)
    return RandomCase(block_size, max_tokens, config, seqs, num_blocks, prefix_caching=rng.random() < 0.8)
