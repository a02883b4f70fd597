"""End to end through LLM: every architecture equals HF transformers token for token,
alone and inside ragged batches with chunked prefill, a tiny token budget and
preemption forced by a tiny KV pool."""

from __future__ import annotations

import random

import pytest
import torch
from tiny_models import ARCHS, make_tiny_hf_model
from tiny_tokenizer import save_tiny_tokenizer
from transformers import AutoModelForCausalLM

from ruvonvllm import LLM, SamplingParams

NUM_STEPS = 32
PROMPT_LENGTHS = (3, 17, 9, 30, 1)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    dirs = {}
    for arch in ARCHS:
        directory = make_tiny_hf_model(arch, tmp_path_factory.mktemp(arch))
        save_tiny_tokenizer(directory, vocab_size=_vocab_size(directory))
        dirs[arch] = directory
    return dirs


def _vocab_size(directory) -> int:
    import json
    return json.loads((directory / "config.json").read_text())["vocab_size"]


def _prompts(vocab_size: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(vocab_size) for _ in range(n)] for n in PROMPT_LENGTHS]


def hf_greedy(directory, prompt: list[int], steps: int) -> tuple[list[int], list[float]]:
    """HF's greedy continuation and each chosen token's log-probability (full recompute each step)."""
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    model.eval()
    ids = list(prompt)
    tokens, logprobs = [], []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([ids])).logits[0, -1].float()
            token = int(logits.argmax())
            tokens.append(token)
            logprobs.append(float(torch.log_softmax(logits, -1)[token]))
            ids.append(token)
    return tokens, logprobs


@pytest.fixture(scope="module")
def hf_reference(model_dirs):
    cache = {}

    def get(arch):
        if arch not in cache:
            directory = model_dirs[arch]
            prompts = _prompts(_vocab_size(directory))
            cache[arch] = [hf_greedy(directory, p, NUM_STEPS) for p in prompts]
        return cache[arch]
    return get


GREEDY = SamplingParams(temperature=0.0, max_tokens=NUM_STEPS, ignore_eos=True, logprobs=0)


def _check_against_hf(outputs, reference):
    for output, (ref_tokens, ref_logprobs) in zip(outputs, reference):
        completion = output.outputs[0]
        assert completion.token_ids == ref_tokens
        ours = [completion.logprobs[i][tok].logprob for i, tok in enumerate(completion.token_ids)]
        assert max(abs(a - b) for a, b in zip(ours, ref_logprobs)) < 1e-4
        assert completion.finish_reason == "length"


def _assert_pool_empty(llm):
    bm = llm.engine.block_manager
    bm.check_invariants()
    assert bm.usage == 0.0
    assert bm.num_free_blocks == llm.engine.runner.num_blocks


@pytest.mark.parametrize("arch", ARCHS)
def test_alone_equals_hf(arch, model_dirs, hf_reference):
    directory = model_dirs[arch]
    llm = LLM(str(directory), dtype="float32", device="cpu", block_size=4)
    prompts = _prompts(_vocab_size(directory))
    outputs = [llm.generate([p], GREEDY, use_tqdm=False)[0] for p in prompts]
    _check_against_hf(outputs, hf_reference(arch))
    _assert_pool_empty(llm)


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_chunked_preempted_equals_hf(arch, model_dirs, hf_reference):
    """Ragged batch, a 7-token step budget (prompts split into chunks, mixed with decodes)
    and a KV pool too small for all sequences at once (preemption by recompute)."""
    directory = model_dirs[arch]
    llm = LLM(str(directory), dtype="float32", device="cpu", block_size=4, num_blocks=24,
              max_num_batched_tokens=7, enable_prefix_caching=False)
    outputs = llm.generate(_prompts(_vocab_size(directory)), GREEDY, use_tqdm=False)
    _check_against_hf(outputs, hf_reference(arch))
    assert llm.engine.stats().num_preemptions > 0
    _assert_pool_empty(llm)


@pytest.mark.parametrize("policy", ["sequential", "static", "continuous"])
def test_policies_agree(policy, model_dirs, hf_reference):
    directory = model_dirs["llama"]
    llm = LLM(str(directory), dtype="float32", device="cpu", block_size=4, scheduler_policy=policy,
              max_num_seqs=3)
    outputs = llm.generate(_prompts(_vocab_size(directory)), GREEDY, use_tqdm=False)
    _check_against_hf(outputs, hf_reference("llama"))


def test_no_kv_cache_baseline_equals_hf(model_dirs, hf_reference):
    directory = model_dirs["qwen3"]
    llm = LLM(str(directory), dtype="float32", device="cpu", block_size=4, enable_kv_cache=False)
    outputs = llm.generate(_prompts(_vocab_size(directory))[:2], GREEDY, use_tqdm=False)
    _check_against_hf(outputs, hf_reference("qwen3")[:2])


def test_prefix_cache_hits_and_same_output(model_dirs):
    directory = model_dirs["llama"]
    rng = random.Random(1)
    vocab = _vocab_size(directory)
    shared = [rng.randrange(vocab) for _ in range(20)]
    prompts = [shared + [rng.randrange(vocab) for _ in range(k)] for k in (3, 5, 7)]
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)

    plain = LLM(str(directory), dtype="float32", device="cpu", block_size=4, enable_prefix_caching=False)
    cached = LLM(str(directory), dtype="float32", device="cpu", block_size=4, enable_prefix_caching=True)
    expected = [o.outputs[0].token_ids for o in plain.generate(prompts, params, use_tqdm=False)]
    got = [cached.generate([p], params, use_tqdm=False)[0] for p in prompts]  # one by one: later ones hit
    assert [o.outputs[0].token_ids for o in got] == expected
    assert got[0].metrics.num_cached_tokens == 0
    assert all(o.metrics.num_cached_tokens == 20 for o in got[1:])  # 5 full blocks of the shared 20
    assert cached.engine.stats().prefix_cache_hits >= 40
    _assert_pool_empty(cached)


def test_n_siblings_share_prompt_and_seed_reproduces(model_dirs):
    directory = model_dirs["llama"]
    llm = LLM(str(directory), dtype="float32", device="cpu", block_size=4)
    prompt = _prompts(_vocab_size(directory))[3]  # 30 tokens = 7 full blocks + 2
    params = SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=12, ignore_eos=True)
    first = llm.generate([prompt], params, use_tqdm=False)[0]
    hits_after_first = llm.engine.stats().prefix_cache_hits
    assert hits_after_first >= 2 * 28  # siblings 2 and 3 took the leader's 7 full blocks
    second = llm.generate([prompt], params, use_tqdm=False)[0]
    outs1 = [c.token_ids for c in first.outputs]
    assert [c.token_ids for c in second.outputs] == outs1
    assert len({tuple(o) for o in outs1}) > 1  # siblings sample differently
    _assert_pool_empty(llm)


def test_seeded_request_same_alone_or_batched(model_dirs):
    directory = model_dirs["qwen2"]
    llm = LLM(str(directory), dtype="float32", device="cpu", block_size=4)
    prompts = _prompts(_vocab_size(directory))
    seeded = SamplingParams(temperature=0.9, top_p=0.9, seed=123, max_tokens=16, ignore_eos=True)
    others = SamplingParams(temperature=1.2, top_k=5, max_tokens=16, ignore_eos=True)
    alone = llm.generate([prompts[1]], seeded, use_tqdm=False)[0].outputs[0].token_ids
    batch = llm.generate(prompts, [others, seeded, others, others, others], use_tqdm=False)
    assert batch[1].outputs[0].token_ids == alone


def test_bad_requests_fail_before_entering(model_dirs):
    directory = model_dirs["llama"]
    llm = LLM(str(directory), dtype="float32", device="cpu", block_size=4, max_model_len=64)
    good = _prompts(_vocab_size(directory))[0]
    with pytest.raises(ValueError, match="empty"):
        llm.generate([good, []], GREEDY, use_tqdm=False)
    with pytest.raises(ValueError, match="max_model_len"):
        llm.generate([good, list(range(64))], GREEDY, use_tqdm=False)
    with pytest.raises(ValueError, match="vocabulary"):
        llm.generate([[10**9]], GREEDY, use_tqdm=False)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    assert not llm.engine.has_unfinished_requests()
    # The engine carries on: a good request still runs to completion.
    out = llm.generate([good], SamplingParams(temperature=0, max_tokens=4, ignore_eos=True), use_tqdm=False)
    assert len(out[0].outputs[0].token_ids) == 4


def test_generation_stops_at_context_end(model_dirs):
    directory = model_dirs["llama"]
    llm = LLM(str(directory), dtype="float32", device="cpu", block_size=4, max_model_len=40)
    out = llm.generate([list(range(1, 31))], SamplingParams(temperature=0, max_tokens=None, ignore_eos=True),
                       use_tqdm=False)[0]
    assert len(out.outputs[0].token_ids) == 10
    assert out.outputs[0].finish_reason == "length"


def test_abort_frees_blocks(model_dirs):
    directory = model_dirs["llama"]
    llm = LLM(str(directory), dtype="float32", device="cpu", block_size=4)
    engine = llm.engine
    engine.add_request("a", _prompts(_vocab_size(directory))[3], SamplingParams(max_tokens=100, ignore_eos=True))
    engine.step()
    engine.step()
    assert engine.block_manager.usage > 0
    final = engine.abort_request("a")
    assert final.finished and final.outputs[0].finish_reason == "abort"
    assert not engine.has_unfinished_requests()
    _assert_pool_empty(llm)


def test_dummy_weights_without_tokenizer_take_token_ids(model_dirs):
    """--load-format dummy from a bare config.json: token ids in, token ids out, no text."""
    config_json = model_dirs["qwen3"] / "config.json"
    llm = LLM(str(config_json), load_format="dummy", dtype="float32", device="cpu", block_size=4)
    assert llm.get_tokenizer() is None
    out = llm.generate([[5, 6, 7]], SamplingParams(max_tokens=5, ignore_eos=True), use_tqdm=False)[0]
    assert len(out.outputs[0].token_ids) == 5 and out.outputs[0].text == ""
    with pytest.raises(ValueError, match="tokenizer"):
        llm.generate("some text", use_tqdm=False)
    with pytest.raises(ValueError, match="tokenizer"):
        llm.generate([[5, 6]], SamplingParams(stop=["x"]), use_tqdm=False)
    assert not llm.engine.has_unfinished_requests()


def test_prompt_logprobs_match_hf_with_chunks_and_prefix_cache(model_dirs):
    directory = model_dirs["qwen2"]
    prompt = _prompts(_vocab_size(directory))[3]
    hf = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = torch.log_softmax(hf(torch.tensor([prompt])).logits[0].float(), -1)
    llm = LLM(str(directory), dtype="float32", device="cpu", block_size=4, max_num_batched_tokens=7)
    params = SamplingParams(max_tokens=2, prompt_logprobs=3, ignore_eos=True)
    for _ in range(2):  # the second request would hit the prefix cache; prompt logprobs must not skip it
        out = llm.generate([prompt], params, use_tqdm=False)[0]
        assert len(out.prompt_logprobs) == len(prompt) and out.prompt_logprobs[0] is None
        for position, token in enumerate(prompt[1:], start=1):
            entry = out.prompt_logprobs[position]
            assert abs(entry[token].logprob - float(ref[position - 1, token])) < 1e-4
            top = torch.topk(ref[position - 1], 3).indices.tolist()
            assert all(t in entry for t in top)


def test_queue_time_ends_when_a_request_is_first_scheduled(model_dirs):
    """metrics.first_scheduled_time is stamped before the request's first step runs, so the
    queue time (Part 17's ruvon:request_queue_time_seconds) is shorter than the TTFT, and a
    request that waits behind another is stamped only when its turn comes."""
    llm = LLM(str(model_dirs["llama"]), dtype="float32", device="cpu", block_size=4, max_num_seqs=1)
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    first, second = llm.generate([[5, 6, 7], [8, 9, 10]], params, use_tqdm=False)
    for output in (first, second):
        m = output.metrics
        assert m.arrival_time <= m.first_scheduled_time < m.first_token_time <= m.finished_time
    assert second.metrics.first_scheduled_time >= first.metrics.finished_time


def test_the_model_runner_refuses_proposals_it_cannot_verify(model_dirs):
    """The contract carries proposed tokens (plan.py); this runner does not verify them yet and
    says so, rather than silently sampling one token and dropping the guesses."""
    from ruvonvllm.engine.plan import ScheduledSequence, SchedulerOutput
    from ruvonvllm.engine.sequence import Sequence
    llm = LLM(str(model_dirs["llama"]), dtype="float32", device="cpu", block_size=4)
    seq = Sequence("p", [1, 2, 3], SamplingParams(max_tokens=4))
    plan = SchedulerOutput([ScheduledSequence(seq, 3 + 2, proposed_token_ids=(4, 5))], has_proposals=True)
    with pytest.raises(NotImplementedError, match="proposed tokens"):
        llm.engine.runner.launch(plan)
