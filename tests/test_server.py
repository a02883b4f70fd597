"""The OpenAI-compatible server end to end: a real `ruvon serve` process, the official `openai` client.

Greedy outputs are checked against the offline engine (`LLM.generate`) on the
same weights, so the HTTP layer can neither change nor lose tokens unnoticed.
"""

from __future__ import annotations

import asyncio
import json
import math
import time

import httpx
import openai
import pytest
from server_utils import SERVED_MODEL_NAME, metrics, sample, shared_server, wait_until_idle

from ruvonvllm import LLM, SamplingParams

PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def server():
    return shared_server()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60.0)


@pytest.fixture(scope="module")
def offline(server):
    """The same model, offline, for reference outputs."""
    return LLM(server.process.args[server.process.args.index("--model") + 1], kv_cache_bytes=1 << 20)


def _tokenize(server, **body) -> list[int]:
    return httpx.post(server.url + "/tokenize", json=body, timeout=30).json()["tokens"]


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [SERVED_MODEL_NAME]
    assert client.models.retrieve(SERVED_MODEL_NAME).id == SERVED_MODEL_NAME
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}


def test_completion_matches_offline_engine(server, client, offline):
    response = client.completions.create(model=SERVED_MODEL_NAME, prompt=PROMPT, max_tokens=12, temperature=0,
                                         extra_body={"ignore_eos": True})
    [reference] = offline.generate(PROMPT, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True),
                                   use_tqdm=False)
    choice = response.choices[0]
    assert choice.text == reference.outputs[0].text
    assert choice.finish_reason == "length"
    assert response.usage.prompt_tokens == len(_tokenize(server, prompt=PROMPT)) == len(reference.prompt_token_ids)
    assert response.usage.completion_tokens == 12
    assert response.usage.total_tokens == response.usage.prompt_tokens + 12


def test_completion_stream_equals_non_stream(client):
    kwargs = dict(model=SERVED_MODEL_NAME, prompt=PROMPT, max_tokens=10, temperature=0,
                  extra_body={"ignore_eos": True})
    whole = client.completions.create(**kwargs).choices[0].text
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    text_chunks = [c for c in chunks if c.choices]
    assert "".join(c.choices[0].text for c in text_chunks) == whole
    assert [c.choices[0].finish_reason for c in text_chunks][-1] == "length"
    assert all(c.choices[0].finish_reason is None for c in text_chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10


def test_chat_matches_offline_and_streams(server, client, offline):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello, world!"}]
    response = client.chat.completions.create(model=SERVED_MODEL_NAME, messages=messages, max_completion_tokens=8,
                                              temperature=0, extra_body={"ignore_eos": True})
    [reference] = offline.chat(messages, SamplingParams(temperature=0, max_tokens=8, ignore_eos=True), use_tqdm=False)
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content == reference.outputs[0].text
    assert response.usage.prompt_tokens == len(_tokenize(server, messages=messages))
    assert response.usage.completion_tokens == 8

    stream = client.chat.completions.create(model=SERVED_MODEL_NAME, messages=messages, max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == reference.outputs[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.total_tokens == response.usage.total_tokens


def test_n_choices_and_prompt_lists(client):
    response = client.completions.create(model=SERVED_MODEL_NAME, prompt=["Hello", "Paged attention"], n=3,
                                         max_tokens=5, temperature=1.0, seed=7, extra_body={"ignore_eos": True})
    assert sorted(c.index for c in response.choices) == list(range(6))
    assert response.usage.completion_tokens == 6 * 5
    chat = client.chat.completions.create(model=SERVED_MODEL_NAME, messages=[{"role": "user", "content": "Hi"}],
                                          n=2, max_tokens=4, temperature=1.0, seed=3, stream=True,
                                          extra_body={"ignore_eos": True})
    finished = {c.choices[0].index: c.choices[0].finish_reason for c in chat if c.choices[0].finish_reason}
    assert finished == {0: "length", 1: "length"}


def test_token_id_prompt_and_echo(client, offline):
    ids = offline.get_tokenizer().encode(PROMPT)
    by_ids = client.completions.create(model=SERVED_MODEL_NAME, prompt=ids, max_tokens=6, temperature=0)
    by_text = client.completions.create(model=SERVED_MODEL_NAME, prompt=PROMPT, max_tokens=6, temperature=0,
                                        echo=True)
    assert by_text.choices[0].text == PROMPT + by_ids.choices[0].text


def test_completion_logprobs(client):
    response = client.completions.create(model=SERVED_MODEL_NAME, prompt=PROMPT, max_tokens=6, temperature=0,
                                         logprobs=3, extra_body={"ignore_eos": True})
    logprobs = response.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.top_logprobs) == 6
    assert logprobs.text_offset[0] == 0 and logprobs.text_offset == sorted(logprobs.text_offset)
    for chosen, top in zip(logprobs.token_logprobs, logprobs.top_logprobs):
        assert chosen <= 0 and 1 <= len(top) <= 4
        # Greedy: the chosen token is the most likely one.
        assert math.isclose(chosen, max(top.values()), abs_tol=1e-5)

    echoed = client.completions.create(model=SERVED_MODEL_NAME, prompt=PROMPT, max_tokens=2, temperature=0,
                                       logprobs=1, echo=True)
    lp = echoed.choices[0].logprobs
    assert lp.token_logprobs[0] is None and all(v is not None for v in lp.token_logprobs[1:])


def test_chat_logprobs(client):
    response = client.chat.completions.create(model=SERVED_MODEL_NAME, messages=[{"role": "user", "content": "Hi"}],
                                              max_tokens=5, temperature=0, logprobs=True, top_logprobs=2,
                                              extra_body={"ignore_eos": True})
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens == 5
    for entry in content:
        assert entry.bytes == list(entry.token.encode())
        assert len(entry.top_logprobs) == 2
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
        assert math.isclose(entry.logprob, entry.top_logprobs[0].logprob, abs_tol=1e-5)


def test_stop_string(client):
    kwargs = dict(model=SERVED_MODEL_NAME, prompt=PROMPT, temperature=0, extra_body={"ignore_eos": True})
    full = client.completions.create(max_tokens=24, **kwargs).choices[0].text
    stop = full[len(full) // 2: len(full) // 2 + 2]
    cut = full[: full.index(stop)]
    stopped = client.completions.create(max_tokens=24, stop=[stop], **kwargs).choices[0]
    assert stopped.text == cut
    assert stopped.finish_reason == "stop"
    streamed = client.completions.create(max_tokens=24, stop=stop, stream=True, **kwargs)
    assert "".join(c.choices[0].text for c in streamed) == cut


def test_seed_reproducible(client):
    kwargs = dict(model=SERVED_MODEL_NAME, prompt=PROMPT, max_tokens=16, temperature=1.0,
                  extra_body={"ignore_eos": True})
    first = client.completions.create(seed=1234, **kwargs).choices[0].text
    assert client.completions.create(seed=1234, **kwargs).choices[0].text == first
    others = {client.completions.create(seed=s, **kwargs).choices[0].text for s in (1, 2, 3)}
    assert others != {first}


def test_tokenize_detokenize_roundtrip(server):
    tokens = _tokenize(server, prompt="Hello, world!")
    response = httpx.post(server.url + "/detokenize", json={"tokens": tokens}).json()
    assert response["prompt"] == "Hello, world!"


def test_64_concurrent_streams_then_pool_free(server):
    """64 streaming requests at once, each a different length: every token arrives, then every block is free."""
    lengths = [4 + i % 29 for i in range(64)]

    async def one(client: httpx.AsyncClient, i: int) -> tuple[int, int, str | None]:
        body = {"model": SERVED_MODEL_NAME, "prompt": f"request {i}: " + "x" * (i % 13), "max_tokens": lengths[i],
                "temperature": 0.8, "seed": i, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}
        usage, chunks, finish = 0, 0, None
        async with client.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    usage = chunk["usage"]["completion_tokens"]
                if chunk["choices"]:
                    chunks += 1
                    finish = chunk["choices"][0].get("finish_reason") or finish
        return usage, chunks, finish

    async def run_all():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(*(one(client, i) for i in range(64)))

    results = asyncio.run(run_all())
    assert [usage for usage, _, _ in results] == lengths
    assert all(chunks <= length for (_, chunks, _), length in zip(results, lengths))
    assert {finish for _, _, finish in results} == {"length"}
    samples = wait_until_idle(server.url)
    assert sample(samples, "ruvon:num_kv_blocks_free") == sample(samples, "ruvon:num_kv_blocks_total") > 0


def _abort_count(url: str) -> float:
    return sample(metrics(url), "ruvon:request_success_total", finished_reason="abort")


def test_client_disconnect_mid_stream_aborts(server):
    before = _abort_count(server.url)
    body = {"model": SERVED_MODEL_NAME, "prompt": PROMPT, "max_tokens": 480, "ignore_eos": True, "stream": True}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        with client.stream("POST", "/v1/completions", json=body) as response:
            data_lines = (line for line in response.iter_lines() if line.startswith("data: "))
            for _ in range(3):
                assert json.loads(next(data_lines)[6:])["choices"][0]["finish_reason"] is None
    # The connection is closed with most of the 480 tokens still to come.
    samples = wait_until_idle(server.url)
    assert sample(samples, "ruvon:num_kv_blocks_free") == sample(samples, "ruvon:num_kv_blocks_total")
    assert _abort_count(server.url) == before + 1


def test_client_disconnect_while_waiting_non_stream(server):
    before = _abort_count(server.url)
    body = {"model": SERVED_MODEL_NAME, "prompt": PROMPT, "max_tokens": 480, "ignore_eos": True, "n": 4}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/completions", json=body, timeout=httpx.Timeout(60, read=0.3))
    samples = wait_until_idle(server.url)
    assert sample(samples, "ruvon:num_kv_blocks_free") == sample(samples, "ruvon:num_kv_blocks_total")
    assert _abort_count(server.url) == before + 1


def test_metrics_exposed(server, client):
    hits_before = sample(metrics(server.url), "ruvon:prefix_cache_hits_total")
    for _ in range(2):  # the second time, the prompt's full KV blocks come from the prefix cache
        client.completions.create(model=SERVED_MODEL_NAME, prompt=PROMPT * 4, max_tokens=4,
                                  extra_body={"ignore_eos": True})
    samples = wait_until_idle(server.url)
    for name in ("ruvon:time_to_first_token_seconds_count", "ruvon:inter_token_latency_seconds_count",
                 "ruvon:e2e_request_latency_seconds_count", "ruvon:prompt_tokens_total",
                 "ruvon:generation_tokens_total", "ruvon:request_queue_time_seconds_count"):
        assert sample(samples, name) > 0, name
    for name in ("ruvon:kv_cache_usage_perc", "ruvon:prefix_cache_queries_total", "ruvon:prefix_cache_hits_total",
                 "ruvon:num_preemptions_total", "ruvon:num_requests_running", "ruvon:num_requests_waiting"):
        assert any(key.startswith(name) for key in samples), name
    assert sample(samples, "ruvon:request_success_total", finished_reason="length") >= 2
    assert sample(samples, "ruvon:prefix_cache_hits_total") > hits_before


@pytest.mark.slow
def test_real_model_answers_paris_and_seeds_reproduce():
    """The embedded SmolLM2-135M-Instruct behind the server, through the openai client."""
    from server_utils import ServerProcess
    server = ServerProcess(None)
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)
        [model] = [m.id for m in client.models.list().data]
        question = [{"role": "user", "content": "What is the capital of France?"}]
        answer = client.chat.completions.create(model=model, messages=question, max_tokens=24, temperature=0)
        assert "Paris" in answer.choices[0].message.content
        assert answer.choices[0].finish_reason == "stop"  # the model ends its turn by itself
        kwargs = dict(model=model, messages=question, max_tokens=12, temperature=0.9, seed=2024)
        first = client.chat.completions.create(**kwargs).choices[0].message.content
        assert client.chat.completions.create(**kwargs).choices[0].message.content == first
    finally:
        server.stop()


# ---- a private server: one sequence at a time, one waiting slot, an API key; SIGTERM ends it ----

API_KEY = "test-secret"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
LONG = {"model": SERVED_MODEL_NAME, "prompt": PROMPT, "max_tokens": 480, "ignore_eos": True}


@pytest.fixture(scope="module")
def small_server():
    import tempfile
    from pathlib import Path

    from server_utils import ServerProcess, make_server_model
    model_dir = make_server_model(Path(tempfile.mkdtemp(prefix="ruvon-small-model-")))
    server = ServerProcess(model_dir, "--scheduler", "sequential", "--max-num-seqs", "1", "--max-waiting", "1",
                           "--shutdown-timeout", "1", env={"RUVON_API_KEY": API_KEY})
    yield server
    server.stop()


def test_api_key(small_server):
    url = small_server.url
    missing = httpx.get(url + "/v1/models")
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.post(url + "/tokenize", json={"prompt": "x"}).status_code == 401
    assert httpx.get(url + "/v1/models", headers=AUTH).status_code == 200
    assert httpx.get(url + "/health").status_code == 200  # open for load balancers
    client = openai.OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0)
    assert client.completions.create(model=SERVED_MODEL_NAME, prompt="Hi", max_tokens=2).usage.completion_tokens <= 2


def _first_data(lines) -> dict:
    """The first event of an SSE stream. The caller keeps `lines` referenced: a line iterator that
    httpx garbage-collects closes the connection, which the server rightly treats as a disconnect."""
    for line in lines:
        if line.startswith("data: "):
            return json.loads(line[6:])
    raise AssertionError("the stream ended without data")


def test_waiting_queue_full_gives_503_then_serves(small_server):
    url = small_server.url
    for _attempt in range(3):  # a tiny model may finish A before C arrives; then try again
        with httpx.Client(base_url=url, headers=AUTH, timeout=60) as a_client, \
                httpx.Client(base_url=url, headers=AUTH, timeout=60) as b_client:
            with a_client.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as a:
                a_lines = a.iter_lines()
                _first_data(a_lines)  # A is running
                with b_client.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as b:
                    assert b.status_code == 200  # B was accepted: it waits for A's slot
                    start = time.monotonic()
                    c = httpx.post(url + "/v1/completions", json=LONG, headers=AUTH, timeout=30)
                    elapsed = time.monotonic() - start
                del a_lines
        if c.status_code == 503:
            break
    assert c.status_code == 503, c.text
    assert elapsed < 5.0  # at once, never a hang
    assert int(c.headers["retry-after"]) >= 1
    assert c.json()["error"]["code"] == "queue_full"
    wait_until_idle(url)
    after = httpx.post(url + "/v1/completions", headers=AUTH, timeout=60,
                       json={"model": SERVED_MODEL_NAME, "prompt": "Hi", "max_tokens": 3, "ignore_eos": True})
    assert after.status_code == 200 and after.json()["usage"]["completion_tokens"] == 3
    rejected = sample(metrics(url), "ruvon:num_requests_rejected_total", reason="queue_full")
    assert rejected >= 1


def test_access_log_is_json_lines(small_server):
    lines = [json.loads(line) for line in small_server.log().splitlines() if line.startswith('{"request_id"')]
    generated = [line for line in lines if line["path"] == "/v1/completions" and line["status"] == 200]
    assert generated, small_server.log()
    for key in ("request_id", "method", "status", "duration_ms", "prompt_tokens", "completion_tokens", "ttft_ms"):
        assert key in generated[-1]
    assert any(line["status"] == 503 for line in lines)
    assert any(line["status"] == 401 for line in lines)


def test_sigterm_during_load_drains_and_exits_zero(small_server):
    """A long request running and another waiting on a one-sequence server, then SIGTERM: both clients get a
    complete stream (finished, or aborted at the 1 s deadline) ending with [DONE], and the process exits 0."""
    import threading

    results: dict[str, tuple[int, str | None, bool]] = {}
    events = {name: threading.Event() for name in "AB"}

    def run(name: str) -> None:
        finish, done = None, False
        with httpx.Client(base_url=small_server.url, headers=AUTH, timeout=30) as client:
            with client.stream("POST", "/v1/completions", json={**LONG, "stream": True}) as response:
                if name == "B":
                    events[name].set()  # headers received: the engine has B, waiting for A's slot
                for line in response.iter_lines():
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: "):
                        # A's first token: A runs. Its headers alone are not enough: until the engine's next
                        # step A still counts as waiting, and B would find the one-request queue full (503).
                        events[name].set()
                        finish = json.loads(line[6:])["choices"][0]["finish_reason"] or finish
        results[name] = (response.status_code, finish, done)

    threads = {name: threading.Thread(target=run, args=(name,)) for name in "AB"}
    threads["A"].start()
    assert events["A"].wait(30)
    threads["B"].start()
    assert events["B"].wait(30)
    start = time.monotonic()
    small_server.terminate()
    time.sleep(0.3)
    try:  # while draining: refused at once, never left waiting
        assert httpx.get(small_server.url + "/health", timeout=5).status_code == 503
    except httpx.ConnectError:
        pass
    assert small_server.process.wait(timeout=30) == 0, small_server.log()
    for thread in threads.values():
        thread.join(timeout=30)
        assert not thread.is_alive(), "a client was left hanging"
    assert time.monotonic() - start < 15
    assert all(status == 200 and done for status, _, done in results.values()), results
    finishes = {finish for _, finish, _ in results.values()}
    assert finishes <= {"length", "abort"} and "abort" in finishes, results
    with pytest.raises(httpx.ConnectError):
        httpx.get(small_server.url + "/health", timeout=5)
