"""Errors as an OpenAI-compatible server reports them.

Every failure a client can see is one JSON body in OpenAI's shape, with an HTTP status that
says whose fault it is (4xx: the request's, 5xx: the server's):

    {"error": {"message": "temperature=-1: must be a number >= 0 ...",
               "type": "invalid_request_error", "param": "temperature", "code": null}}

Official clients turn the status into an exception (the `openai` package: 400
BadRequestError, 401 AuthenticationError, 404 NotFoundError, 429 RateLimitError) whose
message is `message`; `param` names the request field at fault.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

# The `type` OpenAI gives each status; a status not listed is a server error.
ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
               404: "invalid_request_error", 405: "invalid_request_error",
               429: "rate_limit_error"}


class APIError(Exception):
    """A request that gets an error response: the HTTP status, the message (what is wrong,
    the value, the fix), the request field at fault (`param`) and a machine-readable `code`."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    @property
    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        return {"error": {"message": self.message,
                          "type": ERROR_TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400: the request itself is wrong (a field's type or value, the JSON)."""
    return APIError(400, message, param, code)


def server_error(error: BaseException) -> APIError:
    """A 500 for an exception that is a bug in basegpt: its traceback goes to the server's
    stderr, and the client learns only that the server failed and how."""
    traceback.print_exception(error, file=sys.stderr)
    return APIError(500, f"the server failed: {type(error).__name__}: {error}; this is a bug "
                         "in basegpt (the server's log has the traceback)", code="internal_error")
