"""Every HTTP error answers with a FHIR OperationOutcome."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.fhir.outcome import operation_outcome

FHIR_JSON = "application/fhir+json"

_STATUS_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found",
                 405: "not-supported", 409: "conflict", 413: "too-costly", 415: "not-supported",
                 422: "processable", 429: "throttled"}


class ApiError(Exception):
    """Raise from a route to answer ``status`` with an OperationOutcome."""

    def __init__(self, status: int, diagnostics: str, *, code: str | None = None,
                 expression: list[str] | None = None, headers: dict[str, str] | None = None
                 ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.diagnostics = diagnostics
        self.code = code or _STATUS_CODES.get(status, "processing")
        self.expression = expression
        self.headers = headers


def outcome_response(status: int, diagnostics: str, *, code: str | None = None,
                     expression: list[str] | None = None,
                     headers: dict[str, str] | None = None) -> JSONResponse:
    body = operation_outcome(code or _STATUS_CODES.get(status, "processing"), diagnostics,
                             expression=expression)
    return JSONResponse(body, status_code=status, media_type=FHIR_JSON, headers=headers)


def install(app: FastAPI) -> None:
    """Route every error through OperationOutcome, including FastAPI's own."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return outcome_response(exc.status, exc.diagnostics, code=exc.code,
                                expression=exc.expression, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return outcome_response(exc.status_code, str(exc.detail),
                                headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return outcome_response(400, "; ".join(problems))
