"""One JSON line per HTTP request on the `ruvonvllm.access` logger.

The line is written when the response has been fully sent (or the client has
gone), so a streamed completion logs its whole duration, its token counts and
its time to first token, which the handler leaves in the ASGI scope under
ACCESS_KEY. Each request gets an id: the client's X-Request-Id if it sent one,
else a fresh one; it is echoed in the response's X-Request-Id header.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ruvonvllm.api.serving import ACCESS_KEY
from ruvonvllm.metrics.collectors import ServerMetrics

access_logger = logging.getLogger("ruvonvllm.access")

# Status logged when the client went away before the response finished (nginx's convention).
CLIENT_CLOSED_REQUEST = 499


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, metrics: ServerMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        info: dict = {}
        scope[ACCESS_KEY] = info
        status: int | None = None
        completed = False

        async def send_logged(message: Message) -> None:
            nonlocal status, completed
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                completed = True
            await send(message)

        failed = False
        try:
            await self.app(scope, receive, send_logged)
        except Exception:
            failed = True
            raise
        finally:
            if not completed:
                status = 500 if failed and status is None else CLIENT_CLOSED_REQUEST
            route = getattr(scope.get("route"), "path", "unmatched")
            line = {"request_id": request_id, "method": scope["method"], "path": scope["path"], "status": status,
                    "duration_ms": round(1000 * (time.perf_counter() - start), 2),
                    "client": (scope.get("client") or ("", 0))[0], **info}
            access_logger.info(json.dumps(line))
            if self.metrics is not None:
                self.metrics.observe_http(route, status)
