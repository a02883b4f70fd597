"""`ruvon serve`: the OpenAI-compatible server under uvicorn.

SIGTERM (or Ctrl-C) shuts down gracefully: the listening socket closes, new
requests on open connections get 503, in-flight requests may finish until
--shutdown-timeout, then the rest are aborted (their streams end with
finish_reason "abort" and [DONE]), and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Annotated, Optional

import typer
import uvicorn

from ruvonvllm.api.connection_timeouts import DEFAULT_HEADER_TIMEOUT_S
from ruvonvllm.api.request_body import DEFAULT_MAX_REQUEST_BYTES
from ruvonvllm.commands import options as opt

# After the drain deadline, a little longer for aborted streams to reach their clients.
CLOSE_GRACE_S = 5.0


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    model: opt.Model = None, dtype: opt.Dtype = "auto", device: opt.Device = "auto",
    load_format: opt.LoadFormat = "auto", max_model_len: opt.MaxModelLen = None,
    kv_cache_bytes: opt.KvCacheBytes = None, max_num_seqs: opt.MaxNumSeqs = 64,
    max_num_batched_tokens: opt.MaxBatchedTokens = 2048, scheduler: opt.SchedulerPolicy = "continuous",
    attention_backend: opt.AttentionBackend = "auto", enforce_eager: opt.EnforceEager = False,
    quantization: opt.Quantization = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8000,
    served_model_name: Annotated[Optional[str], typer.Option(
        "--served-model-name", help="The name clients send as `model`; default: the model's file name.")] = None,
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", help="Require `Authorization: Bearer <key>`; default: $RUVON_API_KEY, else none.")] = None,
    max_waiting: Annotated[int, typer.Option(
        "--max-waiting", help="Requests allowed to wait for a slot; past it, 503 with Retry-After.")] = 1024,
    shutdown_timeout: Annotated[float, typer.Option(
        "--shutdown-timeout", help="Seconds in-flight requests may run after SIGTERM before being aborted.")] = 30.0,
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning or error.")] = "info",
    max_request_bytes: Annotated[int, typer.Option(
        "--max-request-bytes", min=1, help="Largest request body accepted; larger ones get a 413.")]
        = DEFAULT_MAX_REQUEST_BYTES,
    header_timeout: Annotated[float, typer.Option(
        "--header-timeout", min=0.001, help="Seconds a client has to send a request's headers before its "
                                            "connection is closed.")] = DEFAULT_HEADER_TIMEOUT_S,
    keep_alive_timeout: Annotated[int, typer.Option(
        "--keep-alive-timeout", min=1, help="Seconds an idle keep-alive connection stays open.")] = 5,
    allow_special_tokens_in_content: Annotated[bool, typer.Option(
        "--allow-special-tokens-in-content", help="Encode special-token strings inside chat messages (such as "
        "<|im_start|>) as control tokens, as vLLM does; by default they are text, so a user cannot forge a "
        "system turn.")] = False,
) -> None:
    """Serve the model over an OpenAI-compatible HTTP API."""
    from ruvonvllm.api.connection_timeouts import header_timeout_protocol
    from ruvonvllm.api.server import build_app
    from ruvonvllm.commands.main import build_llm, console, fail
    from ruvonvllm.config import env_str
    from ruvonvllm.engine.async_engine import AsyncEngine, reserve_cpu_threads_for_engine

    if max_waiting < 0:
        fail(f"--max-waiting must be >= 0, got {max_waiting}")
    _configure_logging(log_level)
    # Load single-threaded here, run multi-threaded on the engine thread: one OpenMP team only.
    engine_threads = reserve_cpu_threads_for_engine()
    llm = build_llm(**opt.llm_kwargs(model, dtype, device, load_format, max_model_len, kv_cache_bytes,
                                     max_num_seqs, max_num_batched_tokens, scheduler, attention_backend,
                                     enforce_eager, quantization))
    engine = AsyncEngine(llm.engine, max_waiting=max_waiting, num_threads=engine_threads)
    api_key = api_key or env_str("RUVON_API_KEY")
    app = build_app(engine, served_model_name, api_key=api_key, shutdown_deadline_s=shutdown_timeout,
                    max_request_bytes=max_request_bytes,
                    allow_special_tokens_in_content=allow_special_tokens_in_content)
    name = app.state.serving.served_model_name
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=int(shutdown_timeout + CLOSE_GRACE_S),
                            timeout_keep_alive=keep_alive_timeout, http=header_timeout_protocol(header_timeout))
    server = DrainingServer(config, engine, shutdown_timeout)
    console.print(f"Serving [bold]{name}[/] on http://{host}:{port} (scheduler {scheduler}, "
                  f"max_num_seqs {max_num_seqs}, max_waiting {max_waiting}"
                  f"{', API key required' if api_key else ''})")
    server.run()


class DrainingServer(uvicorn.Server):
    """uvicorn's Server, with SIGTERM/SIGINT starting the engine's drain, and a clean exit code.

    uvicorn records the signal and re-raises it after shutting down, which would end
    the process with status 143; a drained shutdown is a normal exit, status 0, so
    this handler does not record it.
    """

    def __init__(self, config: uvicorn.Config, engine, deadline_s: float) -> None:
        super().__init__(config)
        self.engine = engine
        self.deadline_s = deadline_s

    def handle_exit(self, sig: int, frame) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting
            return
        self.should_exit = True
        self.engine.begin_drain(self.deadline_s)


def _configure_logging(level: str) -> None:
    """Access log lines are JSON objects, one per line, on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("ruvonvllm.access")
    access.handlers[:] = [handler]
    access.propagate = False
    access.setLevel(logging.INFO)
    engine_handler = logging.StreamHandler(sys.stderr)
    engine_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("ruvonvllm.engine", "ruvonvllm.api"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [engine_handler]
        logger.setLevel(level.upper())
        logger.propagate = False
