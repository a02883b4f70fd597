"""Does one big request stall everyone else? (`ruvon bench stall`, Part 4).

A server's event loop serves every connection. If it parses, validates or tokenizes
a multi-megabyte request itself, /health and every running stream wait until it is
done. This measures that from the outside, on any OpenAI-compatible server:

1. quiet: for a few seconds, a probe runs short streaming completions back to back,
   timing the gaps between their tokens, and times a /health call after each;
2. loaded: the same probe while another thread sends big requests, one every
   `interval_s` after the last was answered: a prompt of `prompt_mb` megabytes to
   /tokenize, /v1/completions and /v1/chat/completions, the same size of token ids
   to /v1/completions, and, if `oversized_mb` is set, a body that big, which the
   server should refuse. The pause keeps this a test of the server, not of a 2-core
   machine flooded by its own client: with none, the client's sending alone slowed
   the model.

The worst /health time and the worst token gap under load, next to the quiet ones,
are the answer. The big bodies are serialized once, before the clock starts, so the
client's own JSON encoding is not what is measured.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from ruvonvllm.bench.serve_client import Summary

PROBE_TOKENS = 32


@dataclass
class ProbeTimes:
    """What the probe saw in one phase, in milliseconds."""
    health_ms: list[float] = field(default_factory=list)
    token_gap_ms: list[float] = field(default_factory=list)

    @property
    def health(self) -> Summary:
        return Summary.of(self.health_ms)

    @property
    def token_gap(self) -> Summary:
        return Summary.of(self.token_gap_ms)


@dataclass
class StallResult:
    base_url: str
    prompt_mb: float
    oversized_mb: float | None
    quiet: ProbeTimes
    loaded: ProbeTimes
    answers: dict[str, int]  # "chat: POST /v1/chat/completions (5.0 MB) -> 400" -> how many times
    big_request_s: list[float]


BIG_REQUEST_KINDS = ("tokenize", "completion", "chat", "completion-ids", "oversized")


def _big_bodies(model: str, prompt_mb: float, oversized_mb: float | None,
                kinds: tuple[str, ...]) -> list[tuple[str, str, bytes]]:
    """(label, path, body) for each kind asked for, serialized once."""
    text = "The quick brown fox jumps over the lazy dog. "
    prompt = text * max(1, round(prompt_mb * 1e6 / len(text)))
    bodies = {
        "tokenize": ("/tokenize", {"model": model, "prompt": prompt}),
        "completion": ("/v1/completions", {"model": model, "prompt": prompt, "max_tokens": 1}),
        "chat": ("/v1/chat/completions", {"model": model, "max_tokens": 1,
                                          "messages": [{"role": "user", "content": prompt}]}),
        # The same size as token ids: the costliest JSON to parse per byte.
        "completion-ids": ("/v1/completions", {"model": model, "prompt": [1] * round(prompt_mb * 1e6 / 3),
                                               "max_tokens": 1}),
    }
    if oversized_mb:
        # Valid JSON to the last byte, so a server that reads it all also parses it all.
        bodies["oversized"] = ("/v1/completions", {"model": model, "prompt": "x" * round(oversized_mb * 1e6)})
    unknown = set(kinds) - set(BIG_REQUEST_KINDS)
    if unknown:
        raise ValueError(f"unknown big request kinds {sorted(unknown)}; choose from {', '.join(BIG_REQUEST_KINDS)}")
    return [(kind, path, json.dumps(body).encode()) for kind, (path, body) in bodies.items() if kind in kinds]


def _probe(client: httpx.Client, model: str, until: threading.Event | float, times: ProbeTimes) -> None:
    """Streams and health checks, back to back, until the event is set or the deadline passes."""
    def running() -> bool:
        return not until.is_set() if isinstance(until, threading.Event) else time.monotonic() < until

    while running():
        last = None
        with client.stream("POST", "/v1/completions", json={
                "model": model, "prompt": "Hi", "max_tokens": PROBE_TOKENS, "ignore_eos": True,
                "temperature": 0, "stream": True}) as stream:
            if stream.status_code != 200:
                raise ConnectionError(f"the probe's stream got HTTP {stream.status_code}: {stream.read()[:200]!r}")
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    now = time.monotonic()
                    if last is not None:
                        times.token_gap_ms.append((now - last) * 1000)
                    last = now
        start = time.monotonic()
        if client.get("/health").status_code != 200:
            raise ConnectionError("/health did not answer 200 during the measurement")
        times.health_ms.append((time.monotonic() - start) * 1000)


def measure_stall(base_url: str, model: str, prompt_mb: float = 5.0, oversized_mb: float | None = None,
                  quiet_s: float = 3.0, loaded_s: float = 4.0, api_key: str | None = None,
                  kinds: tuple[str, ...] = BIG_REQUEST_KINDS, interval_s: float = 0.25) -> StallResult:
    """Probe the server quietly, then while big requests keep arriving (see the module docstring)."""
    if prompt_mb <= 0 or quiet_s < 0 or loaded_s <= 0:
        raise ValueError(f"prompt_mb and loaded_s must be > 0 and quiet_s >= 0, got {prompt_mb}, {loaded_s}, {quiet_s}")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    bodies = _big_bodies(model, prompt_mb, oversized_mb, kinds)
    if not bodies:
        raise ValueError("no big requests to send: --oversized-mb is needed for the oversized kind")
    answers: Counter[str] = Counter()
    big_request_s: list[float] = []
    done = threading.Event()
    failure: list[BaseException] = []

    def send_big() -> None:
        try:
            with httpx.Client(base_url=base_url, headers=headers, timeout=300) as big_client:
                started = time.monotonic()
                while time.monotonic() - started < loaded_s:
                    for kind, path, body in bodies:
                        sent = time.monotonic()
                        try:
                            status = str(big_client.post(path, content=body, headers={
                                "content-type": "application/json"}).status_code)
                        except httpx.TransportError as e:  # a server may close on a refused body
                            status = type(e).__name__
                        big_request_s.append(time.monotonic() - sent)
                        answers[f"{kind}: POST {path} ({len(body) / 1e6:.1f} MB) -> {status}"] += 1
                        time.sleep(interval_s)
        except BaseException as e:  # reported by the caller, not lost in a thread
            failure.append(e)
        finally:
            done.set()

    quiet, loaded = ProbeTimes(), ProbeTimes()
    with httpx.Client(base_url=base_url, headers=headers, timeout=300) as client:
        client.get("/health")  # a warm connection: what is timed is the server, not a handshake
        _probe(client, model, time.monotonic() + quiet_s, quiet)
        sender = threading.Thread(target=send_big, name="big-requests")
        sender.start()
        try:
            _probe(client, model, done, loaded)
        finally:
            sender.join()
    if failure:
        raise failure[0]
    return StallResult(base_url, prompt_mb, oversized_mb, quiet, loaded, dict(answers), big_request_s)
