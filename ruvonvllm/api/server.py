"""The OpenAI-compatible HTTP server: a FastAPI app around one AsyncEngine.

    app = build_app(LLM().engine, "SmolLM2-135M-Instruct")
    uvicorn.run(app)            # or `ruvon serve`

Routes: /v1/completions, /v1/chat/completions, /v1/models, /tokenize,
/detokenize (all behind the optional API key), /health, /metrics. The app's
lifespan starts the engine thread and, on shutdown, drains it: in-flight
requests finish or are aborted within `shutdown_deadline_s`.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response

from ruvonvllm import __version__
from ruvonvllm.api import protocol as p
from ruvonvllm.api.access_log import AccessLogMiddleware
from ruvonvllm.api.auth import APIKeyMiddleware
from ruvonvllm.api.chat import create_chat_completion, render_messages
from ruvonvllm.api.completions import create_completion
from ruvonvllm.api.errors import install_error_handlers, model_not_found
from ruvonvllm.api.serving import ServingContext
from ruvonvllm.engine.async_engine import AsyncEngine
from ruvonvllm.engine.llm_engine import LLMEngine
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
_SIMPLE_RESPONSES: dict[int | str, dict[str, Any]] = {k: v for k, v in _GENERATION_RESPONSES.items() if k != 200}


def served_name_for(engine: LLMEngine) -> str:
    """The name clients use in `model`: the model file or directory's name."""
    from ruvonvllm.model.default_model import DEFAULT_MODEL_NAME
    if engine.config.model.model is None:
        return DEFAULT_MODEL_NAME
    name = os.path.basename(os.path.normpath(engine.config.model.model))
    return name.removesuffix(".gguf").removesuffix(".json") or name


def build_app(engine: LLMEngine | AsyncEngine, served_model_name: str | None = None, api_key: str | None = None,
              max_waiting: int | None = None, shutdown_deadline_s: float = 30.0) -> FastAPI:
    """A FastAPI app serving `engine` under `served_model_name`.

    Pass an LLMEngine (wrapped here, with max_waiting) or an AsyncEngine you built.
    """
    async_engine = engine if isinstance(engine, AsyncEngine) else AsyncEngine(engine, max_waiting=max_waiting)
    name = served_model_name or served_name_for(async_engine.engine)
    metrics = ServerMetrics(name)
    async_engine.observers.append(metrics.observe_step)
    ctx = ServingContext(async_engine, name, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async_engine.start()
        yield
        await async_engine.shutdown(shutdown_deadline_s)

    app = FastAPI(title="RuvonVLLM", version=__version__, lifespan=lifespan,
                  description="An OpenAI-compatible server for the RuvonVLLM engine.")
    app.state.engine = async_engine
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
    @app.post("/v1/completions", response_model=p.CompletionResponse, responses=_GENERATION_RESPONSES)
    async def completions(request: p.CompletionRequest, raw_request: Request) -> Response:
        return await create_completion(ctx, request, raw_request)

    @app.post("/v1/chat/completions", response_model=p.ChatCompletionResponse, responses=_GENERATION_RESPONSES)
    async def chat_completions(request: p.ChatCompletionRequest, raw_request: Request) -> Response:
        return await create_chat_completion(ctx, request, raw_request)

    def model_card() -> p.ModelCard:
        return p.ModelCard(id=ctx.served_model_name, root=ctx.engine.engine.loaded.source,
                           max_model_len=ctx.max_model_len)

    @app.get("/v1/models", response_model=p.ModelList, responses=_SIMPLE_RESPONSES)
    async def list_models() -> p.ModelList:
        return p.ModelList(data=[model_card()])

    @app.get("/v1/models/{model_id:path}", response_model=p.ModelCard, responses=_SIMPLE_RESPONSES)
    async def get_model(model_id: str) -> p.ModelCard:
        if model_id != ctx.served_model_name:
            raise model_not_found(model_id)
        return model_card()

    @app.post("/tokenize", response_model=p.TokenizeResponse, responses=_SIMPLE_RESPONSES)
    async def tokenize(request: p.TokenizeCompletionRequest | p.TokenizeChatRequest) -> p.TokenizeResponse:
        ctx.check_model(request.model)
        if isinstance(request, p.TokenizeChatRequest):
            tokens = render_messages(ctx, request.messages, request.add_generation_prompt)
        else:
            tokens = ctx.tokenizer.encode(request.prompt, add_special_tokens=request.add_special_tokens)
        return p.TokenizeResponse(count=len(tokens), max_model_len=ctx.max_model_len, tokens=tokens)

    @app.post("/detokenize", response_model=p.DetokenizeResponse, responses=_SIMPLE_RESPONSES)
    async def detokenize(request: p.DetokenizeRequest) -> p.DetokenizeResponse:
        ctx.check_model(request.model)
        ctx.check_token_ids(request.tokens, "tokens")
        return p.DetokenizeResponse(prompt=ctx.tokenizer.decode(request.tokens))

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
        app.openapi_schema = schema
    return app.openapi_schema
