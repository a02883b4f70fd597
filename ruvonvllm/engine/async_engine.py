"""AsyncEngine: one background thread drives LLMEngine; asyncio code talks to it through queues.

The engine is not thread-safe and its steps are long (milliseconds to seconds of
model work), so it lives on one thread of its own and nothing else touches it.
Callers on any event loop send it commands (add, abort) through a thread-safe
queue; the engine thread applies them between steps and hands each request's
outputs back to the loop that asked, with `loop.call_soon_threadsafe`. The
event loop never waits on model work, and a request whose consumer goes away
(a client that disconnects) is aborted, so its KV blocks are freed at the next
turn of the loop, within one step.

Backpressure: `max_waiting` bounds the requests admitted but not yet running;
past it, `add_request` raises QueueFull at once instead of queueing without
limit (the server answers 503 with Retry-After).

CPU threads: torch's CPU kernels run on GNU OpenMP, which keeps one team of
worker threads per thread that starts parallel work. Its workers spin between
parallel regions (a few ms) only while the process has no more OpenMP threads
than CPUs; past that, they sleep after ~100 spins and every one of the
hundreds of small ops of a step waits for a wake-up. A model loaded with
parallel work on the main thread and then run on the engine thread makes two
teams: on the 2-core machine decode ran 10-23% slower, the whole gap between
the served and the offline throughput (Part 4). `reserve_cpu_threads_for_engine()`,
called before loading, keeps the main thread single-threaded; the engine thread
then takes the threads back (`AsyncEngine(num_threads=...)`) and is the only team.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ruvonvllm.engine.llm_engine import EngineStats, LLMEngine
from ruvonvllm.outputs import RequestOutput
from ruvonvllm.sampling.params import SamplingParams

logger = logging.getLogger("ruvonvllm.engine")

StepObserver = Callable[[list[RequestOutput], "EngineSnapshot"], None]


class QueueFull(Exception):
    """The waiting queue is at its bound: try again later."""


class TooManySequences(ValueError):
    """One request asks for more sequences (prompts x n) than may ever wait at once."""


class EngineNotAccepting(Exception):
    """The engine is shutting down, or has died: it takes no new requests."""


class EngineDeadError(RuntimeError):
    """The engine loop failed; every in-flight request gets this error."""


@dataclass(frozen=True)
class EngineSnapshot:
    """What the engine thread publishes after each turn, for readers on other threads."""

    stats: EngineStats
    num_free_blocks: int
    num_blocks: int
    num_requests: int  # requests admitted and not finished


class RequestStream:
    """The outputs of one request, delivered on the event loop that added it.

    Iterate it to get cumulative RequestOutputs until the one with finished=True.
    Leaving the iteration early (break, cancellation, an exception) aborts the
    request in the engine.
    """

    def __init__(self, request_id: str, loop: asyncio.AbstractEventLoop, abort: Callable[[str], None]) -> None:
        self.request_id = request_id
        self.finished = False
        self._loop = loop
        self._abort = abort
        # Outputs are cumulative, so only the newest matters: one the consumer has not
        # taken yet is replaced, never queued behind. A slow client then costs one
        # chunk per turn of its own loop, not one per engine step.
        self._latest: RequestOutput | BaseException | None = None
        self._ready = asyncio.Event()
        self._accepted: asyncio.Future[None] = loop.create_future()

    # ---- engine thread side ------------------------------------------------------
    def _resolve(self, error: BaseException | None) -> None:
        def resolve() -> None:
            if self._accepted.done():
                return
            if error is None:
                self._accepted.set_result(None)
            else:
                self._accepted.set_exception(error)
        self._call_in_loop(resolve)

    def _call_in_loop(self, callback: Callable[[], None]) -> bool:
        try:
            self._loop.call_soon_threadsafe(callback)
            return True
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return False

    def _put(self, item: RequestOutput | BaseException) -> None:
        """Event loop side of a delivery. An error is final: nothing replaces it."""
        if not isinstance(self._latest, BaseException):
            self._latest = item
            self._ready.set()

    # ---- event loop side -----------------------------------------------------------
    def abort(self) -> None:
        """Abort the request unless it has finished (idempotent)."""
        if not self.finished:
            self.finished = True
            self._abort(self.request_id)

    async def __aiter__(self) -> AsyncIterator[RequestOutput]:
        try:
            while True:
                await self._ready.wait()
                item, self._latest = self._latest, None
                self._ready.clear()
                if isinstance(item, BaseException):
                    raise item
                if item.finished:
                    self.finished = True
                yield item
                if self.finished:
                    return
        finally:
            self.abort()


def _retrieve_exception(future: asyncio.Future) -> None:
    """Mark an abandoned future's error as seen, so asyncio does not log it as lost."""
    if not future.cancelled():
        future.exception()


def _put_all(deliveries: list[tuple[RequestStream, RequestOutput]]) -> None:
    for stream, output in deliveries:
        stream._put(output)


@dataclass
class _Add:
    stream: RequestStream
    prompt: str | list[int]
    params: SamplingParams | None
    prompt_token_ids: list[int] | None
    arrival_time: float

    @property
    def num_seqs(self) -> int:
        return self.params.n if self.params is not None else 1


@dataclass
class _Abort:
    request_id: str


class _Wake:
    """Makes an idle engine thread look at the clock (the drain deadline)."""


class _Stop:
    pass


def reserve_cpu_threads_for_engine() -> int:
    """Make this (the loading) thread run torch's CPU work single-threaded, so that it never
    starts an OpenMP team of its own; returns the thread count to hand to AsyncEngine."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    return threads


class AsyncEngine:
    def __init__(self, engine: LLMEngine, max_waiting: int | None = None, retry_after_s: int = 1,
                 num_threads: int | None = None) -> None:
        """`num_threads`: torch's CPU threads for the engine thread (see the module docstring);
        None leaves torch's setting alone."""
        if max_waiting is not None and max_waiting < 0:
            raise ValueError(f"max_waiting must be >= 0, got {max_waiting}")
        self.engine = engine
        self.num_threads = num_threads
        self.max_waiting = max_waiting
        self.retry_after_s = retry_after_s
        self.observers: list[StepObserver] = []

        self._commands: queue.SimpleQueue[_Add | _Abort | _Wake | _Stop] = queue.SimpleQueue()
        self._streams: dict[str, RequestStream] = {}  # engine thread only
        self._pending_lock = threading.Lock()
        self._num_pending_seqs = 0  # sequences of requests sent to the engine thread, not yet added
        self._draining = False
        self._drain_deadline: float | None = None
        self._dead: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.snapshot = self._take_snapshot()

    # ---- facts the API layer reads (immutable after construction) -----------------
    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    @property
    def vocab_size(self) -> int:
        return self.engine.loaded.config.vocab_size

    @property
    def model_name(self) -> str:
        return self.engine.model_name

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def state(self) -> str:
        """"ok", "draining" or "dead", for /health."""
        if self._dead is not None or (self._thread is not None and not self._thread.is_alive()):
            return "dead"
        return "draining" if self._draining else "ok"

    def add_observer(self, observer: StepObserver) -> None:
        """Call observer(outputs, snapshot) on the engine thread after every step."""
        self.observers.append(observer)

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="ruvon-engine", daemon=True)
        self._thread.start()

    def begin_drain(self, deadline_s: float) -> None:
        """Refuse new requests from now on; abort those still running after deadline_s seconds.

        Safe to call from a signal handler or any thread.
        """
        self._draining = True
        self._drain_deadline = time.monotonic() + max(0.0, deadline_s)
        self._commands.put(_Wake())

    async def shutdown(self, deadline_s: float = 0.0) -> None:
        """Drain (finish or abort in-flight requests within deadline_s), then stop the thread."""
        if not self._draining or (self._drain_deadline or 0) > time.monotonic() + deadline_s:
            self.begin_drain(deadline_s)
        while self.is_running and self.snapshot.num_requests > 0:
            await asyncio.sleep(0.02)
        if self._thread is not None:
            self._commands.put(_Stop())
            await asyncio.to_thread(self._thread.join)

    # ---- requests -----------------------------------------------------------------------
    async def add_request(self, request_id: str, prompt: str | list[int], params: SamplingParams | None = None,
                          prompt_token_ids: list[int] | None = None,
                          arrival_time: float | None = None) -> RequestStream:
        """Queue a request; returns once the engine has accepted it.

        Raises QueueFull or EngineNotAccepting at once, or the engine's ValueError
        for bad input (prompt too long, token ids outside the vocabulary, ...).
        """
        [stream] = await self.add_requests([(request_id, prompt, prompt_token_ids)], params, arrival_time)
        return stream

    async def add_requests(self, requests: list[tuple[str, str | list[int], list[int] | None]],
                           params: SamplingParams | None = None,
                           arrival_time: float | None = None) -> list[RequestStream]:
        """Queue several (request_id, prompt, prompt_token_ids) requests, all or none.

        The waiting-queue bound applies to the whole batch at once, so a request of
        several prompts is never half admitted.
        """
        num_seqs = len(requests) * (params.n if params is not None else 1)
        self._check_accepting(num_seqs)
        loop = asyncio.get_running_loop()
        streams = [RequestStream(request_id, loop, self.abort) for request_id, _, _ in requests]
        with self._pending_lock:
            self._num_pending_seqs += num_seqs
        arrival = time.monotonic() if arrival_time is None else arrival_time
        for stream, (_, prompt, prompt_token_ids) in zip(streams, requests):
            self._commands.put(_Add(stream, prompt, params, prompt_token_ids, arrival))
        if self._dead is not None:  # died between the check and the put: nobody will answer the commands
            self._reject_pending(EngineNotAccepting(f"the engine has failed: {self._dead!r}"))
        try:
            await asyncio.gather(*(stream._accepted for stream in streams))
        except BaseException:
            # A bad prompt, or the caller was cancelled: take back every one the engine accepted.
            for stream in streams:
                self.abort(stream.request_id)
                stream._accepted.add_done_callback(_retrieve_exception)
            raise
        return streams

    async def generate(self, request_id: str, prompt: str | list[int], params: SamplingParams | None = None,
                       prompt_token_ids: list[int] | None = None) -> AsyncIterator[RequestOutput]:
        """add_request, then yield the request's outputs; leaving early aborts it."""
        stream = await self.add_request(request_id, prompt, params, prompt_token_ids)
        async for output in stream:
            yield output

    def abort(self, request_id: str) -> None:
        """Abort a request (thread-safe); its stream ends with finish_reason "abort"."""
        self._commands.put(_Abort(request_id))

    def _check_accepting(self, num_seqs: int) -> None:
        if self._dead is not None:
            raise EngineNotAccepting(f"the engine has failed: {self._dead!r}")
        if self._draining:
            raise EngineNotAccepting("the server is shutting down")
        if not self.is_running:
            raise EngineNotAccepting("the engine is not running")
        if self.max_waiting is None:
            return
        if num_seqs > max(self.max_waiting, 1):
            raise TooManySequences(f"this request needs {num_seqs} sequences (prompts x n) but at most "
                                   f"{self.max_waiting} may wait at once (max_waiting)")
        waiting = self.snapshot.stats.num_waiting + self._num_pending_seqs
        if waiting + num_seqs > self.max_waiting:
            raise QueueFull(f"the waiting queue is full ({waiting} sequences waiting, "
                            f"max_waiting={self.max_waiting}); retry after {self.retry_after_s} s")

    # ---- the engine thread ------------------------------------------------------------
    def _run(self) -> None:
        if self.num_threads is not None:
            import torch
            torch.set_num_threads(self.num_threads)
        try:
            while self._apply_commands(block=not self.engine.has_unfinished_requests()):
                self._abort_past_deadline()
                outputs = self.engine.step() if self.engine.has_unfinished_requests() else []
                self._deliver(outputs)
        except Exception as e:  # a bug in the engine: fail every request rather than hang them
            logger.exception("the engine loop failed")
            self._dead = e
            for stream in self._streams.values():
                self._push(stream, EngineDeadError(f"the engine failed: {e!r}"))
            self._streams.clear()
            self._reject_pending(EngineNotAccepting(f"the engine has failed: {e!r}"))

    def _apply_commands(self, block: bool) -> bool:
        """Apply every queued command (waiting for one if block); False once told to stop."""
        aborted: list[RequestOutput] = []
        num_added = 0  # sequences
        try:
            command = self._commands.get(block=block)
            while True:
                if isinstance(command, _Stop):
                    return False
                if isinstance(command, _Add):
                    self._add(command)
                    num_added += command.num_seqs
                elif isinstance(command, _Abort):
                    output = self._abort(command.request_id)
                    if output is not None:
                        aborted.append(output)
                command = self._commands.get_nowait()
        except queue.Empty:
            pass
        # Publish the new waiting count before the added requests leave the pending count,
        # so the admission check in _check_accepting never misses them.
        self._deliver(aborted)
        with self._pending_lock:
            self._num_pending_seqs -= num_added
        return True

    def _add(self, command: _Add) -> None:
        stream = command.stream
        try:
            if self._draining:
                raise EngineNotAccepting("the server is shutting down")
            self.engine.add_request(stream.request_id, command.prompt, command.params, command.arrival_time,
                                    command.prompt_token_ids)
        except Exception as e:  # ValueError for bad input; anything else is reported to the caller too
            stream._resolve(e)
        else:
            self._streams[stream.request_id] = stream
            stream._resolve(None)

    def _abort(self, request_id: str) -> RequestOutput | None:
        if request_id not in self._streams:
            return None
        return self.engine.abort_request(request_id)

    def _abort_past_deadline(self) -> None:
        if self._drain_deadline is not None and time.monotonic() >= self._drain_deadline and self._streams:
            logger.warning("shutdown deadline reached: aborting %d in-flight request(s)", len(self._streams))
            aborted = [self._abort(request_id) for request_id in list(self._streams)]
            self._deliver([output for output in aborted if output is not None])

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        # One wake-up per event loop per step, however many of its requests progressed.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[RequestStream, RequestOutput]]] = {}
        for output in outputs:
            stream = self._streams.get(output.request_id)
            if stream is None:
                continue
            if output.finished:
                del self._streams[output.request_id]
            by_loop.setdefault(stream._loop, []).append((stream, output))
        # Publish the state first: a client that reacts to its token at once (sends the next request)
        # must find this step's queue counts, not the previous ones.
        self.snapshot = self._take_snapshot()
        for loop, deliveries in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, deliveries)
            except RuntimeError:  # the loop is closed: its requests have nobody to go to
                for _, output in deliveries:
                    if not output.finished:
                        self._abort(output.request_id)
                        del self._streams[output.request_id]
                self.snapshot = self._take_snapshot()
        for observer in self.observers:
            try:
                observer(outputs, self.snapshot)
            except Exception:
                logger.exception("a step observer failed")

    def _push(self, stream: RequestStream, item: RequestOutput | BaseException) -> bool:
        return stream._call_in_loop(lambda: stream._put(item))

    def _reject_pending(self, error: BaseException) -> None:
        try:
            while True:
                command = self._commands.get_nowait()
                if isinstance(command, _Add):
                    command.stream._resolve(error)
                    with self._pending_lock:
                        self._num_pending_seqs -= command.num_seqs
        except queue.Empty:
            pass

    def _take_snapshot(self) -> EngineSnapshot:
        block_manager = self.engine.block_manager
        return EngineSnapshot(self.engine.stats(), block_manager.num_free_blocks, block_manager.num_blocks,
                              len(self._streams))
