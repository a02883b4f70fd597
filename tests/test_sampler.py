"""Sampler tests: each stage against a plain per-row reference written with Python loops."""

from __future__ import annotations

import math

import pytest
import torch

from ruvonvllm.engine.sequence import Sequence
from ruvonvllm.sampling.logprobs import compute_prompt_logprobs, to_position_logprobs
from ruvonvllm.sampling.params import SamplingParams
from ruvonvllm.sampling.sampler import Sampler
from ruvonvllm.sampling.sampling_batch import SamplingBatch

CPU = torch.device("cpu")
EOS = 3


def make_seq(prompt: list[int], output: list[int] = (), index: int = 0, **params) -> Sequence:
    seq = Sequence("req", prompt, SamplingParams(**params), eos_token_ids=frozenset({EOS}), index=index)
    for token in output:
        seq.append_token(token)
    return seq


def sample(seqs: list[Sequence], logits: torch.Tensor, sampler: Sampler | None = None):
    batch = SamplingBatch.from_sequences(seqs, logits.shape[-1], CPU)
    return (sampler or Sampler())(logits, batch)


# ---- reference implementations (one row at a time, float64) ------------------------------

def reference_allowed(row: torch.Tensor, params: SamplingParams) -> set[int]:
    """Tokens the row may emit: temperature, then top-k, top-p, min-p; greedy: the argmax."""
    if params.greedy:
        return {int(row.argmax())}
    x = [v / params.temperature for v in row.double().tolist()]
    order = sorted(range(len(x)), key=lambda i: -x[i])
    if params.top_k > 0:
        order = order[:params.top_k]
    weights = [math.exp(x[i] - x[order[0]]) for i in order]
    total = sum(weights)
    kept, mass = [], 0.0
    for token, w in zip(order, weights):
        if params.top_p < 1.0 and mass >= params.top_p:
            break
        kept.append((token, w))
        mass += w / total
    top = max(w for _, w in kept)
    return {t for t, w in kept if w >= params.min_p * top}


def reference_penalties(row: torch.Tensor, seq: Sequence) -> torch.Tensor:
    p = seq.sampling_params
    row = row.clone()
    for token in set(seq.token_ids):
        value = row[token].item()
        row[token] = value / p.repetition_penalty if value > 0 else value * p.repetition_penalty
    for token in set(seq.output_token_ids):
        count = seq.output_token_ids.count(token)
        row[token] -= p.frequency_penalty * count + p.presence_penalty
    return row


# ---- filters -------------------------------------------------------------------------------

def test_filters_never_emit_an_excluded_token():
    torch.manual_seed(0)
    vocab = 64
    seqs = [
        make_seq([1, 2], top_k=5),
        make_seq([1, 2], top_p=0.5),
        make_seq([1, 2], min_p=0.3),
        make_seq([1, 2], top_k=12, top_p=0.8, temperature=0.7),
        make_seq([1, 2], top_p=0.9, min_p=0.05, temperature=1.5),
        make_seq([1, 2], temperature=0.0),
        make_seq([1, 2], top_k=1),
    ]
    logits = torch.randn(len(seqs), vocab) * 1.5
    allowed = [reference_allowed(logits[i], s.sampling_params) for i, s in enumerate(seqs)]
    sampler = Sampler()
    seen = [set() for _ in seqs]
    for _ in range(300):
        tokens = sample(seqs, logits, sampler).token_ids.tolist()
        for row, token in enumerate(tokens):
            seen[row].add(token)
    for row in range(len(seqs)):
        assert seen[row] <= allowed[row], f"row {row} emitted {seen[row] - allowed[row]}"
    # The cuts are not degenerate: rows with several allowed tokens do use several of them.
    assert all(len(seen[row]) > 1 for row in (0, 1, 2, 3, 4)), (seen, allowed)
    assert seen[5] == {int(logits[5].argmax())} and seen[6] == {int(logits[6].argmax())}


def test_temperature_zero_equals_argmax_in_a_mixed_batch():
    torch.manual_seed(1)
    seqs = [make_seq([4, 5], [6], temperature=0.0), make_seq([4], top_p=0.3),
            make_seq([7], [8, 8], temperature=0.0, repetition_penalty=1.3, frequency_penalty=0.5),
            make_seq([9], temperature=0.8, seed=3)]
    for _ in range(20):
        logits = torch.randn(len(seqs), 32)
        tokens = sample(seqs, logits).token_ids
        assert tokens.dtype == torch.int64
        assert tokens[0] == logits[0].argmax()
        assert tokens[2] == reference_penalties(logits[2], seqs[2]).argmax()


# ---- seeds ---------------------------------------------------------------------------------

def generate(seq: Sequence, neighbours: list[Sequence], position: int, steps: int, vocab: int = 40):
    """Sample `steps` tokens for seq placed at `position` among neighbours.

    The logits of each step depend only on the step number, as a model's would
    depend only on the tokens, so a row's token depends only on its own noise.
    """
    sampler = Sampler()
    out = []
    for step in range(steps):
        batch_seqs = neighbours[:position] + [seq] + neighbours[position:]
        logits = torch.randn(len(batch_seqs), vocab, generator=torch.Generator().manual_seed(step))
        logits[position] = torch.randn(vocab, generator=torch.Generator().manual_seed(1000 + step)) * 2
        token = sample(batch_seqs, logits, sampler).token_ids[position].item()
        seq.append_token(token)
        out.append(token)
    return out


@pytest.mark.parametrize("params", [dict(temperature=0.9, seed=1234),
                                    dict(temperature=1.2, top_p=0.9, top_k=20, seed=7)])
def test_seeded_sampling_is_reproducible_and_independent_of_the_batch(params):
    alone = generate(make_seq([1, 2, 3], **params), [], 0, steps=12)
    assert alone == generate(make_seq([1, 2, 3], **params), [], 0, steps=12)
    torch.manual_seed(99)  # unseeded neighbours draw from the default generator
    neighbours = [make_seq([5]), make_seq([6], top_k=3), make_seq([7], temperature=0.0),
                  make_seq([8], top_p=0.5, min_p=0.1, seed=5)]
    assert generate(make_seq([1, 2, 3], **params), neighbours, 2, steps=12) == alone
    assert generate(make_seq([1, 2, 3], **params), neighbours[:1], 1, steps=12) == alone
    # Another seed, or another sibling of the same request, gives another text.
    assert generate(make_seq([1, 2, 3], **{**params, "seed": params["seed"] + 1}), [], 0, 12) != alone
    assert generate(make_seq([1, 2, 3], index=1, **params), [], 0, steps=12) != alone


def test_seeded_sequence_resumes_identically_after_recompute():
    params = dict(temperature=1.0, seed=42)
    full = generate(make_seq([1, 2], **params), [], 0, steps=10)
    # A preempted sequence comes back as the same tokens with no generator state at all.
    resumed = make_seq([1, 2], full[:6], **params)
    sampler = Sampler()
    for step in range(6, 10):
        logits = torch.randn(1, 40, generator=torch.Generator().manual_seed(1000 + step)) * 2
        token = sample([resumed], logits, sampler).token_ids.item()
        assert token == full[step]
        resumed.append_token(token)


# ---- penalties and min_tokens --------------------------------------------------------------

def test_penalties_match_a_per_row_reference():
    torch.manual_seed(2)
    vocab = 30
    seqs = [
        make_seq([1, 2, 2, 5], [5, 7, 7, 7, 9], repetition_penalty=1.5),
        make_seq([3, 4], [4, 4, 8, 11], presence_penalty=0.7, frequency_penalty=-0.4),
        make_seq([6], [6, 6, 12], repetition_penalty=0.8, presence_penalty=-1.0, frequency_penalty=1.2),
        make_seq([10, 11], [10, 13]),  # no penalty: must be left exactly as is
        make_seq([], [], repetition_penalty=2.0),
    ]
    logits = torch.randn(len(seqs), vocab) * 4
    batch = SamplingBatch.from_sequences(seqs, vocab, CPU)
    penalized = batch.penalties.apply(logits)
    for row, seq in enumerate(seqs):
        torch.testing.assert_close(penalized[row], reference_penalties(logits[row], seq))
    assert torch.equal(penalized[3], logits[3])
    greedy = [make_seq(s.prompt_token_ids, s.output_token_ids, temperature=0.0,
                       repetition_penalty=s.sampling_params.repetition_penalty,
                       presence_penalty=s.sampling_params.presence_penalty,
                       frequency_penalty=s.sampling_params.frequency_penalty) for s in seqs]
    tokens = sample(greedy, logits).token_ids
    assert tokens.tolist() == [int(reference_penalties(logits[r], s).argmax()) for r, s in enumerate(seqs)]


def test_no_penalty_tensors_when_no_row_asks():
    batch = SamplingBatch.from_sequences([make_seq([1], [2]), make_seq([3], top_k=4)], 16, CPU)
    assert batch.penalties is None and batch.min_tokens_mask is None and batch.top_p is None
    assert batch.max_num_logprobs is None


def test_min_tokens_masks_eos_and_stop_tokens():
    vocab = 16
    logits = torch.zeros(4, vocab)
    logits[:, EOS] = 50.0
    logits[:, 9] = 40.0
    logits[:, 2] = 1.0
    seqs = [make_seq([1], [2], min_tokens=3, temperature=0.0, stop_token_ids=[9]),
            make_seq([1], [2], min_tokens=3, stop_token_ids=[9]),
            make_seq([1], [2, 2, 2], min_tokens=3, temperature=0.0),
            make_seq([1], [2], min_tokens=3, temperature=0.0, ignore_eos=True)]
    sampler = Sampler()
    for _ in range(50):
        tokens = sample(seqs, logits, sampler).token_ids.tolist()
        assert tokens[0] == 2 and tokens[1] not in (EOS, 9)
        assert tokens[2] == EOS  # min_tokens reached: eos is allowed again
        assert tokens[3] == 9  # eos is masked even with ignore_eos; 9 is no stop token here


# ---- logprobs ------------------------------------------------------------------------------

def test_logprobs_are_raw_log_softmax_with_ranks():
    torch.manual_seed(3)
    vocab = 25
    seqs = [make_seq([1, 2], [4], logprobs=3, temperature=0.5, repetition_penalty=1.4),
            make_seq([1], logprobs=None),
            make_seq([5], [5, 5], logprobs=0, temperature=0.0, frequency_penalty=2.0),
            make_seq([6], logprobs=5, top_k=4)]
    logits = torch.randn(len(seqs), vocab) * 3
    out = sample(seqs, logits)
    reference = torch.log_softmax(logits.double(), dim=-1)
    tokens = out.token_ids.tolist()
    assert tokens[2] == int(reference_penalties(logits[2], seqs[2]).argmax())
    assert out.logprobs.top_ids.shape == (len(seqs), 5)
    entries = to_position_logprobs(tokens, out.logprobs, [s.sampling_params.logprobs for s in seqs])
    assert entries[1] is None
    for row, seq in enumerate(seqs):
        n = seq.sampling_params.logprobs
        if n is None:
            continue
        ranking = sorted(range(vocab), key=lambda t: -reference[row, t].item())
        entry = entries[row]
        chosen = tokens[row]
        assert next(iter(entry)) == chosen  # the sampled token comes first
        assert entry[chosen].rank == ranking.index(chosen) + 1
        assert entry[chosen].logprob == pytest.approx(reference[row, chosen].item(), abs=1e-5)
        assert set(entry) == {chosen, *ranking[:n]}
        for rank, token in enumerate(ranking[:n], start=1):
            assert entry[token].rank == rank
            assert entry[token].logprob == pytest.approx(reference[row, token].item(), abs=1e-5)


def test_prompt_logprobs_match_log_softmax():
    torch.manual_seed(4)
    logits = torch.randn(6, 20)
    next_tokens = [3, 0, 19, 7, 7, 2]
    entries = compute_prompt_logprobs(logits, next_tokens, num_top=2)
    reference = torch.log_softmax(logits.double(), dim=-1)
    assert len(entries) == 6
    for row, token in enumerate(next_tokens):
        ranking = reference[row].argsort(descending=True).tolist()
        assert entries[row][token].rank == ranking.index(token) + 1
        assert entries[row][token].logprob == pytest.approx(reference[row, token].item(), abs=1e-5)
        assert set(entries[row]) == {token, *ranking[:2]}


# ---- distribution --------------------------------------------------------------------------

@pytest.mark.parametrize("params", [dict(temperature=1.0), dict(temperature=0.6), dict(top_k=3),
                                    dict(top_p=0.7)])
def test_empirical_frequencies_match_the_target_distribution(params):
    torch.manual_seed(5)
    vocab, draws = 6, 20000
    row = torch.tensor([1.0, 0.5, 0.0, -0.5, 2.0, -1.0])
    allowed = reference_allowed(row, SamplingParams(**params))
    target = torch.full((vocab,), float("-inf"))
    for t in allowed:
        target[t] = row[t] / params.get("temperature", 1.0)
    target = target.softmax(-1)
    seqs = [make_seq([1], **params)] * draws  # one sequence in every row: only the noise differs
    tokens = sample(seqs, row.expand(draws, vocab).clone()).token_ids
    freq = torch.bincount(tokens, minlength=vocab).double() / draws
    assert torch.allclose(freq, target.double(), atol=0.015), (freq, target)
