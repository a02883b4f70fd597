"""Asynchronous scheduling (llm_engine.py): scheduling step N+1 before step N's tokens are
known must change nothing about what is generated. On the CPU the steps do not overlap in
time, but the bookkeeping is the same as on a GPU: pending tokens, inputs filled from the
previous step's sampled ids, sequences that finish one step late, discarded tokens.
Each test runs the same requests with async_scheduling on and off and compares."""

from __future__ import annotations

import random

import pytest
import torch
from tiny_models import make_tiny_hf_model
from tiny_tokenizer import save_tiny_tokenizer

from ruvonvllm import LLM, SamplingParams
from ruvonvllm.engine.sequence import SequenceStatus


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = make_tiny_hf_model("llama", tmp_path_factory.mktemp("llama"))
    save_tiny_tokenizer(directory)
    return directory


def make_llm(model_dir, async_scheduling: bool, device: str = "cpu", **kwargs) -> LLM:
    kwargs = dict(dtype="float32", device=device, block_size=4, **kwargs)
    return LLM(str(model_dir), async_scheduling=async_scheduling, **kwargs)


def summary(outputs):
    return [[(c.token_ids, c.text, c.finish_reason, c.stop_reason,
              None if c.cumulative_logprob is None else round(c.cumulative_logprob, 4)) for c in o.outputs]
            for o in outputs]


def prompts(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 300) for _ in range(rng.randint(1, 30))] for _ in range(n)]


def assert_pool_free(llm: LLM) -> None:
    manager = llm.engine.block_manager
    assert manager.num_free_blocks == manager.num_blocks
    assert not llm.engine.has_unfinished_requests()


@pytest.mark.parametrize("device", [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                    reason="needs CUDA")]),
])
def test_mixed_batch_with_chunking_and_preemption_is_unchanged(model_dir, device):
    """On CUDA the decode steps replay CUDA graphs, so the pending tokens are written
    into a graph's input buffer between the input copy and the replay."""
    batch = prompts(8)
    reference_llm = make_llm(model_dir, False, device, num_blocks=20, max_num_batched_tokens=7)
    plain = reference_llm.generate(batch, SamplingParams(temperature=0, max_tokens=24, ignore_eos=True),
                                   use_tqdm=False)
    # Stops that really fire mid-generation: a token and a bit of text the greedy runs produce.
    stop_token = plain[1].outputs[0].token_ids[6]
    stop_text = plain[2].outputs[0].text[8:10]
    params = [
        SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, logprobs=2),
        SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, stop_token_ids=[stop_token]),
        SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, stop=[stop_text]),
        SamplingParams(temperature=0.9, top_p=0.8, seed=7, max_tokens=17, ignore_eos=True),
        SamplingParams(temperature=1.0, top_k=20, seed=3, n=2, max_tokens=9, ignore_eos=True, logprobs=1),
        SamplingParams(temperature=0, max_tokens=1, ignore_eos=True),
        SamplingParams(temperature=0.5, min_p=0.1, seed=11, max_tokens=24, ignore_eos=True),
        SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, min_tokens=12),
    ]
    results = {}
    for mode in (False, True):
        llm = make_llm(model_dir, mode, device, num_blocks=20, max_num_batched_tokens=7)
        results[mode] = summary(llm.generate(batch, params, use_tqdm=False))
        assert_pool_free(llm)
    assert results[True] == results[False]
    assert results[False][1][0][2] == "stop" and results[False][2][0][2] == "stop"  # the stops fired
    assert llm.engine.scheduler.num_preemptions > 0  # the small pool forced preemption


def test_penalties_fall_back_to_synchronous_steps(model_dir):
    batch = prompts(4, seed=1)
    params = [SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, presence_penalty=1.5,
                             repetition_penalty=1.3),
              SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)] * 2
    results = [summary(make_llm(model_dir, mode).generate(batch, params, use_tqdm=False)) for mode in (False, True)]
    assert results[0] == results[1]


def test_streamed_outputs_end_the_same(model_dir):
    """Step by step (CUMULATIVE outputs, as the server streams them): the last output of each
    request equals the synchronous run's, and texts only ever grow."""
    finals = {}
    for mode in (False, True):
        llm = make_llm(model_dir, mode)
        engine = llm.engine
        for i, prompt in enumerate(prompts(3, seed=2)):
            engine.add_request(str(i), prompt, SamplingParams(temperature=0, max_tokens=10 + i, ignore_eos=True))
        seen: dict[str, str] = {}
        while engine.has_unfinished_requests():
            for output in engine.step():
                text = output.outputs[0].text
                assert text.startswith(seen.get(output.request_id, ""))
                seen[output.request_id] = text
                if output.finished:
                    finals.setdefault(mode, {})[output.request_id] = summary([output])
        assert_pool_free(llm)
    assert finals[True] == finals[False]


def test_abort_while_a_step_is_in_flight(model_dir):
    llm = make_llm(model_dir, True)
    engine = llm.engine
    for i, prompt in enumerate(prompts(4, seed=3)):
        engine.add_request(str(i), prompt, SamplingParams(temperature=0, max_tokens=30, ignore_eos=True))
    for _ in range(5):
        engine.step()
    assert engine._in_flight is not None  # a step is launched and not yet applied
    aborted = engine.abort_request("1")
    assert aborted.finished and aborted.outputs[0].finish_reason == "abort"
    finished = {}
    while engine.has_unfinished_requests():
        for output in engine.step():
            finished[output.request_id] = output
    assert sorted(finished) == ["0", "2", "3"]
    assert all(len(o.outputs[0].token_ids) == 30 for o in finished.values())
    assert_pool_free(llm)


def test_context_end_and_single_token_requests(model_dir):
    results = []
    for mode in (False, True):
        llm = make_llm(model_dir, mode, max_model_len=40)
        params = [SamplingParams(temperature=0, max_tokens=None, ignore_eos=True),
                  SamplingParams(temperature=0, max_tokens=1, ignore_eos=True)]
        results.append(summary(llm.generate(prompts(2, seed=4), params, use_tqdm=False)))
        assert_pool_free(llm)
    assert results[0] == results[1]
    assert results[0][0][0][2] == "length"


def test_pending_token_is_scheduled_then_resolved(model_dir):
    """The bookkeeping itself: after a launch the sampling sequence has a pending token that
    the next plan computes, and the update turns it into a real one."""
    llm = make_llm(model_dir, True)
    engine = llm.engine
    engine.add_request("a", [5, 6, 7], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    engine.step()  # schedules and launches the prefill; nothing applied yet
    seq = engine.scheduler.running[0]
    assert (len(seq.token_ids), seq.num_pending_tokens, seq.num_computed_tokens) == (3, 1, 3)
    engine.step()  # launches the decode of the pending token, then applies the prefill's sample
    assert (len(seq.token_ids), seq.num_pending_tokens, seq.num_computed_tokens) == (4, 1, 4)
    while engine.has_unfinished_requests():
        engine.step()
    assert seq.status is SequenceStatus.FINISHED_LENGTH and len(seq.token_ids) == 6
    assert seq.num_pending_tokens == 0


def test_no_kv_cache_baseline_stays_synchronous(model_dir):
    llm = make_llm(model_dir, True, enable_kv_cache=False)
    assert not llm.engine.async_scheduling
    reference = make_llm(model_dir, False)
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    batch = prompts(2, seed=5)
    assert summary(llm.generate(batch, params, use_tqdm=False)) == \
        summary(reference.generate(batch, params, use_tqdm=False))
