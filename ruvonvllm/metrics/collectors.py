"""Prometheus metrics for the server, named and shaped like vLLM's (`vllm:` becomes `ruvon:`).

So a Grafana dashboard written for vLLM works after a search-and-replace of the
prefix. Each ServerMetrics owns its CollectorRegistry (no process-wide global),
so two apps in one process, as in tests, never collide.

The engine thread calls `observe_step` after every turn of its loop with the
outputs of that turn and a snapshot of the engine's counters; latencies come
from each request's own timestamps (RequestMetrics), not from when this code
happens to run.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ruvonvllm.engine.async_engine import EngineSnapshot
from ruvonvllm.outputs import RequestOutput

__all__ = ["CONTENT_TYPE_LATEST", "ServerMetrics"]

# Seconds. Wide on purpose: a CPU engine's TTFT under load is seconds, a GPU's is milliseconds.
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
ITL_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
TOKEN_COUNT_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


@dataclass
class _RequestProgress:
    num_tokens: int = 0  # output tokens of completion 0 seen so far
    last_token_time: float | None = None


class ServerMetrics:
    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        self.model_name = model_name
        labels = ["model_name"]

        def histogram(name: str, doc: str, buckets) -> Histogram:
            return Histogram(name, doc, labels, buckets=buckets, registry=self.registry).labels(model_name)

        def counter(name: str, doc: str):
            return Counter(name, doc, labels, registry=self.registry).labels(model_name)

        def gauge(name: str, doc: str):
            return Gauge(name, doc, labels, registry=self.registry).labels(model_name)

        self.time_to_first_token = histogram("ruvon:time_to_first_token_seconds",
                                             "Time from arrival to the first output token.", TTFT_BUCKETS)
        self.inter_token_latency = histogram("ruvon:inter_token_latency_seconds",
                                             "Time between consecutive output tokens of a request.", ITL_BUCKETS)
        self.e2e_latency = histogram("ruvon:e2e_request_latency_seconds",
                                     "Time from arrival to the last output token.", E2E_BUCKETS)
        self.queue_time = histogram("ruvon:request_queue_time_seconds",
                                    "Time from arrival to the first step that scheduled the request.", E2E_BUCKETS)
        self.request_prompt_tokens = histogram("ruvon:request_prompt_tokens", "Prompt length of finished requests.",
                                               TOKEN_COUNT_BUCKETS)
        self.request_generation_tokens = histogram("ruvon:request_generation_tokens",
                                                   "Output tokens of finished requests (all n choices).",
                                                   TOKEN_COUNT_BUCKETS)
        self.prompt_tokens = counter("ruvon:prompt_tokens", "Prompt tokens processed.")
        self.generation_tokens = counter("ruvon:generation_tokens", "Output tokens generated.")
        self.prefix_cache_queries = counter("ruvon:prefix_cache_queries",
                                            "Prompt tokens looked up in the prefix cache.")
        self.prefix_cache_hits = counter("ruvon:prefix_cache_hits", "Prompt tokens found in the prefix cache.")
        self.preemptions = counter("ruvon:num_preemptions", "Sequences preempted to free KV blocks.")
        self.request_success = Counter("ruvon:request_success", "Finished requests, by finish reason.",
                                       ["model_name", "finished_reason"], registry=self.registry)
        self.requests_rejected = Counter("ruvon:num_requests_rejected",
                                         "Requests refused before reaching the engine, by reason.",
                                         ["model_name", "reason"], registry=self.registry)
        self.http_requests = Counter("ruvon:http_requests", "HTTP requests answered, by route and status.",
                                     ["model_name", "route", "status"], registry=self.registry)
        self.num_requests_running = gauge("ruvon:num_requests_running", "Sequences in the running batch.")
        self.num_requests_waiting = gauge("ruvon:num_requests_waiting", "Sequences waiting to be scheduled.")
        self.kv_cache_usage = gauge("ruvon:kv_cache_usage_perc", "Fraction of KV blocks held by live sequences (0-1).")
        self.kv_blocks_free = gauge("ruvon:num_kv_blocks_free", "KV blocks free or held only by the prefix cache.")
        self.kv_blocks_total = gauge("ruvon:num_kv_blocks_total", "KV blocks in the pool.")

        self._progress: dict[str, _RequestProgress] = {}
        self._last_cumulative = (0, 0, 0)  # prefix queries, prefix hits, preemptions

    # ---- engine thread -------------------------------------------------------------
    def observe_step(self, outputs: list[RequestOutput], snapshot: EngineSnapshot) -> None:
        for output in outputs:
            self._observe_output(output)
        self._observe_snapshot(snapshot)

    def _observe_output(self, output: RequestOutput) -> None:
        progress = self._progress.setdefault(output.request_id, _RequestProgress())
        metrics = output.metrics
        first = output.outputs[0]
        num_new = len(first.token_ids) - progress.num_tokens
        if num_new > 0 and metrics is not None and metrics.last_token_time is not None:
            if progress.num_tokens == 0:
                self.prompt_tokens.inc(len(output.prompt_token_ids))
                if metrics.time_to_first_token is not None:
                    self.time_to_first_token.observe(metrics.time_to_first_token)
                num_itl = num_new - 1
            else:
                num_itl = num_new
            if num_itl > 0 and progress.last_token_time is not None:
                gap = (metrics.last_token_time - progress.last_token_time) / num_itl
                for _ in range(num_itl):
                    self.inter_token_latency.observe(gap)
            progress.num_tokens = len(first.token_ids)
            progress.last_token_time = metrics.last_token_time
            # Siblings of an n > 1 request generate alongside completion 0.
            self.generation_tokens.inc(num_new * len(output.outputs))
        if output.finished:
            self._observe_finished(output)
            del self._progress[output.request_id]

    def _observe_finished(self, output: RequestOutput) -> None:
        metrics = output.metrics
        reason = output.outputs[0].finish_reason or "unknown"
        self.request_success.labels(self.model_name, reason).inc()
        self.request_prompt_tokens.observe(len(output.prompt_token_ids))
        self.request_generation_tokens.observe(sum(len(c.token_ids) for c in output.outputs))
        if metrics is None:
            return
        end = metrics.finished_time or metrics.last_token_time
        if end is not None:
            self.e2e_latency.observe(end - metrics.arrival_time)
        if metrics.first_scheduled_time is not None:
            self.queue_time.observe(metrics.first_scheduled_time - metrics.arrival_time)

    def _observe_snapshot(self, snapshot: EngineSnapshot) -> None:
        stats = snapshot.stats
        self.num_requests_running.set(stats.num_running)
        self.num_requests_waiting.set(stats.num_waiting)
        self.kv_cache_usage.set(stats.kv_cache_usage)
        self.kv_blocks_free.set(snapshot.num_free_blocks)
        self.kv_blocks_total.set(snapshot.num_blocks)
        cumulative = (stats.prefix_cache_queries, stats.prefix_cache_hits, stats.num_preemptions)
        for counter, now, before in zip((self.prefix_cache_queries, self.prefix_cache_hits, self.preemptions),
                                        cumulative, self._last_cumulative):
            if now > before:
                counter.inc(now - before)
        self._last_cumulative = cumulative

    # ---- HTTP side -------------------------------------------------------------------
    def observe_rejected(self, reason: str) -> None:
        self.requests_rejected.labels(self.model_name, reason).inc()

    def observe_http(self, route: str, status: int) -> None:
        self.http_requests.labels(self.model_name, route, str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
