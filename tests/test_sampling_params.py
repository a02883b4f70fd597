"""SamplingParams validation: every bad value fails at construction with the field's name."""

from __future__ import annotations

import pytest

from ruvonvllm.sampling.params import MAX_LOGPROBS, SamplingParams

INVALID = [
    ("temperature", dict(temperature=-0.1)),
    ("temperature", dict(temperature=float("nan"))),
    ("temperature", dict(temperature="hot")),
    ("top_p", dict(top_p=0.0)),
    ("top_p", dict(top_p=1.5)),
    ("top_p", dict(top_p=-0.2)),
    ("top_k", dict(top_k=-2)),
    ("top_k", dict(top_k=2.5)),
    ("top_k", dict(top_k=True)),
    ("min_p", dict(min_p=2.0)),
    ("min_p", dict(min_p=-0.1)),
    ("n", dict(n=0)),
    ("n", dict(n=-1)),
    ("n", dict(n=2.0)),
    ("max_tokens", dict(max_tokens=0)),
    ("max_tokens", dict(max_tokens=-5)),
    ("min_tokens", dict(min_tokens=-1)),
    ("min_tokens", dict(min_tokens=20, max_tokens=10)),
    ("logprobs", dict(logprobs=MAX_LOGPROBS + 1)),
    ("logprobs", dict(logprobs=-1)),
    ("prompt_logprobs", dict(prompt_logprobs=21)),
    ("presence_penalty", dict(presence_penalty=2.5)),
    ("frequency_penalty", dict(frequency_penalty=-3.0)),
    ("repetition_penalty", dict(repetition_penalty=0.0)),
    ("stop", dict(stop="")),
    ("stop", dict(stop=["ok", ""])),
    ("stop", dict(stop=["ok", 3])),
    ("stop", dict(stop=5)),
    ("stop_token_ids", dict(stop_token_ids=[1, -2])),
    ("stop_token_ids", dict(stop_token_ids=7)),
    ("seed", dict(seed="42")),
    ("seed", dict(seed=1.5)),
]


@pytest.mark.parametrize("field,kwargs", INVALID, ids=[f"{f}={list(k.values())}" for f, k in INVALID])
def test_invalid_values_raise_value_error_naming_the_field(field, kwargs):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


def test_defaults_and_edge_values_are_accepted():
    params = SamplingParams()
    assert params.n == 1 and params.max_tokens == 16 and params.stop_strings == []
    SamplingParams(temperature=0.0, top_p=1.0, top_k=-1, min_p=1.0, max_tokens=None, min_tokens=0,
                   logprobs=0, prompt_logprobs=MAX_LOGPROBS, presence_penalty=-2.0,
                   frequency_penalty=2.0, seed=-7)
    SamplingParams(min_tokens=10, max_tokens=10)


def test_derived_values():
    assert SamplingParams(temperature=0.0).greedy
    assert SamplingParams(temperature=1e-6).greedy
    assert not SamplingParams(temperature=0.01).greedy
    assert SamplingParams(stop="###").stop_strings == ["###"]
    assert SamplingParams(stop=["a", "b"]).stop_strings == ["a", "b"]
    assert SamplingParams(stop_token_ids=None).stop_token_ids == []
    assert not SamplingParams(top_k=0).top_k_enabled and not SamplingParams(top_k=-1).top_k_enabled
    assert SamplingParams(top_k=1).top_k_enabled
    assert not SamplingParams().has_penalties
    assert SamplingParams(repetition_penalty=1.1).has_penalties
