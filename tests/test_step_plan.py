"""The step as a wire format (engine/step_plan.py): a worker rebuilds every scheduled sequence
from the plans alone, through a msgpack round trip, over random schedules with preemption,
prefix-cache hits, chunked prefill, n > 1 and aborts."""

from __future__ import annotations

import random

import pytest
from scheduler_harness import (
    FakeRunner,
    NoisyProposer,
    drive,
    make_request,
    make_scheduler,
    random_case,
    reference_output,
)

from ruvonvllm.engine.plan import ModelRunnerOutput, SchedulerOutput
from ruvonvllm.engine.sequence import SequenceStatus
from ruvonvllm.engine.step_plan import StepPlanner, WorkerSequences, decode_plan, encode_plan
from ruvonvllm.sampling.params import SamplingParams


class PlanCheckingRunner(FakeRunner):
    """Before running each step, sends it through the wire and checks the worker's copy."""

    def __init__(self, block_size: int) -> None:
        super().__init__(block_size)
        self.planner = StepPlanner()
        self.worker = WorkerSequences()
        self.seen = {}

    def run(self, output: SchedulerOutput) -> ModelRunnerOutput:
        plan = self.planner.plan(output)
        received = decode_plan(encode_plan(plan))
        assert received == plan
        step = {seq.seq_id: seq for seq in self.worker.apply(received)}
        assert list(step) == [d.seq_id for d in plan.new] + [d.seq_id for d in plan.cached]
        assert sorted(step) == sorted(item.seq.seq_id for item in output.scheduled)
        for item in output.scheduled:
            mine, theirs = step[item.seq.seq_id], item.seq
            assert mine.token_ids == theirs.token_ids
            assert mine.block_table == theirs.block_table
            assert (mine.start, mine.num_new_tokens) == (item.start, item.num_new_tokens)
            assert mine.proposed_token_ids == item.proposed_token_ids
            assert mine.sampling_params == theirs.sampling_params and mine.index == theirs.index
            assert mine.output_token_ids == theirs.output_token_ids
        # The worker holds no sequence the scheduler has let go of: finished or preempted.
        self.seen.update((item.seq.seq_id, item.seq) for item in output.scheduled)
        assert not any(self.seen[seq_id].is_finished for seq_id in self.worker.by_id)
        assert not any(seq.seq_id in self.worker.by_id for seq in output.preempted if seq.seq_id not in step)
        return super().run(output)


@pytest.mark.parametrize("with_proposals", [False, True])
@pytest.mark.parametrize("seed", range(30))
def test_a_worker_rebuilds_every_step_from_the_plans_alone(seed, with_proposals):
    rng = random.Random(seed)
    case = random_case(rng)  # a small pool: preemption happens
    seqs, max_tokens, block_size = case.seqs, case.max_tokens, case.block_size
    # With proposals, some are rejected: the blocks rolled back reach the worker as num_kept_blocks.
    proposer = NoisyProposer(rng, max_guesses=4, p_wrong=0.3) if with_proposals else None
    scheduler = case.scheduler(proposer)
    doomed = {f"req{i}" for i in range(10) if rng.random() < 0.2}
    runner = PlanCheckingRunner(block_size)

    def on_step(output):
        if doomed and rng.random() < 0.3:
            scheduler.abort(doomed.pop())

    finished = drive(scheduler, seqs, on_step=on_step, runner=runner)
    for seq in seqs:
        if seq.status is not SequenceStatus.FINISHED_ABORTED:
            assert finished[seq.seq_id] == 1
            assert seq.output_token_ids == reference_output(seq, max_tokens)
    # Once everything finished, the next plan makes the worker forget every sequence.
    runner.worker.apply(runner.planner.plan(SchedulerOutput()))
    assert runner.worker.by_id == {}


def test_decodes_send_deltas_not_whole_sequences():
    scheduler = make_scheduler(num_blocks=64, block_size=4)
    runner = PlanCheckingRunner(4)
    seqs = make_request("r", list(range(10, 30)), max_tokens=8)
    plans = []
    original = runner.planner.plan

    def recording(output):
        plans.append(original(output))
        return plans[-1]

    runner.planner.plan = recording
    drive(scheduler, seqs, runner=runner)
    first, *rest = plans
    assert len(first.new) == 1 and not first.cached
    # Every later step carries only the one token the host learnt, and a block when one filled up.
    assert all(not p.new and [len(d.new_token_ids) for d in p.cached] == [1] for p in rest)
    # 20 prompt tokens fill 5 blocks of 4; the 7 decode steps computing tokens 20 to 26 add 2.
    assert len(first.new[0].block_ids) == 5
    assert [len(d.new_block_ids) for p in rest for d in p.cached] == [1, 0, 0, 0, 1, 0, 0]


def test_a_rollback_sends_how_many_blocks_the_worker_keeps():
    from ruvonvllm.engine.plan import ScheduledSequence
    scheduler = make_scheduler(num_blocks=16, block_size=4)
    bm = scheduler.block_manager
    [seq] = make_request("r", list(range(10, 16)), max_tokens=8)
    scheduler.add(seq)
    planner, worker = StepPlanner(), WorkerSequences()
    output = scheduler.schedule()
    worker.apply(decode_plan(encode_plan(planner.plan(output))))
    scheduler.update(output, ModelRunnerOutput(sampled_token_ids={seq.seq_id: [50]}))
    # A step with proposals: slots for 6 more tokens, then all but one rejected.
    assert bm.allocate_slots(seq, 7)
    grown = SchedulerOutput([ScheduledSequence(seq, 1)])
    worker.apply(decode_plan(encode_plan(planner.plan(grown))))
    assert worker.by_id[seq.seq_id].block_table == seq.block_table and len(seq.block_table) == 4
    bm.free_tail(seq, seq.num_tokens)
    plan = planner.plan(SchedulerOutput([ScheduledSequence(seq, 1)]))
    assert [d.num_kept_blocks for d in plan.cached] == [2] and plan.cached[0].new_block_ids == []
    worker.apply(decode_plan(encode_plan(plan)))
    assert worker.by_id[seq.seq_id].block_table == seq.block_table


def test_sampling_params_survive_the_wire_whole():
    params = SamplingParams(n=2, temperature=0.7, top_k=5, stop=["\n\n"], stop_token_ids=[7], seed=3,
                            logprobs=2, max_tokens=9)
    [seq, sibling] = make_request("r", [11, 12, 13], n=2, max_tokens=9, temperature=0.7, top_k=5,
                                  stop=["\n\n"], stop_token_ids=[7], seed=3, logprobs=2)
    scheduler = make_scheduler()
    scheduler.add(seq)
    plan = StepPlanner().plan(scheduler.schedule())
    received = decode_plan(encode_plan(plan)).new[0].sampling_params
    assert received == params == seq.sampling_params
    assert received.stop_strings == ["\n\n"]
