"""Scheduler: budgets, chunked prefill, preemption, prefix sharing and policies, with hand-built step results.

The stand-in for the model runner and the workloads are in scheduler_harness.py; several
tokens per step (proposals) are tested in test_scheduler_proposals.py.
"""

import random
from collections import Counter

import pytest
from scheduler_harness import (
    EOS,
    FakeRunner,
    check_done,
    drive,
    make_request,
    make_scheduler,
    random_case,
    random_prompt,
    random_workload,
    reference_output,
)

from ruvonvllm.engine.plan import ModelRunnerOutput
from ruvonvllm.engine.sequence import SequenceStatus
from ruvonvllm.outputs import Logprob


# ---- the whole loop under every configuration -----------------------------------------------

@pytest.mark.parametrize("policy", ["continuous", "sequential", "static"])
@pytest.mark.parametrize("chunked", [True, False])
@pytest.mark.parametrize("kv_cache", [True, False])
def test_every_request_finishes_once_with_the_reference_tokens(policy, chunked, kv_cache):
    rng = random.Random(0)
    seqs = random_workload(rng, num_requests=8, max_tokens=6, shared_prefix=random_prompt(rng, 9), max_n=3)
    scheduler = make_scheduler(policy=policy, enable_chunked_prefill=chunked, enable_kv_cache=kv_cache,
                               max_num_seqs=4, max_num_batched_tokens=32)
    finished = drive(scheduler, seqs)
    check_done(scheduler, seqs, finished, max_tokens=6)


# ---- token budget and chunked prefill -------------------------------------------------------

def test_chunked_prefill_splits_a_long_prompt_and_mixes_in_decodes():
    scheduler = make_scheduler(max_num_batched_tokens=8)
    short, = make_request("short", [11, 12, 13], max_tokens=12, arrival_time=0.0)
    long, = make_request("long", list(range(20, 50)), max_tokens=2, arrival_time=1.0)
    scheduler.add(short)
    runner = FakeRunner(4)
    output = scheduler.schedule()  # short's prompt
    scheduler.update(output, runner.run(output))
    scheduler.add(long)

    chunks = []
    while long.num_output_tokens == 0:
        output = scheduler.schedule()
        sizes = {item.seq.request_id: item.num_new_tokens for item in output.scheduled}
        assert sizes["short"] == 1  # a decode in every step of the prefill
        assert output.num_batched_tokens == min(8, 1 + long.num_uncomputed_tokens)
        samples = {item.seq.request_id: item.samples for item in output.scheduled}
        chunks.append(sizes["long"])
        scheduler.update(output, runner.run(output))
        assert long.num_output_tokens == (1 if samples["long"] else 0)
    assert chunks == [7, 7, 7, 7, 2]
    assert sum(chunks) == 30


def test_without_chunking_a_prompt_runs_whole_and_an_oversized_one_runs_alone():
    scheduler = make_scheduler(max_num_batched_tokens=16, enable_chunked_prefill=False)
    first, = make_request("first", [11, 12], max_tokens=3, arrival_time=0.0)
    fits, = make_request("fits", list(range(20, 33)), max_tokens=3, arrival_time=1.0)  # 13 tokens
    huge, = make_request("huge", list(range(40, 80)), max_tokens=3, arrival_time=2.0)  # 40 > budget
    steps = []
    finished = drive(scheduler, [first, fits, huge],
                     on_step=lambda out: steps.append({i.seq.request_id: i.num_new_tokens for i in out.scheduled}))
    assert steps[0] == {"first": 2, "fits": 13}
    huge_steps = [step for step in steps if "huge" in step]
    assert huge_steps[0] == {"huge": 40}
    assert all(step == {"huge": 1} for step in huge_steps[1:])
    check_done(scheduler, [first, fits, huge], finished, max_tokens=3)


def test_max_num_seqs_bounds_the_running_batch():
    rng = random.Random(1)
    seqs = random_workload(rng, num_requests=10, max_tokens=5)
    scheduler = make_scheduler(max_num_seqs=3, max_num_batched_tokens=64)
    sizes = []
    finished = drive(scheduler, seqs, on_step=lambda out: sizes.append(len(scheduler.running)))
    assert max(sizes) == 3
    check_done(scheduler, seqs, finished, max_tokens=5)


# ---- preemption --------------------------------------------------------------------------

def test_preemption_with_a_tiny_pool_reproduces_the_big_pool_tokens():
    def run(num_blocks):
        rng = random.Random(2)
        seqs = random_workload(rng, num_requests=6, max_tokens=20, prompt_lens=(8, 20))
        scheduler = make_scheduler(num_blocks=num_blocks, max_num_batched_tokens=64)
        preempted = []
        finished = drive(scheduler, seqs, on_step=lambda out: preempted.extend(out.preempted))
        check_done(scheduler, seqs, finished, max_tokens=20)
        return scheduler, preempted, [seq.output_token_ids for seq in seqs]

    big, big_preempted, big_tokens = run(num_blocks=256)
    tiny, tiny_preempted, tiny_tokens = run(num_blocks=12)  # one sequence needs up to 10 blocks
    assert big.num_preemptions == 0 and not big_preempted
    assert tiny.num_preemptions == len(tiny_preempted) > 0
    assert tiny_tokens == big_tokens


def test_the_youngest_running_sequence_is_preempted_for_an_older_one_and_queued_first():
    # 2 blocks of 4 each for the first two prompts; the pool has 4 blocks.
    scheduler = make_scheduler(num_blocks=4, prefix_caching=False)
    runner = FakeRunner(4)
    old, = make_request("old", list(range(10, 18)), max_tokens=8, arrival_time=0.0)
    young, = make_request("young", list(range(20, 28)), max_tokens=8, arrival_time=1.0)
    late, = make_request("late", [30], max_tokens=1, arrival_time=2.0)
    for seq in (old, young, late):
        scheduler.add(seq)
    output = scheduler.schedule()
    assert [item.seq for item in output.scheduled] == [old, young]
    scheduler.update(output, runner.run(output))
    # Both now need a third block; only old can have one.
    output = scheduler.schedule()
    assert [item.seq for item in output.scheduled] == [old]
    assert output.preempted == [young]
    assert list(scheduler.waiting) == [young, late]  # front of the queue, and nobody admitted
    assert young.num_preemptions == 1 and scheduler.num_preemptions == 1
    assert young.block_table == [] and young.num_computed_tokens == 0


def test_the_youngest_sequence_preempts_itself_when_it_cannot_grow():
    scheduler = make_scheduler(num_blocks=5, prefix_caching=False, max_num_batched_tokens=64)
    runner = FakeRunner(4)
    old, = make_request("old", list(range(10, 18)), max_tokens=8, arrival_time=0.0)  # 2 blocks
    young, = make_request("young", list(range(20, 27)), max_tokens=8, arrival_time=1.0)  # 2 blocks
    scheduler.add(old)
    scheduler.add(young)
    output = scheduler.schedule()
    scheduler.update(output, runner.run(output))
    # old (9 tokens) needs a third block and takes the last free one; young (8 tokens) still fits.
    output = scheduler.schedule()
    assert not output.preempted
    scheduler.update(output, runner.run(output))
    # Now young needs a third block and none is free: it preempts itself.
    for _ in range(4):
        output = scheduler.schedule()
        scheduler.update(output, runner.run(output))
        if output.preempted:
            break
    assert output.preempted == [young]
    assert [item.seq for item in output.scheduled] == [old]
    assert young.output_token_ids  # the generated tokens survive; they are recomputed later
    drive(scheduler, [], runner=runner)
    assert old.output_token_ids == reference_output(old, 8)
    assert young.output_token_ids == reference_output(young, 8)
    assert scheduler.block_manager.num_free_blocks == 5


def test_a_resumed_sequence_recomputes_everything_but_samples_only_at_the_end():
    scheduler = make_scheduler(num_blocks=6, prefix_caching=False, max_num_batched_tokens=64)
    old, = make_request("old", list(range(10, 19)), max_tokens=12, arrival_time=0.0)
    young, = make_request("young", list(range(20, 29)), max_tokens=12, arrival_time=1.0)
    resumed = []

    def on_step(output):
        for item in output.scheduled:
            if item.seq is young and item.seq.num_preemptions and item.start == 0 and young.num_output_tokens:
                resumed.append((item.num_new_tokens, young.num_tokens, item.samples))

    finished = drive(scheduler, [old, young], on_step=on_step)
    assert young.num_preemptions >= 1
    assert resumed and all(new == total and samples for new, total, samples in resumed)
    check_done(scheduler, [old, young], finished, max_tokens=12)


# ---- prefix caching --------------------------------------------------------------------------

def test_a_shared_prefix_is_served_from_the_cache():
    scheduler = make_scheduler(block_size=4)
    shared = list(range(10, 42))  # 8 full blocks
    first, = make_request("first", shared + [90, 91, 92], max_tokens=4, arrival_time=0.0)
    runner = FakeRunner(4)  # one KV cache across both runs
    drive(scheduler, [first], runner=runner)
    second, = make_request("second", shared + [95, 96], max_tokens=4, arrival_time=1.0)
    computed = []
    finished = drive(scheduler, [second], runner=runner,
                     on_step=lambda out: computed.extend(i.num_new_tokens for i in out.scheduled))
    assert second.num_cached_tokens == 32
    assert computed[0] == 2  # only the new tail of the prompt
    assert scheduler.block_manager.prefix_cache_hits == 32
    check_done(scheduler, [second], finished, max_tokens=4)


def test_an_identical_prompt_still_computes_its_last_token():
    scheduler = make_scheduler(block_size=4)
    prompt = list(range(10, 34))  # exactly 6 blocks
    first, = make_request("first", prompt, max_tokens=3, arrival_time=0.0)
    runner = FakeRunner(4)
    drive(scheduler, [first], runner=runner)
    again, = make_request("again", prompt, max_tokens=3, arrival_time=1.0)
    computed = []
    finished = drive(scheduler, [again], runner=runner,
                     on_step=lambda out: computed.append(out.scheduled[0].num_new_tokens))
    assert again.num_cached_tokens == 20
    assert computed[0] == 4
    assert again.output_token_ids == first.output_token_ids
    check_done(scheduler, [again], finished, max_tokens=3)


def test_a_preempted_sequence_gets_its_blocks_back_from_the_cache():
    scheduler = make_scheduler(num_blocks=7, block_size=4, max_num_batched_tokens=64)
    old, = make_request("old", list(range(10, 19)), max_tokens=14, arrival_time=0.0)
    young, = make_request("young", list(range(20, 29)), max_tokens=14, arrival_time=1.0)
    resumed = []
    finished = drive(scheduler, [old, young], on_step=lambda out: resumed.extend(
        (young.num_cached_tokens, i.num_new_tokens) for i in out.scheduled
        if i.seq is young and young.num_preemptions and young.num_output_tokens and i.num_new_tokens > 1))
    assert young.num_preemptions >= 1
    assert any(cached > 0 for cached, _ in resumed)
    check_done(scheduler, [old, young], finished, max_tokens=14)


# ---- n > 1 -----------------------------------------------------------------------------------

def test_siblings_wait_for_the_leader_then_share_its_prompt_blocks():
    scheduler = make_scheduler(block_size=4, max_num_batched_tokens=8)
    prompt = list(range(10, 32))  # 22 tokens: 5 full blocks + 2
    leader, *siblings = make_request("multi", prompt, max_tokens=4, n=3, arrival_time=0.0)
    other, = make_request("other", [70, 71, 72], max_tokens=4, arrival_time=1.0)
    computed = Counter()
    running_sets = []

    def on_step(output):
        for item in output.scheduled:
            if item.start < item.seq.num_prompt_tokens:
                key = (item.seq.request_id, item.seq.index)
                computed[key] += min(item.end, item.seq.num_prompt_tokens) - item.start
        running_sets.append({(s.request_id, s.index) for s in scheduler.running})
        if any(s in scheduler.running for s in siblings):
            assert leader.num_computed_tokens >= 22
        if all(s in scheduler.running for s in (leader, *siblings)):
            prompt_blocks = leader.block_table[:5]
            assert all(s.block_table[:5] == prompt_blocks for s in siblings)
            assert all(scheduler.block_manager._ref_counts[b] == 3 for b in prompt_blocks)

    finished = drive(scheduler, [leader, *siblings, other], on_step=on_step)
    # While the leader chunks through the prompt the siblings wait, but "other" behind them does not.
    assert any(("other", 0) in running and ("multi", 1) not in running for running in running_sets)
    assert computed["multi", 0] == 22
    assert computed["multi", 1] == computed["multi", 2] == 2  # only the partial last block
    assert all(s.num_cached_tokens == 20 for s in siblings)
    assert len({tuple(s.output_token_ids) for s in (leader, *siblings)}) == 3
    check_done(scheduler, [leader, *siblings, other], finished, max_tokens=4)


# ---- policies ---------------------------------------------------------------------------------

def policy_run(policy, max_tokens_per_request, n=1, max_num_seqs=8):
    scheduler = make_scheduler(policy=policy, max_num_seqs=max_num_seqs, max_num_batched_tokens=64)
    rng = random.Random(3)
    seqs = []
    for i, max_tokens in enumerate(max_tokens_per_request):
        seqs += make_request(f"r{i}", random_prompt(rng, 6), max_tokens=max_tokens, n=n, arrival_time=float(i))
    snapshots = []
    drive(scheduler, seqs, on_step=lambda out: snapshots.append(
        ({s.request_id for s in scheduler.running}, {i.seq.request_id for i in out.scheduled})))
    return seqs, snapshots


def test_sequential_runs_one_request_at_a_time():
    seqs, snapshots = policy_run("sequential", [3, 5, 2, 4], n=2)
    assert all(len(running) == 1 for running, _ in snapshots)
    order = [running.pop() for running, _ in snapshots]
    assert [r for i, r in enumerate(order) if i == 0 or order[i - 1] != r] == ["r0", "r1", "r2", "r3"]
    assert all(seq.num_output_tokens == seq.sampling_params.max_tokens for seq in seqs)


def test_static_batches_admit_only_when_the_previous_batch_is_done():
    seqs, snapshots = policy_run("static", [2, 6, 3, 3, 5], max_num_seqs=2)
    batches = [running for running, _ in snapshots]
    assert batches[0] == {"r0", "r1"}
    # r0 finishes early, but r2 only starts once r1 is done too.
    joined = [batches[i] - batches[i - 1] for i in range(1, len(batches))]
    start_r2 = next(i for i, b in enumerate(batches) if "r2" in b)
    assert "r1" not in batches[start_r2]
    assert batches[start_r2] == {"r2", "r3"}
    for i, new in enumerate(joined, start=1):
        if new:
            assert not (batches[i - 1] & batches[i]), "someone joined a batch that was still running"


def test_continuous_fills_a_free_slot_at_once():
    seqs, snapshots = policy_run("continuous", [2, 6, 3], max_num_seqs=2)
    batches = [running for running, _ in snapshots]
    assert batches[0] == {"r0", "r1"}
    start_r2 = next(i for i, b in enumerate(batches) if "r2" in b)
    assert batches[start_r2] == {"r1", "r2"}  # r2 took r0's slot while r1 was still generating


# ---- aborts, stops, finishing -----------------------------------------------------------------

def test_abort_frees_blocks_of_running_and_waiting_sequences():
    scheduler = make_scheduler(num_blocks=32, max_num_seqs=1)
    runner = FakeRunner(4)
    running = make_request("a", list(range(10, 30)), max_tokens=10, n=2, arrival_time=0.0)
    waiting, = make_request("b", list(range(40, 50)), max_tokens=10, arrival_time=1.0)
    for seq in (*running, waiting):
        scheduler.add(seq)
    for _ in range(3):
        output = scheduler.schedule()
        scheduler.update(output, runner.run(output))
    assert running[0].block_table and not running[1].block_table
    aborted = scheduler.abort("a")
    assert set(map(id, aborted)) == set(map(id, running))
    assert all(seq.status is SequenceStatus.FINISHED_ABORTED for seq in running)
    assert all(not seq.block_table for seq in running)
    assert scheduler.abort("a") == [] and scheduler.abort("nobody") == []
    assert list(scheduler.waiting) == [waiting] and not scheduler.running
    assert scheduler.block_manager.num_free_blocks == 32
    assert scheduler.abort("b") == [waiting]
    assert not scheduler.has_unfinished
    scheduler.block_manager.check_invariants()


def test_abort_during_a_step_drops_the_result():
    scheduler = make_scheduler()
    seq, = make_request("a", [10, 11, 12], max_tokens=4)
    scheduler.add(seq)
    output = scheduler.schedule()
    result = FakeRunner(4).run(output)
    scheduler.abort("a")
    assert scheduler.update(output, result) == []
    assert seq.num_output_tokens == 0 and seq.status is SequenceStatus.FINISHED_ABORTED


def step_with(scheduler, tokens_by_seq, logprobs=None):
    output = scheduler.schedule()
    result = ModelRunnerOutput(sampled_token_ids={i.seq.seq_id: [tokens_by_seq[i.seq.seq_id]]
                                                  for i in output.scheduled if i.samples},
                               logprobs={seq_id: [position] for seq_id, position in (logprobs or {}).items()})
    return scheduler.update(output, result)


def test_eos_stops_only_after_min_tokens_and_not_with_ignore_eos():
    scheduler = make_scheduler()
    plain, = make_request("plain", [10, 11], max_tokens=5)
    patient, = make_request("patient", [10, 11], max_tokens=5, min_tokens=2)
    ignoring, = make_request("ignoring", [10, 11], max_tokens=5, ignore_eos=True)
    for seq in (plain, patient, ignoring):
        scheduler.add(seq)
    eos_for_all = {seq.seq_id: EOS for seq in (plain, patient, ignoring)}
    assert step_with(scheduler, eos_for_all) == [plain]
    assert plain.status is SequenceStatus.FINISHED_STOPPED and plain.stop_reason is None
    assert step_with(scheduler, eos_for_all) == [patient]
    assert patient.output_token_ids == [EOS, EOS]
    for _ in range(3):
        step_with(scheduler, eos_for_all)
    assert ignoring.status is SequenceStatus.FINISHED_LENGTH and ignoring.num_output_tokens == 5


def test_stop_token_ids_record_the_token_as_stop_reason():
    scheduler = make_scheduler()
    seq, = make_request("s", [10, 11], max_tokens=5, stop_token_ids=[42], min_tokens=1)
    scheduler.add(seq)
    assert step_with(scheduler, {seq.seq_id: 42}) == [seq]
    assert seq.status is SequenceStatus.FINISHED_STOPPED and seq.stop_reason == 42
    seq2, = make_request("s2", [10, 11], max_tokens=5, stop_token_ids=[42], min_tokens=2)
    scheduler.add(seq2)
    assert step_with(scheduler, {seq2.seq_id: 42}) == []
    assert step_with(scheduler, {seq2.seq_id: 42}) == [seq2]


def test_max_model_len_ends_a_sequence_without_max_tokens():
    scheduler = make_scheduler(max_model_len=6)
    seq, = make_request("s", [10, 11, 12, 13], max_tokens=None)
    scheduler.add(seq)
    step_with(scheduler, {seq.seq_id: 50})
    assert step_with(scheduler, {seq.seq_id: 51}) == [seq]
    assert seq.status is SequenceStatus.FINISHED_LENGTH and seq.num_tokens == 6


def test_cumulative_logprob_adds_the_chosen_tokens():
    scheduler = make_scheduler()
    seq, = make_request("s", [10, 11], max_tokens=2, logprobs=1)
    scheduler.add(seq)
    step_with(scheduler, {seq.seq_id: 20}, {seq.seq_id: {20: Logprob(-0.5, 1), 21: Logprob(-1.0, 2)}})
    step_with(scheduler, {seq.seq_id: 21}, {seq.seq_id: {20: Logprob(-0.25, 1), 21: Logprob(-2.0, 2)}})
    assert seq.cumulative_logprob == pytest.approx(-2.5)


def test_finish_from_the_engine_frees_and_keeps_the_prefix_reusable():
    scheduler = make_scheduler(num_blocks=8)
    seq, = make_request("s", list(range(10, 19)), max_tokens=8)
    scheduler.add(seq)
    step_with(scheduler, {seq.seq_id: 50})
    scheduler.finish(seq, SequenceStatus.FINISHED_STOPPED, "stop string")
    assert seq.stop_reason == "stop string" and not scheduler.has_unfinished
    assert scheduler.block_manager.num_free_blocks == 8
    with pytest.raises(ValueError):
        scheduler.finish(seq, SequenceStatus.FINISHED_STOPPED)
    again, = make_request("again", list(range(10, 19)) + [50, 60], max_tokens=2)
    assert scheduler.block_manager.allocate_prefix(again) == 8


def test_add_rejects_what_can_never_run():
    scheduler = make_scheduler(num_blocks=4, block_size=4, max_model_len=32)
    with pytest.raises(ValueError):
        scheduler.add(make_request("long", list(range(40)), max_tokens=1)[0])  # > max_model_len
    with pytest.raises(ValueError):
        scheduler.add(make_request("big", list(range(10)), max_tokens=10)[0])  # needs 19 > 16 slots
    scheduler.add(make_request("fits", list(range(10)), max_tokens=7)[0])  # computes at most 16


# ---- no KV cache ---------------------------------------------------------------------------

def test_without_a_kv_cache_every_step_recomputes_whole_sequences():
    scheduler = make_scheduler(enable_kv_cache=False)
    seqs = make_request("a", list(range(10, 15)), max_tokens=4) + make_request("b", [20, 21], max_tokens=4)
    per_step = []
    finished = drive(scheduler, seqs, on_step=lambda out: per_step.append(
        [(i.start, i.num_new_tokens, i.seq.num_tokens) for i in out.scheduled]))
    assert per_step == [[(0, 5 + k, 5 + k), (0, 2 + k, 2 + k)] for k in range(4)]
    check_done(scheduler, seqs, finished, max_tokens=4)


# ---- randomized stress ---------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(40))
def test_random_workloads_with_aborts_and_a_small_pool(seed):
    rng = random.Random(seed)
    case = random_case(rng, vary_kv_cache=True)
    seqs, max_tokens, num_blocks = case.seqs, case.max_tokens, case.num_blocks
    scheduler = case.scheduler()
    doomed = {f"req{i}" for i in range(10) if rng.random() < 0.2}
    aborted = Counter()

    def on_step(output):
        if doomed and rng.random() < 0.3:
            for seq in scheduler.abort(doomed.pop()):
                aborted[seq.seq_id] += 1

    finished = drive(scheduler, seqs, on_step=on_step)
    for seq in seqs:
        assert finished[seq.seq_id] + aborted[seq.seq_id] == 1
        if seq.status is SequenceStatus.FINISHED_ABORTED:
            assert seq.output_token_ids == reference_output(seq, max_tokens)[:seq.num_output_tokens]
        else:
            assert seq.output_token_ids == reference_output(seq, max_tokens)
    assert scheduler.block_manager.num_free_blocks == num_blocks
    scheduler.block_manager.check_invariants()
