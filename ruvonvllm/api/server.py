"""The OpenAI-compatible HTTP server: a FastAPI app around one engine client.

    app = build_app(AsyncEngine(LLM().engine), "SmolLM2-135M-Instruct")
    uvicorn.run(app)            # or `ruvon serve`

The app sees the engine only through the EngineClient interface (engine/engine_client.py).

Routes: /v1/completions, /v1/chat/completions, /v1/models, /tokenize,
/detokenize (all behind the optional API key), /health, /metrics. The app's
lifespan starts the engine thread and, on shutdown, drains it: in-flight
requests finish or are aborted within `shutdown_deadline_s`.

The POST routes read their bodies themselves (request_body.py: a size limit, and
parsing off the event loop) instead of letting FastAPI parse them on the loop; the
OpenAPI schema still documents each body, added in `_openapi`.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter

from ruvonvllm import __version__
from ruvonvllm.api import protocol as p
from ruvonvllm.api.access_log import AccessLogMiddleware
from ruvonvllm.api.auth import APIKeyMiddleware
from ruvonvllm.api.chat import create_chat_completion, messages_size, render_messages
from ruvonvllm.api.completions import create_completion
from ruvonvllm.api.errors import install_error_handlers, model_not_found
from ruvonvllm.api.request_body import DEFAULT_MAX_REQUEST_BYTES, RequestBodies
from ruvonvllm.api.serving import ServingContext
from ruvonvllm.engine.engine_client import EngineClient
from ruvonvllm.metrics.collectors import CONTENT_TYPE_LATEST, ServerMetrics

_ERROR = {"model": p.ErrorResponse}
# Before OpenAPI 3.2 a text/event-stream schema describes one event.
_SSE_EVENT = {"type": "object", "required": ["data"],
              "properties": {"data": {"type": "string", "description": "A JSON chunk; the last event is [DONE]."}}}
_GENERATION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": _SSE_EVENT}},
          "description": "The result, or with stream=true server-sent events ending with `data: [DONE]`."},
    400: _ERROR | {"description": "Invalid request: the message names the field."},
    401: _ERROR | {"description": "Missing or wrong API key."},
    404: _ERROR | {"description": "Unknown model."},
    503: _ERROR | {"description": "The waiting queue is full or the server is shutting down; see Retry-After."},
}
_GENERATION_RESPONSES[413] = _ERROR | {"description": "The request body is larger than --max-request-bytes."}
_SIMPLE_RESPONSES: dict[int | str, dict[str, Any]] = {k: v for k, v in _GENERATION_RESPONSES.items() if k != 200}

# The body each POST route parses itself: its type, and its name in the OpenAPI schema.
_BODIES: dict[str, tuple[TypeAdapter, list[type]]] = {
    "/v1/completions": (TypeAdapter(p.CompletionRequest), [p.CompletionRequest]),
    "/v1/chat/completions": (TypeAdapter(p.ChatCompletionRequest), [p.ChatCompletionRequest]),
    "/tokenize": (TypeAdapter(p.TokenizeCompletionRequest | p.TokenizeChatRequest),
                  [p.TokenizeCompletionRequest, p.TokenizeChatRequest]),
    "/detokenize": (TypeAdapter(p.DetokenizeRequest), [p.DetokenizeRequest]),
}


def build_app(engine: EngineClient, served_model_name: str | None = None, api_key: str | None = None,
              shutdown_deadline_s: float = 30.0, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
              allow_special_tokens_in_content: bool = False) -> FastAPI:
    """A FastAPI app serving `engine` under `served_model_name` (default: the engine's model name).

    allow_special_tokens_in_content: encode "<|im_start|>" and the like inside chat
    messages as control tokens (vLLM's behaviour) instead of as text.
    """
    name = served_model_name or engine.model_name
    metrics = ServerMetrics(name)
    engine.add_observer(metrics.observe_step)
    bodies = RequestBodies(max_request_bytes)
    ctx = ServingContext(engine, name, metrics, bodies, allow_special_tokens_in_content)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        await engine.shutdown(shutdown_deadline_s)
        bodies.close()

    app = FastAPI(title="RuvonVLLM", version=__version__, lifespan=lifespan,
                  description="An OpenAI-compatible server for the RuvonVLLM engine.")
    app.state.engine = engine
    app.state.serving = ctx
    app.state.metrics = metrics
    install_error_handlers(app)
    _add_routes(app, ctx)
    app.openapi = lambda: _openapi(app)
    if api_key:
        app.add_middleware(APIKeyMiddleware, api_key=api_key)
    app.add_middleware(AccessLogMiddleware, metrics=metrics)  # outermost: logs even refused requests
    return app


def _add_routes(app: FastAPI, ctx: ServingContext) -> None:
    def parse(raw_request: Request):
        adapter, _ = _BODIES[raw_request.url.path]
        return ctx.bodies.parse(raw_request, adapter)

    @app.post("/v1/completions", response_model=p.CompletionResponse, responses=_GENERATION_RESPONSES)
    async def completions(raw_request: Request) -> Response:
        return await create_completion(ctx, await parse(raw_request), raw_request)

    @app.post("/v1/chat/completions", response_model=p.ChatCompletionResponse, responses=_GENERATION_RESPONSES)
    async def chat_completions(raw_request: Request) -> Response:
        return await create_chat_completion(ctx, await parse(raw_request), raw_request)

    def model_card() -> p.ModelCard:
        # root is the served name, never the file's path: a path tells clients about the host.
        return p.ModelCard(id=ctx.served_model_name, root=ctx.served_model_name, max_model_len=ctx.max_model_len)

    @app.get("/v1/models", response_model=p.ModelList, responses=_SIMPLE_RESPONSES)
    async def list_models() -> p.ModelList:
        return p.ModelList(data=[model_card()])

    @app.get("/v1/models/{model_id:path}", response_model=p.ModelCard, responses=_SIMPLE_RESPONSES)
    async def get_model(model_id: str) -> p.ModelCard:
        if model_id != ctx.served_model_name:
            raise model_not_found(model_id)
        return model_card()

    @app.post("/tokenize", response_model=p.TokenizeResponse, responses=_SIMPLE_RESPONSES)
    async def tokenize(raw_request: Request) -> Response:
        request = await parse(raw_request)
        ctx.check_model(request.model)

        def tokenize_to_json() -> str:  # through ctx.bodies.run: tokenizing grows with the text
            # Only prompts the model can take are counted (unlike vLLM's /tokenize): the ids of a
            # prompt past the context are of no use, and writing millions out stalls the server.
            if isinstance(request, p.TokenizeChatRequest):
                tokens, param = render_messages(ctx, request.messages, request.add_generation_prompt), "messages"
            else:
                ctx.check_text_fits(len(request.prompt), "prompt")
                tokens = ctx.tokenizer.encode(request.prompt, request.add_special_tokens, limit=ctx.max_model_len)
                param = "prompt"
            if len(tokens) >= ctx.max_model_len:
                ctx.check_context(tokens, None, param)
            return p.TokenizeResponse(count=len(tokens), max_model_len=ctx.max_model_len,
                                      tokens=tokens).model_dump_json()

        size = messages_size(request.messages) if isinstance(request, p.TokenizeChatRequest) else len(request.prompt)
        return Response(await ctx.bodies.run(tokenize_to_json, size=size), media_type="application/json")

    @app.post("/detokenize", response_model=p.DetokenizeResponse, responses=_SIMPLE_RESPONSES)
    async def detokenize(raw_request: Request) -> p.DetokenizeResponse:
        request = await parse(raw_request)
        ctx.check_model(request.model)
        ctx.check_token_ids(request.tokens, "tokens")
        return p.DetokenizeResponse(prompt=await ctx.bodies.run(ctx.tokenizer.decode, request.tokens,
                                                                size=len(request.tokens)))

    @app.get("/health", response_model=p.HealthResponse,
             responses={503: {"model": p.HealthResponse, "description": "Draining or dead."}})
    async def health() -> JSONResponse:
        state = ctx.engine.state
        return JSONResponse({"status": state}, status_code=200 if state == "ok" else 503)

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}})
    async def metrics() -> Response:
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, without the 422 it documents by default: validation errors are 400s here."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        _document_request_bodies(schema)
        app.openapi_schema = schema
    return app.openapi_schema


def _document_request_bodies(schema: dict[str, Any]) -> None:
    """Each POST route's body schema (the routes parse their bodies themselves, so FastAPI cannot see it)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for path, (_, models) in _BODIES.items():
        refs = []
        for model in models:
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
            refs.append({"$ref": f"#/components/schemas/{model.__name__}"})
        body = refs[0] if len(refs) == 1 else {"anyOf": refs}
        schema["paths"][path]["post"]["requestBody"] = {
            "required": True, "content": {"application/json": {"schema": body}}}
