"""What the HTTP layer may ask of an engine: the EngineClient interface.

`api/` talks to the engine only through this, never to the LLMEngine inside, so the
engine behind it can change: today `AsyncEngine` runs the engine on a thread of the
server's process; an engine core in a process of its own, or a router in front of
several replicas, can implement the same methods. The facts (tokenizer, context,
vocabulary, model name) are fixed when the engine is built; the rest is the request
lifecycle and the numbers /health and /metrics read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from ruvonvllm.engine.async_engine import EngineSnapshot, RequestStream
    from ruvonvllm.outputs import RequestOutput
    from ruvonvllm.sampling.params import SamplingParams
    from ruvonvllm.tokenizer import Tokenizer


@runtime_checkable
class EngineClient(Protocol):
    # ---- facts, fixed when the engine is built -----------------------------------------
    @property
    def tokenizer(self) -> Tokenizer: ...

    @property
    def max_model_len(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def model_name(self) -> str:
        """What clients send as `model` unless the server is given a name: the model file's."""
        ...

    @property
    def retry_after_s(self) -> int:
        """Seconds a client refused for load should wait (the Retry-After header)."""
        ...

    # ---- state, for /health and /metrics -------------------------------------------------
    @property
    def state(self) -> str:
        """"ok", "draining" or "dead"."""
        ...

    @property
    def snapshot(self) -> EngineSnapshot:
        """The latest step's counts, published before that step's outputs reach any consumer."""
        ...

    def add_observer(self, observer: Callable[[list[RequestOutput], EngineSnapshot], None]) -> None:
        """Call observer(the step's outputs, snapshot) after every step (metrics)."""
        ...

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> None: ...

    def begin_drain(self, deadline_s: float) -> None:
        """Refuse new requests from now on; abort those still running after deadline_s seconds."""
        ...

    async def shutdown(self, deadline_s: float = 0.0) -> None: ...

    # ---- requests ------------------------------------------------------------------------
    async def add_requests(self, requests: list[tuple[str, str | list[int], list[int] | None]],
                           params: SamplingParams | None = None) -> list[RequestStream]:
        """Add (request_id, prompt, prompt ids) requests, all or none; one output stream each."""
        ...

    def abort(self, request_id: str) -> None: ...
