"""Errors in OpenAI's format: `{"error": {"message", "type", "param", "code"}}`.

Every failure the server reports goes through here, so clients (the openai
package included) see one shape whatever went wrong. Client mistakes are 4xx
with a message naming the field; FastAPI's own 422 validation shape is
converted to a 400 in this format, as OpenAI answers.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ruvonvllm.api.protocol import ErrorInfo, ErrorResponse

logger = logging.getLogger("ruvonvllm.api")


class APIError(Exception):
    """An error to send to the client as it is."""

    def __init__(self, status_code: int, message: str, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def to_response(self) -> ErrorResponse:
        return ErrorResponse(error=ErrorInfo(message=self.message, type=self.type, param=self.param,
                                             code=self.code))


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, "invalid_request_error", param, code)


def model_not_found(model: str) -> APIError:
    return APIError(404, f"The model `{model}` does not exist.", "invalid_request_error", "model",
                    "model_not_found")


def unauthorized() -> APIError:
    return APIError(401, "Missing or incorrect API key: send `Authorization: Bearer <key>`.",
                    "invalid_request_error", None, "invalid_api_key")


def overloaded(message: str, retry_after_s: int) -> APIError:
    return APIError(503, message, "server_overloaded", None, "queue_full",
                    headers={"Retry-After": str(retry_after_s)})


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """('body', 'messages', 0, 'role') -> 'messages[0].role'; union-member tags are dropped."""
    path = ""
    for part in loc:
        if (part == "body" and not path) or _is_union_tag(part):
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _is_union_tag(part: Any) -> bool:
    """pydantic names each alternative of a union in the error location: 'str', 'list[str]',
    'constrained-int', a model's class name. Field names are lower_snake_case and have none of these."""
    if not isinstance(part, str) or not part:
        return False
    return part in _PRIMITIVE_TAGS or "[" in part or "-" in part or part[0].isupper()


_PRIMITIVE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none"}
_TYPE_MISMATCHES = {"string_type", "list_type", "int_type", "int_parsing", "float_type", "float_parsing",
                    "bool_type", "bool_parsing", "dict_type", "model_type", "model_attributes_type", "none_required",
                    "int_from_float", "literal_error", "union_tag_invalid"}
_MAX_FIELDS_IN_MESSAGE = 3


def _json_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.to_response().model_dump(), status_code=error.status_code, headers=error.headers)


def _validation_error(exc: RequestValidationError) -> APIError:
    errors = exc.errors()
    if not errors:
        return bad_request("The request body is invalid.")
    if errors[0].get("type") == "json_invalid":
        detail = errors[0].get("ctx", {}).get("error", errors[0]["msg"])
        return bad_request(f"The request body is not valid JSON: {detail}", code="json_invalid")
    # One problem per top-level field. A union field reports one error per alternative;
    # a range or length violation explains more than "not a list", so it is preferred.
    by_field: dict[str, tuple[str, dict]] = {}
    for error in sorted(errors, key=lambda e: e.get("type") in _TYPE_MISMATCHES):
        path = field_path(error.get("loc", ()))
        by_field.setdefault(path.split("[", 1)[0].split(".", 1)[0], (path, error))
    parts = []
    for path, error in list(by_field.values())[:_MAX_FIELDS_IN_MESSAGE]:
        part = f"{path or 'body'}: {error['msg']}"
        if path and "input" in error and error.get("type") != "missing":
            part += f" (got {_short_repr(error['input'])})"
        parts.append(part)
    if len(by_field) > _MAX_FIELDS_IN_MESSAGE:
        parts.append(f"and {len(by_field) - _MAX_FIELDS_IN_MESSAGE} more field(s)")
    first_path = next(iter(by_field.values()))[0]
    return bad_request("; ".join(parts), first_path or None)


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return _json_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _json_response(_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return _json_response(APIError(exc.status_code, str(exc.detail), error_type,
                                       headers=dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return _json_response(APIError(500, f"Internal server error: {type(exc).__name__}", "server_error"))
