"""The team server's HTTP errors: OpenAI-style JSON bodies, raised anywhere in a request.

`{"error": {"message", "type", "param", "code"}}` is what OpenAI clients parse;
`param` names the request field at fault, so a client (or a person reading
curl output) knows what to change. Messages never quote the request's text.
"""

from __future__ import annotations

from starlette.responses import JSONResponse


class ApiError(Exception):
    """An HTTP error with an OpenAI-style JSON body."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad(message: str, param: str | None = None) -> ApiError:
    """400: the request is malformed or asks for more than this server allows."""
    return ApiError(400, message, param=param)


def busy(message: str, code: str, retry_after: str = "1") -> ApiError:
    """503: the server cannot take the request now; the client may retry."""
    return ApiError(503, message, "server_error", code=code, headers={"Retry-After": retry_after})
