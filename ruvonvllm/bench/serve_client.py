"""A load generator for any OpenAI-compatible server (`ruvon bench serve`).

Requests go to /v1/completions with stream=true, so the client sees each token
arrive: time to first token (TTFT) is the time from sending a request to its
first streamed chunk, inter-token latency (ITL) the gaps between later chunks,
end-to-end latency the time to the last one. Arrivals are a Poisson process at
`request_rate` requests per second (inf sends them all at once), optionally
capped at `max_concurrency` requests in flight. The server under test is never
imported: the same client measures RuvonVLLM, vLLM or llama-server alike.

The client runs on aiohttp, whose HTTP parser is compiled, rather than httpx:
on the 2-core CPU machine the load generator shares the cores with the model,
and every token it parses in Python is time the model does not get (Part 4
measures that cost).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from ruvonvllm.bench.workloads import WorkloadRequest

PERCENTILES = (50, 90, 99)


@dataclass
class RequestResult:
    ok: bool
    prompt_len: int
    output_tokens: int = 0
    ttft: float | None = None           # seconds
    latency: float | None = None        # seconds, send to last chunk
    itls: list[float] = field(default_factory=list)  # seconds between consecutive chunks
    start: float = 0.0                  # seconds since the benchmark started
    error: str | None = None


@dataclass
class Summary:
    mean: float
    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, values: list[float]) -> Summary:
        if not values:
            return cls(math.nan, math.nan, math.nan, math.nan)
        ordered = sorted(values)
        return cls(sum(ordered) / len(ordered), *(percentile(ordered, q) for q in PERCENTILES))


@dataclass
class BenchmarkResult:
    base_url: str
    model: str
    num_requests: int
    num_completed: int
    num_failed: int
    request_rate: float
    max_concurrency: int | None
    duration_s: float
    total_prompt_tokens: int
    total_output_tokens: int
    request_throughput: float        # completed requests per second
    output_token_throughput: float   # output tokens per second
    total_token_throughput: float    # prompt + output tokens per second
    ttft_ms: Summary
    itl_ms: Summary
    tpot_ms: Summary                 # per request: (latency - ttft) / (output tokens - 1)
    e2e_ms: Summary
    errors: list[str] = field(default_factory=list)
    requests: list[RequestResult] = field(default_factory=list, repr=False)


def percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on sorted values."""
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _payload(request: WorkloadRequest, model: str, prompt: str | list[int], temperature: float,
             ignore_eos: bool) -> dict:
    return {"model": model, "prompt": prompt, "max_tokens": request.max_tokens, "temperature": temperature,
            "ignore_eos": ignore_eos, "stream": True, "stream_options": {"include_usage": True}}


async def send_request(session: aiohttp.ClientSession, url: str, payload: dict, prompt_len: int,
                       t0: float) -> RequestResult:
    """POST one streaming completion and time its chunks."""
    result = RequestResult(ok=False, prompt_len=prompt_len)
    start = time.perf_counter()
    result.start = start - t0
    last = start
    num_chunks = 0
    usage_tokens = None
    try:
        async with session.post(url, json=payload) as response:
            if response.status != 200:
                body = (await response.read()).decode(errors="replace")
                result.error = f"HTTP {response.status}: {body[:200]}"
                return result
            async for raw_line in response.content:  # server-sent events, one line at a time
                if not raw_line.startswith(b"data:"):
                    continue
                data = raw_line[5:].strip()
                if data == b"[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    result.error = str(chunk["error"])[:200]
                    return result
                if chunk.get("usage"):
                    usage_tokens = chunk["usage"].get("completion_tokens")
                if not chunk.get("choices"):
                    continue
                now = time.perf_counter()
                if num_chunks == 0:
                    result.ttft = now - start
                else:
                    result.itls.append(now - last)
                last = now
                num_chunks += 1
    except (aiohttp.ClientError, asyncio.TimeoutError, json.JSONDecodeError) as e:
        result.error = f"{type(e).__name__}: {e}"
        return result
    result.latency = last - start
    result.output_tokens = usage_tokens if usage_tokens is not None else num_chunks
    result.ok = num_chunks > 0
    if not result.ok:
        result.error = "no chunks received"
    return result


async def run_benchmark(base_url: str, model: str, requests: list[WorkloadRequest], request_rate: float = math.inf,
                        max_concurrency: int | None = None, temperature: float = 0.0, ignore_eos: bool = True,
                        api_key: str | None = None, decode: Callable[[list[int]], str] | None = None,
                        seed: int = 0, warmup: bool = True,
                        on_done: Callable[[RequestResult], None] | None = None) -> BenchmarkResult:
    """Send `requests` to base_url's /v1/completions and summarize the latencies.

    decode, if given, turns prompt ids into text (for servers that take text only).
    """
    if request_rate <= 0:
        raise ValueError(f"request_rate must be > 0 (inf for all at once), got {request_rate}")
    if max_concurrency is not None and max_concurrency < 1:
        raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
    url = base_url.rstrip("/") + "/v1/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    prompts = [decode(r.prompt_token_ids) if decode else r.prompt_token_ids for r in requests]
    rng = random.Random(seed)
    connector = aiohttp.TCPConnector(limit=0)  # no cap: concurrency is the workload's to decide
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30.0)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as client:
        if warmup:
            first = WorkloadRequest(requests[0].prompt_token_ids, 4)
            await send_request(client, url, _payload(first, model, prompts[0], temperature, ignore_eos),
                               len(first.prompt_token_ids), time.perf_counter())
        semaphore = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        t0 = time.perf_counter()

        async def one(request: WorkloadRequest, prompt: str | list[int]) -> RequestResult:
            payload = _payload(request, model, prompt, temperature, ignore_eos)
            if semaphore is None:
                result = await send_request(client, url, payload, len(request.prompt_token_ids), t0)
            else:
                async with semaphore:
                    result = await send_request(client, url, payload, len(request.prompt_token_ids), t0)
            if on_done is not None:
                on_done(result)
            return result

        tasks = []
        for request, prompt in zip(requests, prompts):
            tasks.append(asyncio.ensure_future(one(request, prompt)))
            if math.isfinite(request_rate):
                await asyncio.sleep(rng.expovariate(request_rate))
        results = list(await asyncio.gather(*tasks))
        duration = time.perf_counter() - t0
    return summarize(base_url, model, results, request_rate, max_concurrency, duration)


def summarize(base_url: str, model: str, results: list[RequestResult], request_rate: float,
              max_concurrency: int | None, duration: float) -> BenchmarkResult:
    done = [r for r in results if r.ok]
    prompt_tokens = sum(r.prompt_len for r in done)
    output_tokens = sum(r.output_tokens for r in done)
    tpots = [(r.latency - r.ttft) / (r.output_tokens - 1) for r in done
             if r.output_tokens > 1 and r.latency is not None and r.ttft is not None]
    ms = 1000.0
    return BenchmarkResult(
        base_url=base_url, model=model, num_requests=len(results), num_completed=len(done),
        num_failed=len(results) - len(done), request_rate=request_rate, max_concurrency=max_concurrency,
        duration_s=duration, total_prompt_tokens=prompt_tokens, total_output_tokens=output_tokens,
        request_throughput=len(done) / duration, output_token_throughput=output_tokens / duration,
        total_token_throughput=(prompt_tokens + output_tokens) / duration,
        ttft_ms=Summary.of([r.ttft * ms for r in done if r.ttft is not None]),
        itl_ms=Summary.of([gap * ms for r in done for gap in r.itls]),
        tpot_ms=Summary.of([t * ms for t in tpots]),
        e2e_ms=Summary.of([r.latency * ms for r in done if r.latency is not None]),
        errors=sorted({r.error for r in results if r.error})[:10],
        requests=results)
