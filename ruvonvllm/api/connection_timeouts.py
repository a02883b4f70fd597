"""A deadline for each request's headers, which uvicorn does not have.

uvicorn closes a keep-alive connection that stays idle after a response
(`timeout_keep_alive`), but a connection that opens and then sends nothing, or
sends its headers a byte at a time (slowloris), is held as long as the client
likes: 50 such connections were held for minutes. nginx's `client_header_timeout`
is the usual answer, and this is the same: a client has `header_timeout_s`
from opening the connection (or from the first byte of its next request) to
finish the request line and headers, or the connection is closed. A slow
*body* is bounded by request_body.py's idle timeout instead.

It subclasses uvicorn's httptools protocol (our dependency, and the one
uvicorn picks when httptools is installed), passed to uvicorn.Config as `http`.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_HEADER_TIMEOUT_S = 10.0


def header_timeout_protocol(header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S) -> type[HttpToolsProtocol]:
    """uvicorn's HTTP protocol class, closing connections whose headers take over header_timeout_s."""
    if header_timeout_s <= 0:
        raise ValueError(f"header timeout must be > 0 seconds, got {header_timeout_s}")

    class HeaderDeadlineProtocol(HttpToolsProtocol):
        _header_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_deadline()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm_header_deadline()

        def on_headers_complete(self) -> None:
            self._disarm_header_deadline()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_deadline()
            super().connection_lost(exc)

        def _arm_header_deadline(self) -> None:
            self._disarm_header_deadline()
            self._header_deadline = self.loop.call_later(header_timeout_s, self._headers_too_slow)

        def _disarm_header_deadline(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_too_slow(self) -> None:
            self._header_deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadlineProtocol
