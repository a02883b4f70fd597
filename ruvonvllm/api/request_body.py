"""Request bodies: read within a size limit, parsed and prepared off the event loop.

The event loop serves every connection: /health, each running stream's tokens. Any
work that grows with the size of one request (JSON parsing, validation, tokenizing
a prompt, rendering a chat template) would stall all of them while it runs: a 6 MB
prompt once held /health for 6.5 s. So the handlers read the raw body here, with a
byte limit enforced while it arrives (a 413 before a 50 MB body is even read), and
hand large requests to a small pool of worker threads; small ones, whose cost is
bounded, are prepared on the loop (INLINE_BODY_BYTES, INLINE_TEXT_SIZE).

Parsing decodes strict UTF-8, then uses the standard json module, which (unlike
pydantic's parser) accepts a lone UTF-16 surrogate such as "\\ud800";
`first_unencodable_text` then finds it and the client gets a 400 naming the field,
not a tokenizer's 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from ruvonvllm.api.errors import APIError, bad_request

T = TypeVar("T")

DEFAULT_MAX_REQUEST_BYTES = 16 * 2**20  # a 128k-token prompt as ids is about 1 MB of JSON
DEFAULT_BODY_IDLE_TIMEOUT_S = 30.0      # between two chunks of one body
PREPROCESS_THREADS = 2                  # bounded: preparing requests must not starve the engine thread
PREPROCESS_NICENESS = 10                # below the engine's threads in the CPU scheduler's eyes
# Small requests are prepared on the loop: the hop to a niced worker, which the engine's OpenMP
# threads (spinning after each step) may leave waiting for a core, would cost the common request
# more than the work itself. Bounded work is fine on the loop: parsing 64 KiB takes 0.05 ms,
# tokenizing 4,096 characters 1 to 2 ms (benchmarks/cpu_request_parsing_microbench.py).
INLINE_BODY_BYTES = 64 * 2**10
INLINE_TEXT_SIZE = 4096
# With a body left unread, keeping the connection alive would mean reading (and discarding) the
# rest of it on the event loop (each refused 50 MB body took 0.25 s in a `ruvon bench stall
# --kind oversized` run before this header). Closing the connection costs nothing.
CLOSE_CONNECTION = {"Connection": "close"}
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # \ud800 to \udfff, in either case


class RequestBodies:
    """Reads, parses and prepares request bodies for the handlers of one app."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 idle_timeout_s: float = DEFAULT_BODY_IDLE_TIMEOUT_S) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_request_bytes must be >= 1, got {max_bytes}")
        self.max_bytes = max_bytes
        self.idle_timeout_s = idle_timeout_s
        self._pool = ThreadPoolExecutor(PREPROCESS_THREADS, thread_name_prefix="ruvon-preprocess",
                                        initializer=_lower_this_threads_priority)

    async def read(self, request: Request) -> bytes:
        """The whole body, or a 413 as soon as it is known to be too large."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise self._too_large(int(declared))
        chunks, size = [], 0
        loop = asyncio.get_running_loop()
        # One deadline, moved on at every chunk: asyncio.wait_for per chunk would wrap each read
        # in a Task of its own, a loop iteration more for every request.
        try:
            async with asyncio.timeout(self.idle_timeout_s) as deadline:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise self._too_large(size)
                    chunks.append(chunk)
                    deadline.reschedule(loop.time() + self.idle_timeout_s)
        except TimeoutError:
            raise APIError(408, f"the request body stalled: no data for {self.idle_timeout_s:g} s",
                           code="request_timeout", headers=CLOSE_CONNECTION) from None
        return b"".join(chunks)

    async def parse(self, request: Request, adapter: TypeAdapter[T]) -> T:
        """The body validated as `adapter`'s type; a 400 in OpenAI's format when it is not."""
        body = await self.read(request)
        if len(body) <= INLINE_BODY_BYTES:
            return _parse(body, adapter)
        return await self._on_worker(_parse, body, adapter)

    async def run(self, fn: Callable[..., T], *args: Any, size: int) -> T:
        """fn(*args): tokenization, template rendering, anything that grows with its input.

        size is that input's size in characters or token ids. Up to INLINE_TEXT_SIZE, fn runs
        right here: the hop to a worker and back would cost a small request more than the work.
        """
        if size <= INLINE_TEXT_SIZE:
            return fn(*args)
        return await self._on_worker(fn, *args)

    async def _on_worker(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _too_large(self, size: int) -> APIError:
        return APIError(413, f"the request body is {size:,} bytes; this server accepts at most "
                             f"{self.max_bytes:,} (--max-request-bytes)", code="request_too_large",
                        headers=CLOSE_CONNECTION)


def _lower_this_threads_priority() -> None:
    """Off the loop is not enough on a small CPU: tokenizing keeps a core busy, and the engine's
    threads (one OpenMP team, spinning at barriers) slow down badly when one of them waits for
    a core. A niced worker gets only what the engine leaves: tokenizing 0.6 MB next to a stream
    took 3.2 s with the stream's worst token gap 46 ms, against 0.54 s and 226 ms un-niced
    (Part 4). Linux nices a thread by its id; elsewhere this is a no-op."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PREPROCESS_NICENESS)


def _parse(body: bytes, adapter: TypeAdapter[T]) -> T:
    try:
        # Strict UTF-8 (RFC 8259), not json.loads(bytes), which also takes UTF-16 and lets
        # surrogates encoded in UTF-8 through.
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise bad_request(f"The request body is not valid UTF-8: {e}", code="json_invalid") from e
    except json.JSONDecodeError as e:
        raise bad_request(f"The request body is not valid JSON: {e}", code="json_invalid") from e
    # So a lone surrogate can only arrive as a \uD800-style escape, and a body without one needs
    # no walk: walking 1.6M token ids in Python takes 0.15 to 0.25 s (cpu_request_parsing_microbench),
    # and with the GIL passed back and forth every 5 ms the model's steps crawl meanwhile.
    path = first_unencodable_text(data) if SURROGATE_ESCAPE.search(body) else None
    if path is not None:
        raise bad_request(f"{path or 'body'}: the text holds a lone UTF-16 surrogate (such as \\ud800), "
                          "which is not a character; send valid Unicode", path or None)
    try:
        return adapter.validate_python(data)
    except ValidationError as e:
        # The same conversion as for FastAPI's own validation (errors.py): a 400 naming the field.
        raise RequestValidationError(e.errors(include_url=False)) from e


def first_unencodable_text(value: Any, path: str = "") -> str | None:
    """The path ("messages[0].content") of the first string, key or value, not encodable as UTF-8."""
    if isinstance(value, str):
        return None if _encodable(value) else path
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, (str, list, dict)):  # the path is built only where text can hide
                found = first_unencodable_text(item, f"{path}[{i}]")
                if found is not None:
                    return found
    elif isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if not _encodable(key):
                return path
            found = first_unencodable_text(item, child)
            if found is not None:
                return found
    return None


def _encodable(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
