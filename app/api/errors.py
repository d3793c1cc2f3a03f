"""Every error leaves as `{"detail": str, "field": str | null}` and never echoes the input.

FastAPI's default 422 copies the offending input into the response; a body carrying NaN
or inf then fails to serialise and the 422 becomes a 500. The handlers here name the field
and say why, and nothing else.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from outlier_core.errors import InputError

log = logging.getLogger(__name__)

_LOCATIONS = {"body", "query", "path", "header", "cookie"}
_MAX_REASON = 300  # pydantic reasons are short; this bounds anything a validator says
_MAX_FIELD = 200  # an unknown key is named back; a megabyte-long key is not


class ApiError(Exception):
    """An HTTP error with a field to blame (or none) and optional headers."""

    def __init__(self, status_code: int, detail: str, field: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.field = field
        self.headers = headers


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class SafeJSONResponse(JSONResponse):
    """JSON that never fails on a non-finite float: those become null (an fp16 overflow, say)."""

    def render(self, content: Any) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except ValueError:
            text = json.dumps(_finite(content), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8")


def error_response(status_code: int, detail: str, field: str | None = None, headers: dict[str, str] | None = None, errors: list[dict] | None = None) -> JSONResponse:
    content: dict[str, Any] = {"detail": detail, "field": field}
    if errors is not None:
        content["errors"] = errors
    return SafeJSONResponse(content, status_code=status_code, headers=headers)


def field_name(loc: tuple[Any, ...]) -> str:
    """('body', 'interventions', 0, 'value') -> 'interventions[0].value'."""
    parts = list(loc[1:] if loc and loc[0] in _LOCATIONS else loc)
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return (name or (str(loc[0]) if loc else "body"))[:_MAX_FIELD]


def _described(error: dict) -> dict:
    loc = tuple(error.get("loc", ()))
    if error.get("type") == "json_invalid":  # loc is ('body', character offset)
        return {"field": "body", "reason": f"invalid JSON near character {loc[-1] if loc else 0}"}
    reason = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return {"field": field_name(loc), "reason": reason[:_MAX_REASON]}


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [_described(e) for e in exc.errors()]
    first = errors[0] if errors else {"field": "body", "reason": "invalid"}
    return error_response(422, f"{first['field']}: {first['reason']}", first["field"], errors=errors)


async def _input_error(request: Request, exc: InputError) -> JSONResponse:
    return error_response(422, f"{exc.field}: {exc.reason}", exc.field)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """FastAPI's own errors (unknown route, wrong method, unparsable body) in the same shape."""
    field = "body" if exc.status_code == 400 else None
    return error_response(exc.status_code, str(exc.detail), field, getattr(exc, "headers", None))


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status_code, exc.detail, exc.field, exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
