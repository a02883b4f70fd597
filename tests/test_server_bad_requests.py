"""Client mistakes get a 4xx in OpenAI's error format naming the field, never a 5xx, and the server carries on."""

from __future__ import annotations

import httpx
import pytest
from server_utils import MAX_MODEL_LEN, SERVED_MODEL_NAME, VOCAB_SIZE, shared_server

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "Hi"}]

# (name, path, body: dict or raw text, status, param the error must name, words the message must contain)
CASES = [
    ("malformed JSON", COMPLETIONS, '{"prompt": "x",', 400, None, "not valid JSON"),
    ("body not an object", COMPLETIONS, "[1, 2, 3]", 400, None, "body"),
    ("empty body", COMPLETIONS, "", 400, None, ""),
    ("missing prompt", COMPLETIONS, {"max_tokens": 4}, 400, "prompt", "required"),
    ("prompt wrong type", COMPLETIONS, {"prompt": 123}, 400, "prompt", "prompt"),
    ("max_tokens wrong type", COMPLETIONS, {"prompt": "x", "max_tokens": "ten"}, 400, "max_tokens", "integer"),
    ("temperature wrong type", COMPLETIONS, {"prompt": "x", "temperature": "hot"}, 400, "temperature", "number"),
    ("negative max_tokens", COMPLETIONS, {"prompt": "x", "max_tokens": -1}, 400, "max_tokens", "greater than"),
    ("top_p 2", COMPLETIONS, {"prompt": "x", "top_p": 2}, 400, "top_p", "less than"),
    ("n 0", COMPLETIONS, {"prompt": "x", "n": 0}, 400, "n", "greater than"),
    ("n huge", COMPLETIONS, {"prompt": "x", "n": 100000}, 400, "n", "less than"),
    ("negative temperature", COMPLETIONS, {"prompt": "x", "temperature": -1}, 400, "temperature", "greater"),
    ("logprobs 21", COMPLETIONS, {"prompt": "x", "logprobs": 21}, 400, "logprobs", "less than"),
    ("presence_penalty 3", COMPLETIONS, {"prompt": "x", "presence_penalty": 3}, 400, "presence_penalty", "2"),
    ("seed beyond 64 bits", COMPLETIONS, {"prompt": "x", "seed": 2**70}, 400, "seed", "less than"),
    ("min_tokens above max_tokens", COMPLETIONS, {"prompt": "x", "max_tokens": 2, "min_tokens": 5}, 400,
     "min_tokens", "max_tokens"),
    ("empty prompt", COMPLETIONS, {"prompt": ""}, 400, "prompt", "empty"),
    ("empty prompt list", COMPLETIONS, {"prompt": []}, 400, "prompt", "prompt"),
    ("token id outside vocabulary", COMPLETIONS, {"prompt": [1, 2, VOCAB_SIZE]}, 400, "prompt", "vocabulary"),
    ("negative token id", COMPLETIONS, {"prompt": [1, -2]}, 400, "prompt[1]", "greater than or equal to 0"),
    ("prompt too long", COMPLETIONS, {"prompt": [5] * (MAX_MODEL_LEN + 10)}, 400, "prompt", "context"),
    ("prompt + max_tokens beyond context", COMPLETIONS, {"prompt": [5] * 500, "max_tokens": 100}, 400,
     "max_tokens", "context"),
    ("unknown model", COMPLETIONS, {"prompt": "x", "model": "gpt-9"}, 404, "model", "gpt-9"),
    ("huge stop list", COMPLETIONS, {"prompt": "x", "stop": [f"s{i}" for i in range(10000)]}, 400, "stop",
     "at most"),
    ("more messages than any context holds", CHAT, {"messages": [{"role": "user", "content": "hi"}] * 10000},
     400, "messages", "at most 8192"),
    ("more sequences than may wait", COMPLETIONS, {"prompt": ["a"] * 64, "n": 5, "max_tokens": 1}, 400,
     "prompt", "max_waiting"),
    ("empty stop string", COMPLETIONS, {"prompt": "x", "stop": ""}, 400, "stop", "at least 1"),
    ("logit_bias", COMPLETIONS, {"prompt": "x", "logit_bias": {"5": 10}}, 400, "logit_bias", "not supported"),
    ("suffix", COMPLETIONS, {"prompt": "x", "suffix": "end"}, 400, "suffix", "not supported"),
    ("best_of unlike n", COMPLETIONS, {"prompt": "x", "best_of": 3}, 400, "best_of", "must equal n"),
    ("empty messages", CHAT, {"messages": []}, 400, "messages", "at least 1"),
    ("messages not a list", CHAT, {"messages": "hello"}, 400, "messages", "list"),
    ("invalid role", CHAT, {"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role", "wizard"),
    ("missing role", CHAT, {"messages": [{"content": "x"}]}, 400, "messages[0].role", "required"),
    ("content wrong type", CHAT, {"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content",
     "string"),
    ("max_completion_tokens 0", CHAT, {"messages": USER, "max_completion_tokens": 0}, 400,
     "max_completion_tokens", "greater than"),
    ("chat beyond context", CHAT, {"messages": USER, "max_tokens": MAX_MODEL_LEN}, 400, "max_tokens", "context"),
    ("top_logprobs without logprobs", CHAT, {"messages": USER, "top_logprobs": 2}, 400, "top_logprobs",
     "logprobs"),
    ("tools", CHAT, {"messages": USER, "tools": [{"type": "function"}]}, 400, "tools", "not supported"),
    ("unknown chat model", CHAT, {"messages": USER, "model": "nope"}, 404, "model", "nope"),
    ("detokenize outside vocabulary", "/detokenize", {"tokens": [VOCAB_SIZE + 1]}, 400, "tokens", "vocabulary"),
    ("tokenize without prompt", "/tokenize", {"text": "x"}, 400, "prompt", "messages: field required"),
    # A lone UTF-16 surrogate is valid JSON but not text: once a tokenizer TypeError, a 500.
    ("surrogate in prompt", COMPLETIONS, '{"prompt": "a\\ud800b"}', 400, "prompt", "surrogate"),
    ("surrogate in prompt list", COMPLETIONS, '{"prompt": ["ok", "\\ud800"]}', 400, "prompt[1]", "surrogate"),
    ("surrogate in chat content", CHAT, '{"messages": [{"role": "user", "content": "\\udfff"}]}', 400,
     "messages[0].content", "surrogate"),
    ("surrogate in tokenize", "/tokenize", '{"prompt": "\\ud800"}', 400, "prompt", "surrogate"),
    ("surrogate in model", COMPLETIONS, '{"prompt": "x", "model": "\\ud800"}', 400, "model", "surrogate"),
    # Fields this server does not implement are refused by name, never ignored.
    ("functions", CHAT, {"messages": USER, "functions": [{"name": "f"}]}, 400, "functions", "not supported"),
    ("function_call", CHAT, {"messages": USER, "function_call": "auto"}, 400, "function_call", "not supported"),
    ("parallel_tool_calls", CHAT, {"messages": USER, "parallel_tool_calls": False}, 400, "parallel_tool_calls",
     "not supported"),
    ("guided_json", CHAT, {"messages": USER, "guided_json": {"type": "object"}}, 400, "guided_json",
     "not supported"),
    ("guided_json in completions", COMPLETIONS, {"prompt": "x", "guided_json": {}}, 400, "guided_json",
     "not supported"),
    ("assistant tool_calls", CHAT, {"messages": USER + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}, 400,
     "messages[1].tool_calls", "not supported"),
    ("user message without content", CHAT, {"messages": [{"role": "user"}]}, 400, "messages[0].content",
     "required"),
    ("stop_token_ids outside vocabulary", COMPLETIONS, {"prompt": "x", "stop_token_ids": [10**12]}, 400,
     "stop_token_ids", "vocabulary"),
    ("top_k huge", COMPLETIONS, {"prompt": "x", "top_k": 10**30}, 400, "top_k", "less than"),
]


@pytest.fixture(scope="module")
def client():
    with httpx.Client(base_url=shared_server().url, timeout=60) as client:
        yield client


@pytest.mark.parametrize("name, path, body, status, param, words", CASES, ids=[c[0] for c in CASES])
def test_bad_request(client, name, path, body, status, param, words):
    if isinstance(body, str):
        response = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        response = client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    assert words.lower() in error["message"].lower(), error


def test_routes_and_methods_in_openai_format(client):
    for response, status in ((client.get("/v1/nothing"), 404), (client.get(COMPLETIONS), 405),
                             (client.post(COMPLETIONS, content="prompt=x",
                                          headers={"content-type": "text/plain"}), 400)):
        assert response.status_code == status
        assert "message" in response.json()["error"]


def test_still_serving_after_bad_requests(client):
    for _, path, body, *_ in CASES:  # the whole table again, quickly, then a good request
        response = client.post(path, json=body) if isinstance(body, dict) else client.post(path, content=body)
        assert response.status_code < 500
    good = client.post(COMPLETIONS, json={"model": SERVED_MODEL_NAME, "prompt": "Hello", "max_tokens": 3,
                                          "ignore_eos": True})
    assert good.status_code == 200 and good.json()["usage"]["completion_tokens"] == 3
    assert client.get("/health").json() == {"status": "ok"}
