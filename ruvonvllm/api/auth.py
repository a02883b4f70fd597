"""Optional API key: requests to the model endpoints need `Authorization: Bearer <key>`.

Health checks, metrics and the API docs stay open, as in vLLM, so load
balancers and Prometheus need no secret.
"""

from __future__ import annotations

import secrets

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ruvonvllm.api.errors import unauthorized

PROTECTED_PREFIXES = ("/v1/", "/tokenize", "/detokenize")


class APIKeyMiddleware:
    def __init__(self, app: ASGIApp, api_key: str) -> None:
        if not api_key:
            raise ValueError("api_key must be a non-empty string")
        self.app = app
        self._expected = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(PROTECTED_PREFIXES) and not self._authorized(scope):
            error = unauthorized()
            response = JSONResponse(error.to_response().model_dump(), status_code=error.status_code,
                                    headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, credentials = header.partition(b" ")
        # The scheme is case-insensitive (RFC 7235: "bearer" is "Bearer"); the key is not.
        # Constant-time comparison: response timing must not reveal how much of a guess was right.
        return scheme.lower() == b"bearer" and secrets.compare_digest(credentials.strip(b" "), self._expected)
