"""POST /v1/completions: text in, text out (OpenAI's legacy completions API).

The prompt may be a string, a list of strings, a list of token ids or a list of
such lists; each prompt is one engine request with n outputs, and choice
`index` counts prompt by prompt (prompt i, output j -> i * n + j), as OpenAI does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from ruvonvllm.api.errors import bad_request
from ruvonvllm.api.logprobs import completion_logprobs
from ruvonvllm.api.protocol import (
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
)
from ruvonvllm.api.serving import (
    SSE_DONE,
    ClientDisconnected,
    ServingContext,
    abort_all,
    final_output,
    make_sampling_params,
    merge,
    new_request_id,
    record_access,
    sse,
    until_disconnected,
    usage_of,
)
from ruvonvllm.engine.async_engine import EngineDeadError, RequestStream
from ruvonvllm.outputs import CompletionOutput, RequestOutput

Prompt = tuple[str | None, list[int]]  # (text if given as text, token ids)


def _prompts(ctx: ServingContext, request: CompletionRequest) -> list[Prompt]:
    prompt = request.prompt
    if isinstance(prompt, str):
        texts: list[str] | None = [prompt]
    elif prompt and isinstance(prompt[0], str):
        texts = prompt
    else:
        texts = None
    if texts is not None:
        for text in texts:
            ctx.check_text_fits(len(text), "prompt")
        return [(text, ctx.tokenizer.encode(text, limit=ctx.max_model_len)) for text in texts]
    id_lists = [prompt] if isinstance(prompt[0], int) else prompt
    for ids in id_lists:
        ctx.check_context(ids, None, "prompt")  # the cheap check first: a million ids stop here
        ctx.check_token_ids(ids, "prompt")
    return [(None, list(ids)) for ids in id_lists]


def _prompt_size(prompt: str | list[str] | list[int] | list[list[int]]) -> int:
    """Characters or token ids: what tokenizing and checking the prompt costs grows with.

    Runs on the event loop, so in time independent of the prompt: one list of ids is its
    length (a Python sum over 1.6 million ids takes 25 to 45 ms, cpu_request_parsing_microbench.py),
    and a list of prompts
    has at most MAX_PROMPTS items."""
    if isinstance(prompt, str) or not prompt or isinstance(prompt[0], int):
        return len(prompt)
    return sum(len(item) for item in prompt)


async def create_completion(ctx: ServingContext, request: CompletionRequest, raw_request: Request) -> Response:
    ctx.check_model(request.model)
    for name in request.unsupported_fields():
        raise bad_request(f"{name} is not supported by this server", name)
    ctx.check_token_ids(request.stop_token_ids or [], "stop_token_ids")
    if request.suffix:
        raise bad_request("suffix is not supported by this server", "suffix")
    if request.best_of is not None and request.best_of != request.n:
        raise bad_request(f"best_of ({request.best_of}) must equal n ({request.n}): this server returns every "
                          "sample it draws", "best_of")
    prompts = await ctx.bodies.run(_prompts, ctx, request, size=_prompt_size(request.prompt))
    for _, token_ids in prompts:
        ctx.check_context(token_ids, request.max_tokens, "prompt")
    echo_logprobs = request.logprobs if request.echo and request.logprobs is not None else None
    params = make_sampling_params(request, request.max_tokens, request.logprobs, prompt_logprobs=echo_logprobs)

    request_id = new_request_id("cmpl")
    streams = await ctx.submit([(f"{request_id}-{i}", text, ids) for i, (text, ids) in enumerate(prompts)],
                               params, request)
    renderer = _ChoiceRenderer(ctx, request, prompts)
    if request.stream:
        return StreamingResponse(_stream(ctx, request, request_id, streams, renderer, raw_request),
                                 media_type="text/event-stream")
    try:
        outputs = await until_disconnected(raw_request, _gather(streams))
    except ClientDisconnected:
        return Response(status_code=499)
    record_access(raw_request, outputs, completion_id=request_id)
    choices = [renderer.choice(i, output, completion, 0, 0, first=True)
               for i, output in enumerate(outputs) for completion in output.outputs]
    return Response(CompletionResponse(id=request_id, model=ctx.served_model_name, choices=choices,
                                       usage=usage_of(outputs)).model_dump_json(),
                    media_type="application/json")


async def _gather(streams: list[RequestStream]) -> list[RequestOutput]:
    try:
        return list(await asyncio.gather(*(final_output(s) for s in streams)))
    finally:
        abort_all(streams)


class _ChoiceRenderer:
    """Builds a choice (whole or a delta) from one completion's cumulative output."""

    def __init__(self, ctx: ServingContext, request: CompletionRequest, prompts: list[Prompt]) -> None:
        self.ctx = ctx
        self.request = request
        self.prompts = prompts

    def choice(self, prompt_index: int, output: RequestOutput, completion: CompletionOutput,
               text_start: int, token_start: int, first: bool) -> CompletionChoice:
        """Text from text_start and tokens from token_start; `first` adds the echoed prompt."""
        request = self.request
        token_end = len(completion.token_ids)
        prompt_text = self.echoed_prompt(prompt_index, output)
        logprobs = None
        if request.logprobs is not None:
            # Offsets count from the start of the choice's whole text, echoed prompt included.
            offset = len(prompt_text) + text_start
            token_ids = completion.token_ids[token_start:token_end]
            positions = list((completion.logprobs or [])[token_start:token_end])
            if first and request.echo:
                token_ids = output.prompt_token_ids + token_ids
                positions = list(output.prompt_logprobs or [None] * len(output.prompt_token_ids)) + positions
                offset = 0
            logprobs = completion_logprobs(self.ctx.token_text, token_ids, positions, request.logprobs, offset)
        text = (prompt_text if first else "") + completion.text[text_start:]
        return CompletionChoice(index=prompt_index * request.n + completion.index, text=text,
                                logprobs=logprobs, finish_reason=completion.finish_reason,
                                stop_reason=completion.stop_reason)

    def echoed_prompt(self, prompt_index: int, output: RequestOutput) -> str:
        if not self.request.echo:
            return ""
        given = self.prompts[prompt_index][0]
        return given if given is not None else self.ctx.tokenizer.decode(output.prompt_token_ids)


async def _stream(ctx: ServingContext, request: CompletionRequest, request_id: str, streams: list[RequestStream],
                  renderer: _ChoiceRenderer, raw_request: Request) -> AsyncIterator[str]:
    sent_text: dict[int, int] = {}    # choice index -> characters sent
    sent_tokens: dict[int, int] = {}  # choice index -> tokens sent
    done: set[int] = set()            # choices that have sent their finish_reason
    finals: dict[int, RequestOutput] = {}
    model = ctx.served_model_name
    try:
        async for prompt_index, output in merge(streams):
            for completion in output.outputs:
                index = prompt_index * request.n + completion.index
                first = index not in sent_text
                text_start, token_start = sent_text.get(index, 0), sent_tokens.get(index, 0)
                unchanged = (len(completion.text) == text_start and len(completion.token_ids) == token_start
                             and not completion.finished)
                if index in done or (unchanged and not first):
                    continue
                choice = renderer.choice(prompt_index, output, completion, text_start, token_start, first)
                sent_text[index], sent_tokens[index] = len(completion.text), len(completion.token_ids)
                if completion.finished:
                    done.add(index)
                yield sse(CompletionResponse(id=request_id, model=model, choices=[choice]))
            if output.finished:
                finals[prompt_index] = output
        outputs = [finals[i] for i in sorted(finals)]
        record_access(raw_request, outputs, completion_id=request_id, stream=True)
        if request.stream_options and request.stream_options.include_usage:
            yield sse(CompletionResponse(id=request_id, model=model, choices=[], usage=usage_of(outputs)))
    except EngineDeadError as e:
        yield sse({"error": {"message": str(e), "type": "server_error", "param": None, "code": None}})
    finally:
        abort_all(streams)
    yield SSE_DONE

