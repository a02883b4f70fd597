"""POST /v1/chat/completions: messages in, an assistant message out.

The model's own chat template (from its tokenizer) renders the messages into
the prompt; generation stops at the template's end-of-turn token, which the
tokenizer reports among its EOS ids.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import jinja2
from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from ruvonvllm.api.errors import bad_request
from ruvonvllm.api.logprobs import chat_logprobs
from ruvonvllm.api.protocol import (
    ChatCompletionChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamChoice,
    ChatCompletionStreamResponse,
    ChatMessage,
    ChatResponseMessage,
    DeltaMessage,
)
from ruvonvllm.api.request_body import INLINE_TEXT_SIZE
from ruvonvllm.api.serving import (
    SSE_DONE,
    ClientDisconnected,
    ServingContext,
    final_output,
    make_sampling_params,
    new_request_id,
    record_access,
    sse,
    until_disconnected,
    usage_of,
)
from ruvonvllm.engine.async_engine import EngineDeadError, RequestStream
from ruvonvllm.outputs import CompletionOutput


def render_messages(ctx: ServingContext, messages: list[ChatMessage], add_generation_prompt: bool) -> list[int]:
    """Prompt token ids from the model's chat template; a template failure is the client's 400.

    Runs through ctx.bodies.run, on a worker thread unless the messages are short.
    """
    check_messages(messages)
    conversation = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in messages]
    ctx.check_text_fits(sum(len(m["content"]) for m in conversation), "messages")
    try:
        return ctx.tokenizer.apply_chat_template(conversation, add_generation_prompt,
                                                 special_tokens_in_content=ctx.special_tokens_in_content,
                                                 limit=ctx.max_model_len)
    except (ValueError, jinja2.TemplateError) as e:
        raise bad_request(f"messages: cannot apply the model's chat template: {e}", "messages") from e


def messages_size(messages: list[ChatMessage]) -> int:
    """Characters of content: what rendering and tokenizing the conversation costs grows with.

    Runs on the event loop: a conversation of more than INLINE_TEXT_SIZE messages goes to a
    worker without its messages being counted."""
    if len(messages) > INLINE_TEXT_SIZE:
        return len(messages)
    return len(messages) + sum(len(m.content) if isinstance(m.content, str)
                               else sum(len(part.text) for part in m.content or []) for m in messages)


def check_messages(messages: list[ChatMessage]) -> None:
    for i, message in enumerate(messages):
        if message.tool_calls is not None:
            raise bad_request(f"messages[{i}].tool_calls: tool calls are not supported by this server",
                              f"messages[{i}].tool_calls")
        if message.content is None:
            raise bad_request(f"messages[{i}].content is required for a {message.role} message",
                              f"messages[{i}].content")


def _check_unsupported(request: ChatCompletionRequest) -> None:
    for name in request.unsupported_fields():
        raise bad_request(f"{name} is not supported by this server", name)
    if request.tools:
        raise bad_request("tools are not supported by this server", "tools")
    if request.tool_choice not in (None, "none", "auto"):
        raise bad_request("tool_choice is not supported by this server", "tool_choice")
    if request.response_format is not None and request.response_format.type != "text":
        raise bad_request(f"response_format {request.response_format.type!r} is not supported; only 'text' is",
                          "response_format")
    if request.top_logprobs is not None and not request.logprobs:
        raise bad_request("top_logprobs requires logprobs to be true", "top_logprobs")


async def create_chat_completion(ctx: ServingContext, request: ChatCompletionRequest,
                                 raw_request: Request) -> Response:
    ctx.check_model(request.model)
    _check_unsupported(request)
    ctx.check_token_ids(request.stop_token_ids or [], "stop_token_ids")
    prompt_ids = await ctx.bodies.run(render_messages, ctx, request.messages, request.add_generation_prompt,
                                      size=messages_size(request.messages))
    max_tokens = request.max_completion_tokens or request.max_tokens
    param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
    ctx.check_context(prompt_ids, max_tokens, "messages", max_tokens_param=param)
    num_top = (request.top_logprobs or 0) if request.logprobs else None
    params = make_sampling_params(request, max_tokens, num_top)

    request_id = new_request_id("chatcmpl")
    [stream] = await ctx.submit([(request_id, None, prompt_ids)], params, request)
    if request.stream:
        return StreamingResponse(_stream(ctx, request, request_id, stream, raw_request),
                                 media_type="text/event-stream")
    try:
        output = await until_disconnected(raw_request, final_output(stream))
    except ClientDisconnected:
        return Response(status_code=499)
    record_access(raw_request, [output], completion_id=request_id)
    choices = [ChatCompletionChoice(index=c.index, message=ChatResponseMessage(content=c.text),
                                    logprobs=_logprobs(ctx, c, 0, num_top), finish_reason=c.finish_reason,
                                    stop_reason=c.stop_reason)
               for c in output.outputs]
    body = ChatCompletionResponse(id=request_id, model=ctx.served_model_name, choices=choices,
                                  usage=usage_of([output]))
    return Response(body.model_dump_json(), media_type="application/json")


def _logprobs(ctx: ServingContext, completion: CompletionOutput, token_start: int, num_top: int | None):
    if num_top is None:
        return None
    token_ids = completion.token_ids[token_start:]
    positions = list((completion.logprobs or [])[token_start:len(completion.token_ids)])
    return chat_logprobs(ctx.token_text, token_ids, positions, num_top)


async def _stream(ctx: ServingContext, request: ChatCompletionRequest, request_id: str, stream: RequestStream,
                  raw_request: Request) -> AsyncIterator[str]:
    model = ctx.served_model_name
    num_top = (request.top_logprobs or 0) if request.logprobs else None

    def chunk(choices: list[ChatCompletionStreamChoice], usage=None) -> str:
        return sse(ChatCompletionStreamResponse(id=request_id, model=model, choices=choices, usage=usage))

    # OpenAI opens every choice with the role and empty content.
    for i in range(request.n):
        yield chunk([ChatCompletionStreamChoice(index=i, delta=DeltaMessage(role="assistant", content=""))])
    sent_text = [0] * request.n
    sent_tokens = [0] * request.n
    done = [False] * request.n
    try:
        async for output in stream:
            for c in output.outputs:
                if done[c.index] or (len(c.text) == sent_text[c.index] and not c.finished
                                     and len(c.token_ids) == sent_tokens[c.index]):
                    continue
                delta = DeltaMessage(content=c.text[sent_text[c.index]:])
                choice = ChatCompletionStreamChoice(index=c.index, delta=delta,
                                                    logprobs=_logprobs(ctx, c, sent_tokens[c.index], num_top),
                                                    finish_reason=c.finish_reason, stop_reason=c.stop_reason)
                sent_text[c.index], sent_tokens[c.index] = len(c.text), len(c.token_ids)
                done[c.index] = c.finished
                yield chunk([choice])
            if output.finished:
                record_access(raw_request, [output], completion_id=request_id, stream=True)
                if request.stream_options and request.stream_options.include_usage:
                    yield chunk([], usage_of([output]))
    except EngineDeadError as e:
        yield sse({"error": {"message": str(e), "type": "server_error", "param": None, "code": None}})
    finally:
        stream.abort()
    yield SSE_DONE
