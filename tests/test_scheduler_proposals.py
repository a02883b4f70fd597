"""Several tokens per step: proposed tokens, kept as far as the model agrees (plan.py, scheduler.py).

A fake proposer guesses the reference continuation, each guess wrong with some
probability; the fake model of scheduler_harness.py verifies the guesses against its own
next tokens. The scheduler must keep exactly the agreeing prefix, roll the rest back and
give back the blocks it no longer needs.
"""

from __future__ import annotations

import random

import pytest
from scheduler_harness import FakeRunner, NoisyProposer, check_done, drive, make_request, random_case

from ruvonvllm.config import SchedulerConfig
from ruvonvllm.engine.block_manager import BlockManager
from ruvonvllm.engine.plan import ModelRunnerOutput, SchedulerOutput
from ruvonvllm.engine.scheduler import Scheduler


class CountingRunner(FakeRunner):
    """Counts steps and tokens, and checks that no sequence holds blocks it does not need:
    a rejected proposal's blocks must have gone back (free_tail)."""

    def __init__(self, block_size: int) -> None:
        super().__init__(block_size)
        self.num_steps = self.num_tokens = 0

    def run(self, output: SchedulerOutput) -> ModelRunnerOutput:
        for item in output.scheduled:
            assert len(item.seq.block_table) == -(-item.end // self.block_size), f"{item.seq} holds spare blocks"
        result = super().run(output)
        self.num_steps += 1
        self.num_tokens += sum(map(len, result.sampled_token_ids.values()))
        return result


@pytest.mark.parametrize("seed", range(30))
def test_proposals_keep_the_reference_tokens_and_give_back_rejected_blocks(seed):
    rng = random.Random(seed)
    # A small pool: proposals can force preemption.
    case = random_case(rng, policies=("continuous", "static"), max_tokens=16, max_requests=8, max_n=2,
                       max_shared=12)
    proposer = NoisyProposer(rng, max_guesses=rng.randint(1, 6), p_wrong=rng.choice([0.0, 0.3, 1.0]))
    scheduler = case.scheduler(proposer)
    finished = drive(scheduler, case.seqs, runner=CountingRunner(case.block_size))  # invariants every step
    check_done(scheduler, case.seqs, finished, case.max_tokens)


def test_right_proposals_produce_several_tokens_per_step():
    rng = random.Random(0)
    [seq] = make_request("r", [10, 11, 12], max_tokens=24)
    bm = BlockManager(64, 4)
    scheduler = Scheduler(SchedulerConfig(), bm, max_model_len=4096,
                          proposer=NoisyProposer(rng, max_guesses=4, p_wrong=0.0))
    runner = CountingRunner(4)
    finished = drive(scheduler, [seq], runner=runner)
    check_done(scheduler, [seq], finished, max_tokens=24)
    assert runner.num_tokens == 24 and runner.num_steps < 24 // 2  # about 1 + 2 (the mean guess) per step


def test_a_step_with_proposals_must_be_updated_before_the_next_is_scheduled():
    [seq] = make_request("r", [10, 11, 12], max_tokens=8)
    scheduler = Scheduler(SchedulerConfig(), BlockManager(16, 4), max_model_len=4096,
                          proposer=NoisyProposer(random.Random(0), max_guesses=1, p_wrong=0.0))
    scheduler.add(seq)
    scheduler.update(prefill := scheduler.schedule(), FakeRunner(4).run(prefill))
    decode = scheduler.schedule()
    assert decode.scheduled[0].proposed_token_ids  # one guess, verified by the next update
    scheduler.on_launched(decode)
    with pytest.raises(RuntimeError, match="updated before"):
        scheduler.schedule()
