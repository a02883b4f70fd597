"""What the completion and chat endpoints share: checks, submission, streaming plumbing, logprobs.

`ServingContext` turns engine-level failures into API errors (a full queue is a
503, bad input a 400 naming the field) and keeps the invariant that every
request the server submits is either finished or aborted when its HTTP
exchange ends, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel

from ruvonvllm.api.errors import APIError, bad_request, model_not_found, overloaded
from ruvonvllm.api.protocol import SamplingFields, Usage
from ruvonvllm.api.request_body import RequestBodies
from ruvonvllm.engine.async_engine import EngineNotAccepting, QueueFull, RequestStream, TooManySequences
from ruvonvllm.engine.engine_client import EngineClient
from ruvonvllm.metrics.collectors import ServerMetrics
from ruvonvllm.outputs import RequestOutput
from ruvonvllm.sampling.params import SamplingParams

T = TypeVar("T")
ACCESS_KEY = "ruvon.access"  # where handlers leave token counts and timings for the access log


class ClientDisconnected(Exception):
    pass


class ServingContext:
    def __init__(self, engine: EngineClient, served_model_name: str, metrics: ServerMetrics,
                 bodies: RequestBodies | None = None, special_tokens_in_content: bool = False) -> None:
        self.engine = engine
        self.served_model_name = served_model_name
        self.metrics = metrics
        self.bodies = bodies or RequestBodies()
        # False: special-token strings in chat content are text (tokenizer.py says why).
        self.special_tokens_in_content = special_tokens_in_content
        self.tokenizer = engine.tokenizer
        self.max_model_len = engine.max_model_len
        self.vocab_size = engine.vocab_size
        self._token_texts: dict[int, str] = {}

    def token_text(self, token_id: int) -> str:
        """One token's text, as logprobs show it (cached: the same ids come back constantly)."""
        text = self._token_texts.get(token_id)
        if text is None:
            text = self._token_texts[token_id] = self.tokenizer.decode([token_id], skip_special_tokens=False)
        return text

    # ---- checks ------------------------------------------------------------------------
    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.served_model_name:
            raise model_not_found(model)

    def check_context(self, prompt_ids: list[int], max_tokens: int | None, prompt_param: str,
                      max_tokens_param: str = "max_tokens") -> None:
        if not prompt_ids:
            raise bad_request(f"{prompt_param} must not be empty", prompt_param)
        if len(prompt_ids) >= self.max_model_len:
            # Text is tokenized only up to the context (encode's limit): past it, "or more".
            raise bad_request(f"{prompt_param} is {len(prompt_ids)} tokens or more, but the model's context is "
                              f"{self.max_model_len} tokens; it must be at most {self.max_model_len - 1}",
                              prompt_param, "context_length_exceeded")
        if max_tokens is not None and len(prompt_ids) + max_tokens > self.max_model_len:
            raise bad_request(f"{max_tokens_param} ({max_tokens}) plus the prompt ({len(prompt_ids)} tokens) "
                              f"exceeds the model's context of {self.max_model_len} tokens; ask for at most "
                              f"{self.max_model_len - len(prompt_ids)} tokens", max_tokens_param,
                              "context_length_exceeded")

    def check_text_fits(self, num_chars: int, param: str) -> None:
        """Refuse text too long for the context whatever it tokenizes to, before tokenizing it.

        Tokenizing 5 MB takes 3.3 to 3.9 s of one of the cores the engine needs
        (benchmarks/cpu_request_parsing_microbench.py).
        """
        max_chars = self.max_model_len * self.tokenizer.max_chars_per_token
        if num_chars > max_chars:
            raise bad_request(f"{param} is {num_chars:,} characters, more than the model's context of "
                              f"{self.max_model_len} tokens can hold (a token stands for at most "
                              f"{self.tokenizer.max_chars_per_token} characters)", param, "context_length_exceeded")

    def check_token_ids(self, token_ids: list[int], param: str) -> None:
        if not token_ids or max(token_ids) < self.vocab_size:  # max() runs in C: the common case is fast
            return
        bad = next((t for t in token_ids if t >= self.vocab_size), None)
        if bad is not None:
            raise bad_request(f"{param}: token id {bad} is outside the vocabulary [0, {self.vocab_size})", param)

    # ---- submission ----------------------------------------------------------------------
    async def submit(self, requests: list[tuple[str, str | None, list[int]]], params: SamplingParams,
                     fields: BaseModel) -> list[RequestStream]:
        """Add (request_id, prompt text, prompt ids) requests; all of them or, on error, none."""
        try:
            return await self.engine.add_requests(
                [(request_id, text if text is not None else token_ids, token_ids)
                 for request_id, text, token_ids in requests], params)
        except QueueFull as e:
            self.metrics.observe_rejected("queue_full")
            raise overloaded(str(e), self.engine.retry_after_s) from e
        except EngineNotAccepting as e:
            self.metrics.observe_rejected("not_accepting")
            raise APIError(503, str(e), "server_error", code="unavailable",
                           headers={"Retry-After": str(self.engine.retry_after_s)}) from e
        except TooManySequences as e:
            # More prompts than the queue holds is the prompt list's fault; one prompt, n's.
            raise bad_request(str(e), "prompt" if len(requests) > 1 else "n") from e
        except ValueError as e:
            raise bad_request(str(e), param_named_in(str(e), fields)) from e


def abort_all(streams: list[RequestStream]) -> None:
    for stream in streams:
        stream.abort()


def param_named_in(message: str, fields: BaseModel) -> str | None:
    """The request field an error message starts with ("top_p must be ..." -> "top_p"), if any."""
    first = message.split(" ", 1)[0].rstrip(":,")
    if first in type(fields).model_fields:
        return first
    return "prompt" if first == "prompt" else None


def make_sampling_params(request: SamplingFields, max_tokens: int | None, logprobs: int | None,
                         prompt_logprobs: int | None = None) -> SamplingParams:
    """The engine's SamplingParams for an API request; ValueError -> 400 naming the field."""
    if request.logit_bias:
        raise bad_request("logit_bias is not supported by this server", "logit_bias")
    try:
        return SamplingParams(
            n=request.n,
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            top_k=request.top_k or 0,
            min_p=request.min_p or 0.0,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            repetition_penalty=1.0 if request.repetition_penalty is None else request.repetition_penalty,
            seed=request.seed,
            stop=request.stop,
            stop_token_ids=request.stop_token_ids,
            ignore_eos=request.ignore_eos,
            max_tokens=max_tokens,
            min_tokens=request.min_tokens,
            logprobs=logprobs,
            prompt_logprobs=prompt_logprobs,
            skip_special_tokens=request.skip_special_tokens,
            include_stop_str_in_output=request.include_stop_str_in_output,
        )
    except ValueError as e:
        raise bad_request(str(e), param_named_in(str(e), request)) from e


def new_request_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage_of(outputs: list[RequestOutput]) -> Usage:
    prompt = sum(len(o.prompt_token_ids) for o in outputs)
    completion = sum(len(c.token_ids) for o in outputs for c in o.outputs)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def record_access(request: Request, outputs: list[RequestOutput], **extra: Any) -> None:
    """Token counts and engine timings of a finished exchange, for the access log line."""
    info = request.scope.get(ACCESS_KEY)
    if info is None:
        return
    usage = usage_of(outputs)
    info.update(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                finish_reasons=sorted({str(c.finish_reason) for o in outputs for c in o.outputs}), **extra)
    ttfts = [o.metrics.time_to_first_token for o in outputs if o.metrics and o.metrics.time_to_first_token]
    if ttfts:
        info["ttft_ms"] = round(1000 * min(ttfts), 2)


# ---- waiting, streaming ------------------------------------------------------------------

async def until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it if the client goes away first (then raise ClientDisconnected).

    A non-streaming request would otherwise keep generating for nobody.
    """
    task = asyncio.ensure_future(work)

    async def wait_for_disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(wait_for_disconnect())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if task in done:
        return task.result()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ClientDisconnected()


async def final_output(stream: RequestStream) -> RequestOutput:
    last = None
    async for output in stream:
        last = output
    assert last is not None and last.finished, "a request stream ends with its finished output"
    return last


async def merge(streams: list[RequestStream]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Interleave several requests' outputs as they come, tagged with the stream's index."""
    if len(streams) == 1:
        async for output in streams[0]:
            yield 0, output
        return
    queue: asyncio.Queue[tuple[int, RequestOutput | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: RequestStream) -> None:
        try:
            async for output in stream:
                queue.put_nowait((index, output))
        except Exception as e:
            queue.put_nowait((index, e))
        queue.put_nowait((index, None))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(streams)
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        abort_all(streams)


def sse(chunk: BaseModel | dict) -> str:
    data = chunk.model_dump_json() if isinstance(chunk, BaseModel) else json.dumps(chunk)
    return f"data: {data}\n\n"


SSE_DONE = "data: [DONE]\n\n"
